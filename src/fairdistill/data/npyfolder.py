"""Bring your own data: a folder of standard ``.npy`` arrays (dataset key ``npy``).

The folder (``--data-root``) holds::

    train_images.npy   uint8, (N, C, H, W), (N, H, W, C) or (N, H, W) for one channel
    train_labels.npy   integer, (N,), class ids in [0, K)
    train_groups.npy   integer, (N,), group ids in [0, G); -1 marks an unknown group
    test_images.npy    uint8, same layout and image shape as train_images.npy
    test_labels.npy    integer, (M,)
    test_groups.npy    integer, (M,), in [0, G) (every test image needs its group)
    meta.json          optional: {"name", "classes", "groups", "mean", "std", "layout", "description",
                       "dsa_strategy"}

``classes`` and ``groups`` are the name lists (default: ``"0"``, ``"1"``, ... up to the largest id
found); ``mean``/``std`` the per-channel normalisation of pixels in [0, 1] (default 0.5 each);
``layout`` is ``"NCHW"`` or ``"NHWC"`` and is needed only when the shape does not tell (channels
are 1, 3 or 4 and must be on one side only). Arrays must be plain C-ordered ``.npy`` files
(``numpy.save``; no pickles). The image files are memory-mapped, never loaded: by default both
splits are *streamed* (:class:`~fairdistill.data.store.Uint8Images`), read a batch at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FairDistillError
from .dataset import FairDataset, FairSplit, normalise_uint8
from .files import MissingDataError, corrupt, data_root_from
from .store import Reader, Uint8Images

KEY = "npy"
SPLITS = ("train", "test")
FILES = tuple(f"{s}_{what}.npy" for s in SPLITS for what in ("images", "labels", "groups"))
META = "meta.json"
CHANNELS = (1, 3, 4)


def _load(path: Path, *, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise corrupt(path, f"not a readable .npy array ({err})") from err


def _meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise corrupt(path, f"not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise corrupt(path, f"expected a JSON object, got {type(meta).__name__}")
    allowed = {"name", "classes", "groups", "mean", "std", "layout", "description", "dsa_strategy"}
    unknown = sorted(set(meta) - allowed)
    if unknown:
        raise FairDistillError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    for k in ("classes", "groups", "mean", "std"):
        if k in meta and (not isinstance(meta[k], list) or not meta[k]):
            raise FairDistillError(f"{path}: {k!r} must be a non-empty list, got {meta[k]!r}")
    if meta.get("layout", "NCHW") not in ("NCHW", "NHWC"):
        raise FairDistillError(f"{path}: layout must be 'NCHW' or 'NHWC', got {meta['layout']!r}")
    return meta


def _layout(path: Path, shape: tuple[int, ...], declared: str | None) -> bool:
    """Whether the images at ``path`` are channels-last (N, H, W, C)."""
    if len(shape) == 3:
        return False
    if len(shape) != 4:
        raise corrupt(path, f"expected uint8 images (N, C, H, W), (N, H, W, C) or (N, H, W), got shape {shape}")
    if declared is not None:
        c = shape[3] if declared == "NHWC" else shape[1]
        if c not in CHANNELS:
            raise corrupt(path, f"layout {declared} means {c} channels; expected one of {CHANNELS}")
        return declared == "NHWC"
    first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
    if first == last:
        raise FairDistillError(
            f'{path}: cannot tell channels from shape {shape}; set "layout": "NCHW" or "NHWC" in {META}'
        )
    return last


def _ids(path: Path, n: int, what: str) -> torch.Tensor:
    arr = _load(path, mmap=False)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise corrupt(path, f"expected integer {what} of shape ({n},), got {arr.dtype} {arr.shape}")
    if len(arr) != n:
        raise FairDistillError(f"{path}: {len(arr)} {what} for {n} images")
    return torch.from_numpy(arr.astype(np.int64))


def npy_folder(
    *,
    data_root: str | Path | None = None,
    stream: bool = True,
    read: Reader = "pread",
) -> FairDataset:
    """The dataset stored as ``.npy`` arrays in the folder ``data_root`` (see the module docstring).

    ``stream``: keep the pixels on disk and decode batches on demand (default); False normalises
    both splits into memory up front. ``read``: how a streamed split reads rows (see
    :class:`~fairdistill.data.store.Uint8Images`).
    """
    folder = data_root_from(data_root)
    if folder is None:
        raise MissingDataError(f"dataset {KEY!r} reads a folder of .npy arrays: give it with --data-root")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise MissingDataError(
            f"{folder}: missing {', '.join(missing)}; the {KEY!r} dataset needs {', '.join(FILES)} (+ optional {META})"
        )
    meta = _meta(folder)
    splits: dict[str, tuple[np.ndarray, bool, torch.Tensor, torch.Tensor]] = {}
    for s in SPLITS:
        path = folder / f"{s}_images.npy"
        px = _load(path, mmap=True)
        if px.dtype != np.uint8:
            raise corrupt(path, f"expected uint8 pixels, got {px.dtype}")
        if not px.flags.c_contiguous:
            raise corrupt(path, "expected a C-ordered array (numpy.save of a contiguous array), got Fortran order")
        channels_last = _layout(path, px.shape, meta.get("layout"))
        if len(px) == 0:
            raise FairDistillError(f"{path}: the split is empty")
        y = _ids(folder / f"{s}_labels.npy", len(px), "labels")
        a = _ids(folder / f"{s}_groups.npy", len(px), "groups")
        splits[s] = (px, channels_last, y, a)

    def image_shape(px: np.ndarray, last: bool) -> tuple[int, ...]:
        return (1, *px.shape[1:]) if px.ndim == 3 else (px.shape[3], *px.shape[1:3]) if last else px.shape[1:]

    shape = image_shape(*splits["train"][:2])
    if image_shape(*splits["test"][:2]) != shape:
        raise FairDistillError(
            f"{folder}: train images are {shape} (C, H, W) but test images {image_shape(*splits['test'][:2])}"
        )
    ymax = max(int(splits[s][2].max()) for s in SPLITS)
    amax = max(int(splits[s][3].max()) for s in SPLITS)
    classes = tuple(str(c) for c in meta.get("classes", range(ymax + 1)))
    groups = tuple(str(g) for g in meta.get("groups", range(amax + 1)))
    for s in SPLITS:
        _, _, y, a = splits[s]
        if int(y.min()) < 0 or int(y.max()) >= len(classes):
            raise FairDistillError(
                f"{folder / f'{s}_labels.npy'}: labels must lie in [0, {len(classes)}) ({len(classes)} classes), "
                f"found {int(y.min())}..{int(y.max())}"
            )
        lowest = -1 if s == "train" else 0
        if int(a.min()) < lowest or int(a.max()) >= len(groups):
            raise FairDistillError(
                f"{folder / f'{s}_groups.npy'}: groups must lie in [{lowest}, {len(groups)}) ({len(groups)} groups), "
                f"found {int(a.min())}..{int(a.max())}"
            )
    c = shape[0]
    mean = tuple(float(m) for m in meta.get("mean", [0.5] * c))
    std = tuple(float(v) for v in meta.get("std", [0.5] * c))
    if len(mean) != c or len(std) != c or min(std) <= 0:
        raise FairDistillError(f"{folder / META}: mean and std need {c} entries (std > 0), got {mean} and {std}")

    def split(s: str) -> FairSplit:
        px, last, y, a = splits[s]
        kwargs: dict[str, Any] = {"channels_last": last, "read": read}
        if px.ndim == 3:  # one channel without its axis
            kwargs.update(shape=tuple(shape), transform=lambda raw, rows: normalise_uint8(raw.unsqueeze(1), mean, std))
        store = Uint8Images(px, mean, std, **kwargs)
        return FairSplit(store if stream else store.materialise(), y, a)

    extra = {k: meta[k] for k in ("dsa_strategy",) if k in meta}
    return FairDataset(
        name=str(meta.get("name", KEY)),
        train=split("train"),
        test=split("test"),
        class_names=classes,
        group_names=groups,
        mean=mean,
        std=std,
        description=str(meta.get("description", f"uint8 .npy arrays in {folder}")),
        params={"source": str(folder.resolve())},
        **extra,
    )


__all__ = ["FILES", "KEY", "META", "npy_folder"]
