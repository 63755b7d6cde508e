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

What is checked, in this order, each failure one line naming the file (and the field):

* ``meta.json`` (:class:`NpyMeta`): JSON bounded in size and depth, no NaN / Infinity (nor a number
  too large for a float), an object with only the keys above, each of its type: names non-empty
  strings without control characters and unique, at most :data:`~fairdistill.data.dataset.MAX_CLASSES`
  classes / :data:`~fairdistill.data.dataset.MAX_GROUPS` groups; ``mean`` within [-100, 100] and
  ``std`` within [0.001, 100] (so every model-space value stays finite), one entry per image
  channel; ``dsa_strategy`` a valid augmentation string. ``null`` is refused: leave a key out for
  its default. Unknown keys are refused, with the list of the allowed ones (a misspelt ``"std"``
  must not silently fall back to the default).
* every ``.npy`` header, before any data is read: readable, no Python objects, the bytes after the
  header exactly those its shape and dtype declare (a header claiming 10^15 rows is refused from
  the file size); images uint8, C-ordered, non-empty; ids 1-D integer (not bool, not float) and as
  many as the images.
* the ids, before anything is built from them: labels >= 0, groups >= -1 (train) or >= 0 (test),
  every id below the number of names declared in ``meta.json`` or, without names, the implied
  count (largest id + 1) within the bounds above.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ..errors import FairDistillError
from ..validate import parse, read_json_file
from .dataset import MAX_CLASSES, MAX_GROUPS, FairDataset, FairSplit, check_sizes, listed
from .files import MissingDataError, data_root_from
from .pixels import normalise_uint8
from .store import NpyFile, Reader, Uint8Images, inspect_npy, load_npy

KEY = "npy"
SPLITS = ("train", "test")
FILES = tuple(f"{s}_{what}.npy" for s in SPLITS for what in ("images", "labels", "groups"))
META = "meta.json"
CHANNELS = (1, 3, 4)
#: the longest class, group or dataset name in ``meta.json``, in characters
MAX_NAME = 200
#: the longest ``description`` in ``meta.json``, in characters
MAX_DESCRIPTION = 2000
#: bounds of ``mean`` and ``std`` in ``meta.json``: with pixels in [0, 1], |model-space value| <= 10^5
MEAN_BOUND, STD_MIN, STD_MAX = 100.0, 1e-3, 100.0


def _printable(text: str) -> str:
    """``text``, refused if it holds a control character (newline, escape...) or a lone surrogate (not printable)."""
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text):
        raise PydanticCustomError(
            "control_character", "must not contain control characters (newlines, escapes) or lone surrogates"
        )
    return text


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_printable)]
Text = Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_printable)]
Mean = Annotated[float, Field(allow_inf_nan=False, ge=-MEAN_BOUND, le=MEAN_BOUND)]
Std = Annotated[float, Field(allow_inf_nan=False, ge=STD_MIN, le=STD_MAX)]


class ImageMeta(BaseModel):
    """The ``meta.json`` keys that every own-data folder takes (``npy``, ``folder``); each optional, each
    of exactly its type (no coercion)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    name: Name | None = None
    classes: list[Name] | None = Field(None, min_length=1, max_length=MAX_CLASSES)
    groups: list[Name] | None = Field(None, min_length=1, max_length=MAX_GROUPS)
    mean: list[Mean] | None = Field(None, min_length=1, max_length=max(CHANNELS))
    std: list[Std] | None = Field(None, min_length=1, max_length=max(CHANNELS))
    description: Text | None = None
    dsa_strategy: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # absent keys take their default; an explicit null is a mistake
            raise PydanticCustomError("null", "null is not allowed (leave the key out for its default)")
        return value

    @field_validator("classes", "groups")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dup = [repr(n) for n, k in sorted(Counter(value).items()) if k > 1]
        if dup:
            raise PydanticCustomError("duplicate", "duplicate name(s) {names}", {"names": listed(dup)})
        return value

    @field_validator("dsa_strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        from ..augment import parse_strategy

        try:
            parse_strategy(value)
        except FairDistillError as err:
            raise PydanticCustomError("dsa_strategy", "{problem}", {"problem": str(err)}) from None
        return value


class NpyMeta(ImageMeta):
    """``meta.json`` of an ``npy`` folder: :class:`ImageMeta`'s keys and ``layout``."""

    layout: Literal["NCHW", "NHWC"] | None = None


M = TypeVar("M", bound=ImageMeta)


def read_meta(folder: Path, model: type[M] = NpyMeta) -> tuple[M, str | None]:  # type: ignore[assignment]
    """The folder's ``meta.json`` checked against ``model`` (defaults when absent), and the SHA-256 of its
    bytes (None: absent)."""
    path = folder / META
    if not path.exists():
        return model(), None
    if not path.is_file():  # a folder, a device (/dev/zero would never end), a FIFO...
        raise FairDistillError(f"{path}: not a regular file")
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise FairDistillError(f"{path}: expected a JSON object, got {_json_type(data)}")
    allowed = sorted(model.model_fields)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise FairDistillError(f"{path}: unknown key(s) {listed(unknown)}; allowed: {', '.join(allowed)}")
    meta = parse(model, data, str(path))
    return meta, hashlib.sha256(path.read_bytes()).hexdigest()


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _wrong(path: Path, problem: str) -> FairDistillError:
    """The error for a readable array of the wrong kind (dtype, shape, layout): not a corrupt file."""
    return FairDistillError(f"{path}: {problem}")


def _images(f: NpyFile, declared: str | None) -> bool:
    """Check an images file's header; whether its layout is channels-last (N, H, W, C)."""
    if f.dtype != np.uint8:
        raise _wrong(f.path, f"expected uint8 pixels, got {f.dtype}")
    if f.fortran_order:
        raise _wrong(f.path, "expected a C-ordered array (numpy.save of a contiguous array), got Fortran order")
    shape = f.shape
    if len(shape) not in (3, 4):
        raise _wrong(f.path, f"expected uint8 images (N, C, H, W), (N, H, W, C) or (N, H, W), got shape {shape}")
    if shape[0] == 0:
        raise FairDistillError(f"{f.path}: the split is empty")
    if len(shape) == 3:
        last = False
    elif declared is not None:
        c = shape[3] if declared == "NHWC" else shape[1]
        if c not in CHANNELS:
            raise _wrong(f.path, f"layout {declared} means {c} channels; expected one of {CHANNELS}")
        last = declared == "NHWC"
    else:
        first, last = shape[1] in CHANNELS, shape[3] in CHANNELS
        if first == last:
            raise FairDistillError(
                f'{f.path}: cannot tell channels from shape {shape}; set "layout": "NCHW" or "NHWC" in {META}'
            )
    hw = shape[1:3] if len(shape) == 3 or last else shape[2:4]
    if min(hw) < 1:
        raise _wrong(f.path, f"images of height x width {hw[0]} x {hw[1]} hold no pixel")
    return last


def _chw(f: NpyFile, last: bool) -> tuple[int, int, int]:
    s = f.shape
    return (1, s[1], s[2]) if len(s) == 3 else (s[3], s[1], s[2]) if last else (s[1], s[2], s[3])


def _ids_header(f: NpyFile, n: int, what: str) -> None:
    """Check a labels / groups header: 1-D, integer (not bool), one id per image."""
    kind = f.dtype.kind
    if kind == "b":
        raise _wrong(f.path, f"expected integer {what}, got booleans; save the ids as an integer array")
    if f.ndim != 1 or kind not in "iu":
        raise _wrong(f.path, f"expected integer {what} of shape ({n},), got {f.dtype} {f.shape}")
    if f.shape[0] != n:
        raise FairDistillError(f"{f.path}: {f.shape[0]} {what} for {n} images")


def _names(
    declared: list[str] | None, ranges: dict[str, tuple[NpyFile, int, int]], what: str, bound: int
) -> tuple[str, ...]:
    """The names of the classes (or groups): those declared, else "0".."K-1" with K the largest id + 1.

    An inferred K above ``bound`` is refused before a single name is made (a stray label of 10^9
    would otherwise build 10^9 names).
    """
    if declared is not None:
        return tuple(declared)
    f, _, top = max(ranges.values(), key=lambda r: r[2])
    singular = {"classes": "label", "groups": "group"}[what]
    if top + 1 > bound:
        raise FairDistillError(
            f"{f.path}: {singular} {top} would make {top + 1} {what}, more than the {bound} allowed "
            f"(the ids must be 0..K-1 with K <= {bound})"
        )
    return tuple(str(i) for i in range(max(top, 0) + 1))


_NOUN = {"labels": "classes", "groups": "groups"}


def _check_range(f: NpyFile, lo: int, hi: int, lowest: int, names: int, what: str, declared: bool) -> None:
    """Refuse ``what`` ("labels" / "groups") outside [lowest, names), saying where the count came from."""
    if lowest <= lo and hi < names:
        return
    origin = f"named in {META}" if declared else "from the largest id"
    note = ""
    if what == "groups" and lo < 0:
        note = " (-1 marks an unknown group)" if lowest < 0 else " (-1, an unknown group, is allowed in train only)"
    raise FairDistillError(
        f"{f.path}: {what} must lie in [{lowest}, {names}) ({names} {_NOUN[what]} {origin}), found {lo}..{hi}{note}"
    )


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

    Its ``params`` identify the files: the folder, each array's size and modification time (ns)
    and the SHA-256 of ``meta.json`` (see :meth:`~fairdistill.data.FairDataset.fingerprint`).
    """
    folder = _npy_root(data_root)
    meta, meta_sha = read_meta(folder)
    headers = {name: inspect_npy(folder / name) for name in FILES}
    layout, shape = _image_layout(folder, headers, meta.layout)
    mean, std = _normalisation(folder, meta, shape[0])
    ids, ranges = _read_ids(headers)
    classes, groups = _class_and_group_names(folder, meta, ranges)

    def split(s: str) -> FairSplit:
        store = _image_store(headers[f"{s}_images.npy"], layout[s], shape, mean, std, read)
        y = torch.from_numpy(ids[f"{s}_labels"].astype(np.int64))
        a = torch.from_numpy(ids[f"{s}_groups"].astype(np.int64))
        return FairSplit(store if stream else store.materialise(), y, a)

    extra = {"dsa_strategy": meta.dsa_strategy} if meta.dsa_strategy is not None else {}
    files = {name: [h.size, h.mtime_ns] for name, h in headers.items()}
    return FairDataset(
        name=meta.name if meta.name is not None else KEY,
        train=split("train"),
        test=split("test"),
        class_names=classes,
        group_names=groups,
        mean=mean,
        std=std,
        description=meta.description if meta.description is not None else f"uint8 .npy arrays in {folder}",
        params={"source": str(folder.resolve()), "files": files, "meta_sha256": meta_sha},
        **extra,
    )


def _npy_root(data_root: str | Path | None) -> Path:
    """The folder to read, once it is known to hold every array file (``meta.json`` may be absent)."""
    folder = data_root_from(data_root)
    if folder is None:
        raise MissingDataError(f"dataset {KEY!r} reads a folder of .npy arrays: give it with --data-root")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise MissingDataError(
            f"{folder}: missing {', '.join(missing)}; the {KEY!r} dataset needs {', '.join(FILES)} (+ optional {META})"
        )
    return folder


def _image_layout(
    folder: Path, headers: dict[str, NpyFile], declared: str | None
) -> tuple[dict[str, bool], tuple[int, int, int]]:
    """Whether each split's images are stored channels-last, and the (C, H, W) shape both splits share.

    Read from the headers alone; train and test images of different shapes are refused.
    """
    layout = {s: _images(headers[f"{s}_images.npy"], declared) for s in SPLITS}
    shape = _chw(headers["train_images.npy"], layout["train"])
    test_shape = _chw(headers["test_images.npy"], layout["test"])
    if test_shape != shape:
        raise FairDistillError(f"{folder}: train images are {shape} (C, H, W) but test images {test_shape}")
    return layout, shape


def _normalisation(folder: Path, meta: NpyMeta, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` from ``meta.json``, 0.5 per channel for each one left out; one entry per channel."""
    for field, values in (("mean", meta.mean), ("std", meta.std)):
        if values is not None and len(values) != channels:
            raise FairDistillError(
                f"{folder / META}: {field} has {len(values)} entries but the images have {channels} channel(s)"
            )
    mean = tuple(meta.mean) if meta.mean is not None else (0.5,) * channels
    std = tuple(meta.std) if meta.std is not None else (0.5,) * channels
    return mean, std


def _read_ids(
    headers: dict[str, NpyFile],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, tuple[NpyFile, int, int]]]]:
    """Every split's labels and groups, header checked before the values are read.

    Returns the arrays by ``"{split}_{labels|groups}"`` and, by kind and split, (file, smallest id,
    largest id): what the names and the range checks are made from.
    """
    ids: dict[str, np.ndarray] = {}
    ranges: dict[str, dict[str, tuple[NpyFile, int, int]]] = {"labels": {}, "groups": {}}
    for s in SPLITS:
        n = headers[f"{s}_images.npy"].shape[0]
        for what in ("labels", "groups"):
            f = headers[f"{s}_{what}.npy"]
            _ids_header(f, n, what)
            values = load_npy(f, mmap=False)
            ranges[what][s] = (f, int(values.min()), int(values.max()))
            ids[f"{s}_{what}"] = values
    return ids, ranges


def _class_and_group_names(
    folder: Path, meta: NpyMeta, ranges: dict[str, dict[str, tuple[NpyFile, int, int]]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The class and group names (declared or numbered), once every id is known to have one.

    Only the training groups may hold -1 (an unknown group); the counts must stay within the bounds
    of :func:`~fairdistill.data.dataset.check_sizes`.
    """
    classes = _names(meta.classes, ranges["labels"], "classes", MAX_CLASSES)
    groups = _names(meta.groups, ranges["groups"], "groups", MAX_GROUPS)
    for what, names, declared in (("labels", classes, meta.classes), ("groups", groups, meta.groups)):
        for s, (f, lo, hi) in ranges[what].items():
            lowest = -1 if (what, s) == ("groups", "train") else 0
            _check_range(f, lo, hi, lowest, len(names), what, declared is not None)
    check_sizes(str(folder), len(classes), len(groups))
    return classes, groups


def _image_store(
    f: NpyFile,
    channels_last: bool,
    shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    read: Reader,
) -> Uint8Images:
    """A memory-mapped store over one checked images file; (N, H, W) pixels get their channel axis on reading."""
    px = load_npy(f, mmap=True)
    kwargs: dict[str, Any] = {"channels_last": channels_last, "read": read}
    if px.ndim == 3:  # one channel without its axis
        kwargs.update(shape=shape, transform=lambda raw, rows: normalise_uint8(raw.unsqueeze(1), mean, std))
    return Uint8Images(px, mean, std, **kwargs)


__all__ = ["FILES", "KEY", "META", "ImageMeta", "NpyMeta", "npy_folder", "read_meta"]
