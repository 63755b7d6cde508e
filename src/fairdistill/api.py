"""The Python API: every CLI command is one call here.

``distill`` makes one synthetic set, ``evaluate`` judges a saved one, ``compare`` distils several
methods in lockstep and puts them beside the random-subset and full-data baselines.

Each command runs a few steps, every one a function of its own that can be called alone: the plan
(:mod:`fairdistill.plan`: the arguments checked and resolved, nothing loaded yet), the data with its
training groups transformed, the distillation, the evaluation, and writing the results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import runtime
from .artifacts import (
    SyntheticSet,
    environment,
    final_files,
    finish_interrupted_writes,
    save_grid,
    save_synthetic,
    write_json,
)
from .backbones import Backbone, IterationCallback, IterationState, get_backbone, resolve_method
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
from .data.groups import apply_group_options
from .errors import FairDistillError
from .evaluate import (
    EvalJob,
    EvalResult,
    baseline_indices,
    epochs_for,
    evaluate_images,
    evaluate_sets,
    evaluation_executor,
)
from .executor import Executor
from .experts import ExpertBuffer, ExpertConfig, train_experts
from .layouts import find_set, read_set
from .plan import (
    ComparePlan,
    DataPlan,
    DistillPlan,
    EvaluatePlan,
    compare_plan,
    distill_plan,
    eval_settings,
    evaluate_plan,
    override,
    partial_path,
)
from .presets import DEFAULT_COMPARE_METHODS, default_profile, preset_name, profile_configs
from .record import PhaseTimer, model_rows, run_record
from .runtime import resolve_device
from .training import LOSSES, label_kind

if TYPE_CHECKING:
    from .report import Report

log = logging.getLogger("fairdistill")

#: progress hook: (phase, done, total); phase is e.g. "distill" or "evaluate cobra"
Progress = Callable[[str, int, int], None]


def _dataset(
    dataset: str | FairDataset,
    data_root: str | Path | None,
    stream: bool | None = None,
    options: Mapping[str, Any] | None = None,
) -> FairDataset:
    """``dataset`` as is, or loaded by name (``stream``, ``options``: see :func:`~fairdistill.data.load_dataset`)."""
    if isinstance(dataset, FairDataset):
        return dataset
    return load_dataset(dataset, data_root=data_root, stream=stream, **(options or {}))


def load_data(plan: DataPlan) -> FairDataset:
    """The dataset of ``plan``, its groups as they are."""
    return _dataset(plan.dataset, plan.data_root, plan.stream, plan.dataset_options)


def transform_groups(
    plan: DataPlan, data: FairDataset, seed: int, device: torch.device
) -> tuple[FairDataset, dict[str, Any] | None]:
    """``data`` with the training groups transformed as ``plan`` says, and the record of what was done
    (None: nothing was, the true groups stay)."""
    return apply_group_options(
        data,
        groups=plan.groups,
        noise=plan.group_label_noise,
        fraction=plan.group_label_fraction,
        seed=seed,
        device=device,
    )


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
    dataset_options: Mapping[str, Any] | None = None,
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
    (same images, far less memory; see :func:`~fairdistill.data.load_dataset`). ``dataset_options``
    are the dataset builder's own keywords (``{"image_size": 32}``, the ``folder`` dataset's
    ``columns`` and ``splits``...), refused before any work when the builder does not take them, and
    recorded in ``record.json``.

    Resuming (needs ``out``): ``checkpoint_every=N`` saves the run's state to
    ``out/checkpoint/distill.safetensors`` every N iterations and after the last one; ``resume=True``
    continues from that checkpoint (refused if it was written with other settings) and gives the
    same synthetic set, bit for bit on the same device, as a run that was never interrupted.
    """
    plan = distill_plan(locals())  # the arguments (all that locals() holds here), checked before any work
    timer = PhaseTimer()
    with timer.phase("load data"):
        data, group_record = transform_groups(plan.data, load_data(plan.data), plan.seed, plan.device)
    done = distill_set(plan, data, group_record, progress, timer)
    if plan.out is not None and runtime.current().is_main:  # every process holds the whole set; one writes it
        write_distilled(plan, done, data, timer)
    return done.synthetic[plan.method.name]


@dataclass
class Distilled:
    """What a distillation step made: the sets by method name, and what the records say about it."""

    synthetic: dict[str, SyntheticSet]
    #: what determined the result (:func:`distill_identity`)
    identity: dict[str, Any]
    checkpoints: _Checkpoints
    #: wall time of the distillation (None: nothing was distilled)
    seconds: float | None = None


def distill_set(
    plan: DistillPlan,
    data: FairDataset,
    group_record: dict[str, Any] | None,
    progress: Progress | None,
    timer: PhaseTimer,
) -> Distilled:
    """Distil ``plan``'s method on ``data`` (its groups already transformed, as ``group_record`` says)."""
    method = plan.method
    identity = distill_identity(method.backbone, data, plan.config, [method])
    backbone = get_backbone(method.backbone)
    if runtime.current().world_size > 1 and not backbone.shards_classes:
        raise FairDistillError(
            f"backbone {method.backbone!r} {backbone.unsharded}; run it in one process (without torchrun) "
            "or use --backbone dm"
        )
    ckpt = _Checkpoints(plan.out, identity, plan.checkpoint_every, plan.resume, plan.device)
    sets, seconds = _distill_sets(backbone, data, [method], plan.config, ckpt, plan.device, progress)
    synset = sets[method.name]
    synset.meta["preset"] = plan.preset
    if group_record is not None:
        synset.meta["group_labels"] = group_record
    timer.add("distill", seconds)
    synset.meta["seconds"] = seconds
    return Distilled(sets, identity, ckpt, seconds)


def write_distilled(plan: DistillPlan, done: Distilled, data: FairDataset, timer: PhaseTimer) -> None:
    """The set, its image grid and its record into ``plan.out``, moved into place as one unit."""
    resolved = {
        "command": "distill",
        "preset": plan.preset,
        **done.identity,
        "seed": plan.seed,
        "group_options": plan.data.group_options(),
    }
    record = {
        "command": "distill",
        "preset": plan.preset,
        "dataset_options": plan.data.dataset_options,
        "seconds": done.seconds,
        **done.checkpoints.record(),
    }
    with final_files(plan.out) as stage:
        synset = done.synthetic[plan.method.name]
        _write_method(stage, synset, data, record, timer=timer, resolved=resolved, device=plan.device)


def _distill_sets(
    backbone: Backbone,
    data: FairDataset,
    specs: Sequence[MethodSpec],
    config: DistillConfig,
    ckpt: _Checkpoints,
    device: torch.device,
    progress: Progress | None,
) -> tuple[dict[str, SyntheticSet], float]:
    """``specs`` distilled in lockstep, saved to and resumed from ``ckpt``; the sets and the wall time."""
    start = time.perf_counter()
    backbone.prepare_run(data, specs, config, device=device, progress=progress)  # MTT: its experts
    cb = ckpt.callback(progress)
    with ckpt.guard():  # an error (NaN images...) says where the last good checkpoint is
        sets = backbone.distill(data, specs, config, device=device, callback=cb, resume=ckpt.state)
    for name, s in sets.items():
        ckpt.check_final(s, name)
    return sets, time.perf_counter() - start


def distill_identity(
    backbone: str, data: FairDataset, config: DistillConfig, methods: Sequence[MethodSpec]
) -> dict[str, Any]:
    """What determines a distillation's result (besides the device): a checkpoint must match it to be resumed."""
    return {
        "backbone": backbone,
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint(),
        "methods": [resolve_method(m).to_dict() for m in methods],
        "distill_config": config.to_dict(),
    }


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
    normalised: bool | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    dsa_exact: bool | None = None,
) -> EvalResult:
    """Train fresh networks on a synthetic set and report ACC / DEO_M / DEO_A / ... on the real test set.

    ``synthetic``: a set in memory, or a path in any layout of :mod:`fairdistill.layouts`: ours
    (safetensors), a DC-style ``.pt``, a DD-Ranking-style ``images.pt`` + ``labels.pt`` folder, a folder of
    ``<class>/<index>.png``. ``normalised``: whether the float tensors of a ``.pt`` layout are in model
    space (True) or pixels in [0, 1] (False), for layouts that cannot tell. Soft labels ((N, K) class
    probabilities) train with soft cross-entropy; ``result.extra["labels"]`` (``"hard"`` / ``"soft"``)
    and ``["loss"]`` say which.

    The dataset defaults to the one the set was distilled from (a set from another tool names none:
    ``dataset`` is then required); the evaluation settings to the
    profile of ``preset`` (or of the device). With ``out``, the result is written there as JSON, and
    each finished model's row goes to ``<out stem>.partial.json`` as it finishes; ``resume=True``
    skips the models listed there (refused if they were evaluated with other settings).
    ``eval_models`` (e.g. ``["convnet", "alexnet", "vgg11", "resnet18"]``) trains ``num_models``
    networks of each architecture: ``result.by_model`` holds each one's result, the top level
    is the first one's (see :func:`fairdistill.evaluate.evaluate_images`).

    ``eval_workers`` > 1 trains the models in that many worker processes (``eval_executor``:
    ``local`` or ``ray``), each with its share of the torch threads; see
    :func:`fairdistill.evaluate.evaluation_executor` for what that means for the numbers.

    ``dsa_exact=True`` trains with DSA's float64 arithmetic, exact to rounding, its DSA 2.6x slower
    (default: the profile's, the images' dtype as the reference codebases).
    """
    plan = evaluate_plan(locals())  # the arguments (all that locals() holds here), checked before any work
    timer = PhaseTimer()
    synset, data = load_evaluated(plan, timer)
    profile, ecfg = eval_settings(plan, synset)
    done = evaluate_set(plan, synset, data, ecfg, progress, timer)
    if plan.out is not None:
        write_evaluation(plan, done, synset, data, profile, timer)
    return done.result


@dataclass
class Evaluation:
    """What an evaluation step found, and what its record says about how."""

    result: EvalResult
    config: EvalConfig
    #: what determined the rows (:func:`_eval_identity`)
    identity: dict[str, Any]
    #: the indices of the models taken from an earlier, interrupted sweep
    resumed: list[int]
    #: the workers the models were trained in (None: here, one after the other)
    pool: Executor | None


def load_evaluated(plan: EvaluatePlan, timer: PhaseTimer) -> tuple[SyntheticSet, FairDataset]:
    """The set to evaluate, in any layout :mod:`fairdistill.layouts` reads, and its dataset (by default the
    one the set names; a set from another tool names none), the set checked to fit it and in its model space."""
    with timer.phase("load data"):  # a saved set, one made here or another tool's: checked alike (layouts)
        found = find_set(plan.synthetic)
        name = plan.dataset if plan.dataset is not None else found.dataset
        if name is None:
            raise found.no_dataset()
        data = _dataset(name, plan.data_root, options=plan.dataset_options)
        synset = read_set(found, data, normalised=plan.normalised)
    return synset, data


def evaluate_set(
    plan: EvaluatePlan,
    synset: SyntheticSet,
    data: FairDataset,
    ecfg: EvalConfig,
    progress: Progress | None,
    timer: PhaseTimer,
) -> Evaluation:
    """Train ``ecfg``'s networks on ``synset`` and test them on ``data``; with ``plan.out``, each finished
    model is kept beside it, and with ``plan.resume`` the models kept there are not trained again."""
    cb = (lambda d, t: progress("evaluate", d, t)) if progress else None
    identity = _eval_identity("synthetic", synset.images, synset.labels, data, ecfg, ecfg.epochs)
    sweep = None
    if plan.out is not None:
        sweep = EvalSweep(partial_path(plan.out), identity)
        remove_stale_temporaries(sweep.path.parent, [sweep.path.name, plan.out.name])
    done = sweep.load() if sweep is not None and plan.resume else None
    start = time.perf_counter()
    with evaluation_executor(data, plan.eval_workers, plan.eval_executor) or nullcontext() as pool:
        result = evaluate_images(
            synset.images,
            synset.labels,
            data,
            ecfg,
            device=plan.device,
            callback=cb,
            done=done,
            on_model=sweep.add if sweep is not None else None,
            executor=pool,
        )
    timer.add("evaluate", result.seconds if pool is None else time.perf_counter() - start)
    kind = label_kind(synset.labels)
    result.extra.update(labels=kind, loss=LOSSES[kind])  # soft labels train with soft cross-entropy
    return Evaluation(result, ecfg, identity, sorted(done) if done else [], pool)


def write_evaluation(
    plan: EvaluatePlan, done: Evaluation, synset: SyntheticSet, data: FairDataset, profile: str, timer: PhaseTimer
) -> None:
    """The result, its per-model rows and the run record, as one JSON file at ``plan.out``."""
    resolved = {
        "command": "evaluate",
        "profile": profile,
        **{k: v for k, v in done.identity.items() if k != "set"},
        "synthetic": {
            "method": synset.meta.get("method"),
            "distill_config": synset.meta.get("config"),
            "dataset_fingerprint": synset.meta.get("dataset_fingerprint"),
        },
    }
    write_json(
        plan.out,
        {
            "command": "evaluate",
            "dataset": data.name,
            "profile": profile,
            "dataset_options": plan.dataset_options,
            "eval_config": done.config.to_dict(),
            "synthetic": synset.meta,
            **done.result.to_dict(),
            **run_record(resolved, timer.seconds),
            "rows": model_rows(done.result, done.config),
            "aggregates": done.result.aggregate(),
            "resumed_models": done.resumed,
            **_workers_record(done.pool),
            "environment": environment(plan.device),
        },
    )


def _workers_record(pool: Executor | None) -> dict[str, Any]:
    """How evaluation models were spread over workers (nothing when they were trained here, one by one)."""
    if pool is None:
        return {}
    return {"eval_workers": {"workers": pool.workers, "executor": pool.kind, "threads_per_worker": pool.threads}}


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
    methods: Sequence[str] = DEFAULT_COMPARE_METHODS,
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
    dataset_options: Mapping[str, Any] | None = None,
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
    ``stream`` and ``dataset_options`` as in :func:`distill` (the options go to ``summary["dataset_options"]``).

    ``preset`` may be a paper profile (``cobra-paper``, ``fairdd-paper``): every method then runs as
    that paper's scripts ran it. ``scale="cpu"`` cuts the profile's sizes to two CPU cores
    (:func:`fairdistill.profiles.cpu_scale`); the cuts are listed in ``summary["scale"]``.
    """
    plan = compare_plan(locals())  # the arguments (all that locals() holds here), checked before any work
    timer = PhaseTimer()
    loaded = load_compare_data(plan, timer)
    distilled = distill_methods(plan, loaded, progress)
    evaluated = evaluate_compared(plan, loaded.data, distilled.synthetic, progress)
    result = compare_result(plan, loaded, distilled, evaluated, timer)
    if plan.out is not None:
        write_compared(plan, result, loaded.data)
    return result


@dataclass
class LoadedData:
    """The data of a comparison: its training groups transformed as the plan says, and the records."""

    data: FairDataset
    #: the class and group names and count tables of the true groups (:func:`_data_record`)
    record: dict[str, Any]
    #: what the group options did (None: nothing, the true groups)
    group_record: dict[str, Any] | None
    #: wall time of the group transform (None: there was none)
    seconds: float | None = None


@dataclass
class Evaluations:
    """The evaluation of every set of a comparison, by set name, and what the summary says about it."""

    results: dict[str, EvalResult] = field(default_factory=dict)
    #: one row per evaluation model (:func:`~fairdistill.record.model_rows`)
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: per set, the indices of the models taken from an earlier, interrupted sweep (only with an output folder)
    resumed: dict[str, list[int]] = field(default_factory=dict)
    #: "evaluate NAME" per set and, with workers, "evaluate (wall)"
    seconds: dict[str, float] = field(default_factory=dict)
    #: the workers the models were trained in (None: here, one after the other)
    pool: Executor | None = None


def load_compare_data(plan: ComparePlan, timer: PhaseTimer) -> LoadedData:
    """Load ``plan``'s dataset, record its true groups, then transform the training groups."""
    with timer.phase("load data"):
        data = load_data(plan.data)
    record = _data_record(data)  # the true groups, before any transform of the training labels
    start = time.perf_counter()
    data, group_record = transform_groups(plan.data, data, plan.seed, plan.device)
    return LoadedData(data, record, group_record, None if group_record is None else time.perf_counter() - start)


def distill_methods(plan: ComparePlan, loaded: LoadedData, progress: Progress | None) -> Distilled:
    """Distil every method of ``plan`` in lockstep on the loaded data (none: nothing is distilled)."""
    out, specs = plan.out, list(plan.specs)
    if plan.resume and out is not None and not checkpoint_dir(out).is_dir():
        raise FairDistillError(f"nothing to resume: {checkpoint_dir(out)} does not exist (run without --resume)")
    identity = distill_identity(plan.backbone, loaded.data, plan.distill_config, specs)
    ckpt = _Checkpoints(out, identity, plan.checkpoint_every if specs else 0, plan.resume and bool(specs), plan.device)
    if not specs:
        return Distilled({}, identity, ckpt)
    backbone = get_backbone(plan.backbone)
    sets, seconds = _distill_sets(backbone, loaded.data, specs, plan.distill_config, ckpt, plan.device, progress)
    log.info("distilled %s in %.1f s", ", ".join(sets), seconds)
    for s in sets.values():
        s.meta["preset"] = preset_name(plan.backbone, s.meta["method"]["name"], plan.profile)
        if loaded.group_record is not None:
            s.meta["group_labels"] = loaded.group_record
    return Distilled(sets, identity, ckpt, seconds)


def evaluate_compared(
    plan: ComparePlan, data: FairDataset, synthetic: dict[str, SyntheticSet], progress: Progress | None
) -> Evaluations:
    """Evaluate the distilled sets and the baselines; with workers, the models of all sets side by side."""
    jobs, resumed = _compare_jobs(plan, data, _train_sets(plan, data, synthetic), progress)
    start = time.perf_counter()
    with evaluation_executor(data, plan.eval_workers, plan.eval_executor) or nullcontext() as pool:
        # without a pool one set after the other, with one the models of all sets side by side
        evaluated = evaluate_sets(list(jobs.values()), data, plan.eval_config, device=plan.device, executor=pool)
    done = Evaluations(resumed=resumed, pool=pool)
    for name, r in zip(jobs, evaluated, strict=True):
        done.results[name] = r
        done.seconds[f"evaluate {name}"] = r.seconds
        done.rows.extend(model_rows(r, plan.eval_config, name))
        log.info("evaluated %s in %.1f s", name, r.seconds)
    if pool is not None:  # the per-set seconds above are worker time
        done.seconds["evaluate (wall)"] = time.perf_counter() - start
    return done


def _train_sets(
    plan: ComparePlan, data: FairDataset, synthetic: dict[str, SyntheticSet]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The images and labels each evaluation trains on: the distilled sets, then the baselines' subsets."""
    sets = {name: (s.images, s.labels) for name, s in synthetic.items()}
    for b in plan.baselines:
        idx = baseline_indices(b, data, plan.ipc, plan.seed)
        sets[b] = (data.train.images[idx], data.train.labels[idx])
    return sets


def _compare_jobs(
    plan: ComparePlan,
    data: FairDataset,
    train_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    progress: Progress | None,
) -> tuple[dict[str, EvalJob], dict[str, list[int]]]:
    """One evaluation job per set; with an output folder, each finished model is kept, so that an
    interrupted sweep can resume (and with ``plan.resume`` the kept ones are taken)."""
    jobs: dict[str, EvalJob] = {}
    resumed: dict[str, list[int]] = {}
    for name, (x, y) in train_sets.items():
        cb = (lambda d, t, n=name: progress(f"evaluate {n}", d, t)) if progress else None
        epochs = epochs_for(name, plan.eval_config)
        sweep, done = None, None
        if plan.out is not None:
            ident = _eval_identity(name, x, y, data, plan.eval_config, epochs)
            sweep = EvalSweep(checkpoint_dir(plan.out) / partial_name(name), ident)
            done = sweep.load(required=False) if plan.resume else None
            resumed[name] = sorted(done or {})
        on_model = sweep.add if sweep is not None else None
        jobs[name] = EvalJob(x, y, name, epochs, callback=cb, done=done, on_model=on_model)
    return jobs, resumed


def compare_result(
    plan: ComparePlan, loaded: LoadedData, distilled: Distilled, evaluated: Evaluations, timer: PhaseTimer
) -> CompareResult:
    """The comparison's result, its summary built from what each step did."""
    timings: dict[str, float] = {}
    if loaded.seconds is not None:
        timings["group labels"] = loaded.seconds
    if distilled.seconds is not None:
        timings["distill"] = distilled.seconds
    timings.update(evaluated.seconds)
    timer.seconds.update(timings)
    summary = {
        "dataset": loaded.data.name,
        "dataset_options": plan.data.dataset_options,
        "preset": plan.profile,
        "scale": {"name": plan.scale or "paper", "reductions": list(plan.reductions)},
        "backbone": plan.backbone,
        "ipc": plan.ipc,
        "seed": plan.seed,
        "device": str(plan.device),
        "methods": _method_summaries(evaluated.results, distilled.synthetic),
        "distill_config": plan.distill_config.to_dict(),
        "eval_config": plan.eval_config.to_dict(),
        "method_specs": {s.name: s.to_dict() for s in plan.specs},
        "group_labels": loaded.group_record,
        "data": {**loaded.record, **_used_groups_record(loaded.data, loaded.group_record)},
        "seconds": timings,
        **run_record(_compare_config(plan, distilled.identity), timer.seconds),
        "rows": evaluated.rows,
        "aggregates": {name: r.aggregate() for name, r in evaluated.results.items()},
        **distilled.checkpoints.record(),
        "resumed_models": evaluated.resumed,
        **_workers_record(evaluated.pool),
        "environment": environment(plan.device),
    }
    return CompareResult(loaded.data.name, plan.profile, evaluated.results, distilled.synthetic, summary)


def _method_summaries(results: dict[str, EvalResult], synthetic: dict[str, SyntheticSet]) -> dict[str, Any]:
    """Per set: its aggregate numbers, whether it was distilled, and per architecture when there were several."""
    return {
        name: {
            **{k: v for k, v in r.aggregate().items()},
            "kind": "distilled" if name in synthetic else "baseline",
            **({"by_model": r.aggregates()} if r.by_model else {}),
        }
        for name, r in results.items()
    }


def _compare_config(plan: ComparePlan, identity: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration of a comparison, as its run record keeps (and hashes) it."""
    return {
        "command": "compare",
        "profile": plan.profile,
        "ipc": plan.ipc,
        "seed": plan.seed,
        **identity,
        "baselines": list(plan.baselines),
        "eval_config": plan.eval_config.to_dict(),
        "group_options": plan.data.group_options(),
    }


def write_compared(plan: ComparePlan, result: CompareResult, data: FairDataset) -> None:
    """``result`` into ``plan.out`` (:func:`write_compare`), then, if the plan asks for it, the report."""
    out = Path(plan.out)
    write_compare(out, result, data)
    log.info("wrote %s", out / "summary.json")
    if plan.report:
        _compare_report(out, result)


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


def experts(
    dataset: str | FairDataset = "cmnist-fg-mini",
    *,
    target: str = "population",
    num_experts: int | None = None,
    epochs: int | None = None,
    out: str | Path | None = None,
    preset: str | None = None,
    seed: int = 0,
    device: str = "auto",
    data_root: str | Path | None = None,
    progress: Progress | None = None,
) -> ExpertBuffer:
    """Train (or find) the expert trajectories MTT matches: ``target`` population, barycenter or uniform-sampling.

    The settings are the MTT settings of the profile ``preset`` (default: ``gpu`` or ``cpu`` by
    device) with ``num_experts`` and ``epochs`` overridden where given; ``out``: the buffers' folder
    (default: the cache, keyed by the dataset's fingerprint and the expert settings, where
    ``--backbone mtt`` finds them). Experts already there are checked and kept.
    """
    check_run_values(seed=seed, counts={"num_experts": num_experts, "epochs": epochs})
    dev = resolve_device(device)
    data = _dataset(dataset, data_root)
    dcfg, _ = profile_configs(preset or default_profile(dev), 10, seed, "mtt")
    dcfg = override(dcfg, num_experts=num_experts, expert_train_epochs=epochs)
    hook = None if progress is None else (lambda d, t, _s: progress(f"experts {target}", d, t))
    config = ExpertConfig.from_distill(dcfg, target)
    return train_experts(data, config, folder=out, device=dev, progress=hook)
