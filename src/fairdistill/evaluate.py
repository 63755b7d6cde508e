"""Judge a set of training images: train fresh networks on it, test them on the real test set.

Also the baselines every comparison reports beside the distilled sets, at the same IPC:
``random`` (a random real subset, as the data comes, so biased), ``random-balanced`` (the same
number of images from every group of a class) and ``full`` (the whole training set).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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
from .training import SGDConfig, init_weights, predict, train

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
) -> EvalResult:
    """Train ``config.num_models`` networks on (images, labels) and report fairness metrics on the test set.

    Model ``j`` is initialised and shuffled from :func:`eval_seed`, the same for every training set,
    so methods are compared on paired models. With several architectures (``config.eval_models``),
    ``num_models`` networks of each are trained; the result's top level is the first architecture's
    and ``by_model`` holds each one's.

    Resuming an interrupted sweep: models are indexed ``a * num_models + j`` (architecture ``a`` in
    ``config.architectures()`` order); ``done`` maps indices to reports of models already evaluated,
    reused instead of retrained (each model depends on its architecture and index only, so the
    result equals an uninterrupted sweep); ``on_model`` hears of each newly trained model.
    """
    config.validate()
    if images.ndim != 4 or images.shape[1:] != dataset.train.images.shape[1:]:
        raise FairDistillError(
            f"images of shape {tuple(images.shape)} do not match the dataset's {tuple(dataset.train.images.shape[1:])}"
        )
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise FairDistillError(f"need as many labels as images (got {images.shape[0]} and {labels.shape[0]})")
    if not torch.isfinite(images).all():
        raise FairDistillError("training images contain NaN or infinite values")
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
    head = results[archs[0]]
    if len(archs) == 1:
        return head
    seconds = sum(r.seconds for r in results.values())
    return EvalResult(head.reports, head.seeds, seconds, model=head.model, by_model=results)


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
    test_x, test_y, test_a = dataset.test.images.to(device), dataset.test.labels, dataset.test.groups
    dsa = DSA(strategy=dataset.dsa_strategy) if config.dsa else None
    sgd = SGDConfig(
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, batch_size=config.batch_size
    )
    reports, seeds = [], []
    for j in range(config.num_models):
        seed = eval_seed(config, arch, j)
        if j in done:  # finished before an interruption
            reports.append(done[j])
            seeds.append(seed)
            if callback is not None:
                callback(j + 1, config.num_models)
            continue
        gen = torch.Generator().manual_seed(seed)
        model = create_model(
            arch,
            channels=dataset.channels,
            num_classes=dataset.num_classes,
            image_size=dataset.image_size,
            **config.kwargs_for(arch),
        )
        model = init_weights(model, gen).to(device)
        train(model, x, y, epochs=epochs or config.epochs, generator=gen, sgd=sgd, dsa=dsa)
        pred = predict(model, test_x).cpu()
        reports.append(
            fairness_report(
                test_y,
                pred,
                sensitive_features=test_a,
                n_classes=dataset.num_classes,
                n_groups=dataset.num_groups,
                empty_cells=config.empty_cells,  # type: ignore[arg-type]
                class_names=dataset.class_names,
                group_names=dataset.group_names,
            )
        )
        seeds.append(seed)
        if on_model is not None:
            on_model(j, seed, reports[-1])
        if callback is not None:
            callback(j + 1, config.num_models)
    return EvalResult(reports, seeds, time.perf_counter() - start, model=arch)


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
    """ipc images per class, spread over its groups as evenly as possible.

    Water-filling: every group gives the same number of images, a group with too few gives all it
    has, and what is left of ``ipc`` goes one image each to randomly chosen groups with images to spare.

    The groups are the training split's as given: pseudo-groups or noisy labels when the dataset's
    group labels were transformed (:mod:`fairdistill.data.groups`). With partial group labels only
    the labelled images are balanced; a class with fewer labelled images than ``ipc`` is topped up
    with random unlabelled images of the class.
    """
    from .backbones.base import check_ipc

    check_ipc(dataset, ipc)
    gen = rng.generator(seed, "baseline-balanced")
    counts = dataset.counts("train")
    train = dataset.train
    chosen = []
    for c in range(dataset.num_classes):  # quotas are per class
        avail = counts[c]
        # water level L: every group gives min(avail, L), the largest L that fits in ipc ...
        levels = torch.arange(int(avail.max()) + 1)
        filled = torch.minimum(avail.unsqueeze(0), levels.unsqueeze(1)).sum(1)
        level = int(levels[filled <= ipc].max())
        quota = torch.minimum(avail, torch.tensor(level))
        # ... and the remainder goes one each to random groups that still have images
        spare = (avail > level).nonzero().flatten()
        extra = spare[torch.randperm(len(spare), generator=gen)[: ipc - int(quota.sum())]]
        quota[extra] += 1
        for a in quota.nonzero().flatten().tolist():
            idx = ((train.labels == c) & (train.groups == a)).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[: int(quota[a])]])
        short = ipc - int(quota.sum())
        if short > 0:  # too few group-labelled images: the rest from the class's unlabelled ones
            idx = ((train.labels == c) & (train.groups < 0)).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[:short]])
    return torch.cat(chosen)


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
