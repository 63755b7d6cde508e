"""Reproduce a paper's published table: run our methods on its benchmarks and put our numbers beside its.

The published numbers of the FairDD paper (NeurIPS 2025, Tables 1 and 2) and of the COBRA paper
(ICML 2026, Table 1) ship as package data (``fairdistill/published/*.csv``); :func:`published_rows`
reads them as typed rows. :func:`reproduce` selects the rows of one paper at one IPC, groups them by
(dataset, backbone) and runs one :func:`fairdistill.api.compare` per group, with the paper's profile
(``fairdd-paper`` / ``cobra-paper``) at the chosen scale (``paper``: the profile as is; ``cpu``: the
reductions the compare summary lists). Per published row it records the published ACC / DEO_M / DEO_A,
ours (mean ± std over the evaluation models) and the difference ours − published; a dataset whose
files are not under the data root is skipped with the reason.

The papers' method names map onto ours: ``dm`` is (backbone dm, recipe vanilla), ``dm+fairdd``
(dm, fairdd), ``dm+cobra`` (dm, cobra), ``dc+...`` likewise; ``random`` is our ``random`` baseline;
``whole`` (the full training set) is shown as a published reference and not run. Our
``random-balanced`` baseline (the same number of real images from every group of a class) is in
neither paper; it is always run and shown, marked as ours, as the bar a fair method has to clear.

The benchmarks are built with the pixels the papers measured: where our default construction of a
dataset differs from the reference code's on purpose, :data:`PAPER_DATA` names the option that
builds the reference's (C-FMNIST BG: ``fmnist_bg="reference"``, the uint8 wrap included; in our
intended blend the white group is a blank image and no method can be fair on it).

COBRA's table has one ``EOD`` column. Where its scale is known to be DEO_M (``eod_scale`` =
``deo_m``) it is compared with our DEO_M; where it is ``uncertain`` it is compared with both our
DEO_M and our DEO_A, and the row says so.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .artifacts import atomic_write_bytes, environment, write_json
from .errors import FairDistillError, unknown_name
from .profiles import PROFILES

log = logging.getLogger("fairdistill")

#: paper key -> the CSV file under ``fairdistill/published/``
PAPERS: dict[str, str] = {"fairdd": "fairdd.csv", "cobra": "cobra.csv"}
#: paper key -> the compute profile that follows its recipes
PAPER_PROFILES: dict[str, str] = {"fairdd": "fairdd-paper", "cobra": "cobra-paper"}
PAPER_TITLES: dict[str, str] = {
    "fairdd": "FairDD (NeurIPS 2025), Tables 1 and 2",
    "cobra": "COBRA (ICML 2026), Table 1",
}
#: dataset -> the options that build it as both papers' code did, where our default differs on purpose
PAPER_DATA: dict[str, dict[str, Any]] = {"cfmnist-bg": {"fmnist_bg": "reference"}}
SCALES = ("paper", "cpu")
#: the recipes, in the order they are passed to compare
RECIPES = ("vanilla", "fairdd", "cobra")
#: the baselines every group runs; ``random-balanced`` is ours (in neither paper)
BASELINES = ("random", "random-balanced")
OURS_BASELINE = "random-balanced"
METRICS = ("acc", "deo_m", "deo_a")
HEADERS = {"acc": "ACC", "deo_m": "DEO_M", "deo_a": "DEO_A"}

JSON_FILE = "reproduce.json"
MARKDOWN_FILE = "reproduce.md"
HTML_FILE = "reproduce.html"

Progress = Callable[[str, int, int], None]


# ---- the published rows --------------------------------------------------------------------------
def paper_method(method: str) -> tuple[str | None, str]:
    """A paper's method name as our (backbone, name): ``dm+fairdd`` -> (dm, fairdd), ``dc`` -> (dc, vanilla),
    ``random`` -> (None, random), ``whole`` -> (None, full)."""
    if method == "random":
        return None, "random"
    if method == "whole":
        return None, "full"
    backbone, plus, recipe = method.partition("+")
    recipe = recipe if plus else "vanilla"
    if not backbone or recipe not in RECIPES:
        raise FairDistillError(f"unknown published method {method!r}; allowed: BACKBONE[+fairdd|+cobra], random, whole")
    return backbone, recipe


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published table (metrics in percent; ``None``: the paper gives no such column)."""

    paper: str
    table: str
    dataset: str
    #: images per class; ``None`` for the full training set (``whole``)
    ipc: int | None
    #: the paper's name: dm, dm+fairdd, dm+cobra, dc, dc+fairdd, dc+cobra, random, whole
    method: str
    acc: float
    deo_m: float | None = None
    deo_a: float | None = None
    #: COBRA's single fairness column
    eod: float | None = None
    #: which of our metrics ``eod`` is on: ``deo_m``, or ``uncertain`` (DEO_M or DEO_A)
    eod_scale: str | None = None
    #: metrics whose published value is doubtful (e.g. ``("acc",)``)
    uncertain: tuple[str, ...] = ()
    note: str = ""

    @property
    def backbone(self) -> str | None:
        """Our backbone (dm, dc); ``None`` for random and whole."""
        return paper_method(self.method)[0]

    @property
    def name(self) -> str:
        """Our name of the set: the recipe (vanilla, fairdd, cobra) or the baseline (random, full)."""
        return paper_method(self.method)[1]

    @property
    def kind(self) -> str:
        """``distilled``, ``baseline`` (random) or ``reference`` (whole: published only, not run)."""
        if self.method == "whole":
            return "reference"
        return "baseline" if self.backbone is None else "distilled"

    def published(self) -> dict[str, float | None]:
        """The published value to compare with each of our metrics (acc, deo_m, deo_a).

        COBRA's EOD goes to DEO_M where its scale is DEO_M, to both DEO_M and DEO_A where it is uncertain.
        """
        if self.eod is None:
            return {"acc": self.acc, "deo_m": self.deo_m, "deo_a": self.deo_a}
        if self.eod_scale == "deo_m":
            return {"acc": self.acc, "deo_m": self.eod, "deo_a": None}
        return {"acc": self.acc, "deo_m": self.eod, "deo_a": self.eod}

    def uncertain_metrics(self) -> tuple[str, ...]:
        """Our metrics whose published counterpart is doubtful (its value, or its scale)."""
        if self.eod is not None and self.eod_scale != "deo_m":
            return (*self.uncertain, "deo_m", "deo_a")
        return self.uncertain

    def remark(self) -> str:
        """What a reader must know about this row's published numbers ('' when nothing)."""
        parts = []
        if self.eod is not None:
            parts.append("EOD on the DEO_M scale" if self.eod_scale == "deo_m" else "scale uncertain (DEO_M or DEO_A)")
        for metric in self.uncertain:
            parts.append(f"published {HEADERS.get(metric, metric)} uncertain" + (f": {self.note}" if self.note else ""))
        if self.kind == "reference":
            parts.append("full training set: published only, not run")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": self.paper,
            "table": self.table,
            "dataset": self.dataset,
            "ipc": self.ipc,
            "method": self.method,
            "acc": self.acc,
            "deo_m": self.deo_m,
            "deo_a": self.deo_a,
            "eod": self.eod,
            "eod_scale": self.eod_scale,
            "uncertain": list(self.uncertain),
            "note": self.note,
        }


def _number(text: str | None) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _parse(paper: str, text: str) -> tuple[PublishedRow, ...]:
    rows = []
    for i, rec in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            ipc = (rec.get("ipc") or "").strip()
            row = PublishedRow(
                paper=rec["paper"].strip(),
                table=rec["table"].strip(),
                dataset=rec["dataset"].strip(),
                ipc=int(ipc) if ipc else None,
                method=rec["method"].strip(),
                acc=float(rec["acc"]),
                deo_m=_number(rec.get("deo_m")),
                deo_a=_number(rec.get("deo_a")),
                eod=_number(rec.get("eod")),
                eod_scale=(rec.get("eod_scale") or "").strip() or None,
                uncertain=tuple(m.strip() for m in (rec.get("uncertain") or "").split(";") if m.strip()),
                note=(rec.get("note") or "").strip(),
            )
            paper_method(row.method)
        except (KeyError, TypeError, ValueError) as err:
            raise FairDistillError(f"published/{PAPERS[paper]} line {i}: {err}") from err
        if row.paper != paper or (row.ipc is None) != (row.kind == "reference"):
            raise FairDistillError(f"published/{PAPERS[paper]} line {i}: inconsistent row {rec}")
        if row.eod is not None and row.eod_scale not in ("deo_m", "uncertain"):
            raise FairDistillError(f"published/{PAPERS[paper]} line {i}: eod_scale must be deo_m or uncertain")
        rows.append(row)
    return tuple(rows)


def check_paper(paper: str) -> str:
    if paper not in PAPERS:
        raise unknown_name("paper", paper, PAPERS)
    return paper


@cache
def _load(paper: str) -> tuple[PublishedRow, ...]:
    text = resources.files("fairdistill.published").joinpath(PAPERS[paper]).read_text(encoding="utf-8")
    return _parse(paper, text)


def published_rows(paper: str | None = None) -> tuple[PublishedRow, ...]:
    """The published rows of ``paper`` (``fairdd`` or ``cobra``; ``None``: both), in the papers' order."""
    if paper is None:
        return tuple(r for p in PAPERS for r in _load(p))
    return _load(check_paper(paper))


def _names(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    names = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    return names or None


def _join(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values)


def select_rows(
    paper: str,
    *,
    datasets: str | Sequence[str] | None = None,
    backbones: str | Sequence[str] | None = None,
    ipc: int = 10,
) -> list[PublishedRow]:
    """The rows of ``paper`` at ``ipc`` for ``datasets`` x ``backbones`` (default: all the table holds),
    plus the random rows and the full-training-set rows of those datasets.

    A paper, dataset or backbone not in the table, an IPC with no published rows, or an explicitly
    chosen dataset / backbone with no rows at that IPC raise a :class:`FairDistillError` that lists
    what is allowed.
    """
    rows = published_rows(paper)
    distilled = [r for r in rows if r.kind == "distilled"]
    table_datasets = list(dict.fromkeys(r.dataset for r in rows))
    table_backbones = list(dict.fromkeys(r.backbone for r in distilled))
    table_ipcs = sorted({r.ipc for r in distilled if r.ipc is not None})
    want_d, want_b = _names(datasets), _names(backbones)
    for d in want_d or ():
        if d not in table_datasets:
            raise FairDistillError(f"dataset {d!r} is not in the {paper} table; allowed: {_join(table_datasets)}")
    for b in want_b or ():
        if b not in table_backbones:
            raise FairDistillError(f"backbone {b!r} is not in the {paper} table; allowed: {_join(table_backbones)}")
    if ipc not in table_ipcs:
        raise FairDistillError(f"the {paper} table has no rows at IPC {ipc}; allowed: {_join(table_ipcs)}")
    chosen_d = want_d or table_datasets
    chosen_b = want_b or table_backbones
    at_ipc = [r for r in distilled if r.ipc == ipc and r.dataset in chosen_d and r.backbone in chosen_b]
    for d in want_d or ():
        if not any(r.dataset == d for r in at_ipc):
            have = dict.fromkeys(r.dataset for r in distilled if r.ipc == ipc and r.backbone in chosen_b)
            which = f" {'/'.join(want_b)}" if want_b else ""
            raise FairDistillError(
                f"the {paper} table has no{which} rows for {d} at IPC {ipc}; "
                f"datasets with{which} rows at IPC {ipc}: {_join(have) or 'none'}"
            )
    for b in want_b or ():
        if not any(r.backbone == b for r in at_ipc):
            have = dict.fromkeys(r.backbone for r in distilled if r.ipc == ipc and r.dataset in chosen_d)
            where = f" for {_join(want_d)}" if want_d else ""
            raise FairDistillError(
                f"the {paper} table has no {b} rows{where} at IPC {ipc}; "
                f"backbones with rows{where} at IPC {ipc}: {_join(have) or 'none'}"
            )
    if not at_ipc:
        raise FairDistillError(f"the {paper} table has no rows for this selection at IPC {ipc}")
    run_datasets = set(r.dataset for r in at_ipc)
    extra = [
        r
        for r in rows
        if r.dataset in run_datasets and ((r.kind == "baseline" and r.ipc == ipc) or r.kind == "reference")
    ]
    return [r for r in rows if r in at_ipc or r in extra]


# ---- the results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One line of the side-by-side table: the published numbers, ours, and ours − published."""

    dataset: str
    #: the backbone whose compare run gave our numbers (``None`` for the full-set reference)
    backbone: str | None
    #: the paper's method name (for our own baseline: ``random-balanced``)
    method: str
    #: the set in the compare summary (vanilla, fairdd, cobra, random, random-balanced; ``full`` for whole)
    ours_name: str
    #: ``published`` (compared), ``ours`` (our baseline, in neither paper) or ``reference`` (published, not run)
    status: str
    published: Mapping[str, float | None]
    #: metric -> {"mean", "std"} over the evaluation models; ``None`` when not run
    ours: Mapping[str, Mapping[str, float]] | None
    #: metric -> ours − published (``None`` where either is missing)
    difference: Mapping[str, float | None]
    #: metrics whose published value (or scale) is uncertain
    uncertain: tuple[str, ...] = ()
    remark: str = ""
    source: PublishedRow | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "method": self.method,
            "ours_name": self.ours_name,
            "status": self.status,
            "published": dict(self.published),
            "ours": None if self.ours is None else {k: dict(v) for k, v in self.ours.items()},
            "difference": dict(self.difference),
            "uncertain": list(self.uncertain),
            "remark": self.remark,
            "source": None if self.source is None else self.source.to_dict(),
        }


@dataclass(frozen=True)
class Skipped:
    """A (dataset, backbone) group that did not run, and why (the data-loading error's first line)."""

    dataset: str
    backbone: str
    methods: tuple[str, ...]
    reason: str
    rows: tuple[PublishedRow, ...] = ()
    #: the loader's whole message (where the files were looked for)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "methods": list(self.methods),
            "reason": self.reason,
            "detail": self.detail,
            "published": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class GroupRun:
    """One compare run: a dataset with one backbone."""

    dataset: str
    backbone: str
    profile: str
    methods: tuple[str, ...]
    baselines: tuple[str, ...]
    seconds: float
    #: the compare summary, relative to the output folder (``None`` without one)
    summary_path: str | None
    scale: Mapping[str, Any]
    num_models: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "profile": self.profile,
            "methods": list(self.methods),
            "baselines": list(self.baselines),
            "seconds": self.seconds,
            "summary_path": self.summary_path,
            "scale": dict(self.scale),
            "num_models": self.num_models,
        }


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: the side-by-side rows, the skipped groups, the runs and the reductions."""

    paper: str
    ipc: int
    scale: str
    profile: str
    rows: list[Comparison]
    skipped: list[Skipped]
    groups: list[GroupRun]
    #: the settings the ``cpu`` scale reduced (from the compare summaries; empty at ``paper`` scale)
    reductions: list[str]
    record: dict[str, Any] = field(default_factory=dict)
    #: written files: ``json``, ``markdown``, ``html`` (empty without ``out``)
    files: dict[str, Path] = field(default_factory=dict)


def _stats(summary_methods: Mapping[str, Any], name: str) -> dict[str, dict[str, float]] | None:
    entry = summary_methods.get(name)
    if not isinstance(entry, Mapping):
        return None
    out = {}
    for metric in METRICS:
        s = entry.get(metric)
        if isinstance(s, Mapping) and s.get("mean") is not None:
            std = s.get("std")
            out[metric] = {"mean": float(s["mean"]), "std": 0.0 if std is None else float(std)}
    return out


def _difference(published: Mapping[str, float | None], ours: Mapping[str, Mapping[str, float]] | None) -> dict:
    diff: dict[str, float | None] = {}
    for metric in METRICS:
        pub = published.get(metric)
        mine = None if ours is None or metric not in ours else ours[metric]["mean"]
        ok = pub is not None and mine is not None and math.isfinite(mine)
        diff[metric] = round(mine - pub, 6) if ok else None
    return diff


def _comparison(
    dataset: str, backbone: str | None, row: PublishedRow | None, name: str, methods: Mapping[str, Any] | None
) -> Comparison:
    ours = None if methods is None else _stats(methods, name)
    if row is None:  # a baseline of ours that the paper does not report
        published: dict[str, float | None] = dict.fromkeys(METRICS)
        if name == OURS_BASELINE:
            remark = "ours (the same number of real images from every group of a class); in neither paper"
        elif name in RECIPES:
            remark = "not in the paper's table: run with the paper's schedule, the method's own knobs (presets show)"
        else:
            remark = "ours: not in the paper"
        return Comparison(
            dataset, backbone, name, name, "ours", published, ours, _difference(published, None), (), remark
        )
    published = row.published()
    status = "reference" if row.kind == "reference" else "published"
    return Comparison(
        dataset,
        backbone,
        row.method,
        name,
        status,
        published,
        ours,
        _difference(published, ours),
        row.uncertain_metrics(),
        row.remark(),
        row,
    )


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _plan(rows: Sequence[PublishedRow]) -> list[tuple[str, str, list[PublishedRow]]]:
    """(dataset, backbone, distilled rows) in the table's order."""
    groups: dict[tuple[str, str], list[PublishedRow]] = {}
    for r in rows:
        if r.kind == "distilled":
            groups.setdefault((r.dataset, r.backbone or ""), []).append(r)
    return [(d, b, rs) for (d, b), rs in groups.items()]


@dataclass(frozen=True)
class _Settings:
    """What every group's compare of one :func:`reproduce` shares: the paper's profile and the caller's choices."""

    paper: str
    profile: str
    ipc: int
    scale: str
    seed: int
    #: as the caller gave it (each compare resolves it again)
    device: Any
    data_root: str | Path | None
    out_dir: Path | None
    progress: Progress | None
    overrides: Mapping[str, Any]


@dataclass
class _Tally:
    """What the groups have given so far, in the order they ran."""

    comparisons: list[Comparison] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    runs: list[GroupRun] = field(default_factory=list)
    #: every reduction a compare summary lists, each once, in the order first seen
    reductions: list[str] = field(default_factory=list)


def _check_arguments(
    paper: str, ipc: int, scale: str, seed: int, out: str | Path | None, overrides: Mapping
) -> tuple[str, Any]:
    """The checked (paper, out), before any dataset is loaded: the numbers, the output folder, the names."""
    from .config import check_run_values
    from .outputs import check_out_dir

    counts = {k: overrides.get(k) for k in ("iterations", "num_models", "epochs") if k in overrides}
    check_run_values(seed=seed, ipc=ipc, counts=counts)
    if out is not None:
        out = check_out_dir(out, writes="reproduce.json, reproduce.md, reproduce.html, a folder per benchmark")
    paper = check_paper(paper)
    if scale not in SCALES:
        raise unknown_name("scale", scale, SCALES)
    return paper, out


def _load_once(dataset: str, data_root: str | Path | None, loaded: dict[str, Any], failed: dict) -> None:
    """Load ``dataset`` unless it is loaded or failed already; a loading error is kept in ``failed``."""
    from . import data as data_mod

    if dataset in loaded or dataset in failed:
        return
    try:
        loaded[dataset] = data_mod.load_dataset(dataset, data_root=data_root, **PAPER_DATA.get(dataset, {}))
    except FairDistillError as err:
        failed[dataset] = err
        log.info("skipping %s: %s", dataset, _first_line(err))


def _skipped_group(
    dataset: str, backbone: str, drows: Sequence[PublishedRow], baseline_rows: Mapping, err: FairDistillError
) -> Skipped:
    """The record of a group whose dataset did not load: its published rows and the loader's reason."""
    rows = (*drows, *baseline_rows.values())
    return Skipped(dataset, backbone, tuple(r.method for r in rows), _first_line(err), rows, str(err))


def _group_recipes(profile: str, backbone: str, drows: Sequence[PublishedRow]) -> list[str]:
    """The recipes a group runs, in :data:`RECIPES` order: those its rows report and those the profile runs.

    FairDD reports no COBRA, yet its profile runs COBRA on FairDD's schedule; such a recipe is shown
    as ours.
    """
    names = {r.name for r in drows}
    runnable = PROFILES.get(profile).of(backbone).recipes or RECIPES
    return [m for m in RECIPES if m in names or m in runnable]


def _group_hook(progress: Progress | None, dataset: str, backbone: str) -> Progress | None:
    """``progress`` with each phase prefixed by the group (``cmnist-fg dm: distill``)."""
    if progress is None:
        return None
    prefix = f"{dataset} {backbone}: "
    return lambda phase, done, total, p=prefix: progress(p + phase, done, total)


def _compare_group(cfg: _Settings, data: Any, dataset: str, backbone: str, recipes: Sequence[str]) -> tuple[Any, float]:
    """Run one group's compare; its summary and the seconds it took."""
    group_out = None if cfg.out_dir is None else cfg.out_dir / f"{dataset}-{backbone}"
    hook = _group_hook(cfg.progress, dataset, backbone)
    log.info("reproduce %s: %s with %s (%s), profile %s", cfg.paper, dataset, backbone, ", ".join(recipes), cfg.profile)
    from . import api  # imported here: listing and skipping need no torch models

    start = time.perf_counter()
    result = api.compare(
        data,
        methods=recipes,
        baselines=list(BASELINES),
        preset=cfg.profile,
        backbone=backbone,
        ipc=cfg.ipc,
        scale=cfg.scale,
        seed=cfg.seed,
        device=cfg.device,
        data_root=cfg.data_root,
        out=group_out,
        report=False,
        progress=hook,
        **cfg.overrides,
    )
    return result.summary, time.perf_counter() - start


def _record_group(
    tally: _Tally,
    cfg: _Settings,
    group: tuple[str, str, Sequence[PublishedRow]],
    baseline_rows: Mapping[str, PublishedRow],
    recipes: Sequence[str],
    summary: Mapping[str, Any],
    seconds: float,
) -> None:
    """Add a group's run, its reductions and its comparison lines to ``tally``.

    The lines: the group's published rows, then the recipes it ran that the table lacks, then the baselines.
    """
    dataset, backbone, drows = group
    methods = summary.get("methods", {})
    scale_record = summary.get("scale") or {"name": cfg.scale, "reductions": []}
    for item in scale_record.get("reductions") or []:
        if item not in tally.reductions:
            tally.reductions.append(item)
    tally.runs.append(
        GroupRun(
            dataset,
            backbone,
            summary.get("preset", cfg.profile),
            tuple(recipes),
            BASELINES,
            seconds,
            None if cfg.out_dir is None else f"{dataset}-{backbone}/summary.json",
            scale_record,
            (summary.get("eval_config") or {}).get("num_models"),
        )
    )
    names = {r.name for r in drows}
    for r in drows:
        tally.comparisons.append(_comparison(dataset, backbone, r, r.name, methods))
    for m in recipes:
        if m not in names:  # run under the paper's profile, but not in its table
            tally.comparisons.append(_comparison(dataset, backbone, None, m, methods))
    for b in BASELINES:
        tally.comparisons.append(_comparison(dataset, backbone, baseline_rows.get(b), b, methods))


def _run_plan(cfg: _Settings, rows: Sequence[PublishedRow], plan: Sequence[tuple]) -> tuple[_Tally, dict[str, Any]]:
    """Run the groups one by one; the tally and the datasets that failed to load (name -> error).

    A dataset is loaded once, for its first group, and let go after its last; its full-training-set
    rows follow that last group, unless it did not load.
    """
    remaining: dict[str, int] = {}
    for d, _, _ in plan:
        remaining[d] = remaining.get(d, 0) + 1
    loaded: dict[str, Any] = {}
    failed: dict[str, FairDistillError] = {}
    tally = _Tally()
    for group in plan:
        dataset, backbone, drows = group
        baseline_rows = {r.name: r for r in rows if r.dataset == dataset and r.kind == "baseline"}
        _load_once(dataset, cfg.data_root, loaded, failed)
        remaining[dataset] -= 1
        if dataset in failed:
            tally.skipped.append(_skipped_group(dataset, backbone, drows, baseline_rows, failed[dataset]))
        else:
            recipes = _group_recipes(cfg.profile, backbone, drows)
            summary, seconds = _compare_group(cfg, loaded[dataset], dataset, backbone, recipes)
            _record_group(tally, cfg, group, baseline_rows, recipes, summary, seconds)
        if remaining[dataset] == 0:
            loaded.pop(dataset, None)  # free the images before the next dataset
            if dataset not in failed:
                for r in rows:
                    if r.dataset == dataset and r.kind == "reference":
                        tally.comparisons.append(_comparison(dataset, None, r, r.name, None))
    return tally, failed


def _run_record(
    cfg: _Settings,
    tally: _Tally,
    selection: tuple[Any, Any, Sequence[tuple]],
    failed: Mapping[str, Any],
    dev: Any,
    out: str | Path | None,
    start_all: float,
) -> dict[str, Any]:
    """The content of ``reproduce.json``: the settings, the scale's reductions, the lines, skips and runs.

    ``selection``: the datasets and backbones as asked for, and the plan they gave.
    """
    datasets, backbones, plan = selection
    chosen = list(dict.fromkeys(d for d, _, _ in plan))
    return {
        "command": "reproduce",
        "paper": cfg.paper,
        "paper_title": PAPER_TITLES[cfg.paper],
        "settings": {
            "datasets": _names(datasets),
            "backbones": _names(backbones),
            "selected_datasets": chosen,
            "selected_backbones": list(dict.fromkeys(b for _, b, _ in plan)),
            "ipc": cfg.ipc,
            "scale": cfg.scale,
            "profile": cfg.profile,
            "seed": cfg.seed,
            "device": str(dev),
            "data_root": None if cfg.data_root is None else str(cfg.data_root),
            "out": None if out is None else str(out),
            "overrides": dict(cfg.overrides),
            "baselines": list(BASELINES),
            "dataset_options": {d: dict(PAPER_DATA[d]) for d in chosen if d in PAPER_DATA and d not in failed},
        },
        "scale": {
            "name": cfg.scale,
            "reductions": tally.reductions,
            "by_backbone": {g.backbone: list(g.scale.get("reductions") or []) for g in tally.runs},
        },
        "rows": [c.to_dict() for c in tally.comparisons],
        "skipped": [s.to_dict() for s in tally.skipped],
        "groups": [g.to_dict() for g in tally.runs],
        "seconds": time.perf_counter() - start_all,
        "environment": environment(dev),
    }


def reproduce(
    paper: str,
    *,
    datasets: str | Sequence[str] | None = None,
    backbones: str | Sequence[str] | None = None,
    ipc: int = 10,
    scale: str = "paper",
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: Any = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> ReproduceResult:
    """Run our methods on the benchmarks of ``paper``'s published table and compare, row by row.

    ``paper``: ``fairdd`` or ``cobra``. The published rows at ``ipc`` for ``datasets`` x ``backbones``
    (default: everything the table holds at that IPC) are grouped by (dataset, backbone); each group
    whose dataset loads from ``data_root`` runs one :func:`fairdistill.api.compare` of the recipes its
    rows need (vanilla, fairdd, cobra) beside the ``random`` and ``random-balanced`` baselines, with the
    paper's profile (``fairdd-paper`` / ``cobra-paper``) at ``scale`` (``paper`` or ``cpu``); the others
    are skipped with the loader's reason. ``overrides`` (``iterations``, ``num_models``, ``epochs``, any
    compare or distillation setting) go to every compare. With ``out``: each compare writes into
    ``out/<dataset>-<backbone>/``, and ``reproduce.json``, ``reproduce.md`` and ``reproduce.html`` are
    written into ``out``.
    """
    from .runtime import resolve_device

    paper, out = _check_arguments(paper, ipc, scale, seed, out, overrides)
    rows = select_rows(paper, datasets=datasets, backbones=backbones, ipc=ipc)
    dev = resolve_device(device)
    profile = PAPER_PROFILES[paper]
    out_dir = None if out is None else Path(out)
    cfg = _Settings(paper, profile, ipc, scale, seed, device, data_root, out_dir, progress, overrides)
    plan = _plan(rows)
    start_all = time.perf_counter()
    tally, failed = _run_plan(cfg, rows, plan)
    result = ReproduceResult(paper, ipc, scale, profile, tally.comparisons, tally.skipped, tally.runs, tally.reductions)
    result.record = _run_record(cfg, tally, (datasets, backbones, plan), failed, dev, out, start_all)
    if out_dir is not None:
        result.files = write_reproduce(out_dir, result)
    return result


# ---- formatting ----------------------------------------------------------------------------------
def _num(value: float | None, uncertain: bool = False) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "nan"
    return f"{value:.2f}" + ("?" if uncertain else "")


def _signed(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "nan"
    return f"{value:+.2f}"


def _ours(stats: Mapping[str, float] | None, digits: int = 2) -> str:
    if stats is None:
        return "—"
    m, s = stats["mean"], stats["std"]
    if not math.isfinite(m):
        return "nan"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def method_label(c: Comparison) -> str:
    """The method column: the paper's name; our own baseline marked as ours."""
    if c.status == "ours":
        return f"{c.method} (ours)"
    if c.status == "reference":
        return f"{c.method} (full set)"
    return c.method


def published_cells(c: Comparison) -> list[str]:
    return [_num(c.published.get(m), m in c.uncertain) for m in METRICS]


def ours_cells(c: Comparison, digits: int = 2) -> list[str]:
    if c.status == "reference":
        return ["not run"] + ["—"] * (len(METRICS) - 1)
    return [_ours(None if c.ours is None else c.ours.get(m), digits) for m in METRICS]


def difference_cells(c: Comparison) -> list[str]:
    return [_signed(c.difference.get(m)) for m in METRICS]


def table_rows(result: ReproduceResult) -> list[list[str]]:
    """The side-by-side table: dataset, backbone, method, published ACC / DEO_M / DEO_A, ours (the same),
    ours − published (the same), note."""
    return [
        [
            c.dataset,
            c.backbone or "—",
            method_label(c),
            *published_cells(c),
            *ours_cells(c),
            *difference_cells(c),
            c.remark,
        ]
        for c in result.rows
    ]


TABLE_HEADERS = [
    "dataset",
    "backbone",
    "method",
    *(f"published {HEADERS[m]}" for m in METRICS),
    *(f"ours {HEADERS[m]}" for m in METRICS),
    *(f"Δ {HEADERS[m]}" for m in METRICS),
    "note",
]


@dataclass(frozen=True)
class TerminalTable:
    """The side-by-side table laid out for a terminal: one section per (dataset, backbone), notes as footnotes."""

    headers: list[str]
    #: (section title or None, status, cells); a new section starts where the title is not None
    rows: list[tuple[str | None, str, list[str]]]
    footnotes: list[str]


def terminal_table(result: ReproduceResult) -> TerminalTable:
    """Columns: method, then published / ours (mean ± std, one decimal) / Δ for ACC, DEO_M and DEO_A."""
    headers = ["method"] + [f"{kind} {HEADERS[m]}" for m in METRICS for kind in ("pub.", "ours", "Δ")]
    notes: dict[str, int] = {}
    rows: list[tuple[str | None, str, list[str]]] = []
    section = None
    for c in result.rows:
        label = method_label(c)
        if c.remark:
            label += f" [{notes.setdefault(c.remark, len(notes) + 1)}]"
        pub, ours, diff = published_cells(c), ours_cells(c, digits=1), difference_cells(c)
        cells = [label, *(x for i in range(len(METRICS)) for x in (pub[i], ours[i], diff[i]))]
        key = c.dataset if c.backbone is None else f"{c.dataset} · {c.backbone}"
        same = c.backbone is None and section is not None and section.startswith(c.dataset + " ·")
        title_ = None if key == section or same else key
        if title_ is not None:
            section = key
        rows.append((title_, c.status, cells))
    return TerminalTable(headers, rows, [f"[{i}] {text}" for text, i in notes.items()])


def title(result: ReproduceResult) -> str:
    return f"Reproducing {PAPER_TITLES[result.paper]}, IPC {result.ipc}, scale {result.scale}"


def legend(result: ReproduceResult) -> str:
    models = sorted({g.num_models for g in result.groups if g.num_models is not None})
    n = "/".join(map(str, models)) if models else "the"
    return (
        f"Percent. Ours: mean ± std over {n} evaluation model(s); Δ: ours − published. "
        "'?' marks a published value whose number or scale is uncertain. "
        "random-balanced (ours) takes the same number of real images from every group of a class; "
        "neither paper reports it, it is the bar a fair method should clear."
    )


def settings_lines(result: ReproduceResult) -> list[tuple[str, str]]:
    s = result.record.get("settings", {})
    lines = [
        ("paper", PAPER_TITLES[result.paper]),
        ("profile", result.profile),
        ("scale", result.scale),
        ("ipc", str(result.ipc)),
        ("seed", str(s.get("seed"))),
        ("device", str(s.get("device"))),
        ("datasets", _join(s.get("selected_datasets", []))),
        ("backbones", _join(s.get("selected_backbones", []))),
    ]
    for d, options in (s.get("dataset_options") or {}).items():
        lines.append(
            (f"{d} built with", _join(f"{k}={v}" for k, v in options.items()) + " (the reference code's pixels)")
        )
    if s.get("overrides"):
        lines.append(("overrides", _join(f"{k}={v}" for k, v in s["overrides"].items())))
    return lines


def skipped_rows(result: ReproduceResult) -> list[list[str]]:
    return [[s.dataset, s.backbone, _join(s.methods), s.reason] for s in result.skipped]


def run_rows(result: ReproduceResult) -> list[list[str]]:
    return [
        [
            g.dataset,
            g.backbone,
            g.profile,
            _join(g.methods + g.baselines),
            "—" if g.num_models is None else str(g.num_models),
            f"{g.seconds:.1f}",
            g.summary_path or "—",
        ]
        for g in result.groups
    ]


RUN_HEADERS = ["dataset", "backbone", "profile", "sets", "models", "seconds", "summary"]
SKIPPED_HEADERS = ["dataset", "backbone", "published rows", "reason"]


def reductions_text(result: ReproduceResult) -> list[str]:
    """The settings the scale reduced, one line each; prefixed by the backbone where backbones differ."""
    if result.scale == "paper" or not result.groups:
        return []
    by_backbone: dict[str, list[str]] = {}
    for g in result.groups:
        items = by_backbone.setdefault(g.backbone, [])
        items += [r for r in g.scale.get("reductions") or [] if r not in items]
    if len({tuple(v) for v in by_backbone.values()}) > 1:
        return [f"{b}: {r}" for b, items in by_backbone.items() for r in items]
    return result.reductions or ["(the compare summaries list no reductions)"]


# ---- Markdown ------------------------------------------------------------------------------------
def _md(text: Any) -> str:
    """Text safe in Markdown and its table cells: no raw HTML (``&`` and ``<`` escaped), no cell breaks."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], num_from: int, num_to: int) -> list[str]:
    align = ["---:" if num_from <= i < num_to else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def render_markdown(result: ReproduceResult) -> str:
    lines = [f"# {_md(title(result))}", "", _md(legend(result)), ""]
    lines += _md_table(TABLE_HEADERS, table_rows(result), 3, len(TABLE_HEADERS) - 1) + [""]
    lines += [f"- {_md(k)}: {_md(v)}" for k, v in settings_lines(result)] + [""]
    if reductions_text(result):
        lines += [f"## Reduced settings (scale {_md(result.scale)})", ""]
        lines += [f"- {_md(r)}" for r in reductions_text(result)] + [""]
    if result.skipped:
        lines += ["## Skipped (data not found)", ""]
        lines += _md_table(SKIPPED_HEADERS, skipped_rows(result), 99, 99) + [""]
    if result.groups:
        lines += ["## Runs", ""]
        lines += _md_table(RUN_HEADERS, run_rows(result), 4, 6) + [""]
    return "\n".join(lines)


# ---- HTML ----------------------------------------------------------------------------------------
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px 32px; color: #1d2329;
       line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 18px; border-bottom: 2px solid #d8dee4; margin-top: 28px; }
p.sub { color: #57606a; margin: 0 0 12px; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; } th { background: #f3f5f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.note { color: #57606a; font-size: 12px; }
tr.ours td { background: #f6fbf3; } tr.ours td:nth-child(3) { font-style: italic; }
tr.reference td { color: #57606a; background: #fafafa; }
ul.settings { list-style: none; padding: 0; font-size: 13px; display: flex; flex-wrap: wrap; gap: 6px; }
ul.settings li { background: #f3f5f7; border: 1px solid #d8dee4; border-radius: 4px; padding: 2px 8px; }
ul.settings li span { color: #57606a; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], num: range, classes: Sequence[str] | None = None
) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, cells in enumerate(rows):
        tds = []
        for j, cell in enumerate(cells):
            cls = ' class="num"' if j in num else (' class="note"' if headers[j] == "note" else "")
            tds.append(f"<td{cls}>{_esc(cell)}</td>")
        cls = f' class="{_esc(classes[i])}"' if classes else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(result: ReproduceResult) -> str:
    t = title(result)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(t)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(t)}</h1>",
        f'<p class="sub">{_esc(legend(result))}</p>',
        _html_table(
            TABLE_HEADERS,
            table_rows(result),
            range(3, len(TABLE_HEADERS) - 1),
            [c.status for c in result.rows],
        ),
        '<ul class="settings">'
        + "".join(f"<li><span>{_esc(k)}</span> {_esc(v)}</li>" for k, v in settings_lines(result))
        + "</ul>",
    ]
    if reductions_text(result):
        parts.append(f"<h2>Reduced settings (scale {_esc(result.scale)})</h2>")
        parts.append("<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in reductions_text(result)) + "</ul>")
    if result.skipped:
        parts.append("<h2>Skipped (data not found)</h2>")
        parts.append(_html_table(SKIPPED_HEADERS, skipped_rows(result), range(0)))
    if result.groups:
        parts.append("<h2>Runs</h2>")
        parts.append(_html_table(RUN_HEADERS, run_rows(result), range(4, 6)))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_reproduce(out: str | Path, result: ReproduceResult) -> dict[str, Path]:
    """Write ``reproduce.json``, ``reproduce.md`` and ``reproduce.html`` into ``out``, each atomically."""
    out = Path(out)
    files = {
        "json": write_json(out / JSON_FILE, result.record),
        "markdown": atomic_write_bytes(out / MARKDOWN_FILE, render_markdown(result).encode("utf-8")),
        "html": atomic_write_bytes(out / HTML_FILE, render_html(result).encode("utf-8")),
    }
    log.info("wrote %s, %s and %s", *files.values())
    return files


__all__ = [
    "PAPERS",
    "PAPER_PROFILES",
    "Comparison",
    "GroupRun",
    "PublishedRow",
    "ReproduceResult",
    "Skipped",
    "check_paper",
    "paper_method",
    "published_rows",
    "render_html",
    "render_markdown",
    "reproduce",
    "select_rows",
    "write_reproduce",
]
