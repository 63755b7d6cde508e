"""Distillation when the group labels of the training images are partial, noisy or missing.

Three transforms of a :class:`~fairdistill.data.dataset.FairDataset`. Each changes the group ids of
the TRAINING split only; the test split keeps its true groups, so evaluation always measures
fairness with respect to the true sensitive attribute. Each returns a new dataset (the images,
labels and the test split are shared, not copied), records what it did in
``params["group_labels"]`` (so the dataset's fingerprint changes) and keeps the dataset's name, so
``evaluate`` on a synthetic set reloads the original dataset, whose test split is the same.

Partial labels (:func:`with_partial_groups`)
    Only some training images keep their group; the others get group -1
    (:data:`~fairdistill.data.dataset.UNLABELLED`). Their class still counts: class batches draw
    them, the ``population`` target averages them with the rest of the class, the synthetic set is
    initialised from them. Group statistics (cells, pi(a|y), stratified batches, the barycenter,
    group-sync) come from the labelled images alone.

Noisy labels (:func:`with_noisy_groups`)
    A seeded share of the training group labels is replaced by a different group.

Missing labels (:func:`infer_groups`)
    The groups are replaced by per-class clusters of the features of a ConvNet briefly trained on
    the class labels: pseudo-groups ``cluster-0``, ``cluster-1``, ... Cluster ids are not aligned
    across classes and need not be: every target aggregates the cells of one class (``m(y, a)`` for
    the groups ``a`` of class ``y``, with weights pi(a|y) or 1/|A_y| within that class), stratified
    batches balance the groups within each class, and no statistic ever compares cell (y, a) with
    cell (y', a). So "cluster-0" only has to mean the same thing inside one class. The dataset then
    names the training split's groups ``train_group_names`` (and counts them in ``num_train_groups``)
    while ``group_names`` / ``num_groups`` stay the TRUE groups of the test split, which the metrics use.

:func:`apply_group_options` chains them in the order infer -> noise -> partial, as the API and the
command line do.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import rng
from ..errors import FairDistillError
from .dataset import UNLABELLED, FairDataset, FairSplit

#: the clustering methods of :func:`infer_groups`
INFER_METHODS = ("kmeans", "dbscan")
#: candidate cluster counts when ``k`` is left to the silhouette score
AUTO_K_RANGE = (2, 6)
#: at most this many points per class are scored when choosing ``k`` (a seeded subsample)
SILHOUETTE_SAMPLE = 1000
#: KMeans restarts (fixed so results depend on the seed only)
KMEANS_N_INIT = 10
#: features are reduced per class to at most this many principal components before clustering
PCA_DIMS = 32
#: DBSCAN: ``min_samples`` (the point itself included, as scikit-learn counts it) ...
DBSCAN_MIN_SAMPLES = 5
#: ... and eps = this quantile of each point's distance to its (min_samples - 1)-th nearest neighbour
DBSCAN_EPS_QUANTILE = 0.9
#: the network trained to embed the images: a batch-norm ConvNet (see :func:`embed_train`), narrower, trained briefly
INFER_MODEL = "convnet-bn"
INFER_MODEL_KWARGS: dict[str, Any] = {"width": 64}
# One epoch: a network trained briefly on biased data leans on the bias (here colour), which is what the
# clusters should separate; longer training learns the class shape and blurs it. On cmnist-fg-mini the
# adjusted Rand index of DBSCAN clusters vs "own colour / other colours" rose from 0.57 (5 epochs) to 0.67
# (benchmarks/RESULTS.md section 8).
INFER_EPOCHS = 1


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _record(dataset: FairDataset, step: dict[str, Any]) -> dict[str, Any]:
    """The dataset's params with ``step`` appended to its ``group_labels`` history."""
    history = list(dataset.params.get("group_labels", []))
    return {**dataset.params, "group_labels": [*history, step]}


def _with_train_groups(
    dataset: FairDataset, groups: Tensor, step: dict[str, Any], train_group_names: tuple[str, ...] | None = None
) -> FairDataset:
    train = FairSplit(dataset.train.images, dataset.train.labels, groups)
    names = dataset.train_group_names if train_group_names is None else train_group_names
    return replace(dataset, train=train, params=_record(dataset, step), train_group_names=names)


# ---- partial labels ----------------------------------------------------------------------------------
def _allocate(sizes: list[int], m: int, generator: torch.Generator) -> list[int]:
    """How many labels each group of one class keeps: ``m`` in all, at least one per non-empty group.

    One label to every non-empty group first, then the other ``m - G_c`` in proportion to the groups'
    remaining images (``n_g - 1``) by largest remainder (exact integer arithmetic; ties in a seeded
    random order). With ``m`` = the class size every group keeps all its images. When ``m`` is smaller
    than the number of non-empty groups, ``m`` of them, chosen at random, keep one label each.
    """
    present = [g for g, n in enumerate(sizes) if n > 0]
    alloc = [0] * len(sizes)
    tiebreak = torch.rand(len(sizes), generator=generator).tolist()
    if m < len(present):
        pick = torch.randperm(len(present), generator=generator)[:m].tolist()
        for i in pick:
            alloc[present[i]] = 1
        return alloc
    rest, room = m - len(present), sum(sizes) - len(present)
    remainders = {}
    for g in present:
        num = rest * (sizes[g] - 1)
        alloc[g] = 1 + (num // room if room else 0)
        remainders[g] = num % room if room else 0
    left = m - sum(alloc)
    for g in sorted(present, key=lambda g: (-remainders[g], tiebreak[g]))[:left]:
        alloc[g] += 1
    return alloc


def with_partial_groups(dataset: FairDataset, fraction: float, *, seed: int) -> FairDataset:
    """Keep the group label of a share ``fraction`` of each class's training images; the rest get group -1.

    Per class ``y`` with ``n_y`` group-labelled training images (all of them, for a fully labelled
    dataset), exactly ``round(fraction * n_y)`` keep their label (rounded half up, at least one). The
    selection is stratified by group (:func:`_allocate`): every group of the class that has images
    keeps at least one label whenever the class keeps at least as many labels as it has groups, and
    the other labels are spread in proportion to the group sizes, so pi(a|y) estimated from the
    labelled part (what :meth:`FairDataset.group_shares` returns) follows the true shares, except
    that the floor of one label over-represents groups of one or two images at small fractions
    (digits-fg at 0.3: 0.77 instead of 0.90 for a majority group). A class with fewer kept labels than
    groups keeps one in randomly chosen groups (with a warning naming it): its other groups are then
    invisible to the group targets. Within a group, the images that keep their label are drawn
    uniformly (seeded). A class never ends up without a labelled image (validation would refuse it).

    ``fraction = 1`` returns the dataset's groups unchanged (equal tensors). The test split is untouched.
    """
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise FairDistillError(f"group label fraction must lie in (0, 1], got {fraction}")
    gen = rng.generator(seed, "partial-groups")
    train = dataset.train
    groups = train.groups.clone()
    counts = dataset.counts("train")
    starved = []
    for c in range(dataset.num_classes):
        sizes = counts[c].tolist()
        m = max(1, _round_half_up(fraction * sum(sizes)))
        alloc = _allocate(sizes, m, gen)
        if any(n > 0 and a == 0 for n, a in zip(sizes, alloc, strict=True)):
            starved.append(dataset.class_names[c])
        for g, (n, keep) in enumerate(zip(sizes, alloc, strict=True)):
            if keep == n:
                continue
            idx = ((train.labels == c) & (train.groups == g)).nonzero().flatten()
            drop = idx[torch.randperm(n, generator=gen)[keep:]]
            groups[drop] = UNLABELLED
    if starved:
        warnings.warn(
            f"{dataset.name}: with group label fraction {fraction}, class(es) {', '.join(starved)} keep fewer "
            "labels than they have groups; some of their groups have no labelled image",
            stacklevel=2,
        )
    step = {
        "transform": "partial",
        "fraction": float(fraction),
        "seed": int(seed),
        "labelled": int((groups >= 0).sum()),
        "unlabelled": int((groups < 0).sum()),
    }
    return _with_train_groups(dataset, groups, step)


# ---- noisy labels ------------------------------------------------------------------------------------
def with_noisy_groups(dataset: FairDataset, rate: float, *, seed: int) -> FairDataset:
    """Replace the group label of a share ``rate`` of the group-labelled training images by another group.

    Exactly ``round(rate * n)`` images (rounded half up; ``n``: training images with a group label),
    chosen uniformly without replacement, get a group drawn uniformly from the ``G - 1`` OTHER groups
    of the training split; unlabelled images stay unlabelled. Seeded; the test split is untouched.
    """
    if not (isinstance(rate, int | float) and 0 <= rate <= 1):
        raise FairDistillError(f"group label noise must lie in [0, 1], got {rate}")
    g = dataset.num_train_groups
    labelled = (dataset.train.groups >= 0).nonzero().flatten()
    flips = _round_half_up(rate * len(labelled))
    if flips > 0 and g < 2:
        raise FairDistillError(f"{dataset.name}: group label noise needs at least 2 groups, the train split has {g}")
    gen = rng.generator(seed, "noisy-groups")
    chosen = labelled[torch.randperm(len(labelled), generator=gen)[:flips]]
    groups = dataset.train.groups.clone()
    # old + s (mod G) with s uniform in 1..G-1: uniform over the other groups, never the old one
    shift = torch.randint(1, max(g, 2), (flips,), generator=gen)
    groups[chosen] = (groups[chosen] + shift) % g
    step = {"transform": "noise", "rate": float(rate), "seed": int(seed), "flipped": int(flips)}
    return _with_train_groups(dataset, groups, step)


# ---- missing labels: pseudo-groups -----------------------------------------------------------------
@dataclass(frozen=True)
class GroupsSpec:
    """A parsed ``--groups`` value: ``true`` (keep the dataset's) or ``infer:METHOD[:K]``."""

    method: str | None = None  # None: the true groups
    k: int | None = None

    def __str__(self) -> str:
        if self.method is None:
            return "true"
        return f"infer:{self.method}" + (f":{self.k}" if self.k is not None else "")


_GROUPS_SYNTAX = "'true', 'infer:kmeans', 'infer:kmeans:K' (K >= 2) or 'infer:dbscan'"


def parse_groups(text: str | None) -> GroupsSpec:
    """Parse ``true``, ``infer:kmeans``, ``infer:kmeans:K`` or ``infer:dbscan`` (``None``: true groups)."""
    if text is None or text.strip() == "true":
        return GroupsSpec()
    m = re.fullmatch(r"infer:(kmeans|dbscan)(?::(\d+))?", text.strip())
    if m is None:
        raise FairDistillError(f"bad groups {text!r}; allowed: {_GROUPS_SYNTAX}")
    method, k = m.group(1), m.group(2)
    if k is not None and (method != "kmeans" or int(k) < 2):
        raise FairDistillError(f"bad groups {text!r}; allowed: {_GROUPS_SYNTAX}")
    return GroupsSpec(method, int(k) if k is not None else None)


def embed_train(
    dataset: FairDataset,
    *,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device | None = None,
    model: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """(N, D) features of the training images under a ConvNet trained ``epochs`` on their CLASS labels.

    Plain SGD (lr 0.01, momentum 0.9, weight decay 5e-4, batch 256), no augmentation: colour and
    similar cues that separate groups are what the clusters should find, so they are not augmented
    away. For the same reason the default network uses batch norm, not the DD-standard instance
    norm: instance norm rescales every feature map of every image on its own, which removes much of
    a per-image colour or brightness shift (on a red-vs-blue toy set, KMeans on instance-norm
    features found the colours with ARI 0.85-0.95, on batch-norm features with 1.0). Features are
    taken in eval mode (running statistics). Network and shuffles come from ``seed``; returned on the CPU.
    """
    from ..models import create_model
    from ..runtime import resolve_device
    from ..training import SGDConfig, init_weights, train

    epochs = INFER_EPOCHS if epochs is None else epochs
    if epochs < 0:
        raise FairDistillError(f"epochs must be >= 0, got {epochs}")
    dev = resolve_device(device)
    kwargs = {**INFER_MODEL_KWARGS, **(model_kwargs or {})}
    net = create_model(
        model or INFER_MODEL,
        channels=dataset.channels,
        num_classes=dataset.num_classes,
        image_size=dataset.image_size,
        **kwargs,
    )
    net = init_weights(net, rng.generator(seed, "infer-net")).to(dev)
    x, y = dataset.train.images.to(dev), dataset.train.labels.to(dev)
    sgd = SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, decay_at=None)
    train(net, x, y, epochs=epochs, generator=rng.generator(seed, "infer-train"), sgd=sgd)
    net.eval()
    with torch.no_grad():
        feats = [net.embed(x[i : i + 1024]).cpu() for i in range(0, x.shape[0], 1024)]
    return torch.cat(feats)


def _reduce(feats: np.ndarray, seed: int) -> np.ndarray:
    """Centre and project onto at most :data:`PCA_DIMS` principal components (fewer for small classes)."""
    from sklearn.decomposition import PCA

    dims = min(PCA_DIMS, feats.shape[0] - 1, feats.shape[1])
    if dims < 1:
        return feats - feats.mean(0)
    return PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(feats)


def _choose_k(feats: np.ndarray, seed: int) -> tuple[int, dict[int, float]]:
    """The k in :data:`AUTO_K_RANGE` with the best silhouette score on a seeded subsample."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rs = np.random.RandomState(seed % 2**32)
    sub = feats if len(feats) <= SILHOUETTE_SAMPLE else feats[rs.choice(len(feats), SILHOUETTE_SAMPLE, replace=False)]
    scores: dict[int, float] = {}
    for k in range(AUTO_K_RANGE[0], AUTO_K_RANGE[1] + 1):
        if k >= len(sub):
            break
        labels = KMeans(k, n_init=KMEANS_N_INIT, random_state=seed % 2**32).fit_predict(sub)
        if len(set(labels.tolist())) < 2:
            continue
        scores[k] = float(silhouette_score(sub, labels))
    if not scores:
        return 1, scores
    return max(scores, key=lambda k: (scores[k], -k)), scores


def dbscan_eps(
    feats: np.ndarray, min_samples: int = DBSCAN_MIN_SAMPLES, quantile: float = DBSCAN_EPS_QUANTILE
) -> float:
    """DBSCAN's radius by rule: the ``quantile`` of the distance from each point to its
    ``(min_samples - 1)``-th nearest other point.

    A point is a core point when ``min_samples`` points (itself included) lie within eps, i.e. when
    that distance is at most eps; so this rule makes about ``quantile`` of the points core points,
    whatever the scale of the features. Sparse points beyond it end up as noise or cluster borders.
    """
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min_samples).fit(feats)
    dist, _ = nn.kneighbors(feats)  # column 0 is the point itself
    eps = float(np.quantile(dist[:, -1], quantile))
    return max(eps, 1e-12)


def _cluster_dbscan(feats: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """DBSCAN with :func:`dbscan_eps`; noise points join the cluster of their nearest clustered point."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    min_samples = max(2, min(DBSCAN_MIN_SAMPLES, len(feats) - 1))
    if len(feats) < 3:
        return np.zeros(len(feats), dtype=np.int64), {"eps": None, "noise": 0}
    eps = dbscan_eps(feats, min_samples)
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(feats)
    noise = labels < 0
    if noise.all():  # no dense region: one cluster
        return np.zeros(len(feats), dtype=np.int64), {"eps": eps, "noise": int(noise.sum())}
    if noise.any():
        nn = NearestNeighbors(n_neighbors=1).fit(feats[~noise])
        _, near = nn.kneighbors(feats[noise])
        labels[noise] = labels[~noise][near[:, 0]]
    return labels.astype(np.int64), {"eps": eps, "noise": int(noise.sum())}


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster ids by decreasing size (ties: the lower old id first): cluster-0 is the class's largest."""
    ids, sizes = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -sizes))]
    remap = np.empty(ids.max() + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[labels]


def infer_groups(
    dataset: FairDataset,
    method: str = "kmeans",
    k: int | None = None,
    *,
    seed: int = 0,
    epochs: int | None = None,
    device: str | torch.device | None = None,
    model: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> FairDataset:
    """Replace the training groups by per-class clusters of learnt features (pseudo-groups).

    1. :func:`embed_train`: a network (``model``, default :data:`INFER_MODEL`, a batch-norm ConvNet,
       with :data:`INFER_MODEL_KWARGS` updated by ``model_kwargs``) is trained ``epochs`` (default
       :data:`INFER_EPOCHS`) on the class labels only, then embeds every training image.
    2. Per class: PCA to at most :data:`PCA_DIMS` dimensions, then

       * ``kmeans``: KMeans with ``k`` clusters (``n_init`` :data:`KMEANS_N_INIT`, ``random_state``
         from the seed and the class). ``k=None``: per class, the k in 2..6 with the best silhouette
         score on a seeded subsample of at most :data:`SILHOUETTE_SAMPLE` points; a class smaller
         than ``k`` gets one cluster per image at most;
       * ``dbscan``: ``min_samples`` :data:`DBSCAN_MIN_SAMPLES`, ``eps`` by :func:`dbscan_eps` (the
         :data:`DBSCAN_EPS_QUANTILE` quantile of the distances to the ``(min_samples - 1)``-th
         neighbour); noise points join the cluster of their nearest clustered point, and a class
         without any dense region is one cluster (``k`` must be ``None``).

    3. Cluster ids are renumbered per class by decreasing size; the training split's group names
       become ``cluster-0`` ... ``cluster-{K-1}`` (K: the most clusters in any class); the test split
       keeps the true groups and ``group_names`` (see the module docstring). Deterministic for a
       seed on a given device and thread count.
    """
    from sklearn.cluster import KMeans

    if method not in INFER_METHODS:
        raise FairDistillError(f"unknown clustering method {method!r}; allowed: {', '.join(INFER_METHODS)}")
    if method == "dbscan" and k is not None:
        raise FairDistillError("dbscan chooses the number of clusters itself; leave k unset")
    if k is not None and k < 1:
        raise FairDistillError(f"k must be >= 1, got {k}")
    feats = embed_train(dataset, seed=seed, epochs=epochs, device=device, model=model, model_kwargs=model_kwargs)
    feats_np = feats.double().numpy()
    labels = dataset.train.labels
    groups = torch.empty_like(labels)
    per_class: list[dict[str, Any]] = []
    for c in range(dataset.num_classes):
        idx = (labels == c).nonzero().flatten()
        x = _reduce(feats_np[idx.numpy()], rng.derive_seed(seed, "infer-pca", c) % 2**32)
        cseed = rng.derive_seed(seed, "infer-cluster", c) % 2**32
        info: dict[str, Any] = {"class": dataset.class_names[c]}
        if method == "kmeans":
            kc = k
            if kc is None:
                kc, scores = _choose_k(x, cseed)
                info["silhouette"] = {str(kk): round(v, 4) for kk, v in scores.items()}
            kc = max(1, min(kc, len(x)))
            found = KMeans(kc, n_init=KMEANS_N_INIT, random_state=cseed).fit_predict(x) if kc > 1 else np.zeros(len(x))
        else:
            found, extra = _cluster_dbscan(x)
            info.update(extra)
        found = _by_size(found.astype(np.int64))
        info["k"] = int(found.max()) + 1
        info["sizes"] = np.bincount(found).tolist()
        per_class.append(info)
        groups[idx] = torch.from_numpy(found)
    k_train = max(p["k"] for p in per_class)
    names = tuple(f"cluster-{i}" for i in range(k_train))
    step = {
        "transform": "infer",
        "method": method,
        "k": k,
        "seed": int(seed),
        "epochs": INFER_EPOCHS if epochs is None else int(epochs),
        "train_groups": k_train,
        "per_class": per_class,
    }
    return _with_train_groups(dataset, groups, step, train_group_names=names)


# ---- all of it, as the API and the CLI take it ----------------------------------------------------------
def apply_group_options(
    dataset: FairDataset,
    *,
    groups: str | None = None,
    noise: float | None = None,
    fraction: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[FairDataset, dict[str, Any] | None]:
    """Apply ``groups`` (``infer:...``), then ``noise``, then ``fraction`` to the training groups.

    Returns the dataset and a record of what was asked and done (``None`` when nothing was asked,
    and the dataset is returned as it came). Each step draws from its own generator derived from ``seed``.
    """
    spec = parse_groups(groups)
    if spec.method is None and noise is None and fraction is None:
        return dataset, None
    out = dataset
    if spec.method is not None:
        out = infer_groups(out, spec.method, spec.k, seed=seed, device=device)
    if noise is not None:
        out = with_noisy_groups(out, noise, seed=seed)
    if fraction is not None:
        out = with_partial_groups(out, fraction, seed=seed)
    record = {"groups": str(spec), "noise": noise, "fraction": fraction, "seed": seed, **group_labels_record(out)}
    return out, record


def group_labels_record(dataset: FairDataset) -> dict[str, Any]:
    """What the training groups are: their names, labelled / unlabelled counts and the transforms applied."""
    return {
        "train_group_names": list(dataset.group_names_of("train")),
        "labelled": int(dataset.counts("train").sum()),
        "unlabelled": int(dataset.unlabelled_counts("train").sum()),
        "steps": list(dataset.params.get("group_labels", [])),
    }


__all__ = [
    "GroupsSpec",
    "apply_group_options",
    "dbscan_eps",
    "embed_train",
    "group_labels_record",
    "infer_groups",
    "parse_groups",
    "with_noisy_groups",
    "with_partial_groups",
]
