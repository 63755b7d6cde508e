"""The fair dataset type: images, labels, sensitive groups, names, normalisation, fixed split."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import FairDistillError

Split = Literal["train", "test"]


@dataclass(frozen=True)
class FairSplit:
    """One split: ``images`` (N, C, H, W) float32 in model space, ``labels`` and ``groups`` (N,) int64."""

    images: Tensor
    labels: Tensor
    groups: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> FairSplit:
        return FairSplit(self.images[index], self.labels[index], self.groups[index])

    def counts(self, num_classes: int, num_groups: int) -> Tensor:
        """(K, G) int64 table: how many images of each class fall in each group."""
        flat = self.labels * num_groups + self.groups
        return torch.bincount(flat, minlength=num_classes * num_groups).view(num_classes, num_groups)


@dataclass(frozen=True)
class FairDataset:
    """A labelled image dataset with one sensitive attribute and a fixed train/test split.

    Images are stored normalised (``(pixel - mean) / std`` per channel, pixels in [0, 1]); group ids
    are contiguous in ``[0, len(group_names))``; class and group names are metadata, never inferred.
    ``dsa_strategy`` is the augmentation suited to the data (digits are never flipped).
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

    def __post_init__(self) -> None:
        self.validate()

    # ---- shape facts -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

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
        """(K, G) table of image counts per (class, group) in a split."""
        return self.split(which).counts(self.num_classes, self.num_groups)

    def group_shares(self) -> Tensor:
        """pi(a | y): (K, G) float, each class row of the train counts normalised to sum to one."""
        c = self.counts("train").double()
        return (c / c.sum(1, keepdim=True).clamp_min(1)).float()

    # ---- pixels ------------------------------------------------------------------------------
    def to_pixels(self, images: Tensor) -> Tensor:
        """Undo the normalisation: model-space images -> pixels in [0, 1] (clamped)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def fingerprint(self) -> str:
        """A short hash of the builder's name and parameters (what reproduces this dataset)."""
        text = json.dumps({"name": self.name, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ---- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`FairDistillError` naming the first problem found."""
        if len(self.mean) != len(self.std):
            raise FairDistillError(f"{self.name}: mean has {len(self.mean)} entries but std {len(self.std)}")
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
            if int(a.min()) < 0 or int(a.max()) >= self.num_groups:
                raise FairDistillError(
                    f"{self.name} {which}: groups outside [0, {self.num_groups}) (found {int(a.min())}..{int(a.max())})"
                )
        empty = (self.counts("train").sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            names = ", ".join(self.class_names[i] for i in empty)
            raise FairDistillError(f"{self.name}: no training images for class(es) {names}")


def normalise_uint8(pixels: Tensor | Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 pixels (N, C, H, W) (a tensor or numpy array) -> float32 model-space images ``(x / 255 - mean) / std``."""
    x = torch.as_tensor(pixels)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise FairDistillError(f"expected uint8 pixels of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
