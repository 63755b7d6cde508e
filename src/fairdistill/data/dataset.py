"""The fair dataset type: images, labels, sensitive groups, names, normalisation, fixed split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import FairDistillError
from .store import Uint8Images

Split = Literal["train", "test"]


#: the group id of a training image whose group label is unknown (partial group labels)
UNLABELLED = -1


@dataclass(frozen=True)
class FairSplit:
    """One split: ``images`` (N, C, H, W) float32 in model space, ``labels`` and ``groups`` (N,) int64.

    ``images`` is either a float32 tensor or a :class:`~fairdistill.data.store.Uint8Images` (a
    *streamed* split: uint8 pixels, often on disk, decoded a batch at a time by :meth:`take`).
    A training image may carry group id :data:`UNLABELLED` (-1): its class is known, its group is
    not (see :mod:`fairdistill.data.groups`). Counts per (class, group) cover the labelled images only.
    """

    images: Tensor | Uint8Images
    labels: Tensor
    groups: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Model-space float32 images at ``index`` (a 1-D index tensor), on ``device``.

        The one way the backbones read real images: a batch at a time, so a split whose images are
        decoded on demand never has to be held whole.
        """
        x = self.images[index.cpu()]
        return x if device is None else x.to(device)

    @property
    def streamed(self) -> bool:
        """Whether the images are decoded on demand (a :class:`~fairdistill.data.store.Uint8Images`)."""
        return isinstance(self.images, Uint8Images)

    def in_memory(self) -> FairSplit:
        """This split with its images as one float32 tensor (itself when it already is)."""
        if not isinstance(self.images, Uint8Images):
            return self
        return FairSplit(self.images.materialise(), self.labels, self.groups)

    def subset(self, index: Tensor) -> FairSplit:
        if isinstance(self.images, Uint8Images):  # stays streamed: only row numbers are kept
            return FairSplit(self.images.select(index), self.labels[index], self.groups[index])
        return FairSplit(self.images[index], self.labels[index], self.groups[index])

    def counts(self, num_classes: int, num_groups: int) -> Tensor:
        """(K, G) int64 table: how many group-labelled images of each class fall in each group."""
        # unlabelled images (-1) go to an extra column 0 that is dropped, so they never wrap into a group
        flat = self.labels * (num_groups + 1) + (self.groups + 1)
        table = torch.bincount(flat, minlength=num_classes * (num_groups + 1)).view(num_classes, num_groups + 1)
        return table[:, 1:].contiguous()

    def unlabelled_counts(self, num_classes: int) -> Tensor:
        """(K,) int64: how many images of each class have no group label."""
        return torch.bincount(self.labels[self.groups == UNLABELLED], minlength=num_classes)

    def class_counts(self, num_classes: int) -> Tensor:
        """(K,) int64: how many images of each class, labelled or not."""
        return torch.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True)
class FairDataset:
    """A labelled image dataset with one sensitive attribute and a fixed train/test split.

    Images are stored normalised (``(pixel - mean) / std`` per channel, pixels in [0, 1]); group ids
    are contiguous in ``[0, len(group_names))``; class and group names are metadata, never inferred.
    ``dsa_strategy`` is the augmentation suited to the data (digits are never flipped).

    Group labels of the *training* split may differ from the true attribute (see
    :mod:`fairdistill.data.groups`):

    * a training image may have group -1 (:data:`UNLABELLED`): partial group labels;
    * ``train_group_names``, when set, names the training split's groups, which are then not the
      true groups but e.g. per-class clusters (``"cluster-0"``, ...). ``group_names`` always names
      the TRUE groups, which the test split carries and the fairness metrics use.
      :attr:`num_groups` counts the true groups, :attr:`num_train_groups` the training split's.
    """

    name: str
    train: FairSplit
    test: FairSplit
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    train_group_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---- shape facts -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_groups(self) -> int:
        """How many true groups (the test split's, the metrics')."""
        return len(self.group_names)

    @property
    def num_train_groups(self) -> int:
        """How many groups the training split's ids range over (the true ones unless ``train_group_names``)."""
        return len(self.group_names_of("train"))

    def group_names_of(self, which: Split) -> tuple[str, ...]:
        """Names of a split's group ids: ``train_group_names`` for the training split when set, else ``group_names``."""
        if self.split(which) is self.train and self.train_group_names is not None:
            return self.train_group_names
        return self.group_names

    @property
    def partially_labelled(self) -> bool:
        """Whether some training image has no group label."""
        return bool((self.train.groups == UNLABELLED).any())

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])

    def split(self, which: Split) -> FairSplit:
        if which not in ("train", "test"):
            raise FairDistillError(f"unknown split {which!r}; allowed: test, train")
        return self.train if which == "train" else self.test

    def counts(self, which: Split = "train") -> Tensor:
        """(K, G) table of group-labelled image counts per (class, group) in a split (G: that split's groups)."""
        return self.split(which).counts(self.num_classes, len(self.group_names_of(which)))

    def unlabelled_counts(self, which: Split = "train") -> Tensor:
        """(K,) images per class without a group label (always zero on the test split)."""
        return self.split(which).unlabelled_counts(self.num_classes)

    def class_counts(self, which: Split = "train") -> Tensor:
        """(K,) images per class, group-labelled or not."""
        return self.split(which).class_counts(self.num_classes)

    def group_shares(self) -> Tensor:
        """pi(a | y): (K, G_train) float, each class row of the train counts normalised to sum to one.

        Estimated from the group-labelled training images only.
        """
        c = self.counts("train").double()
        return (c / c.sum(1, keepdim=True).clamp_min(1)).float()

    # ---- pixels ------------------------------------------------------------------------------
    def to_pixels(self, images: Tensor) -> Tensor:
        """Undo the normalisation: model-space images -> pixels in [0, 1] (clamped)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    @property
    def streamed(self) -> bool:
        """Whether the training images are decoded on demand (see :class:`FairSplit`)."""
        return self.train.streamed

    def in_memory(self) -> FairDataset:
        """This dataset with both splits' images as float32 tensors (itself when already so)."""
        if not (self.train.streamed or self.test.streamed):
            return self
        return replace(self, train=self.train.in_memory(), test=self.test.in_memory())

    def fingerprint(self) -> str:
        """A short hash of the builder's name and parameters (what reproduces this dataset)."""
        text = json.dumps({"name": self.name, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`FairDistillError` naming the first problem found."""
        if len(self.mean) != len(self.std):
            raise FairDistillError(f"{self.name}: mean has {len(self.mean)} entries but std {len(self.std)}")
        if self.train_group_names is not None and len(self.train_group_names) == 0:
            raise FairDistillError(f"{self.name}: train_group_names is empty")
        for which in ("train", "test"):
            s: FairSplit = getattr(self, which)
            x, y, a = s.images, s.labels, s.groups
            if x.ndim != 4:
                raise FairDistillError(f"{self.name} {which}: images must be (N, C, H, W), got {tuple(x.shape)}")
            if x.shape[0] == 0:
                raise FairDistillError(f"{self.name} {which}: the split is empty")
            if y.shape != (x.shape[0],) or a.shape != (x.shape[0],):
                raise FairDistillError(
                    f"{self.name} {which}: {x.shape[0]} images but labels {tuple(y.shape)} and groups {tuple(a.shape)}"
                )
            if x.shape[1] != len(self.mean):
                raise FairDistillError(
                    f"{self.name} {which}: images have {x.shape[1]} channels, normalisation has {len(self.mean)}"
                )
            if x.shape[1:] != self.train.images.shape[1:]:
                raise FairDistillError(f"{self.name}: train and test images differ in shape")
            if isinstance(x, Uint8Images):
                # uint8 pixels are always finite; scanning a streamed split would read it all
                if x.mean != tuple(self.mean) or x.std != tuple(self.std):
                    raise FairDistillError(f"{self.name} {which}: the image store's normalisation differs")
            else:
                lo, hi = torch.aminmax(x)  # one pass, no mask the size of the data; NaN propagates
                if not (torch.isfinite(lo) and torch.isfinite(hi)):
                    raise FairDistillError(f"{self.name} {which}: images contain NaN or infinite values")
            if y.dtype != torch.long or a.dtype != torch.long:
                raise FairDistillError(f"{self.name} {which}: labels and groups must be int64 tensors")
            if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
                raise FairDistillError(
                    f"{self.name} {which}: labels outside [0, {self.num_classes}) "
                    f"(found {int(y.min())}..{int(y.max())})"
                )
            g = len(self.group_names_of("train" if which == "train" else "test"))
            lowest = UNLABELLED if which == "train" else 0
            if int(a.min()) < lowest or int(a.max()) >= g:
                note = (
                    " (-1, an unknown group, is allowed in the train split only)"
                    if which == "test"
                    else " (-1 marks an unknown group)"
                )
                raise FairDistillError(
                    f"{self.name} {which}: groups outside [0, {g}) (found {int(a.min())}..{int(a.max())}){note}"
                )
        empty = (self.class_counts("train") == 0).nonzero().flatten().tolist()
        if empty:
            names = ", ".join(self.class_names[i] for i in empty)
            raise FairDistillError(f"{self.name}: no training images for class(es) {names}")
        unlabelled = (self.counts("train").sum(1) == 0).nonzero().flatten().tolist()
        if unlabelled:
            names = ", ".join(self.class_names[i] for i in unlabelled)
            raise FairDistillError(
                f"{self.name}: class(es) {names} have no group-labelled training image; "
                "group statistics need at least one per class"
            )


def normalise_uint8(pixels: Tensor | Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 pixels (N, C, H, W) (a tensor or numpy array) -> float32 model-space images ``(x / 255 - mean) / std``."""
    x = torch.as_tensor(pixels)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise FairDistillError(f"expected uint8 pixels of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
