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
barycenter          d((1/|A|) sum_a m(y,a), s_y)          (COBRA)                  stratified
uniform-sampling    d(pooled mean of a group-balanced batch, s_y)                  stratified
=================== ============================================================== ===========

Groups absent from a class's batch are left out of the sums (|A| counts the present ones).
Under squared L2, group-sync and barycenter have identical gradients up to the factor |A|
(SPEC section 2, fact 1); on a batch with equal counts per group, uniform-sampling and
barycenter coincide exactly (fact 5). Tests check both.
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

    @classmethod
    def from_features(
        cls,
        features: Tensor,
        labels: Tensor,
        groups: Tensor,
        num_classes: int,
        num_groups: int,
        population_shares: Tensor | None = None,
    ) -> GroupStats:
        """Sum ``features`` (N, D) per (class, group) cell in one ``index_add_``.

        ``population_shares`` (K, G): the dataset's pi(a|y); ``None`` means the batch's own shares.
        """
        cell = labels * num_groups + groups
        d = features.shape[1]
        sums = features.new_zeros(num_classes * num_groups, d).index_add_(0, cell, features)
        counts = torch.bincount(cell, minlength=num_classes * num_groups).to(features.dtype)
        sums, counts = sums.view(num_classes, num_groups, d), counts.view(num_classes, num_groups)
        present = counts > 0
        if population_shares is None:
            w = counts
        else:
            w = population_shares.to(features.device, features.dtype) * present
        w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return cls(sums, counts, w)

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of two batches (population weights from ``self``)."""
        return replace(self, sums=self.sums + other.sums, counts=self.counts + other.counts)

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

    def cell_weights(self, stats: GroupStats) -> Tensor | None:
        """(K, G) weights of the group statistics in the target, or ``None`` if matched per group."""
        raise NotImplementedError

    def statistic(self, stats: GroupStats) -> Tensor:
        """The (K, D) class statistic the synthetic set is pulled to."""
        w = self.cell_weights(stats)
        return (w.unsqueeze(-1) * stats.means).sum(1)

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance) -> Tensor:
        """Sum over classes present in the real batch of d(target, syn)."""
        per_class = distance(self.statistic(stats), syn)
        return (per_class * stats.classes_present).sum()


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

    def cell_weights(self, stats: GroupStats) -> None:
        return None  # every group is matched on its own

    def statistic(self, stats: GroupStats) -> Tensor:
        # Not what is matched, but the point that group-sync pulls toward under squared L2.
        return Barycenter().statistic(stats)

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance) -> Tensor:
        per_cell = distance(stats.means, syn.unsqueeze(1))  # (K, G)
        return (per_cell * stats.present).sum()


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
