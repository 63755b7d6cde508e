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
Wasserstein-2 barycenter of the group feature clouds (``bary-w2``) live in :mod:`fairdistill.targets.barycenters`,
which registers them here.

Backbones whose statistic is not a feature mean (DC: a gradient) use the same targets through
:meth:`Target.sample_weights`: a weighted target becomes per-sample weights of one real loss
(SPEC section 2, fact 2), and a per-group target (``cell_weights`` is ``None``) through
:meth:`GroupSync.reduce_groups` over genuinely per-group statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from ..distances import Distance
from ..errors import FairDistillError
from ..registry import Registry

Sampling = Literal["class", "stratified"]
#: every class (the ``classes`` argument of :meth:`Target.loss` in a single process)
ALL = slice(None)
SAMPLINGS: tuple[str, ...] = ("class", "stratified")


@dataclass(frozen=True)
class GroupStats:
    """Additive real-data statistics: ``sums`` (K, G, D), ``counts`` (K, G) and population weights (K, G).

    ``population_weights`` rows sum to one over the groups present in the batch. For a plain class
    batch they are the batch's own group shares (so the population target is the batch mean, as
    published); for a stratified batch they are the dataset's shares pi(a|y), which re-weights the
    balanced batch back to the population.

    Samples without a group label (group -1, partial group labels) are in no cell: their features
    are summed per class in ``unlabelled_sums`` (K, D) and counted in ``unlabelled_counts`` (K,)
    (zeros when not given). Only the ``population`` target uses them (the class statistic is over
    every sample of the class); group targets see the labelled cells alone.
    """

    sums: Tensor
    counts: Tensor
    population_weights: Tensor
    unlabelled_sums: Tensor | None = None
    unlabelled_counts: Tensor | None = None
    # the batch's per-sample features (N, D), labels and groups (N,), kept only on request
    # (``from_features(..., keep_samples=True)``) for targets that match distributions, not means
    features: Tensor | None = None
    labels: Tensor | None = None
    groups: Tensor | None = None

    def __post_init__(self) -> None:
        k, _, d = self.sums.shape
        if self.unlabelled_sums is None:
            object.__setattr__(self, "unlabelled_sums", self.sums.new_zeros(k, d))
        if self.unlabelled_counts is None:
            object.__setattr__(self, "unlabelled_counts", self.counts.new_zeros(k))

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
        ``population_shares`` as in :meth:`from_features`; group ids in ``[-1, num_groups)``.
        """
        table = torch.bincount(_cells(labels, groups, num_groups), minlength=num_classes * (num_groups + 1))
        table = table.to(dtype).view(num_classes, num_groups + 1)
        counts, unlabelled = table[:, 1:].contiguous(), table[:, 0].contiguous()
        return cls(
            counts.new_zeros(num_classes, num_groups, 0),
            counts,
            _population_weights(counts, population_shares),
            counts.new_zeros(num_classes, 0),
            unlabelled,
        )

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
        Group ids lie in ``[-1, num_groups)``; -1 (unlabelled) is summed per class, outside the cells.
        ``keep_samples``: also keep references to ``features``, ``labels`` and ``groups`` (see
        :attr:`Target.uses_samples`).
        """
        d = features.shape[1]
        table = features.new_zeros(num_classes * (num_groups + 1), d)
        table = table.index_add_(0, _cells(labels, groups, num_groups), features).view(num_classes, num_groups + 1, d)
        stats = cls.from_counts(labels, groups, num_classes, num_groups, population_shares, dtype=features.dtype)
        samples = {"features": features, "labels": labels, "groups": groups} if keep_samples else {}
        return replace(stats, sums=table[:, 1:].contiguous(), unlabelled_sums=table[:, 0].contiguous(), **samples)

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of two batches (population weights from ``self``; samples if both keep them)."""
        samples: dict[str, Tensor | None] = {"features": None, "labels": None, "groups": None}
        if self.features is not None and other.features is not None:
            samples = {
                "features": torch.cat([self.features, other.features]),
                "labels": torch.cat([self.labels, other.labels]),
                "groups": torch.cat([self.groups, other.groups]),
            }
        return replace(
            self,
            sums=self.sums + other.sums,
            counts=self.counts + other.counts,
            unlabelled_sums=self.unlabelled_sums + other.unlabelled_sums,
            unlabelled_counts=self.unlabelled_counts + other.unlabelled_counts,
            **samples,
        )

    def all_reduced(
        self, all_reduce: Callable[[Tensor], Tensor], population_shares: Tensor | None = None
    ) -> GroupStats:
        """The statistics summed over the processes of a class-sharded run (``all_reduce``: the runtime's).

        Sums and counts add up; the population weights are recomputed from the summed counts exactly as
        :meth:`from_features` computes them (``population_shares`` as there). Per-sample features, when
        kept, stay where they were embedded. In a single process ``all_reduce`` is the identity and this
        gives back equal statistics.
        """
        sums, counts = all_reduce(self.sums.clone()), all_reduce(self.counts.clone())
        return replace(
            self,
            sums=sums,
            counts=counts,
            population_weights=_population_weights(counts, population_shares),
            unlabelled_sums=all_reduce(self.unlabelled_sums.clone()),
            unlabelled_counts=all_reduce(self.unlabelled_counts.clone()),
        )

    @property
    def present(self) -> Tensor:
        return self.counts > 0

    @property
    def means(self) -> Tensor:
        """(K, G, D) group means; zero where a group is absent."""
        return self.sums / self.counts.clamp_min(1).unsqueeze(-1)

    @property
    def unlabelled_means(self) -> Tensor:
        """(K, D) mean of each class's unlabelled samples; zero where there are none."""
        return self.unlabelled_sums / self.unlabelled_counts.clamp_min(1).unsqueeze(-1)

    @property
    def unlabelled_share(self) -> Tensor:
        """(K,) fraction of each class's samples in the batch that have no group label."""
        total = self.counts.sum(1) + self.unlabelled_counts
        return self.unlabelled_counts / total.clamp_min(1)

    @property
    def classes_present(self) -> Tensor:
        """(K,) classes with at least one group-labelled sample (what group targets can match)."""
        return self.present.any(1)

    @property
    def classes_sampled(self) -> Tensor:
        """(K,) classes with at least one sample, labelled or not (what the population target can match)."""
        return self.classes_present | (self.unlabelled_counts > 0)


def _cells(labels: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Row of every sample in a (K, G + 1) table whose column 0 holds the unlabelled (-1) samples.

    Shifting the groups by one keeps -1 out of every group cell: plain ``labels * G + groups`` would put
    an unlabelled sample of class y into the last group of class y - 1.
    """
    return labels * (num_groups + 1) + (groups + 1)


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

    def unlabelled_weights(self, stats: GroupStats) -> Tensor | None:
        """(K,) weight of the mean of each class's unlabelled samples in the target; ``None``: not used.

        Group targets leave unlabelled samples out; the population target gives them their share.
        """
        return None

    def matched_classes(self, stats: GroupStats) -> Tensor:
        """(K,) bool: the classes whose target the batch defines (group targets: a labelled sample)."""
        return stats.classes_present

    def sample_weights(self, stats: GroupStats, labels: Tensor, groups: Tensor) -> Tensor | None:
        """(N,) weights ``w(y_i, a_i) / n(y_i, a_i)`` of the batch's samples, or ``None`` if matched per group.

        Within a matched class they sum to one, and for any per-sample quantity f (features, losses, and
        so gradients, by linearity) ``sum_i w_i f_i = sum_a w(y, a) mean_{i in (y, a)} f_i``: the
        target's weighted mean of group statistics, computed without splitting the batch by group.
        An unlabelled sample (group -1) gets ``u(y_i) / n_u(y_i)`` from :meth:`unlabelled_weights`,
        or 0 when the target leaves unlabelled samples out. ``stats`` must count this very batch.
        """
        w = self.cell_weights(stats)
        if w is None:
            return None
        labelled = groups >= 0
        # look up a valid cell for every sample (-1 would index the LAST group), then mask
        per_cell = (w / stats.counts.clamp_min(1))[labels, groups.clamp_min(0)]
        u = self.unlabelled_weights(stats)
        if u is None:
            per_unlabelled = per_cell.new_zeros(())
        else:
            per_unlabelled = (u / stats.unlabelled_counts.clamp_min(1))[labels]
        return torch.where(labelled, per_cell, per_unlabelled)

    def statistic(self, stats: GroupStats) -> Tensor:
        """The (K, D) class statistic the synthetic set is pulled to."""
        w = self.cell_weights(stats)
        out = (w.unsqueeze(-1) * stats.means).sum(1)
        u = self.unlabelled_weights(stats)
        if u is not None:
            out = out + u.unsqueeze(-1) * stats.unlabelled_means
        return out

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance, classes: slice = ALL) -> Tensor:
        """Sum over the classes the real batch defines a target for (:meth:`matched_classes`) of d(target, syn).

        ``classes``: ``syn`` holds only these classes' rows (a process of a class-sharded run); the
        statistic is still solved from the statistics of every class, then the rows are picked.
        """
        per_class = distance(self.statistic(stats)[classes], syn)
        return (per_class * self.matched_classes(stats)[classes]).sum()

    def sample_loss(self, stats: GroupStats, syn_features: Tensor, classes: slice = ALL) -> Tensor:
        """Loss of the (K, ipc, D) synthetic features against ``stats`` kept with samples (``uses_samples`` targets).

        ``classes`` as in :meth:`loss`: ``syn_features`` holds these classes only.
        """
        raise FairDistillError(f"target {self.name!r} matches class statistics, not per-sample features")


TARGETS: Registry[type[Target]] = Registry("target")


@TARGETS.register("population", "size-weighted mean of group statistics (vanilla matching)")
class Population(Target):
    """The class statistic over every sample of the class.

    With unlabelled samples (group -1) in the batch, a share ``u`` of them in class y, the statistic is
    ``(1 - u) sum_a pi(a|y) m(y, a) + u m_unlabelled(y)``: for a class batch (pi = the batch's shares)
    that is the plain mean of all the class's samples. Stratified batches hold no unlabelled samples.
    """

    name = "population"
    default_sampling = "class"

    def cell_weights(self, stats: GroupStats) -> Tensor:
        return stats.population_weights * (1 - stats.unlabelled_share).unsqueeze(1)

    def unlabelled_weights(self, stats: GroupStats) -> Tensor:
        return stats.unlabelled_share

    def matched_classes(self, stats: GroupStats) -> Tensor:
        return stats.classes_sampled


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

    def loss(self, stats: GroupStats, syn: Tensor, distance: Distance, classes: slice = ALL) -> Tensor:
        per_cell = distance(stats.means[classes], syn.unsqueeze(1))  # (K, G)
        return self.reduce_groups(per_cell, stats.present[classes]).sum()


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


def resolve_sampling(target: Target, sampling: str | None) -> str:
    """The sampling a target uses: the given one (validated) or the target's default."""
    if sampling is None:
        return target.default_sampling
    if sampling not in target.samplings:
        raise FairDistillError(
            f"target {target.name!r} cannot use sampling {sampling!r}; allowed: {', '.join(target.samplings)}"
        )
    return sampling
