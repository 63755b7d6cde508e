"""A labelled image table (one row per image: the image, a label, a group, a split) made into a dataset.

What the ``folder`` (image files + ``metadata.csv``), ``waterbirds`` and ``hf`` (Hugging Face
datasets saved to disk) loaders share once they have read their rows: turning label and group
values into ids and names, checking that every class has a training image, decoding the images
(Pillow, RGB, one size) into the decoded-data cache and building the streamed
:class:`~fairdistill.data.FairDataset`. Each loader reads and checks its own source first; nothing
here reads a table.

Label and group values. When every value of a column is an integer (``"0"``, ``"12"``), the values
are ids ``0..K-1``: their names are the declared ones (at least as many as the largest id + 1), or
those of a name column (``class_name`` / ``group_name``: one name per id, the same on every row),
or ``"0"``, ``"1"``, ... When some value is not an integer, the values are the names themselves:
with declared names each must be one of them (the declared order gives the ids), without, the
distinct values sorted give the names. Empty values and negative ids are refused.

Images. Every image is decoded with Pillow and converted to RGB. With ``image_size=N`` each is
resized to N x N (bilinear; the aspect ratio is not kept, as a resize to a square does); without,
every image must already have one size, which the dataset keeps, and mixed sizes are an error that
counts each size seen and names a file of another size than the most common. The decoded pixels
(uint8, (N, 3, H, W)) are cached per split, keyed on the decoding parameters and stamped by every
source file's size and modification time (:func:`~fairdistill.data.cache.cached_arrays`), so a
second load reads no image; both splits are then memory-mapped and, by default, *streamed*
(:class:`~fairdistill.data.store.Uint8Images`).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import FairDistillError
from .cache import cached_arrays
from .dataset import MAX_CLASSES, MAX_GROUPS, FairDataset, FairSplit, check_sizes, listed
from .files import corrupt
from .store import Uint8Images

log = logging.getLogger(__name__)

#: an image to decode: a file, or (what messages call it, its encoded bytes)
ImageInput = Path | tuple[str, bytes]
#: the bounds of ``image_size`` (and of a native image side kept without resizing)
MIN_SIZE, MAX_SIZE = 8, 512
#: how the pixels are made from a file; part of every cache entry's parameters
TRANSFORM = "rgb-resize-bilinear"
#: decode in a thread pool from this many images on (Pillow releases the GIL while decoding)
THREADED_FROM = 256
_CHUNK = 1024
_INTEGER = re.compile(r"[+-]?\d{1,18}")


# ---- options -------------------------------------------------------------------------------------
def parse_pairs(given: str | Mapping[str, Any] | None, option: str, allowed: Sequence[str]) -> dict[str, str]:
    """The pairs of ``given`` (``"key=value,key=value"`` or a mapping), checked strictly.

    Every key must be one of ``allowed`` and appear once, every value be non-empty; each failure is
    one line naming ``option`` (e.g. ``--columns``) and the allowed keys. None gives no pairs.
    """
    if given is None:
        return {}
    if isinstance(given, str):
        items: list[tuple[str, str]] = []
        for part in given.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise FairDistillError(f"{option}: expected key=value pairs separated by commas, got {part.strip()!r}")
            items.append((key.strip(), value.strip()))
    elif isinstance(given, Mapping):
        items = [(str(k), v.strip() if isinstance(v, str) else str(v)) for k, v in given.items()]
    else:
        raise FairDistillError(f"{option}: expected 'key=value,...' or a mapping, got {type(given).__name__}")
    out: dict[str, str] = {}
    for key, value in items:
        if key not in allowed:
            raise FairDistillError(f"{option}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        if key in out:
            raise FairDistillError(f"{option}: {key} is given twice")
        if not value:
            raise FairDistillError(f"{option}: {key}= needs a value")
        out[key] = value
    return out


def check_image_size(image_size: int | None) -> int | None:
    """``image_size`` as an int in [:data:`MIN_SIZE`, :data:`MAX_SIZE`] (None: keep the images' own size)."""
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise FairDistillError(f"image_size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {image_size!r}")
    if not MIN_SIZE <= int(image_size) <= MAX_SIZE:
        raise FairDistillError(f"image_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {image_size}")
    return int(image_size)


# ---- the rows a loader read ----------------------------------------------------------------------
@dataclass(frozen=True)
class SplitRows:
    """One split's rows as a loader read them, in order; ``rows[i]`` says where row i is ("line 12").

    ``labels`` and ``groups`` are the raw values as text; ``class_names`` / ``group_names`` the
    values of the name columns (None: no such column).
    """

    rows: Sequence[str]
    images: Collection[ImageInput]
    labels: Sequence[str]
    groups: Sequence[str]
    class_names: Sequence[str] | None = None
    group_names: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class TableSpec:
    """How a table becomes a dataset: its names, normalisation and image size, and what identifies it.

    ``where`` is the file or folder the errors name; ``key`` names the cache entries; ``classes``
    and ``groups`` are declared names (None: from the values); ``params`` identify the source in the
    dataset's :attr:`~fairdistill.data.FairDataset.params`; ``cache_params`` are what, besides the
    source files and the image size, decides the pixels of the cache entry (e.g. which splits).
    """

    key: str
    name: str
    where: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    image_size: int | None = None
    dsa_strategy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cache_params: dict[str, Any] = field(default_factory=dict)


# ---- ids and names -------------------------------------------------------------------------------
_NOUNS = {"label": ("class", "classes", MAX_CLASSES), "group": ("group", "groups", MAX_GROUPS)}


def resolve_ids(
    values: Sequence[str],
    rows: Sequence[str],
    declared: tuple[str, ...] | None,
    name_values: Sequence[str] | None,
    *,
    what: str,
    where: str,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(ids int64, names) of one column's ``values`` (``what``: "label" or "group"; see the module docstring)."""
    for i, v in enumerate(values):
        if not v:
            raise FairDistillError(f"{where} {rows[i]}: empty {what}")
    if all(_INTEGER.fullmatch(v) for v in values):
        ids = np.array([int(v) for v in values], dtype=np.int64)
        return ids, _id_names(ids, rows, declared, name_values, what=what, where=where)
    singular, plural, _ = _NOUNS[what]
    if name_values is not None:
        raise FairDistillError(
            f"{where}: the {what}s are names already ({values[0]!r}...); a {singular} name column is for integer ids"
        )
    names = declared if declared is not None else tuple(sorted(set(values)))
    index = {n: i for i, n in enumerate(names)}
    for i, v in enumerate(values):
        if v not in index:
            raise FairDistillError(
                f"{where} {rows[i]}: {what} {v!r} is not one of the declared {plural} ({listed(list(names))})"
            )
    return np.array([index[v] for v in values], dtype=np.int64), names


def _id_names(
    ids: np.ndarray,
    rows: Sequence[str],
    declared: tuple[str, ...] | None,
    name_values: Sequence[str] | None,
    *,
    what: str,
    where: str,
) -> tuple[str, ...]:
    """The names of integer ids: declared (each id below their count), from a name column, or numbered."""
    singular, plural, bound = _NOUNS[what]
    low, high = int(ids.min()), int(ids.max())
    if low < 0:
        i = int(np.argmin(ids))
        raise FairDistillError(f"{where} {rows[i]}: {what} {low} is negative (ids are 0..K-1)")
    count = len(declared) if declared is not None else high + 1
    if declared is not None and high >= count:
        i = int(np.argmax(ids))
        raise FairDistillError(
            f"{where} {rows[i]}: {what} {high} is outside the {count} declared {plural} ({listed(list(declared))})"
        )
    if count > bound:
        raise FairDistillError(f"{where}: {what} {high} would make {count} {plural}, more than the {bound} allowed")
    if name_values is None:
        return declared if declared is not None else tuple(str(i) for i in range(count))
    named: dict[int, tuple[str, str]] = {}  # id -> (name, the row that gave it)
    for i, (k, n) in enumerate(zip(ids.tolist(), name_values, strict=True)):
        if not n:
            raise FairDistillError(f"{where} {rows[i]}: empty {singular} name")
        first = named.setdefault(k, (n, rows[i]))
        if first[0] != n:
            raise FairDistillError(
                f"{where} {rows[i]}: {singular} name {n!r} for {what} {k}, but {first[1]} names it {first[0]!r}"
            )
        if declared is not None and declared[k] != n:
            raise FairDistillError(
                f"{where} {rows[i]}: {singular} name {n!r} for {what} {k}, but the declared name is {declared[k]!r}"
            )
    return declared if declared is not None else tuple(named.get(k, (str(k), ""))[0] for k in range(count))


def _check_train_classes(where: str, labels: np.ndarray, names: tuple[str, ...]) -> None:
    """Refuse a class that no training row has (before any image is decoded)."""
    present = np.bincount(labels, minlength=len(names))
    empty = [names[k] for k in np.flatnonzero(present == 0)]
    if empty:
        raise FairDistillError(f"{where}: no training image for class(es) {listed(empty)}")


# ---- images --------------------------------------------------------------------------------------
def image_name(item: ImageInput) -> str:
    """What messages call an image: its path, or the name given with its bytes."""
    return str(item) if isinstance(item, Path) else item[0]


def _open(item: ImageInput) -> Image.Image:
    return Image.open(item) if isinstance(item, Path) else Image.open(io.BytesIO(item[1]))


def probe_size(item: ImageInput) -> tuple[int, int]:
    """(width, height) of an image from its header only; an unreadable file is named."""
    try:
        with _open(item) as img:
            return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _undecodable(item, err) from None


def decode_rgb(item: ImageInput, size: tuple[int, int] | None) -> np.ndarray:
    """One image -> (3, H, W) uint8: RGB, resized to ``size`` (width, height) when given (bilinear)."""
    try:
        with _open(item) as img:
            rgb = img.convert("RGB")  # forces the full decode: a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise _undecodable(item, err) from None
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _undecodable(item: ImageInput, err: Exception) -> FairDistillError:
    """The error naming an image Pillow cannot read (Pillow's own reason, without the path repeated)."""
    name = image_name(item)
    reason = str(err).replace(f" '{name}'", "").replace(name, "it")
    return corrupt(Path(name), f"Pillow cannot decode this image ({reason})")


def common_size(items: Iterable[ImageInput], where: str) -> tuple[int, int]:
    """The one (width, height) every image has; mixed sizes are refused with the count of each size seen."""
    seen: Counter[tuple[int, int]] = Counter()
    example: dict[tuple[int, int], str] = {}
    for item in items:
        wh = probe_size(item)
        seen[wh] += 1
        example.setdefault(wh, image_name(item))
    (w, h), _ = seen.most_common(1)[0]
    if len(seen) > 1:
        sizes = seen.most_common()
        shown = [f"{n} of {a}x{b}" for (a, b), n in sizes[:5]] + (["..."] if len(sizes) > 5 else [])
        other = sizes[1][0]
        raise FairDistillError(
            f"{where}: the images have {len(seen)} sizes ({', '.join(shown)}; e.g. {example[other]} is "
            f"{other[0]}x{other[1]}); pass --image-size N (e.g. {max(MIN_SIZE, min(max(w, h), MAX_SIZE))}) "
            "to resize every image to N x N"
        )
    if max(w, h) > MAX_SIZE:
        raise FairDistillError(f"{where}: the images are {w}x{h}; pass --image-size N (N <= {MAX_SIZE}) to resize them")
    return w, h


def decode_all(items: Collection[ImageInput], size: tuple[int, int], *, resize: bool, what: str) -> np.ndarray:
    """Every image of ``items`` in order as one (N, 3, height, width) uint8 array (``size``: width, height).

    ``resize``: resize each to ``size``; otherwise each must already have it (an image that changed
    since the sizes were read is refused).
    """
    w, h = size
    out = np.empty((len(items), 3, h, w), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(items) >= THREADED_FROM else None
    one = (lambda item: decode_rgb(item, size)) if resize else (lambda item: decode_rgb(item, None))
    done = 0
    try:
        for block in _chunks(iter(items), _CHUNK):
            for item, arr in zip(block, (pool.map(one, block) if pool else map(one, block)), strict=True):
                if arr.shape != out.shape[1:]:
                    raise FairDistillError(f"{image_name(item)}: {arr.shape[2]}x{arr.shape[1]}, not {w}x{h}")
                out[done] = arr
                done += 1
            log.info("%s: decoded %d / %d", what, done, len(items))
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def _chunks(it: Iterator[ImageInput], n: int) -> Iterator[list[ImageInput]]:
    while block := list(islice(it, n)):
        yield block


# ---- the dataset ---------------------------------------------------------------------------------
def table_dataset(
    spec: TableSpec,
    train: SplitRows,
    test: SplitRows,
    *,
    sources: Sequence[Path],
    stream: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> FairDataset:
    """The dataset of ``train`` and ``test`` as ``spec`` says; ``sources`` stamp the decoded-pixel cache entry."""
    for which, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise FairDistillError(f"{spec.where}: the {which} split is empty")
    rows = [*train.rows, *test.rows]
    labels, classes = resolve_ids(
        [*train.labels, *test.labels], rows, spec.classes, _both(train.class_names, test.class_names),
        what="label", where=spec.where,
    )  # fmt: skip
    groups, group_names = resolve_ids(
        [*train.groups, *test.groups], rows, spec.groups, _both(train.group_names, test.group_names),
        what="group", where=spec.where,
    )  # fmt: skip
    check_sizes(spec.where, len(classes), len(group_names))
    n = len(train)
    _check_train_classes(spec.where, labels[:n], classes)
    pixels = _pixels(spec, train, test, sources, cache_dir=cache_dir, cache=cache)

    def split(which: str, ids: slice) -> FairSplit:
        store = Uint8Images(pixels[which], spec.mean, spec.std)
        y, a = torch.from_numpy(labels[ids].copy()), torch.from_numpy(groups[ids].copy())
        return FairSplit(store if stream else store.materialise(), y, a)

    extra = {"dsa_strategy": spec.dsa_strategy} if spec.dsa_strategy is not None else {}
    return FairDataset(
        name=spec.name,
        train=split("train", slice(0, n)),
        test=split("test", slice(n, None)),
        class_names=classes,
        group_names=group_names,
        mean=spec.mean,
        std=spec.std,
        description=spec.description,
        params={**spec.params, "image_size": spec.image_size, "image_shape": list(pixels["train"].shape[2:])},
        **extra,
    )


def _both(a: Sequence[str] | None, b: Sequence[str] | None) -> list[str] | None:
    return None if a is None or b is None else [*a, *b]


def _pixels(
    spec: TableSpec,
    train: SplitRows,
    test: SplitRows,
    sources: Sequence[Path],
    *,
    cache_dir: str | Path | None,
    cache: bool,
) -> dict[str, np.ndarray]:
    """Both splits' decoded pixels, from the cache or decoded now (and cached)."""

    def build() -> dict[str, np.ndarray]:
        if spec.image_size is not None:
            size, resize = (spec.image_size, spec.image_size), True
        else:
            size, resize = common_size(chain(train.images, test.images), spec.where), False
        return {
            which: decode_all(split.images, size, resize=resize, what=f"{spec.name} {which}")
            for which, split in (("train", train), ("test", test))
        }

    rows = [len(train), len(test)]
    params = {**spec.cache_params, "image_size": spec.image_size, "transform": TRANSFORM, "rows": rows}
    return cached_arrays(spec.key, sources, params, build, cache_dir=cache_dir, cache=cache)


__all__ = [
    "ImageInput",
    "SplitRows",
    "TableSpec",
    "check_image_size",
    "common_size",
    "decode_all",
    "decode_rgb",
    "parse_pairs",
    "probe_size",
    "resolve_ids",
    "table_dataset",
]
