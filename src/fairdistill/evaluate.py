"""Judge a set of training images: train fresh networks on it, test them on the real test set.

Also the baselines every comparison reports beside the distilled sets, at the same IPC:
``random`` (a random real subset, as the data comes, so biased), ``random-balanced`` (the same
number of images from every group of a class) and ``full`` (the whole training set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from . import rng
from .augment import DSA
from .config import EvalConfig
from .data.dataset import FairDataset
from .errors import FairDistillError
from .metrics import FairnessReport, fairness_report
from .models import create_model
from .registry import Registry
from .training import SGDConfig, init_weights, label_kind, predict, soft_label_problem, train

if TYPE_CHECKING:
    from .executor import Executor

HEADLINE = ("acc", "deo_m", "deo_a", "worst_group_acc", "suff_m", "suff_a")

#: called after each evaluation model with (models done, total)
ModelCallback = Callable[[int, int], None]
#: told (model index, seed, report) of each newly trained evaluation model
ModelDone = Callable[[int, int, FairnessReport], None]


@dataclass
class EvalResult:
    """Per-model fairness reports of one training set and their mean / std (percent)."""

    reports: list[FairnessReport]
    seeds: list[int]
    seconds: float
    extra: dict = field(default_factory=dict)
    #: the architecture of ``reports`` (the headline one when several were evaluated)
    model: str = ""
    #: every architecture's own result, headline first, when several were evaluated (else empty);
    #: ``reports`` / ``seeds`` / ``aggregate()`` are then the headline's and ``seconds`` the total
    by_model: dict[str, EvalResult] = field(default_factory=dict)

    def aggregates(self) -> dict[str, dict[str, dict[str, float]]]:
        """Architecture -> :meth:`aggregate` of its models (one entry when one architecture was evaluated)."""
        if self.by_model:
            return {name: r.aggregate() for name, r in self.by_model.items()}
        return {self.model: self.aggregate()}

    def aggregate(self) -> dict[str, dict[str, float]]:
        out = {}
        for key in HEADLINE:
            vals = np.array([getattr(r, key) for r in self.reports], dtype=float)
            out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)) if len(vals) > 1 else 0.0}
        return out

    def mean_tpr(self) -> np.ndarray:
        """(G, K) TPR table averaged over models (nan where the test cell is empty)."""
        return np.mean([r.tpr for r in self.reports], axis=0)

    def to_dict(self) -> dict:
        return {
            **self.aggregate(),
            "models": [{"seed": s, **r.to_dict()} for s, r in zip(self.seeds, self.reports, strict=True)],
            "tpr_mean": self.mean_tpr(),
            "seconds": self.seconds,
            "model": self.model,
            **({"by_model": {name: r.to_dict() for name, r in self.by_model.items()}} if self.by_model else {}),
            **self.extra,
        }


def eval_seed(config: EvalConfig, arch: str, index: int) -> int:
    """Seed of evaluation model ``index`` of architecture ``arch``.

    ``config.model`` keeps the key it always had, ("eval", index), so adding architectures changes
    none of its numbers; any other architecture gets ("eval", arch, index).
    """
    if arch == config.model:
        return rng.derive_seed(config.seed, "eval", index)
    return rng.derive_seed(config.seed, "eval", arch, index)


def evaluate_images(
    images: Tensor,
    labels: Tensor,
    dataset: FairDataset,
    config: EvalConfig,
    *,
    device: torch.device,
    epochs: int | None = None,
    callback: ModelCallback | None = None,
    done: Mapping[int, FairnessReport] | None = None,
    on_model: ModelDone | None = None,
    executor: Executor | None = None,
) -> EvalResult:
    """Train ``config.num_models`` networks on (images, labels) and report fairness metrics on the test set.

    ``labels``: (N,) class indices, or (N, K) class probabilities (soft labels: the networks train with
    soft cross-entropy, :func:`fairdistill.training.supervised_loss`).

    Model ``j`` is initialised and shuffled from :func:`eval_seed`, the same for every training set,
    so methods are compared on paired models. With several architectures (``config.eval_models``),
    ``num_models`` networks of each are trained; the result's top level is the first architecture's
    and ``by_model`` holds each one's.

    Resuming an interrupted sweep: models are indexed ``a * num_models + j`` (architecture ``a`` in
    ``config.architectures()`` order); ``done`` maps indices to reports of models already evaluated,
    reused instead of retrained (each model depends on its architecture and index only, so the
    result equals an uninterrupted sweep); ``on_model`` hears of each newly trained model.

    ``executor`` (see :func:`evaluation_executor`): train the models there, in parallel, instead of
    one after the other here (:func:`evaluate_sets`).
    """
    if executor is not None:
        job = EvalJob(images, labels, epochs=epochs, callback=callback, done=done, on_model=on_model)
        return evaluate_sets([job], dataset, config, device=device, executor=executor)[0]
    config.validate()
    _check_training_set(images, labels, dataset)
    archs = config.architectures()
    total = config.num_models * len(archs)
    results: dict[str, EvalResult] = {}
    for i, arch in enumerate(archs):
        offset = i * config.num_models
        cb = None if callback is None else (lambda n, _, offset=offset: callback(offset + n, total))
        finished = {j - offset: r for j, r in (done or {}).items() if offset <= j < offset + config.num_models}
        tell = None if on_model is None else (lambda j, s, r, offset=offset: on_model(offset + j, s, r))
        results[arch] = _evaluate_architecture(
            images,
            labels,
            dataset,
            config,
            arch,
            device=device,
            epochs=epochs,
            callback=cb,
            done=finished,
            on_model=tell,
        )
    return _headline(results)


def _headline(results: dict[str, EvalResult]) -> EvalResult:
    """One set's result over architectures: the first one's alone, or it with every one's in ``by_model``."""
    head = next(iter(results.values()))
    if len(results) == 1:
        return head
    seconds = sum(r.seconds for r in results.values())
    return EvalResult(head.reports, head.seeds, seconds, model=head.model, by_model=results)


def _check_training_set(images: Tensor, labels: Tensor, dataset: FairDataset) -> None:
    if images.ndim != 4 or images.shape[1:] != dataset.train.images.shape[1:]:
        raise FairDistillError(
            f"images of shape {tuple(images.shape)} do not match the dataset's {tuple(dataset.train.images.shape[1:])}"
        )
    if label_kind(labels) == "soft":  # one row of class probabilities per image
        problem = soft_label_problem(labels, dataset.num_classes)
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            problem = f"need one row per image (got {images.shape[0]} images and {tuple(labels.shape)})"
        if problem is not None:
            raise FairDistillError(f"soft labels: {problem}")
        labels = labels.argmax(1)
    if labels.ndim != 1 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise FairDistillError(f"need as many labels as images (got {images.shape[0]} and {tuple(labels.shape)})")
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise FairDistillError(f"labels must be integers, got {str(labels.dtype).removeprefix('torch.')}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= dataset.num_classes:
        raise FairDistillError(
            f"label {low if low < 0 else high} is out of range: {dataset.name} has {dataset.num_classes} classes"
        )
    if not torch.isfinite(images).all():
        raise FairDistillError("training images contain NaN or infinite values")


def _evaluate_architecture(
    images: Tensor,
    labels: Tensor,
    dataset: FairDataset,
    config: EvalConfig,
    arch: str,
    *,
    device: torch.device,
    epochs: int | None,
    callback: ModelCallback | None,
    done: Mapping[int, FairnessReport],
    on_model: ModelDone | None,
) -> EvalResult:
    start = time.perf_counter()
    x, y = images.detach().to(device), labels.to(device)
    test = TestSet.of(dataset)
    test_x = test.images.to(device)
    dsa = eval_dsa(config, dataset.dsa_strategy)
    reports, seeds = [], []
    for j in range(config.num_models):
        seed = eval_seed(config, arch, j)
        if j in done:  # finished before an interruption
            reports.append(done[j])
            seeds.append(seed)
            if callback is not None:
                callback(j + 1, config.num_models)
            continue
        reports.append(_train_and_test(x, y, test, test_x, config, arch, seed, epochs or config.epochs, device, dsa))
        seeds.append(seed)
        if on_model is not None:
            on_model(j, seed, reports[-1])
        if callback is not None:
            callback(j + 1, config.num_models)
    return EvalResult(reports, seeds, time.perf_counter() - start, model=arch)


def eval_dsa(config: EvalConfig, dataset_strategy: str) -> DSA | None:
    """The augmentation evaluation networks train with: the config's strategy (else the dataset's) and mode."""
    if not config.dsa:
        return None
    return DSA(strategy=config.dsa_strategy or dataset_strategy, mode=config.dsa_mode, exact=config.dsa_exact)


def _train_and_test(
    x: Tensor,
    y: Tensor,
    test: TestSet,
    test_x: Tensor,
    config: EvalConfig,
    arch: str,
    seed: int,
    epochs: int,
    device: torch.device,
    dsa: DSA | None,
) -> FairnessReport:
    """One evaluation model: initialised and shuffled from ``seed``, trained on (x, y), tested on ``test``."""
    sgd = SGDConfig(
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        schedule=config.schedule,
    )
    gen = torch.Generator().manual_seed(seed)
    model = create_model(
        arch,
        channels=test.channels,
        num_classes=test.num_classes,
        image_size=test.image_size,
        **config.kwargs_for(arch),
    )
    model = init_weights(model, gen).to(device)
    train(model, x, y, epochs=epochs, generator=gen, sgd=sgd, dsa=dsa)
    pred = predict(model, test_x).cpu()
    return fairness_report(
        test.labels,
        pred,
        sensitive_features=test.groups,
        n_classes=test.num_classes,
        n_groups=test.num_groups,
        empty_cells=config.empty_cells,  # type: ignore[arg-type]
        class_names=test.class_names,
        group_names=test.group_names,
    )


# ---- parallel evaluation ----------------------------------------------------------------------------
def _arrays(obj: Any) -> dict[str, Any]:
    """A dataclass's fields with tensors as numpy arrays: pickled by value, leaving the parent's tensors alone."""
    return {k: v.detach().cpu().numpy() if isinstance(v, Tensor) else v for k, v in vars(obj).items()}


def _tensors(state: dict[str, Any]) -> dict[str, Any]:
    """Back to tensors; a read-only array (Ray hands out its object store's memory read-only) is copied first."""
    return {
        k: torch.from_numpy(v if v.flags.writeable else v.copy()) if isinstance(v, np.ndarray) else v
        for k, v in state.items()
    }


@dataclass
class TestSet:
    """What an evaluation model is tested on: the real test split and the dataset's shape facts.

    Sent once to every evaluation worker (:func:`evaluation_executor`), not with every model.
    """

    images: Tensor
    labels: Tensor
    groups: Tensor
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    num_groups: int
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    dsa_strategy: str

    @classmethod
    def of(cls, dataset: FairDataset) -> TestSet:
        """``dataset``'s test split; a streamed one is decoded once, here, into a float tensor.

        Every model predicts on all of it, and workers then receive plain arrays.
        """
        return cls(
            dataset.test.in_memory().images,
            dataset.test.labels,
            dataset.test.groups,
            dataset.channels,
            dataset.image_size,
            dataset.num_classes,
            dataset.num_groups,
            tuple(dataset.class_names),
            tuple(dataset.group_names),
            dataset.dsa_strategy,
        )

    def __getstate__(self) -> dict[str, Any]:
        return _arrays(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(_tensors(state))


@dataclass
class _ModelTask:
    """One evaluation model to train in a worker (the training set travels with it)."""

    images: Tensor
    labels: Tensor
    config: EvalConfig
    arch: str
    seed: int
    epochs: int
    device: str

    def __getstate__(self) -> dict[str, Any]:
        return _arrays(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(_tensors(state))


def _run_model_task(test: TestSet, task: _ModelTask) -> tuple[FairnessReport, float]:
    """In a worker: one evaluation model's report and the seconds it took."""
    start = time.perf_counter()
    device = torch.device(task.device)
    dsa = eval_dsa(task.config, test.dsa_strategy)
    x, y = task.images.to(device), task.labels.to(device)
    test_x = test.images.to(device)
    report = _train_and_test(x, y, test, test_x, task.config, task.arch, task.seed, task.epochs, device, dsa)
    return report, time.perf_counter() - start


def evaluation_executor(dataset: FairDataset, workers: int = 1, kind: str = "local") -> Executor | None:
    """Where to train evaluation models: ``None`` (here, one after the other) for one local worker,
    else an :class:`~fairdistill.executor.Executor` of ``kind`` holding ``dataset``'s test set.

    Each of the ``workers`` gets an equal share of this process's torch threads (at least one).
    On CPU, a model's numbers depend on the thread count it was trained with (last bits; see
    :mod:`fairdistill.executor`), so parallel results equal a sequential run whose thread count is
    the workers' share: with 2 threads and 2 workers, a sequential run at ``torch.set_num_threads(1)``.
    Use it as a context manager (``with``), or call ``shutdown()``.
    """
    from .executor import EXECUTORS, check_workers, create_executor

    check_workers(workers)
    EXECUTORS.get(kind)
    if workers == 1 and kind == "local":
        return None
    return create_executor(kind, workers, shared=TestSet.of(dataset))


@dataclass
class EvalJob:
    """One training set for :func:`evaluate_sets`, with the hooks of :func:`evaluate_images`."""

    images: Tensor
    labels: Tensor
    name: str = ""
    epochs: int | None = None
    callback: ModelCallback | None = None
    done: Mapping[int, FairnessReport] | None = None
    on_model: ModelDone | None = None


def evaluate_sets(
    jobs: Sequence[EvalJob],
    dataset: FairDataset,
    config: EvalConfig,
    *,
    device: torch.device,
    executor: Executor | None = None,
) -> list[EvalResult]:
    """:func:`evaluate_images` for several training sets, all their models on one ``executor``.

    Without an executor, the sets are evaluated one after the other, here. With one, every model
    not in its job's ``done`` becomes one task and the tasks of all sets run side by side; each
    result is recorded as it arrives (``on_model`` and ``callback`` are called here, in the order
    models finish) and put at its place, so the results are those of a sequential run made with the
    workers' thread count (same seeds, same order). A result's ``seconds`` is then the sum of its
    models' training times in the workers, not wall time. A failing model raises a
    :class:`FairDistillError` naming it; the tasks still running are left to the caller's shutdown.
    """
    if executor is None:
        return [
            evaluate_images(
                j.images,
                j.labels,
                dataset,
                config,
                device=device,
                epochs=j.epochs,
                callback=j.callback,
                done=j.done,
                on_model=j.on_model,
            )
            for j in jobs
        ]
    config.validate()
    for job in jobs:
        _check_training_set(job.images, job.labels, dataset)
    archs = config.architectures()
    slots: list[dict[int, tuple[FairnessReport, float]]] = [{} for _ in jobs]
    pending: dict[Future, tuple[int, int]] = {}
    for k, job in enumerate(jobs):
        pending.update(_submit_set(k, job, slots[k], config, archs, device, executor))
    _collect_models(pending, jobs, slots, config, archs)
    return [_set_result(slot, config, archs) for slot in slots]


def _submit_set(
    k: int,
    job: EvalJob,
    slot: dict[int, tuple[FairnessReport, float]],
    config: EvalConfig,
    archs: Sequence[str],
    device: torch.device,
    executor: Executor,
) -> dict[Future, tuple[int, int]]:
    """Queue the models of set ``k`` that its ``done`` lacks; the finished ones go straight into ``slot``.

    The models finished before an interruption are reported to the job's ``callback`` first, as a
    sequential run would; the returned futures map to (set, model index).
    """
    total = config.num_models * len(archs)
    done = {i: r for i, r in (job.done or {}).items() if 0 <= i < total}
    for i in sorted(done):  # finished before an interruption
        slot[i] = (done[i], 0.0)
        if job.callback is not None:
            job.callback(len(slot), total)
    images, labels = job.images.detach().cpu(), job.labels.cpu()
    futures: dict[Future, tuple[int, int]] = {}
    for i in range(total):
        if i in done:
            continue
        arch = archs[i // config.num_models]
        seed = eval_seed(config, arch, i % config.num_models)
        task = _ModelTask(images, labels, config, arch, seed, job.epochs or config.epochs, str(device))
        futures[executor.submit(_run_model_task, task)] = (k, i)
    return futures


def _collect_models(
    pending: Mapping[Future, tuple[int, int]],
    jobs: Sequence[EvalJob],
    slots: list[dict[int, tuple[FairnessReport, float]]],
    config: EvalConfig,
    archs: Sequence[str],
) -> None:
    """Record every queued model as it finishes: into its slot, then the job's ``on_model`` and ``callback``."""
    total = config.num_models * len(archs)
    for future in as_completed(pending):
        k, i = pending[future]
        job = jobs[k]
        arch, j = archs[i // config.num_models], i % config.num_models
        slots[k][i] = _task_result(future, f"evaluation model {j} of {arch}" + (f" on {job.name}" if job.name else ""))
        if job.on_model is not None:
            job.on_model(i, eval_seed(config, arch, j), slots[k][i][0])
        if job.callback is not None:
            job.callback(len(slots[k]), total)


def _set_result(
    slot: Mapping[int, tuple[FairnessReport, float]], config: EvalConfig, archs: Sequence[str]
) -> EvalResult:
    """One set's result from its models' (report, seconds), architecture by architecture, in index order."""
    per_arch = {}
    for a, arch in enumerate(archs):
        got = [slot[a * config.num_models + j] for j in range(config.num_models)]
        seeds = [eval_seed(config, arch, j) for j in range(config.num_models)]
        per_arch[arch] = EvalResult([r for r, _ in got], seeds, sum(s for _, s in got), model=arch)
    return _headline(per_arch)


def _task_result(future: Future, what: str) -> tuple[FairnessReport, float]:
    try:
        return future.result()
    except BrokenProcessPool as err:
        raise FairDistillError(f"{what}: a worker process died (killed, or out of memory?)") from err
    except Exception as err:
        cause = getattr(err, "cause", None)  # Ray wraps the task's exception (and its traceback) in a RayTaskError
        shown = cause if isinstance(cause, Exception) else err
        raise FairDistillError(f"{what} failed in a worker: {type(shown).__name__}: {shown}") from err


# ---- baselines ---------------------------------------------------------------------------------
Baseline = Callable[[FairDataset, int, int], Tensor]
BASELINES: Registry[Baseline] = Registry("baseline")


@BASELINES.register("random", "a random real subset of ipc images per class, as the data comes (biased)")
def random_subset(dataset: FairDataset, ipc: int, seed: int) -> Tensor:
    from .data.sampling import RealSampler

    sampler = RealSampler(dataset.train, dataset.num_classes, dataset.num_train_groups)
    return sampler.class_batch(ipc, rng.generator(seed, "baseline-random"))


@BASELINES.register(
    "random-balanced", "a random real subset with the same number of images from every group of a class"
)
def balanced_subset(dataset: FairDataset, ipc: int, seed: int) -> Tensor:
    """ipc images per class, spread over its groups as evenly as possible (water-filling,
    :func:`fairdistill.data.sampling.balanced_subset`; ``init="balanced"`` starts from the same images).

    The groups are the training split's as given: pseudo-groups or noisy labels when the dataset's
    group labels were transformed (:mod:`fairdistill.data.groups`). With partial group labels only
    the labelled images are balanced; a class with fewer labelled images than ``ipc`` is topped up
    with random unlabelled images of the class.
    """
    from .backbones.base import balanced_generator, check_ipc
    from .data.sampling import balanced_subset as select

    check_ipc(dataset, ipc)
    return select(dataset.train, dataset.num_classes, dataset.num_train_groups, ipc, balanced_generator(seed))


@BASELINES.register("full", "the whole training set")
def full_set(dataset: FairDataset, ipc: int, seed: int) -> Tensor:
    return torch.arange(len(dataset.train))


def list_baselines(pattern: str = "*") -> list[str]:
    return BASELINES.list(pattern)


def baseline_indices(name: str, dataset: FairDataset, ipc: int, seed: int) -> Tensor:
    """Training-set indices of the baseline ``name`` at ``ipc`` images per class."""
    return BASELINES.get(name)(dataset, ipc, seed)


def epochs_for(name: str, config: EvalConfig) -> int:
    """The full-data baseline trains for ``full_epochs``; everything else for ``epochs``."""
    return config.full_epochs if name == "full" else config.epochs


def format_mean_std(stats: dict[str, float]) -> str:
    m, s = stats["mean"], stats["std"]
    return "nan" if math.isnan(m) else f"{m:.1f} ± {s:.1f}"
