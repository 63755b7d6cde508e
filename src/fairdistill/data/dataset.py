"""The fair dataset type: images, labels, sensitive groups, names, normalisation, fixed split."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import FairDistillError
from ..validate import finite
from .store import Uint8Images

Split = Literal["train", "test"]


#: the group id of a training image whose group label is unknown (partial group labels)
UNLABELLED = -1

#: the most classes a dataset may have (named or inferred from the largest label): a bound checked
#: before any per-class structure is built, so a stray label of 10^9 is an error, not 20 GB of names
MAX_CLASSES = 10_000
#: the most groups a dataset may have (true or training groups)
MAX_GROUPS = 10_000
#: the most (class, group) cells: the count tables are (K, G), and several are built per run
MAX_CELLS = 1_000_000
#: image rows of each split that :meth:`FairDataset.fingerprint` hashes besides the first and the last
FINGERPRINT_ROWS = 32
#: how many names an error message lists before "and N more"
_LISTED = 10


def listed(names: list[str] | tuple[str, ...]) -> str:
    """``names`` joined by commas, cut after the first few ("..., and 990 more")."""
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown}, and {len(names) - _LISTED} more"


def check_sizes(what: str, num_classes: int, num_groups: int) -> None:
    """Refuse class and group counts above :data:`MAX_CLASSES`, :data:`MAX_GROUPS`, :data:`MAX_CELLS`.

    Called by the loaders before they build names or tables from the counts, and by
    :meth:`FairDataset.validate`; ``what`` names the dataset or file in the message.
    """
    if num_classes < 1 or num_groups < 1:
        raise FairDistillError(f"{what}: needs at least one class and one group, got {num_classes} and {num_groups}")
    if num_classes > MAX_CLASSES:
        raise FairDistillError(f"{what}: {num_classes} classes, more than the {MAX_CLASSES} allowed")
    if num_groups > MAX_GROUPS:
        raise FairDistillError(f"{what}: {num_groups} groups, more than the {MAX_GROUPS} allowed")
    if num_classes * num_groups > MAX_CELLS:
        raise FairDistillError(
            f"{what}: {num_classes} classes x {num_groups} groups = {num_classes * num_groups} cells, "
            f"more than the {MAX_CELLS} allowed"
        )


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
        """A short hash that identifies this dataset by what it is made of (16 hex digits).

        A checkpoint records it and ``--resume`` refuses a dataset whose fingerprint differs. It
        hashes:

        * the builder's name and parameters (``params``). The ``npy`` folder records there each
          array file's size and modification time (ns) and the SHA-256 of ``meta.json``'s bytes;
        * when ``params["source"]`` is a folder (the file-based benchmarks), the name, size and
          modification time (ns) of each file directly in it;
        * the class and group names, the normalisation and the augmentation strategy;
        * for each split: the image shape, every label and group id, and the model-space pixels of
          sampled rows: the first, the last and :data:`FINGERPRINT_ROWS` evenly spaced between.

        It is cheap (a streamed split reads about 34 rows) and stable across loads of unchanged
        files, but not a hash of every pixel: an edit that changes only unsampled pixels and keeps
        every file's size and mtime goes unseen. It is computed once per dataset object.
        """
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        ident = {
            "name": self.name,
            "params": self.params,
            "source_files": _source_files(self.params),
            "class_names": self.class_names,
            "group_names": self.group_names,
            "train_group_names": self.train_group_names,
            "mean": self.mean,
            "std": self.std,
            "dsa_strategy": self.dsa_strategy,
        }
        h.update(json.dumps(ident, sort_keys=True, default=str).encode())
        for which in ("train", "test"):
            s: FairSplit = getattr(self, which)
            n = len(s)
            h.update(f"{which} {tuple(s.images.shape)}".encode())
            for ids in (s.labels, s.groups):
                h.update(ids.cpu().to(torch.int64).contiguous().numpy().tobytes())
            rows = torch.linspace(0, n - 1, FINGERPRINT_ROWS + 2).round().long().unique()
            h.update(s.take(rows).cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`FairDistillError` naming the first problem found.

        Checked: the names (at least one class and group, at most :data:`MAX_CLASSES` /
        :data:`MAX_GROUPS`, unique strings), the normalisation (finite, one entry per channel, std
        > 0), the augmentation strategy, and for each split the image shape and dtype (float32, or a
        uint8 store with the same normalisation), finite pixels (in-memory splits), int64 label and
        group ids of the right length within range; then that every class has training images and
        group-labelled ones. A training group with no image is allowed (its share is 0); empty test
        cells are reported by the metrics.
        """
        self._check_names()
        self._check_normalisation()
        self._check_strategy()
        for which in ("train", "test"):
            split: FairSplit = getattr(self, which)
            self._check_shapes(which, split)
            self._check_pixels(which, split.images)
            self._check_ids(which, split)
        self._check_class_coverage()

    def _check_names(self) -> None:
        """Class and group names: string tuples without repeats, their counts within the bounds."""
        for kind, names in (("class", self.class_names), ("group", self.group_names)):
            if not isinstance(names, tuple | list) or not all(isinstance(n, str) for n in names):
                raise FairDistillError(f"{self.name}: {kind} names must be a tuple of strings")
            dup = sorted(n for n, k in Counter(names).items() if k > 1)
            if dup:
                raise FairDistillError(f"{self.name}: duplicate {kind} name(s) {listed([repr(d) for d in dup])}")
        check_sizes(self.name, self.num_classes, self.num_groups)
        if self.train_group_names is not None:
            if len(self.train_group_names) == 0:
                raise FairDistillError(f"{self.name}: train_group_names is empty")
            check_sizes(f"{self.name} (training groups)", self.num_classes, len(self.train_group_names))

    def _check_normalisation(self) -> None:
        """``mean`` and ``std``: as many of one as of the other, all finite, every std above zero."""
        if len(self.mean) != len(self.std):
            raise FairDistillError(f"{self.name}: mean has {len(self.mean)} entries but std {len(self.std)}")
        for m, v in zip(self.mean, self.std, strict=True):
            finite(m, f"{self.name}: mean")
            if not finite(v, f"{self.name}: std") > 0:
                raise FairDistillError(f"{self.name}: std must be > 0, got {v!r}")

    def _check_strategy(self) -> None:
        """``dsa_strategy``: a string the augmentation parser accepts."""
        from ..augment import parse_strategy

        if not isinstance(self.dsa_strategy, str):
            kind = type(self.dsa_strategy).__name__
            raise FairDistillError(f"{self.name}: dsa_strategy must be a string, got {kind}")
        try:
            parse_strategy(self.dsa_strategy)
        except FairDistillError as err:
            raise FairDistillError(f"{self.name}: dsa_strategy: {err}") from None

    def _check_shapes(self, which: Split, split: FairSplit) -> None:
        """A split's shapes: 4-D non-empty images with this dataset's channels, one label and group each."""
        x, y, a = split.images, split.labels, split.groups
        if x.ndim != 4:
            raise FairDistillError(f"{self.name} {which}: images must be (N, C, H, W), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise FairDistillError(f"{self.name} {which}: the split is empty")
        if min(x.shape[2:]) < 1:
            raise FairDistillError(f"{self.name} {which}: images of size {tuple(x.shape[2:])} hold no pixel")
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

    def _check_pixels(self, which: Split, x: Tensor | Uint8Images) -> None:
        """A store must carry this dataset's normalisation; an in-memory split must be finite float32."""
        if isinstance(x, Uint8Images):
            # uint8 pixels cannot be NaN, and scanning a streamed split would read all of it
            if x.mean != tuple(self.mean) or x.std != tuple(self.std):
                raise FairDistillError(f"{self.name} {which}: the image store's normalisation differs")
            return
        if not isinstance(x, Tensor) or x.dtype != torch.float32:
            raise FairDistillError(
                f"{self.name} {which}: images must be float32 in model space, got {getattr(x, 'dtype', x)}"
            )
        lo, hi = torch.aminmax(x)  # a single pass without a data-sized mask; a NaN shows in both ends
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise FairDistillError(f"{self.name} {which}: images contain NaN or infinite values")

    def _check_ids(self, which: Split, split: FairSplit) -> None:
        """Labels and groups: int64 tensors inside the ranges (-1, unknown group, in train only)."""
        y, a = split.labels, split.groups
        if not isinstance(y, Tensor) or not isinstance(a, Tensor) or y.dtype != torch.long or a.dtype != torch.long:
            raise FairDistillError(f"{self.name} {which}: labels and groups must be int64 tensors")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise FairDistillError(
                f"{self.name} {which}: labels outside [0, {self.num_classes}) (found {int(y.min())}..{int(y.max())})"
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

    def _check_class_coverage(self) -> None:
        """Every class needs training images, and at least one of them with a group label."""
        empty = (self.class_counts("train") == 0).nonzero().flatten().tolist()
        if empty:
            names = listed([self.class_names[i] for i in empty])
            raise FairDistillError(f"{self.name}: no training images for class(es) {names}")
        unlabelled = (self.counts("train").sum(1) == 0).nonzero().flatten().tolist()
        if unlabelled:
            names = listed([self.class_names[i] for i in unlabelled])
            raise FairDistillError(
                f"{self.name}: class(es) {names} have no group-labelled training image; "
                "group statistics need at least one per class"
            )


def _source_files(params: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of the files directly in the folder ``params["source"]``, if it is one.

    What identifies a file-based benchmark's sources cheaply (at most 1,000 files, by name; hidden
    files skipped). Empty when there is no such folder or the loader recorded its files itself
    (``params["files"]``, the ``npy`` folder).
    """
    source = params.get("source")
    if not isinstance(source, str) or "files" in params:
        return []
    try:
        folder = Path(source)
        if not folder.is_dir():
            return []
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))[:1000]
        stats = [(p.name, p.stat()) for p in entries if p.is_file()]
    except OSError:
        return []
    return [(name, int(st.st_size), int(st.st_mtime_ns)) for name, st in stats]
