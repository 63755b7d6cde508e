"""What the synthetic statistic is matched to: group aggregation of real statistics.

Every target sees the same input, :class:`GroupStats`: per-(class, group) feature sums and counts
of a real batch (one forward pass, summed with ``index_add_``) plus the weights that turn group
means into the population mean. A target turns them into a loss against the synthetic class
statistic ``syn`` of shape (K, D) under a distance ``d``:

=================== ============================================================== ===========
target              loss for class y                                               sampling
=================== ============================================================== ===========
population          d(sum_a pi(a|y) m(y,a), s_y)          (vanilla matching)       class
group-sync          sum_a d(m(y,a), s_y)                  (FairDD)                 stratified
group-sync-mean     (1/|A|) sum_a d(m(y,a), s_y)          (FairDD, averaged)       stratified
barycenter          d((1/|A|) sum_a m(y,a), s_y)          (COBRA)                  stratified
uniform-sampling    d(pooled mean of a group-balanced batch, s_y)                  stratified
=================== ============================================================== ===========

Groups absent from a class's batch are left out of the sums (|A| counts the present ones).
Under squared L2, group-sync and barycenter have identical gradients up to the factor |A|
(SPEC section 2, fact 1); on a batch with equal counts per group, uniform-sampling and
barycenter coincide exactly (fact 5). Tests check both.

Generalised barycenters (``bary-l1``, ``bary-l2``, ``bary-linf``, ``bary-cosine``, ``bary-huber``) and the
Wasserstein-2 barycenter of the group feature clouds (``bary-w2``) live in :mod:`fairdistill.barycenters`,
which registers them here.

Backbones whose statistic is not a feature mean (DC: a gradient) use the same targets through
:meth:`Target.sample_weights`: a weighted target becomes per-sample weights of one real loss
(SPEC section 2, fact 2), and a per-group target (``cell_weights`` is ``None``) through
:meth:`GroupSync.reduce_groups` over genuinely per-group statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from .distances import Distance
from .errors import FairDistillError
from .registry import Registry

Sampling = Literal["class", "stratified"]
SAMPLINGS: tuple[str, ...] = ("class", "stratified")


@dataclass(frozen=True)
class GroupStats:
    """Additive real-data statistics: ``sums`` (K, G, D), ``counts`` (K, G) and population weights (K, G).

    ``population_weights`` rows sum to one over the groups present in the batch. For a plain class
    batch they are the batch's own group shares (so the population target is the batch mean, as
    published); for a stratified batch they are the dataset's shares pi(a|y), which re-weights the
    balanced batch back to the population.
    """

    sums: Tensor
    counts: Tensor
    population_weights: Tensor
    # the batch's per-sample features (N, D), labels and groups (N,), kept only on request
    # (``from_features(..., keep_samples=True)``) for targets that match distributions, not means
    features: Tensor | None = None
    labels: Tensor | None = None
    groups: Tensor | None = None

    @classmethod
    def from_counts(
        cls,
        labels: Tensor,
        groups: Tensor,
        num_classes: int,
        num_groups: int,
        population_shares: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GroupStats:
        """Counts and population weights of a batch, without features (``sums`` has D = 0).

        What a backbone needs to weight real *samples* instead of cells (see
        :meth:`Target.sample_weights`), e.g. gradient matching, where the statistic is a gradient.
        ``population_shares`` as in :meth:`from_features`.
        """
        cell = labels * num_groups + groups
        counts = torch.bincount(cell, minlength=num_classes * num_groups).to(dtype).view(num_classes, num_groups)
        return cls(counts.new_zeros(num_classes, num_groups, 0), counts, _population_weights(counts, population_shares))

    @classmethod
    def from_features(
        cls,
        features: Tensor,
        labels: Tensor,
        groups: Tensor,
        num_classes: int,
        num_groups: int,
        population_shares: Tensor | None = None,
        keep_samples: bool = False,
    ) -> GroupStats:
        """Sum ``features`` (N, D) per (class, group) cell in one ``index_add_``.

        ``population_shares`` (K, G): the dataset's pi(a|y); ``None`` means the batch's own shares.
        ``keep_samples``: also keep references to ``features``, ``labels`` and ``groups`` (see
        :attr:`Target.uses_samples`).
        """
        cell = labels * num_groups + groups
        d = features.shape[1]
        sums = features.new_zeros(num_classes * num_groups, d).index_add_(0, cell, features)
        stats = cls.from_counts(labels, groups, num_classes, num_groups, population_shares, dtype=features.dtype)
        samples = {"features": features, "labels": labels, "groups": groups} if keep_samples else {}
        return replace(stats, sums=sums.view(num_classes, num_groups, d), **samples)

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of two batches (population weights from ``self``; samples if both keep them)."""
        samples: dict[str, Tensor | None] = {"features": None, "labels": None, "groups": None}
        if self.features is not None and other.features is not None:
            samples = {
                "features": torch.cat([self.features, other.features]),
                "labels": torch.cat([self.labels, other.labels]),
                "groups": torch.cat([self.groups, other.groups]),
            }
        return replace(self, sums=self.sums + other.sums, counts=self.counts + other.counts, **samples)

    @property
    def present(self) -> Tensor:
        return self.counts > 0

    @property
    def means(self) -> Tensor:
        """(K, G, D) group means; zero where a group is absent."""
        return self.sums / self.counts.clamp_min(1).unsqueeze(-1)

    @property
    def classes_present(self) -> Tensor:
        return self.present.any(1)


def _population_weights(counts: Tensor, population_shares: Tensor | None) -> Tensor:
    """(K, G) weights summing to one over each class's present groups (see :class:`GroupStats`)."""
    if population_shares is None:
        w = counts
    else:
        w = population_shares.to(counts.device, counts.dtype) * (counts > 0)
    return w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


class Target:
    """Base class: a group aggregation turned into a matching loss.

    Most targets are a weighted mean of the group statistics: :meth:`cell_weights` gives the
    (K, G) weights (each class row sums to one over its present groups), and the statistic is
    ``sum_a w(y, a) m(y, a)``. Because the weights act on cells, a backbone can apply them per
    sample instead (weight ``w(y, a) / n(y, a)`` on each real sample), which is how gradient
    matching gets the barycenter of group gradients from a single backward pass.
    """

    name: str = ""
    default_sampling: Sampling = "stratified"
    samplings: tuple[str, ...] = SAMPLINGS
    #: the statistic is solved from feature vectors, not a weighted mean of group statistics, so it cannot
    #: be applied as per-sample weights (gradient matching refuses it; see ``Backbone.check_target``)
    feature_only: bool = False
    #: matched through :meth:`sample_loss` on per-sample features (real and synthetic), not on class means
    uses_samples: bool = False

    def cell_weights(self, stats: GroupStats) -> Tensor | None:
        """(K, G) weights of the group statistics in the target, or ``None`` if matched per group."""
        raise NotImplementedError

    def sample_weights(self, stats: GroupStats, labels: Tensor, groups: Tensor) -> Tensor | None:
        """(N,) weights ``w(y_i, a_i) / n(y_i, a_i)`` of the batch's samples, or ``None`` if matched per group.

        Within a class they sum to one, and for any per-sample quantity f (features, losses, and so
        gradients, by linearity) ``sum_i w_i f_i = sum_a w(y, a) mean_{i in (y, a)} f_i``: the
        target's weighted mean of group statistics, computed without splitting the batch by group.
        ``stats`` must count this very batch.
        """
        w = self.cell_weights(stats)
        if w is None:
            return None
        return (w / stats.counts.clamp_min(1))[labels, groups]

    def statistic(self, stats: GroupStats) -> Tensor:
        """The (K, D) class statistic the synthetic set is pulled to."""
        w = self.cell_weights(stats)
        return (w.unsqueeze(-1) * stats.means).sum(1)

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance) -> Tensor:
        """Sum over classes present in the real batch of d(target, syn)."""
        per_class = distance(self.statistic(stats), syn)
        return (per_class * stats.classes_present).sum()

    def sample_loss(self, stats: GroupStats, syn_features: Tensor) -> Tensor:
        """Loss of the (K, ipc, D) synthetic features against ``stats`` kept with samples (``uses_samples`` targets)."""
        raise FairDistillError(f"target {self.name!r} matches class statistics, not per-sample features")


TARGETS: Registry[type[Target]] = Registry("target")


@TARGETS.register("population", "size-weighted mean of group statistics (vanilla matching)")
class Population(Target):
    name = "population"
    default_sampling = "class"

    def cell_weights(self, stats: GroupStats) -> Tensor:
        return stats.population_weights


@TARGETS.register("barycenter", "uniform mean of the present groups' statistics (COBRA)")
class Barycenter(Target):
    name = "barycenter"

    def cell_weights(self, stats: GroupStats) -> Tensor:
        present = stats.present.to(stats.counts.dtype)
        return present / present.sum(1, keepdim=True).clamp_min(1)


@TARGETS.register("group-sync", "one distance term per group, summed (FairDD synchronized matching)")
class GroupSync(Target):
    name = "group-sync"
    reduction: Literal["sum", "mean"] = "sum"

    def cell_weights(self, stats: GroupStats) -> None:
        return None  # every group is matched on its own

    def statistic(self, stats: GroupStats) -> Tensor:
        # Not what is matched, but the point that group-sync pulls toward under squared L2.
        return Barycenter().statistic(stats)

    def reduce_groups(self, per_cell: Tensor, present: Tensor) -> Tensor:
        """(K,) per-class loss from (K, G) per-group distances: sum (or mean) over the present groups."""
        total = (per_cell * present).sum(1)
        if self.reduction == "mean":
            total = total / present.sum(1).clamp_min(1)
        return total

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance) -> Tensor:
        per_cell = distance(stats.means, syn.unsqueeze(1))  # (K, G)
        return self.reduce_groups(per_cell, stats.present).sum()


@TARGETS.register("group-sync-mean", "one distance term per group, averaged over the class's present groups")
class GroupSyncMean(GroupSync):
    # FairDD sums; the mean keeps the loss scale (and so the image learning rate) independent of |A|.
    name = "group-sync-mean"
    reduction = "mean"


@TARGETS.register("uniform-sampling", "pooled mean of a group-balanced real batch (re-balancing baseline)")
class UniformSampling(Target):
    name = "uniform-sampling"
    samplings = ("stratified",)  # by definition the batch is group-balanced

    def cell_weights(self, stats: GroupStats) -> Tensor:
        # the pooled mean weights each group by its share of the batch
        return stats.counts / stats.counts.sum(1, keepdim=True).clamp_min(1)


def get_target(name: str) -> Target:
    return TARGETS.get(name)()


def list_targets(pattern: str = "*") -> list[str]:
    return TARGETS.list(pattern)


def resolve_sampling(target: Target, sampling: str | None) -> str:
    """The sampling a target uses: the given one (validated) or the target's default."""
    if sampling is None:
        return target.default_sampling
    if sampling not in target.samplings:
        raise FairDistillError(
            f"target {target.name!r} cannot use sampling {sampling!r}; allowed: {', '.join(target.samplings)}"
        )
    return sampling


# The generalised barycenter targets register themselves on import (the module needs the classes above).
from . import barycenters as _barycenters  # noqa: E402, F401
