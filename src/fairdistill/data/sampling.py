"""Drawing real batches per class: uniformly over the class, or stratified by group.

With 90% of a class in one group and the rest spread over nine, a uniform batch of 64 holds less
than one image of each minority group, so group means estimated from it are mostly noise or
missing. A *stratified* batch draws the same number from every group of the class (cycling
through a small group's shuffled images when it has fewer than asked). All draws are vectorised:
one sort of random keys per batch, no loop over cells.

Training images without a group label (group -1) belong to their class: class batches draw from
every image of the class, labelled or not; stratified batches draw from the group-labelled images
only, so an unlabelled image never appears in a stratified batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import FairDistillError
from .dataset import FairSplit


class RealSampler:
    """Index tables of a split by class and by (class, group) cell."""

    def __init__(self, split: FairSplit, num_classes: int, num_groups: int) -> None:
        self.num_classes, self.num_groups = num_classes, num_groups
        self.labels, self.groups = split.labels.cpu(), split.groups.cpu()
        # an unlabelled image gets the bucket K * G, after every real cell: it sorts last and is never drawn
        # by a stratified batch (and cannot wrap into the previous class's last group)
        nocell = num_classes * num_groups
        self.cell = torch.where(self.groups >= 0, self.labels * num_groups + self.groups, nocell)
        self.cell_sizes = torch.bincount(self.cell, minlength=nocell + 1)[:nocell]
        self.class_sizes = torch.bincount(self.labels, minlength=num_classes)

    @staticmethod
    def _draw(keys: Tensor, sizes: Tensor, k: Tensor, generator: torch.Generator, cyclic: bool) -> Tensor:
        """For each bucket b (items keyed by ``keys``), ``k[b]`` items in random order.

        ``cyclic``: a bucket smaller than ``k[b]`` repeats its shuffled items; otherwise it gives all it has.
        """
        n = keys.shape[0]
        # sort by bucket, random order within a bucket
        order = torch.argsort(keys.double() + torch.rand(n, generator=generator, dtype=torch.float64))
        starts = torch.cumsum(sizes, 0) - sizes
        kmax = int(k.max()) if k.numel() else 0
        j = torch.arange(kmax).unsqueeze(0)  # (1, kmax)
        take = (j < k.unsqueeze(1)) & (sizes.unsqueeze(1) > 0)
        if not cyclic:
            take &= j < sizes.unsqueeze(1)
        pos = starts.unsqueeze(1) + j % sizes.clamp_min(1).unsqueeze(1)
        return order[pos[take]]

    def class_batch(self, per_class: int, generator: torch.Generator) -> Tensor:
        """Up to ``per_class`` indices of every class, uniformly at random without replacement."""
        self._check(per_class)
        k = torch.full((self.num_classes,), per_class)
        return self._draw(self.labels, self.class_sizes, k, generator, cyclic=False)

    def stratified_batch(self, per_class: int, generator: torch.Generator) -> Tensor:
        """The same number of indices from every non-empty group of each class (group-labelled images only).

        Each present group of class y contributes ``ceil(per_class / G_y)`` images (``G_y``: groups
        with data in class y), cycling through a group's shuffled images when it is smaller.
        """
        self._check(per_class)
        sizes = self.cell_sizes.view(self.num_classes, self.num_groups)
        groups_present = (sizes > 0).sum(1).clamp_min(1)
        per_group = (per_class + groups_present - 1) // groups_present  # ceil
        k = per_group.repeat_interleave(self.num_groups)
        return self._draw(self.cell, self.cell_sizes, k, generator, cyclic=True)

    def draw(self, sampling: str, per_class: int, generator: torch.Generator) -> Tensor:
        if sampling == "class":
            return self.class_batch(per_class, generator)
        if sampling == "stratified":
            return self.stratified_batch(per_class, generator)
        raise FairDistillError(f"unknown sampling {sampling!r}; allowed: class, stratified")

    @staticmethod
    def _check(per_class: int) -> None:
        if per_class < 1:
            raise FairDistillError(f"real images per class must be >= 1, got {per_class}")


def balanced_subset(
    split: FairSplit, num_classes: int, num_groups: int, ipc: int, generator: torch.Generator
) -> Tensor:
    """``ipc`` indices per class, spread over the class's groups as evenly as possible, ordered by class.

    Water-filling: every group gives the same number of images, a group with too few gives all it
    has, and what is left of ``ipc`` goes one image each to randomly chosen groups with images to
    spare. Within a class the indices come group by group. Only group-labelled images are balanced;
    a class with fewer of them than ``ipc`` is topped up with random unlabelled images of the class.
    This is the ``random-balanced`` baseline's selection and the ``balanced`` initialisation.
    """
    counts = split.counts(num_classes, num_groups)
    chosen = []
    for c in range(num_classes):  # quotas are per class
        avail = counts[c]
        # water level L: every group gives min(avail, L), the largest L that fits in ipc ...
        levels = torch.arange(int(avail.max()) + 1)
        filled = torch.minimum(avail.unsqueeze(0), levels.unsqueeze(1)).sum(1)
        level = int(levels[filled <= ipc].max())
        quota = torch.minimum(avail, torch.tensor(level))
        # ... and the remainder goes one each to random groups that still have images
        spare = (avail > level).nonzero().flatten()
        extra = spare[torch.randperm(len(spare), generator=generator)[: ipc - int(quota.sum())]]
        quota[extra] += 1
        for a in quota.nonzero().flatten().tolist():
            idx = ((split.labels == c) & (split.groups == a)).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=generator)[: int(quota[a])]])
        short = ipc - int(quota.sum())
        if short > 0:  # too few group-labelled images: the rest from the class's unlabelled ones
            idx = ((split.labels == c) & (split.groups < 0)).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=generator)[:short]])
    return torch.cat(chosen)
