"""The Python API: every CLI command is one call here.

``distill`` makes one synthetic set, ``evaluate`` judges a saved one, ``compare`` distils several
methods in lockstep and puts them beside the random-subset and full-data baselines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import runtime
from .artifacts import (
    SyntheticSet,
    check_synthetic,
    environment,
    final_files,
    finish_interrupted_writes,
    load_synthetic,
    save_grid,
    save_synthetic,
    write_json,
)
from .backbones import IterationCallback, IterationState, get_backbone
from .checkpoint import (
    DISTILL_FILE,
    CheckpointError,
    DistillState,
    EvalSweep,
    checkpoint_dir,
    load_checkpoint,
    partial_name,
    remove_stale_temporaries,
    save_checkpoint,
    tensor_hash,
)
from .config import DistillConfig, EvalConfig, MethodSpec, check_run_values
from .data import FairDataset, load_dataset
from .data.groups import apply_group_options, parse_groups
from .errors import FairDistillError, unknown_name
from .evaluate import (
    BASELINES,
    EvalJob,
    EvalResult,
    baseline_indices,
    epochs_for,
    evaluate_images,
    evaluate_sets,
    evaluation_executor,
)
from .executor import EXECUTORS, Executor, check_workers
from .outputs import check_out_dir, check_out_file
from .presets import (
    DEFAULT_BACKBONE,
    PROFILES,
    default_profile,
    get_method,
    preset_name,
    profile_configs,
    resolve_preset,
)
from .profiles import cpu_scale
from .record import PhaseTimer, model_rows, run_record
from .runtime import resolve_device

if TYPE_CHECKING:
    from .report import Report

log = logging.getLogger("fairdistill")

#: the scales of ``compare``: None or "paper", the profile as it is; "cpu", cut to two CPU cores
SCALES: tuple[str | None, ...] = (None, "paper", "cpu")

#: what an output folder of distill / compare receives (said when a name like run.safetensors is refused)
DISTILL_WRITES = "synthetic.safetensors, record.json, grid.png"
COMPARE_WRITES = "summary.json, a folder per method, report.html"

#: progress hook: (phase, done, total); phase is e.g. "distill" or "evaluate cobra"
Progress = Callable[[str, int, int], None]


def _dataset(dataset: str | FairDataset, data_root: str | Path | None, stream: bool | None = None) -> FairDataset:
    """``dataset`` as is, or loaded by name (``stream``: see :func:`~fairdistill.data.load_dataset`)."""
    if isinstance(dataset, FairDataset):
        return dataset
    return load_dataset(dataset, data_root=data_root, stream=stream)


# ---- distill -----------------------------------------------------------------------------------
def distill(
    dataset: str | FairDataset = "cmnist-fg-mini",
    *,
    preset: str = "cobra",
    backbone: str | None = None,
    target: str | None = None,
    distance: str | None = None,
    embedder: str | None = None,
    sampling: str | None = None,
    ipc: int = 10,
    iterations: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    group_label_fraction: float | None = None,
    group_label_noise: float | None = None,
    groups: str | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    stream: bool | None = None,
    **overrides: Any,
) -> SyntheticSet:
    """Distil one synthetic set.

    The preset gives the method recipe and compute profile; ``backbone`` picks the backbone whose
    form of the recipe (and settings of the profile) is used (``preset="cobra", backbone="dc"`` is
    the same as ``preset="dc-cobra"``); ``target``, ``distance``, ``embedder`` and ``sampling``
    override single knobs of the recipe, ``iterations`` and any other :class:`DistillConfig` field
    (``overrides``, e.g. ``outer_loop`` for DC) single settings. With ``out``, the set, a JSON
    record and an image grid are written there.

    Group labels of the training images (:mod:`fairdistill.data.groups`; the test split always keeps
    the true groups): ``groups`` = ``infer:kmeans[:K]`` or ``infer:dbscan`` replaces them by per-class
    clusters, then ``group_label_noise`` flips that share of them, then ``group_label_fraction`` keeps
    that share (the rest unlabelled). What was done is in ``meta["group_labels"]``.

    ``stream=True`` keeps an on-disk dataset's training images uint8 and decodes a batch at a time
    (same images, far less memory; see :func:`~fairdistill.data.load_dataset`).

    Resuming (needs ``out``): ``checkpoint_every=N`` saves the run's state to
    ``out/checkpoint/distill.safetensors`` every N iterations and after the last one; ``resume=True``
    continues from that checkpoint (refused if it was written with other settings) and gives the
    same synthetic set, bit for bit on the same device, as a run that was never interrupted.
    """
    # the arguments first, before any loading or training: a path that cannot be written, a bad number
    check_run_values(
        seed=seed,
        ipc=ipc,
        counts={"iterations": iterations, "checkpoint_every": checkpoint_every},
        shares={"group_label_fraction": group_label_fraction, "group_label_noise": group_label_noise},
    )
    out = None if out is None else check_out_dir(out, writes=DISTILL_WRITES)
    timer = PhaseTimer()
    rt = runtime.current()  # several processes under torchrun (cli: runtime.session), else one
    dev = rt.device(device)
    parse_groups(groups)  # a bad spelling fails before any work
    _check_resume_options(out, checkpoint_every, resume)
    key = dataset if isinstance(dataset, str) else dataset.name
    p = resolve_preset(preset, ipc=ipc, seed=seed, device=dev, backbone=backbone, dataset=key)
    knobs = {"target": target, "distance": distance, "embedder": embedder, "sampling": sampling}
    method = replace(p.method, **{k: v for k, v in knobs.items() if v is not None}).resolved().validate()
    method = _run_settings_win(method, overrides)
    config = _override(p.distill, iterations=iterations, **overrides)
    with timer.phase("load data"):
        data = _dataset(dataset, data_root, stream)
        data, group_record = apply_group_options(
            data, groups=groups, noise=group_label_noise, fraction=group_label_fraction, seed=seed, device=dev
        )
    identity = distill_identity(method.backbone, data, config, [method])
    backbone_impl = get_backbone(method.backbone)
    if rt.world_size > 1 and not backbone_impl.shards_classes:
        raise FairDistillError(
            f"backbone {method.backbone!r} cannot yet be sharded across processes; run it in one process "
            "(without torchrun) or use --backbone dm"
        )
    ckpt = _Checkpoints(out, identity, checkpoint_every, resume, dev)
    start = time.perf_counter()
    cb = ckpt.callback(progress)
    with ckpt.guard():  # an error (NaN images...) says where the last good checkpoint is
        sets = backbone_impl.distill(data, [method], config, device=dev, callback=cb, resume=ckpt.state)
    synset = sets[method.name]
    ckpt.check_final(synset, method.name)
    synset.meta["preset"] = p.name
    if group_record is not None:
        synset.meta["group_labels"] = group_record
    seconds = time.perf_counter() - start
    timer.add("distill", seconds)
    synset.meta["seconds"] = seconds
    if out is not None and rt.is_main:  # every process holds the whole set; one writes it
        resolved = {
            "command": "distill",
            "preset": p.name,
            **identity,
            "seed": seed,
            "group_options": _group_options(groups, group_label_noise, group_label_fraction),
        }
        record = {"command": "distill", "preset": p.name, "seconds": seconds, **ckpt.record()}
        with final_files(out) as stage:  # the set, grid and record move into place as one unit
            _write_method(stage, synset, data, record, timer=timer, resolved=resolved, device=dev)
    return synset


def _names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def distill_identity(
    backbone: str, data: FairDataset, config: DistillConfig, methods: Sequence[MethodSpec]
) -> dict[str, Any]:
    """What determines a distillation's result (besides the device): a checkpoint must match it to be resumed."""
    return {
        "backbone": backbone,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint(),
        "methods": [m.resolved().to_dict() for m in methods],
        "distill_config": config.to_dict(),
    }


def _group_options(groups: str | None, noise: float | None, fraction: float | None) -> dict[str, Any]:
    return {"groups": groups, "group_label_noise": noise, "group_label_fraction": fraction}


def _check_resume_options(out: str | Path | None, checkpoint_every: int, resume: bool) -> None:
    if checkpoint_every < 0:
        raise FairDistillError(f"checkpoint_every must be >= 0 (0: no checkpoints), got {checkpoint_every}")
    if out is None and (checkpoint_every or resume):
        raise FairDistillError("checkpoints and --resume need an output folder (--out)")


class _Checkpoints:
    """Saving distillation checkpoints every N iterations into ``out/checkpoint/``, and loading one to resume.

    Also the guard of a run's last good state: a checkpoint is never written from NaN / inf images
    (:func:`~fairdistill.checkpoint.save_checkpoint` refuses them), and an error during the
    distillation, or non-finite final images, is reported with where the last good checkpoint is.
    """

    def __init__(
        self, out: str | Path | None, identity: dict[str, Any], every: int, resume: bool, device: torch.device
    ) -> None:
        self.path = None if out is None else checkpoint_dir(out) / DISTILL_FILE
        self.identity, self.every, self.device = identity, every, device
        self.state: DistillState | None = None
        self.saved = 0
        #: the iteration of the last checkpoint this run wrote or resumed from (None: none)
        self.last_good: int | None = None
        self.main = runtime.current().is_main  # in a multi-process run, rank 0 writes the checkpoints
        if self.path is None:
            return
        if self.main:
            remove_stale_temporaries(self.path.parent)  # left behind by a run killed while writing
            finish_interrupted_writes(Path(out), writer=True)  # a killed final write: finish it or drop it
        if resume:
            self.state, _ = load_checkpoint(self.path, identity)
            self.last_good = self.state.done
            log.info("resuming %s at iteration %d", self.path, self.state.done)
        elif every and self.path.is_file():
            log.warning("%s exists and will be overwritten (pass --resume to continue it instead)", self.path)

    def callback(self, progress: Progress | None) -> IterationCallback | None:
        if progress is None and not self.every:
            return None

        def hook(st: IterationState) -> None:
            if progress is not None:
                progress("distill", st.done, st.total)
            if self.every and self.path is not None and st.snapshot is not None:
                if st.done % self.every == 0 or st.done == st.total:
                    state = st.snapshot()  # collective: every process gathers, rank 0 writes
                    if self.main:  # refuses a non-finite state: the last good checkpoint stays
                        save_checkpoint(self.path, state, self.identity, total=st.total, device=str(self.device))
                    self.saved += 1
                    self.last_good = st.done

        return hook

    def note(self) -> str:
        """Where the last good state is, for an error message ("" when this run has none)."""
        if self.path is None or self.last_good is None:
            return ""
        return f"; the last good checkpoint (iteration {self.last_good}) is kept at {self.path}"

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Add :meth:`note` to a FairDistillError raised inside (NaN images, a refused checkpoint...)."""
        try:
            yield
        except CheckpointError as err:  # the saved state itself does not fit: it is not a good checkpoint
            raise CheckpointError(f"{err}; delete it and rerun without --resume to start over") from None
        except FairDistillError as err:
            note = self.note()
            if not note:
                raise
            raise FairDistillError(f"{err}{note}") from err

    def check_final(self, synset: SyntheticSet, name: str) -> None:
        """Refuse to make final files of non-finite images (the checkpoint, if any, is left as it is)."""
        if not bool(torch.isfinite(synset.images).all()):
            raise FairDistillError(
                f"{name}: the final synthetic images hold NaN or infinite values, so no set is written"
                f"{self.note()}; lower the image learning rate"
            )

    def record(self) -> dict[str, Any]:
        """What the run record says about checkpoints."""
        return {
            "resumed_from_iteration": None if self.state is None else self.state.done,
            "checkpoint": None if self.path is None or not self.every else {"path": self.path, "every": self.every},
        }


def _run_settings_win(spec: MethodSpec, given: dict[str, Any]) -> MethodSpec:
    """``spec`` without its own value of the settings the caller set for the whole run (those win)."""
    given = {k for k, v in given.items() if v is not None}
    if not given & set(spec.settings):
        return spec
    return replace(spec, settings={k: v for k, v in spec.settings.items() if k not in given})


def _override(config: Any, **values: Any) -> Any:
    values = {k: v for k, v in values.items() if v is not None}
    known = set(config.__dataclass_fields__)
    for key in values:
        if key not in known:
            raise unknown_name("setting", key, known)
    return replace(config, **values).validate()


def _write_method(
    folder: Path,
    synset: SyntheticSet,
    data: FairDataset,
    record: dict[str, Any],
    *,
    timer: PhaseTimer | None = None,
    resolved: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> None:
    start = time.perf_counter()
    save_synthetic(synset, folder)
    save_grid(synset.to_pixels(), folder / "grid.png", per_row=synset.ipc)
    if timer is not None:
        timer.add("write", time.perf_counter() - start)
    if resolved is not None:
        record = {**record, **run_record(resolved, timer.seconds if timer is not None else {})}
    write_json(folder / "record.json", {**record, "synthetic": synset.meta, "environment": environment(device)})


# ---- evaluate ----------------------------------------------------------------------------------
def evaluate(
    synthetic: str | Path | SyntheticSet,
    *,
    dataset: str | FairDataset | None = None,
    data_root: str | Path | None = None,
    preset: str | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    empty_cells: str | None = None,
    device: str | torch.device | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    eval_models: Sequence[str] | None = None,
    resume: bool = False,
    eval_workers: int = 1,
    eval_executor: str = "local",
) -> EvalResult:
    """Train fresh networks on a synthetic set and report ACC / DEO_M / DEO_A / ... on the real test set.

    The dataset defaults to the one the set was distilled from; the evaluation settings to the
    profile of ``preset`` (or of the device). With ``out``, the result is written there as JSON, and
    each finished model's row goes to ``<out stem>.partial.json`` as it finishes; ``resume=True``
    skips the models listed there (refused if they were evaluated with other settings).
    ``eval_models`` (e.g. ``["convnet", "alexnet", "vgg11", "resnet18"]``) trains ``num_models``
    networks of each architecture: ``result.by_model`` holds each one's result, the top level
    is the first one's (see :func:`fairdistill.evaluate.evaluate_images`).

    ``eval_workers`` > 1 trains the models in that many worker processes (``eval_executor``:
    ``local`` or ``ray``), each with its share of the torch threads; see
    :func:`fairdistill.evaluate.evaluation_executor` for what that means for the numbers.
    """
    # the arguments first, before the set or the dataset is loaded
    check_run_values(seed=seed, counts={"num_models": num_models, "epochs": epochs}, eval_workers=eval_workers)
    if out is not None:
        out = check_out_file(out, siblings=lambda p: [partial_path(p).name], example="eval.json")
    timer = PhaseTimer()
    dev = resolve_device(device)
    _check_resume_options(out, 0, resume)
    _check_eval_workers(eval_workers, eval_executor)
    with timer.phase("load data"):  # a saved set or one made here: checked alike (artifacts.check_synthetic)
        synset = check_synthetic(synthetic) if isinstance(synthetic, SyntheticSet) else load_synthetic(synthetic)
        name = dataset if dataset is not None else synset.meta.get("dataset")
        if name is None:
            raise FairDistillError("the synthetic set does not say which dataset it came from; pass --dataset")
        data = _dataset(name, data_root)
    if synset.images.shape[1:] != data.train.images.shape[1:]:
        raise FairDistillError(
            f"synthetic images {tuple(synset.images.shape[1:])} do not match {data.name} images "
            f"{tuple(data.train.images.shape[1:])}"
        )
    profile = resolve_preset(preset, device=dev).profile if preset else default_profile(dev)
    backbone = synset.meta.get("method", {}).get("backbone", DEFAULT_BACKBONE)
    _, ecfg = profile_configs(profile, synset.ipc, seed, backbone)
    ecfg = _override(
        ecfg, num_models=num_models, epochs=epochs, empty_cells=empty_cells, eval_models=_names(eval_models)
    )
    cb = (lambda d, t: progress("evaluate", d, t)) if progress else None
    identity = _eval_identity("synthetic", synset.images, synset.labels, data, ecfg, ecfg.epochs)
    sweep = None
    if out is not None:
        sweep = EvalSweep(partial_path(out), identity)
        remove_stale_temporaries(sweep.path.parent, [sweep.path.name, Path(out).name])
    done = sweep.load() if sweep is not None and resume else None
    start = time.perf_counter()
    with evaluation_executor(data, eval_workers, eval_executor) or nullcontext() as pool:
        result = evaluate_images(
            synset.images,
            synset.labels,
            data,
            ecfg,
            device=dev,
            callback=cb,
            done=done,
            on_model=sweep.add if sweep is not None else None,
            executor=pool,
        )
    timer.add("evaluate", result.seconds if pool is None else time.perf_counter() - start)
    if out is not None:
        resolved = {
            "command": "evaluate",
            "profile": profile,
            **{k: v for k, v in identity.items() if k != "set"},
            "synthetic": {
                "method": synset.meta.get("method"),
                "distill_config": synset.meta.get("config"),
                "dataset_fingerprint": synset.meta.get("dataset_fingerprint"),
            },
        }
        write_json(
            out,
            {
                "command": "evaluate",
                "dataset": data.name,
                "profile": profile,
                "eval_config": ecfg.to_dict(),
                "synthetic": synset.meta,
                **result.to_dict(),
                **run_record(resolved, timer.seconds),
                "rows": model_rows(result, ecfg),
                "aggregates": result.aggregate(),
                "resumed_models": sorted(done) if done else [],
                **_workers_record(pool),
                "environment": environment(dev),
            },
        )
    return result


def _check_eval_workers(workers: int, kind: str) -> None:
    check_workers(workers)
    EXECUTORS.get(kind).check_available()  # e.g. ray missing: say so before any work


def _workers_record(pool: Executor | None) -> dict[str, Any]:
    """How evaluation models were spread over workers (nothing when they were trained here, one by one)."""
    if pool is None:
        return {}
    return {"eval_workers": {"workers": pool.workers, "executor": pool.kind, "threads_per_worker": pool.threads}}


def partial_path(out: str | Path) -> Path:
    """Where ``evaluate --out FILE`` keeps the rows of finished models: ``FILE``'s stem + ``.partial.json``."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix == ".json" else out.name) + ".partial.json")


def _eval_identity(
    name: str, x: torch.Tensor, y: torch.Tensor, data: FairDataset, ecfg: EvalConfig, epochs: int
) -> dict[str, Any]:
    """What determines an evaluation sweep's rows: the training set, the settings, the dataset."""
    return {
        "set": name,
        "train_set_sha256": tensor_hash(x, y),
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint(),
        "eval_config": ecfg.to_dict(),
        "epochs": epochs,
    }


# ---- compare -----------------------------------------------------------------------------------
@dataclass
class CompareResult:
    dataset: str
    profile: str
    results: dict[str, EvalResult]
    synthetic: dict[str, SyntheticSet]
    summary: dict[str, Any] = field(default_factory=dict)
    #: the HTML report written beside the results (None: not written)
    report: Path | None = None
    #: why the report was not written although asked for (e.g. matplotlib is missing)
    report_skipped: str | None = None


def compare(
    dataset: str | FairDataset = "cmnist-fg-mini",
    *,
    methods: Sequence[str] = ("vanilla", "fairdd", "cobra", "fair"),
    baselines: Sequence[str] = ("random", "random-balanced", "full"),
    preset: str | None = None,
    backbone: str = "dm",
    ipc: int = 10,
    iterations: int | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    data_root: str | Path | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
    group_label_fraction: float | None = None,
    group_label_noise: float | None = None,
    groups: str | None = None,
    eval_models: Sequence[str] | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    report: bool = True,
    eval_workers: int = 1,
    eval_executor: str = "local",
    stream: bool | None = None,
    scale: str | None = None,
    **overrides: Any,
) -> CompareResult:
    """Distil ``methods`` in lockstep and evaluate them beside the ``baselines``, all at ``ipc``.

    ``methods`` are recipe names, each taken in ``backbone``'s form (for ``dc``, ``cobra`` is the
    barycenter target with the layer-wise cosine gradient distance; see :mod:`fairdistill.presets`).
    ``preset`` names the compute profile (``cpu`` or ``gpu``; default: by device), whose settings
    for ``backbone`` are used. With ``out``, writes ``summary.json`` and, per method, its synthetic
    set, record and image grid. ``overrides`` set single :class:`DistillConfig` fields (``lr_img``,
    ``outer_loop``...) for every method alike.

    ``groups``, ``group_label_noise`` and ``group_label_fraction`` transform the training groups as in
    :func:`distill`, once, for every method and baseline: ``random-balanced`` balances over the
    transformed training groups (pseudo-groups, noisy labels, the labelled images), as a user without
    the true groups would; ``random`` and ``full`` do not use groups. Evaluation always uses the
    true test groups. ``summary["group_labels"]`` records what was done (``None``: the true groups).

    ``eval_models`` evaluates every set on several architectures (``num_models`` networks each):
    ``summary["methods"][name]`` then holds the first architecture's numbers at its top level and
    ``["by_model"][arch]`` each architecture's.

    Resuming (needs ``out``): ``checkpoint_every`` saves the lockstep distillation to
    ``out/checkpoint/distill.safetensors`` as in :func:`distill`, and every finished evaluation model
    goes to ``out/checkpoint/eval-<name>.json``; ``resume=True`` continues the distillation from its
    checkpoint and skips the evaluation models already done, with the results of an uninterrupted run.

    ``summary["data"]`` holds the class and group names and the (class x group) count tables.

    With ``out`` and ``report`` (the default), :func:`fairdistill.report.report` also writes
    ``report.html`` and ``report.md`` there; without matplotlib that step is skipped (logged, and
    the reason kept in ``result.report_skipped``).

    ``eval_workers`` > 1 trains the evaluation models of all methods and baselines side by side in
    that many worker processes (``eval_executor``: ``local`` or ``ray``); see :func:`evaluate`.
    ``stream`` as in :func:`distill`.

    ``preset`` may be a paper profile (``cobra-paper``, ``fairdd-paper``): every method then runs as
    that paper's scripts ran it. ``scale="cpu"`` cuts the profile's sizes to two CPU cores
    (:func:`fairdistill.profiles.cpu_scale`); the cuts are listed in ``summary["scale"]``.
    """
    # the arguments first, before any loading or training
    methods, baselines = list(methods), list(baselines)
    if not methods and not baselines:
        raise FairDistillError("nothing to run: no method and no baseline given (--methods, --baselines)")
    check_run_values(
        seed=seed,
        ipc=ipc,
        counts={"iterations": iterations, "num_models": num_models, "epochs": epochs},
        shares={"group_label_fraction": group_label_fraction, "group_label_noise": group_label_noise},
        eval_workers=eval_workers,
    )
    out = None if out is None else check_out_dir(out, writes=COMPARE_WRITES)
    timer = PhaseTimer()
    if runtime.current().world_size > 1:
        raise FairDistillError("compare runs in one process; under torchrun only distill is sharded across processes")
    dev = resolve_device(device)
    parse_groups(groups)  # a bad spelling fails before any work
    _check_resume_options(out, checkpoint_every, resume)
    _check_eval_workers(eval_workers, eval_executor)
    profile = preset or default_profile(dev)
    PROFILES.get(profile)
    if scale not in SCALES:
        raise unknown_name("scale", str(scale), [s for s in SCALES if s])
    # the backbone's form of each recipe, with the profile's knobs (a paper profile: as its scripts ran it)
    specs = [get_method(m, backbone, profile, ipc).validate() for m in methods]
    for b in baselines:
        BASELINES.get(b)
    if len(set(methods) | set(baselines)) != len(methods) + len(baselines):
        raise FairDistillError("method and baseline names must be unique")
    key = dataset if isinstance(dataset, str) else dataset.name
    dcfg, ecfg = profile_configs(profile, ipc, seed, backbone, key)
    cuts: list[str] = []
    if scale == "cpu":
        dcfg, ecfg, cuts = cpu_scale(dcfg, ecfg, backbone)
    dcfg = _override(dcfg, iterations=iterations, **overrides)
    specs = [_run_settings_win(s, overrides) for s in specs]
    ecfg = _override(ecfg, num_models=num_models, epochs=epochs, eval_models=_names(eval_models))
    with timer.phase("load data"):
        data = _dataset(dataset, data_root, stream)
    data_record = _data_record(data)  # the true groups, before any transform of the training labels
    start = time.perf_counter()
    data, group_record = apply_group_options(
        data, groups=groups, noise=group_label_noise, fraction=group_label_fraction, seed=seed, device=dev
    )
    timings: dict[str, float] = {}
    if group_record is not None:
        timings["group labels"] = time.perf_counter() - start
    if resume and out is not None and not checkpoint_dir(out).is_dir():
        raise FairDistillError(f"nothing to resume: {checkpoint_dir(out)} does not exist (run without --resume)")
    identity = distill_identity(backbone, data, dcfg, specs)

    synthetic: dict[str, SyntheticSet] = {}
    ckpt = _Checkpoints(out, identity, checkpoint_every if specs else 0, resume and bool(specs), dev)
    if specs:
        start = time.perf_counter()
        cb = ckpt.callback(progress)
        with ckpt.guard():  # an error (NaN images...) says where the last good checkpoint is
            synthetic = get_backbone(backbone).distill(data, specs, dcfg, device=dev, callback=cb, resume=ckpt.state)
        for name, s in synthetic.items():
            ckpt.check_final(s, name)
        timings["distill"] = time.perf_counter() - start
        log.info("distilled %s in %.1f s", ", ".join(synthetic), timings["distill"])
        for s in synthetic.values():
            s.meta["preset"] = preset_name(backbone, s.meta["method"]["name"], profile)
            if group_record is not None:
                s.meta["group_labels"] = group_record

    results: dict[str, EvalResult] = {}
    train_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
        name: (s.images, s.labels) for name, s in synthetic.items()
    }
    for b in baselines:
        idx = baseline_indices(b, data, ipc, seed)
        train_sets[b] = (data.train.images[idx], data.train.labels[idx])
    rows: list[dict[str, Any]] = []
    resumed: dict[str, list[int]] = {}
    jobs: dict[str, EvalJob] = {}
    for name, (x, y) in train_sets.items():
        cb = (lambda d, t, n=name: progress(f"evaluate {n}", d, t)) if progress else None
        sweep, done = None, None
        if out is not None:  # each finished model is kept, so that an interrupted sweep can resume
            ident = _eval_identity(name, x, y, data, ecfg, epochs_for(name, ecfg))
            sweep = EvalSweep(checkpoint_dir(out) / partial_name(name), ident)
            done = sweep.load(required=False) if resume else None
            resumed[name] = sorted(done or {})
        on_model = sweep.add if sweep is not None else None
        jobs[name] = EvalJob(x, y, name, epochs_for(name, ecfg), callback=cb, done=done, on_model=on_model)
    start = time.perf_counter()
    with evaluation_executor(data, eval_workers, eval_executor) or nullcontext() as pool:
        # without a pool one set after the other, with one the models of all sets side by side
        evaluated = evaluate_sets(list(jobs.values()), data, ecfg, device=dev, executor=pool)
    for name, r in zip(jobs, evaluated, strict=True):
        results[name] = r
        timings[f"evaluate {name}"] = r.seconds
        rows.extend(model_rows(r, ecfg, name))
        log.info("evaluated %s in %.1f s", name, r.seconds)
    if pool is not None:  # the per-set seconds above are worker time
        timings["evaluate (wall)"] = time.perf_counter() - start
    timer.seconds.update(timings)

    summary = {
        "dataset": data.name,
        "preset": profile,
        "scale": {"name": scale or "paper", "reductions": cuts},
        "backbone": backbone,
        "ipc": ipc,
        "seed": seed,
        "device": str(dev),
        "methods": {
            name: {
                **{k: v for k, v in r.aggregate().items()},
                "kind": "distilled" if name in synthetic else "baseline",
                **({"by_model": r.aggregates()} if r.by_model else {}),
            }
            for name, r in results.items()
        },
        "distill_config": dcfg.to_dict(),
        "eval_config": ecfg.to_dict(),
        "method_specs": {s.name: s.to_dict() for s in specs},
        "group_labels": group_record,
        "data": {**data_record, **_used_groups_record(data, group_record)},
        "seconds": timings,
        **run_record(
            {
                "command": "compare",
                "profile": profile,
                "ipc": ipc,
                "seed": seed,
                **identity,
                "baselines": list(baselines),
                "eval_config": ecfg.to_dict(),
                "group_options": _group_options(groups, group_label_noise, group_label_fraction),
            },
            timer.seconds,
        ),
        "rows": rows,
        "aggregates": {name: r.aggregate() for name, r in results.items()},
        **ckpt.record(),
        "resumed_models": resumed,
        **_workers_record(pool),
        "environment": environment(dev),
    }
    result = CompareResult(data.name, profile, results, synthetic, summary)
    if out is not None:
        write_compare(Path(out), result, data)
        log.info("wrote %s", Path(out) / "summary.json")
        if report:
            _compare_report(Path(out), result)
    return result


def _data_record(data: FairDataset) -> dict[str, Any]:
    """Class and group names and the (class x group) count tables, for the report."""
    record: dict[str, Any] = {
        "class_names": list(data.class_names),
        "group_names": list(data.group_names),
        "train_counts": data.counts("train").tolist(),
        "test_counts": data.counts("test").tolist(),
    }
    unlabelled = data.unlabelled_counts("train")
    if bool(unlabelled.any()):
        record["train_unlabelled"] = unlabelled.tolist()
    return record


def _used_groups_record(data: FairDataset, group_record: dict[str, Any] | None) -> dict[str, Any]:
    """When the training groups were transformed: the groups and counts the methods were given."""
    if group_record is None:
        return {}
    return {
        "train_group_names": list(data.group_names_of("train")),
        "train_counts_used": data.counts("train").tolist(),
        "train_unlabelled_used": data.unlabelled_counts("train").tolist(),
    }


def _compare_report(folder: Path, result: CompareResult) -> None:
    from .report import MissingDependencyError
    from .report import report as write_report

    try:
        result.report = write_report(folder).html
    except MissingDependencyError as err:
        result.report_skipped = str(err)
        log.info("no report: %s", err)


def write_compare(folder: Path, result: CompareResult, data: FairDataset) -> None:
    """``summary.json`` plus one folder per method/baseline (record.json; synthetic set and grid.png).

    All of them are one unit (:func:`~fairdistill.artifacts.final_files`): written into a temporary
    folder inside ``folder`` and moved into place together, ``summary.json`` last.
    """
    with final_files(folder) as stage:
        _write_compare_files(stage, result, data)


def _write_compare_files(folder: Path, result: CompareResult, data: FairDataset) -> None:
    start = time.perf_counter()
    for name, r in result.results.items():
        record = {
            "command": "compare",
            "name": name,
            "dataset": data.name,
            "profile": result.profile,
            "eval_config": result.summary["eval_config"],
            **r.to_dict(),
            "rows": [row for row in result.summary.get("rows", []) if row.get("set") == name],
        }
        if name in result.synthetic:
            _write_method(folder / name, result.synthetic[name], data, record)
        else:
            write_json(folder / name / "record.json", {**record, "environment": environment()})
    if "timings" in result.summary:
        result.summary["timings"]["write"] = time.perf_counter() - start
    write_json(folder / "summary.json", result.summary)


# ---- report ------------------------------------------------------------------------------------
def report(
    run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None, *, progress: Progress | None = None
) -> Report:
    """Write ``report.html`` (self-contained, offline) and ``report.md`` for one or more compare run folders.

    See :func:`fairdistill.report.report`; needs matplotlib (``pip install 'fairdistill[report]'``).
    """
    from .report import report as write_report

    return write_report(run_dirs, out, progress=progress)
