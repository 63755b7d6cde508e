"""What a run of ``distill``, ``evaluate`` or ``compare`` is to do, checked and resolved before any work.

Each command of :mod:`fairdistill.api` first turns its arguments into one frozen plan here: every
value checked, the preset and profile looked up, the method specs and configurations built with
the caller's overrides. Nothing is loaded or trained; a bad argument is refused by these functions,
in the order below, before a dataset is read. The steps of :mod:`fairdistill.api` then run the plan.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from . import runtime
from .artifacts import SyntheticSet
from .backbones import check_method
from .config import DistillConfig, EvalConfig, MethodSpec, check_run_values
from .data import FairDataset, check_dataset_options
from .data.groups import parse_groups
from .errors import FairDistillError, unknown_name
from .evaluate import BASELINES
from .executor import EXECUTORS, check_workers
from .outputs import check_out_dir, check_out_file
from .presets import (
    DEFAULT_BACKBONE,
    DEFAULT_COMPARE_METHODS,
    PROFILES,
    default_profile,
    get_method,
    profile_configs,
    recipes_for,
    resolve_preset,
)
from .profiles import cpu_scale
from .runtime import resolve_device

#: the scales of ``compare``: None or "paper", the profile as it is; "cpu", cut to two CPU cores
SCALES: tuple[str | None, ...] = (None, "paper", "cpu")

#: what an output folder of distill / compare receives (said when a name like run.safetensors is refused)
DISTILL_WRITES = "synthetic.safetensors, record.json, grid.png"
COMPARE_WRITES = "summary.json, a folder per method, report.html"


@dataclass(frozen=True)
class DataPlan:
    """The dataset a run loads and how its training group labels are transformed.

    ``groups``, ``group_label_noise`` and ``group_label_fraction`` as in :func:`fairdistill.api.distill`
    (all None: the true groups); ``stream`` as in :func:`~fairdistill.data.load_dataset`;
    ``dataset_options`` the builder's keyword options (``image_size``, ``columns``...), checked against it.
    """

    dataset: str | FairDataset
    data_root: str | Path | None = None
    stream: bool | None = None
    groups: str | None = None
    group_label_noise: float | None = None
    group_label_fraction: float | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The dataset's name, by which presets and profiles pick their per-dataset settings."""
        return self.dataset if isinstance(self.dataset, str) else self.dataset.name

    def group_options(self) -> dict[str, Any]:
        """The group options as the run records keep them."""
        return {
            "groups": self.groups,
            "group_label_noise": self.group_label_noise,
            "group_label_fraction": self.group_label_fraction,
        }


@dataclass(frozen=True)
class DistillPlan:
    """One distillation: ``method`` at ``config`` on ``data`` (``preset``: the full preset name)."""

    data: DataPlan
    preset: str
    method: MethodSpec
    config: DistillConfig
    seed: int
    device: torch.device
    out: Path | None = None
    checkpoint_every: int = 0
    resume: bool = False


@dataclass(frozen=True)
class EvaluatePlan:
    """One evaluation of a synthetic set, as far as it is known before the set is read.

    The evaluation settings depend on the set (its size and backbone): :func:`eval_settings` resolves
    them, from ``preset`` and the overrides kept here, once it is loaded. ``normalised``: whether the
    float tensors of a set from another tool are in model space (see :mod:`fairdistill.layouts`).
    """

    synthetic: str | Path | SyntheticSet
    dataset: str | FairDataset | None
    data_root: str | Path | None
    preset: str | None
    num_models: int | None
    epochs: int | None
    empty_cells: str | None
    eval_models: tuple[str, ...] | None
    seed: int
    device: torch.device
    out: Path | None = None
    resume: bool = False
    eval_workers: int = 1
    eval_executor: str = "local"
    normalised: bool | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    #: DSA's float64 arithmetic, exact to rounding (None: the profile's)
    dsa_exact: bool | None = None


@dataclass(frozen=True)
class ComparePlan:
    """A comparison: ``specs`` distilled in lockstep on ``backbone`` and every set, with the ``baselines``,
    evaluated at ``eval_config``.

    ``profile`` is the compute profile the configurations come from, ``scale`` how it was scaled and
    ``reductions`` what that cut; ``out`` None writes nothing (and so keeps no checkpoints).
    """

    data: DataPlan
    specs: tuple[MethodSpec, ...]
    baselines: tuple[str, ...]
    backbone: str
    profile: str
    distill_config: DistillConfig
    eval_config: EvalConfig
    ipc: int
    seed: int
    device: torch.device
    scale: str | None = None
    reductions: tuple[str, ...] = ()
    out: Path | None = None
    checkpoint_every: int = 0
    resume: bool = False
    report: bool = True
    eval_workers: int = 1
    eval_executor: str = "local"


def arguments(command: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The arguments by name, defaults filled in, that ``command(*args, **kwargs)`` would receive.

    A command of :mod:`fairdistill.api` hands its own to one of the ``*_plan`` functions below; so can a
    caller that wants the plan of a call without running it: ``compare_plan(arguments(compare, ...))``.
    """
    bound = inspect.signature(command).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _data_plan(args: Mapping[str, Any]) -> DataPlan:
    return DataPlan(
        args["dataset"],
        data_root=args["data_root"],
        stream=args["stream"],
        groups=args["groups"],
        group_label_noise=args["group_label_noise"],
        group_label_fraction=args["group_label_fraction"],
        dataset_options=dataset_options(args["dataset"], args["dataset_options"]),
    )


def dataset_options(dataset: str | FairDataset | None, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` (None: none) as a dict, once the dataset's builder is known to take each of them.

    A dataset given as an object takes no options (it is loaded already); ``dataset`` None (the
    set's own, in ``evaluate``) is checked when it is loaded.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise FairDistillError(f"dataset_options must be a mapping of option names to values, got {options!r}")
    options = dict(options)
    if options and isinstance(dataset, FairDataset):
        raise FairDistillError(
            f"dataset options ({', '.join(options)}) apply to a dataset loaded by name, not to a FairDataset given"
        )
    if isinstance(dataset, str):
        check_dataset_options(dataset, options)
    return options


def _shares(args: Mapping[str, Any]) -> dict[str, Any]:
    return {"group_label_fraction": args["group_label_fraction"], "group_label_noise": args["group_label_noise"]}


def distill_plan(args: Mapping[str, Any]) -> DistillPlan:
    """The plan of :func:`fairdistill.api.distill` called with ``args`` (its arguments by name)."""
    out, seed, ipc = args["out"], args["seed"], args["ipc"]
    every, resume, overrides = args["checkpoint_every"], args["resume"], args["overrides"]
    check_run_values(
        seed=seed,
        ipc=ipc,
        counts={"iterations": args["iterations"], "checkpoint_every": every},
        shares=_shares(args),
    )
    out = None if out is None else check_out_dir(out, writes=DISTILL_WRITES)
    dev = runtime.current().device(args["device"])  # under torchrun: this process's device
    parse_groups(args["groups"])  # a bad spelling fails before any work
    check_resume_options(out, every, resume)
    data = _data_plan(args)
    p = resolve_preset(args["preset"], ipc=ipc, seed=seed, device=dev, backbone=args["backbone"], dataset=data.key)
    knobs = {k: args[k] for k in ("target", "distance", "embedder", "sampling") if args[k] is not None}
    method = run_settings_win(check_method(replace(p.method, **knobs)), overrides)
    config = override(p.distill, iterations=args["iterations"], **overrides)
    return DistillPlan(data, p.name, method, config, seed, dev, out, every, resume)


def evaluate_plan(args: Mapping[str, Any]) -> EvaluatePlan:
    """The plan of :func:`fairdistill.api.evaluate` called with ``args`` (its arguments by name)."""
    out, seed, workers = args["out"], args["seed"], args["eval_workers"]
    check_run_values(
        seed=seed, counts={"num_models": args["num_models"], "epochs": args["epochs"]}, eval_workers=workers
    )
    if out is not None:
        out = check_out_file(out, siblings=lambda p: [partial_path(p).name], example="eval.json")
    dev = resolve_device(args["device"])
    check_resume_options(out, 0, args["resume"])
    check_eval_workers(workers, args["eval_executor"])
    if not (args["normalised"] is None or isinstance(args["normalised"], bool)):
        raise FairDistillError(f"normalised must be true, false or left out, got {args['normalised']!r}")
    return EvaluatePlan(
        synthetic=args["synthetic"],
        dataset=args["dataset"],
        data_root=args["data_root"],
        preset=args["preset"],
        num_models=args["num_models"],
        epochs=args["epochs"],
        empty_cells=args["empty_cells"],
        eval_models=names(args["eval_models"]),
        seed=seed,
        device=dev,
        out=out,
        resume=args["resume"],
        eval_workers=workers,
        eval_executor=args["eval_executor"],
        normalised=args["normalised"],
        dataset_options=dataset_options(args["dataset"], args["dataset_options"]),
        dsa_exact=args["dsa_exact"],
    )


def eval_settings(plan: EvaluatePlan, synset: SyntheticSet) -> tuple[str, EvalConfig]:
    """The profile and evaluation settings of ``plan`` for ``synset``: the profile's settings for the
    backbone the set was distilled with, at its images per class, with the plan's overrides."""
    profile = resolve_preset(plan.preset, device=plan.device).profile if plan.preset else default_profile(plan.device)
    backbone = synset.meta.get("method", {}).get("backbone", DEFAULT_BACKBONE)
    _, ecfg = profile_configs(profile, synset.ipc, plan.seed, backbone)
    settings = {"num_models": plan.num_models, "epochs": plan.epochs, "empty_cells": plan.empty_cells}
    return profile, override(ecfg, **settings, eval_models=plan.eval_models, dsa_exact=plan.dsa_exact)


def compare_plan(args: Mapping[str, Any]) -> ComparePlan:
    """The plan of :func:`fairdistill.api.compare` called with ``args`` (its arguments by name)."""
    methods, baselines = list(args["methods"]), list(args["baselines"])
    if not methods and not baselines:
        raise FairDistillError("nothing to run: no method and no baseline given (--methods, --baselines)")
    out, dev = _check_compare_run(args)
    profile = args["preset"] or default_profile(dev)
    PROFILES.get(profile)
    if args["scale"] not in SCALES:
        raise unknown_name("scale", str(args["scale"]), [s for s in SCALES if s])
    if tuple(methods) == DEFAULT_COMPARE_METHODS:  # the default: the backbone's forms of those it has
        methods = [m for m in methods if m in recipes_for(args["backbone"])]
    specs = _compare_specs(methods, baselines, args["backbone"], profile, args["ipc"])
    data = _data_plan(args)
    dcfg, ecfg, cuts = _compare_configs(args, profile, data.key)
    return ComparePlan(
        data=data,
        backbone=args["backbone"],
        profile=profile,
        specs=tuple(run_settings_win(s, args["overrides"]) for s in specs),
        baselines=tuple(baselines),
        distill_config=dcfg,
        eval_config=ecfg,
        ipc=args["ipc"],
        seed=args["seed"],
        device=dev,
        scale=args["scale"],
        reductions=tuple(cuts),
        out=out,
        checkpoint_every=args["checkpoint_every"],
        resume=args["resume"],
        report=args["report"],
        eval_workers=args["eval_workers"],
        eval_executor=args["eval_executor"],
    )


def _compare_specs(
    methods: Sequence[str], baselines: Sequence[str], backbone: str, profile: str, ipc: int
) -> list[MethodSpec]:
    """The backbone's form of each recipe with the profile's knobs (a paper profile: as its scripts ran it);
    the baselines checked by name, and every name used once."""
    specs = [check_method(get_method(m, backbone, profile, ipc)) for m in methods]
    for b in baselines:
        BASELINES.get(b)
    if len(set(methods) | set(baselines)) != len(methods) + len(baselines):
        raise FairDistillError("method and baseline names must be unique")
    return specs


def _compare_configs(args: Mapping[str, Any], profile: str, key: str) -> tuple[DistillConfig, EvalConfig, list[str]]:
    """The profile's settings for the backbone and dataset, scaled, with the caller's overrides; and what
    the scaling cut."""
    dcfg, ecfg = profile_configs(profile, args["ipc"], args["seed"], args["backbone"], key)
    cuts: list[str] = []
    if args["scale"] == "cpu":
        dcfg, ecfg, cuts = cpu_scale(dcfg, ecfg, args["backbone"])
    dcfg = override(dcfg, iterations=args["iterations"], **args["overrides"])
    evals = {"num_models": args["num_models"], "epochs": args["epochs"], "eval_models": names(args["eval_models"])}
    evals["dsa_exact"] = dcfg.dsa_exact  # one DSA arithmetic for the whole comparison
    return dcfg, override(ecfg, **evals), cuts


def _check_compare_run(args: Mapping[str, Any]) -> tuple[Path | None, torch.device]:
    """The numbers, the output folder, the process count, the device, the groups, the resume and worker
    options of a comparison, checked in this order; its output folder and device."""
    check_run_values(
        seed=args["seed"],
        ipc=args["ipc"],
        counts={k: args[k] for k in ("iterations", "num_models", "epochs")},
        shares=_shares(args),
        eval_workers=args["eval_workers"],
    )
    out = args["out"]
    out = None if out is None else check_out_dir(out, writes=COMPARE_WRITES)
    if runtime.current().world_size > 1:
        raise FairDistillError("compare runs in one process; under torchrun only distill is sharded across processes")
    dev = resolve_device(args["device"])
    parse_groups(args["groups"])  # a bad spelling fails before any work
    check_resume_options(out, args["checkpoint_every"], args["resume"])
    check_eval_workers(args["eval_workers"], args["eval_executor"])
    return out, dev


def names(given: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if given is None else tuple(given)


def check_resume_options(out: str | Path | None, checkpoint_every: int, resume: bool) -> None:
    if checkpoint_every < 0:
        raise FairDistillError(f"checkpoint_every must be >= 0 (0: no checkpoints), got {checkpoint_every}")
    if out is None and (checkpoint_every or resume):
        raise FairDistillError("checkpoints and --resume need an output folder (--out)")


def check_eval_workers(workers: int, kind: str) -> None:
    check_workers(workers)
    EXECUTORS.get(kind).check_available()  # e.g. ray missing: say so before any work


def run_settings_win(spec: MethodSpec, given: Mapping[str, Any]) -> MethodSpec:
    """``spec`` without its own value of the settings the caller set for the whole run (those win)."""
    given = {k for k, v in given.items() if v is not None}
    if not given & set(spec.settings):
        return spec
    return replace(spec, settings={k: v for k, v in spec.settings.items() if k not in given})


def override(config: Any, **values: Any) -> Any:
    """``config`` (a settings dataclass) with the ``values`` that are not None; an unknown name is refused."""
    values = {k: v for k, v in values.items() if v is not None}
    known = set(config.__dataclass_fields__)
    for key in values:
        if key not in known:
            raise unknown_name("setting", key, known)
    return replace(config, **values).validate()


def partial_path(out: str | Path) -> Path:
    """Where ``evaluate --out FILE`` keeps the rows of finished models: ``FILE``'s stem + ``.partial.json``."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix == ".json" else out.name) + ".partial.json")
