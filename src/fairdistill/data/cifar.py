"""CIFAR10-S: CIFAR-10 with a colour/grayscale sensitive attribute (Wang et al. 2020).

"Towards fairness in visual recognition" (Wang et al., CVPR 2020) skews CIFAR-10 by colour: in the
training split, classes 0-4 are mostly grayscale and classes 5-9 mostly colour. Here the skew is
an exact quota, not a coin flip per image: within each class a seeded random permutation picks
``round(skew * n_c)`` images for the class's majority look (grayscale for classes 0-4, colour for
5-9) and the rest get the other one. That is the reference's construction (the first 4,500 of each
class after a seeded shuffle, PUBLISHED.md section 1); only the random generator, hence which
4,500, differs. The test split shows every CIFAR-10 test image twice, once in grayscale (group 0)
and once in colour (group 1), so it is group balanced. Normalisation: the reference's CIFAR10-S
statistics, mean (0.4891, 0.4845, 0.4671), std (0.2428, 0.2408, 0.2510).

Files: the standard "CIFAR-10 python version" (``cifar-10-python.tar.gz`` unpacked), i.e. a folder
``cifar-10-batches-py`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``. Each batch is a Python-2 pickle of a dict whose ``data`` entry is an (N, 3072)
uint8 array (1024 red, then 1024 green, then 1024 blue values, each a 32x32 image in row order)
and whose ``labels`` entry is a list of N ints in 0..9; ``batches.meta`` holds ``label_names``.

Pickles can run arbitrary code when loaded, so the batches are read with a restricted unpickler
that resolves only the handful of numpy names an array needs (and a latin-1 ``_codecs.encode``,
which Python 3 uses for bytes in protocol 2) and refuses every other global with an error.

Grayscale is ITU-R BT.601 luma, ``L = 0.299 R + 0.587 G + 0.114 B``, evaluated the way Pillow's
``Image.convert("L")`` does it (16-bit fixed point, ``(19595 R + 38470 G + 7471 B + 32768) >> 16``)
so that the grayscale pixels equal Pillow's (and hence torchvision's ``Grayscale`` on PIL images)
bit for bit; the luma is copied to all three channels. For about 0.05% of RGB triples this differs
by one grey level from rounding the real-valued formula.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FairDistillError
from ..rng import generator
from .cache import cached_arrays
from .dataset import FairDataset, FairSplit
from .files import Layout, corrupt, data_root_from
from .pixels import normalise_uint8
from .store import Uint8Images

KEY = "cifar10-s"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

LAYOUT = Layout(
    key=KEY,
    folders=(FOLDER, f"cifar10/{FOLDER}", f"CIFAR10/{FOLDER}"),
    files=tuple((name,) for name in (*TRAIN_FILES, TEST_FILE, META_FILE)),
    note="the unpacked 'CIFAR-10 python version', cifar-10-python.tar.gz",
)

#: CIFAR10-S's per-channel normalisation as the reference uses it (PUBLISHED.md section 1; pixels in [0, 1]).
MEAN: tuple[float, float, float] = (0.4891, 0.4845, 0.4671)
STD: tuple[float, float, float] = (0.2428, 0.2408, 0.2510)
#: plain CIFAR-10's customary normalisation (the reference uses it for BFFHQ, not for CIFAR10-S)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
GROUP_NAMES: tuple[str, str] = ("grayscale", "colour")
GRAY, COLOUR = 0, 1
NUM_CLASSES = 10
#: classes below this index are mostly grayscale in training, the others mostly colour
FIRST_COLOUR_CLASS = 5

#: Pillow's fixed-point BT.601 weights (they sum to 2**16)
_LUMA_WEIGHTS = (19595, 38470, 7471)


# ---- restricted unpickling ------------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the small set that a CIFAR batch needs."""


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what pickle protocol 2 uses it for: str -> bytes in latin-1."""
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r} (only latin-1 is allowed)")
    return text.encode("latin-1", errors)


def _numpy_attr(name: str, *modules: str) -> Callable[[], Any]:
    """A lazy lookup of ``name`` in the first of ``modules`` that imports (numpy 2 moved numpy.core)."""

    def lookup() -> Any:
        for module in modules:
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"this numpy has no {name} in {' or '.join(modules)}")

    return lookup


_reconstruct = _numpy_attr("_reconstruct", "numpy._core.multiarray", "numpy.core.multiarray")
_frombuffer = _numpy_attr("_frombuffer", "numpy._core.numeric", "numpy.core.numeric")

#: (module, name) -> the object handed to the unpickler; nothing else may be looked up
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        lookup = _ALLOWED.get((module, name))
        if lookup is None:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only numpy arrays, lists and strings"
            )
        return lookup()


def read_pickle(path: Path) -> Any:
    """The object in a (Python 2 or 3) pickle file, decoded with the restricted unpickler.

    Python 2 strings come back as ``bytes`` (``encoding="bytes"``, as for the original batches).
    A refused global or an unreadable file raises :class:`~fairdistill.data.files.MissingDataError`.
    """
    try:
        with open(path, "rb") as fh:
            return _ArrayOnlyUnpickler(fh, encoding="bytes").load()
    except UnsafePickleError as err:
        raise corrupt(path, f"unsafe pickle: {err}") from err
    except OSError as err:
        raise corrupt(path, f"cannot read: {err}") from err
    except Exception as err:  # any failure to decode an untrusted file means a bad file
        raise corrupt(path, f"cannot unpickle: {type(err).__name__}: {err}") from err


def _entry(obj: dict, name: str) -> Any:
    """``obj[name]`` under a bytes key (Python 2 pickles) or a str key (re-saved in Python 3)."""
    if name.encode() in obj:
        return obj[name.encode()]
    return obj.get(name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> (pixels (N, 3, 32, 32) uint8, labels (N,) int64), checked."""
    obj = read_pickle(path)
    if not isinstance(obj, dict):
        raise corrupt(path, f"expected a pickled dict, found {type(obj).__name__}")
    data, labels = _entry(obj, "data"), _entry(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise corrupt(path, f"'data' must be an (N, 3072) uint8 array, found {found}")
    if labels is None:
        raise corrupt(path, "no 'labels' entry")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise corrupt(path, f"'labels' is not a list of ints: {err}") from err
    if y.ndim != 1 or y.shape[0] != data.shape[0] or (y.size and y.dtype.kind not in "iu"):
        raise corrupt(path, f"'labels' must be {data.shape[0]} ints (one per image), found {y.dtype} {y.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise corrupt(path, f"labels outside 0..{NUM_CLASSES - 1} (found {int(y.min())}..{int(y.max())})")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def read_label_names(path: Path) -> tuple[str, ...]:
    """The ten class names stored in ``batches.meta``."""
    obj = read_pickle(path)
    names = _entry(obj, "label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list | tuple) or len(names) != NUM_CLASSES:
        raise corrupt(path, f"expected a dict with 'label_names', a list of {NUM_CLASSES} names")
    out = []
    for n in names:
        if isinstance(n, bytes):
            try:
                n = n.decode("utf-8")
            except UnicodeDecodeError as err:
                raise corrupt(path, f"label name {n!r} is not text") from err
        if not isinstance(n, str) or not n:
            raise corrupt(path, f"label name {n!r} is not a non-empty string")
        out.append(n)
    return tuple(out)


# ---- pixels -------------------------------------------------------------------------------------------


def luma_uint8(pixels: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 RGB -> (N, 3, H, W) uint8 gray, the BT.601 luma copied to all channels.

    Computed exactly as Pillow's ``Image.convert("L")`` (16-bit fixed-point weights, rounded).
    """
    x = np.asarray(pixels)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise FairDistillError(f"expected (N, 3, H, W) uint8 RGB pixels, got {x.dtype} {x.shape}")
    wr, wg, wb = _LUMA_WEIGHTS
    rgb = x.astype(np.int32)
    lum = (wr * rgb[:, 0] + wg * rgb[:, 1] + wb * rgb[:, 2] + (1 << 15)) >> 16
    return np.repeat(lum.astype(np.uint8)[:, None], 3, axis=1)


def resize_uint8(pixels: np.ndarray, size: int, chunk: int = 2048) -> np.ndarray:
    """Resize (N, C, H, W) uint8 images to ``size`` x ``size`` (bilinear, antialiased), rounded to uint8."""
    if pixels.shape[-2:] == (size, size):
        return pixels
    out = np.empty((pixels.shape[0], pixels.shape[1], size, size), dtype=np.uint8)
    for start in range(0, pixels.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(pixels[start : start + chunk])).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = y.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


# ---- the benchmark -----------------------------------------------------------------------------------


def skewed_groups(labels: torch.Tensor, skew: float, *, generator: torch.Generator) -> torch.Tensor:
    """Group per training image: within class ``c`` (in a seeded random order) exactly
    ``round(skew * n_c)`` images get the class's majority look, grayscale for ``c < 5`` and colour
    otherwise; the rest get the other look."""
    if not 0.0 <= skew <= 1.0:
        raise FairDistillError(f"skew must lie in [0, 1], got {skew}")
    groups = torch.empty_like(labels)
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_major = int(round(skew * len(idx)))
        major = GRAY if c < FIRST_COLOUR_CLASS else COLOUR
        groups[idx[:n_major]] = major
        groups[idx[n_major:]] = 1 - major
    return groups


def _decode(folder: Path, image_size: int) -> dict[str, np.ndarray]:
    """Read all six batches; the arrays that the cache stores."""
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(folder / TEST_FILE)
    return {
        "train_images": resize_uint8(train_x, image_size),
        "train_labels": train_y,
        "test_images": resize_uint8(test_x, image_size),
        "test_labels": test_y,
    }


def _grayed(gray: np.ndarray, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Decode streamed training rows: grayscale where ``gray[row]``, then normalise."""
    x = pixels.numpy()  # a fresh copy of the rows, safe to edit
    g = gray[rows.numpy()]
    if g.any():
        x[g] = luma_uint8(x[g])
    return normalise_uint8(x, MEAN, STD)


def cifar10_s(
    *,
    data_root: str | Path | None = None,
    skew: float = 0.9,
    seed: int = 0,
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    stream: bool = False,
) -> FairDataset:
    """CIFAR10-S from the CIFAR-10 python batches under ``data_root`` (else ``$FAIRDISTILL_DATA``).

    Parameters
    ----------
    data_root : folder holding ``cifar-10-batches-py`` (or ``cifar10/`` / ``CIFAR10/`` above it)
    skew : share of each training class in its majority look (grayscale for classes 0-4,
        colour for 5-9); 0.9 in the paper
    seed : picks which images of a class are grayscale (the pixels do not depend on it)
    image_size : side of the square images; CIFAR's 32 unless resized (bilinear, antialiased)
    cache_dir, cache : where the decoded pixels are cached (see :mod:`fairdistill.data.cache`)
    stream : keep the training pixels uint8 (memory-mapped from the cache) and decode them, grayscale
        conversion included, a batch at a time (:class:`~fairdistill.data.store.Uint8Images`);
        bit-identical images

    Returns a :class:`FairDataset` with groups 0 = grayscale, 1 = colour; the test split holds
    every test image in grayscale (first half) and in colour (second half).
    """
    if not 0.0 <= skew <= 1.0:
        raise FairDistillError(f"skew must lie in [0, 1], got {skew}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise FairDistillError(f"image_size must be a positive integer, got {image_size!r}")
    folder = LAYOUT.find(data_root_from(data_root))
    class_names = read_label_names(folder / META_FILE)
    sources = [folder / name for name in (*TRAIN_FILES, TEST_FILE, META_FILE)]
    arrays = cached_arrays(
        KEY,
        sources=sources,
        params={"image_size": image_size},
        build=lambda: _decode(folder, image_size),
        cache_dir=cache_dir,
        cache=cache,
    )

    train_y = torch.from_numpy(np.array(arrays["train_labels"], dtype=np.int64))
    groups = skewed_groups(train_y, skew, generator=generator(seed, "cifar10-s-groups"))
    gray = (groups == GRAY).numpy()
    if stream:
        train_images: torch.Tensor | Uint8Images = Uint8Images(
            arrays["train_images"], MEAN, STD, transform=partial(_grayed, gray), shape=arrays["train_images"].shape[1:]
        )
    else:
        train_x = np.array(arrays["train_images"], dtype=np.uint8)  # a private, writable copy
        train_x[gray] = luma_uint8(train_x[gray])
        train_images = normalise_uint8(train_x, MEAN, STD)

    test_x = np.asarray(arrays["test_images"])
    test_y = torch.from_numpy(np.array(arrays["test_labels"], dtype=np.int64))
    n_test = int(test_y.shape[0])
    test_pixels = np.concatenate([luma_uint8(test_x), test_x])
    test_groups = torch.cat([torch.full((n_test,), GRAY), torch.full((n_test,), COLOUR)]).long()

    return FairDataset(
        name=KEY,
        train=FairSplit(train_images, train_y, groups),
        test=FairSplit(normalise_uint8(test_pixels, MEAN, STD), test_y.repeat(2), test_groups),
        class_names=class_names,
        group_names=GROUP_NAMES,
        mean=MEAN,
        std=STD,
        description=(
            f"CIFAR-10, group = grayscale/colour: classes 0-4 {skew:.0%} grayscale, 5-9 {skew:.0%} colour "
            "in training; every test image shown in both"
        ),
        params={"skew": skew, "seed": seed, "image_size": image_size, "source": str(folder)},
    )


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "LAYOUT",
    "MEAN",
    "STD",
    "GROUP_NAMES",
    "cifar10_s",
    "luma_uint8",
    "read_batch",
    "skewed_groups",
]
