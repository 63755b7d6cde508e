"""Images kept in their compact uint8 form and decoded a batch at a time (a *streamed* split).

A :class:`Uint8Images` holds uint8 pixels, in memory or in a ``.npy`` file on disk, plus the
normalisation of the dataset. Indexing it with an index tensor returns float32 model-space images
``(x / 255 - mean) / std``, computed exactly as :func:`~fairdistill.data.pixels.normalise_uint8`
does, so a streamed split gives bit-identical batches to one normalised up front. ``.to(device)``
materialises the whole split, for the few code paths that need it at once (group inference, the
evaluation's test split).

Reading rows from disk. Pages of a memory-mapped file that a process touches count in its resident
set, so random batches drawn from a memory map over many iterations make the RSS creep up to the
size of the file. The default reader (``read="pread"``) instead reads the requested rows with
``os.pread`` (sorted, consecutive rows coalesced into one read): the bytes go through the kernel's
page cache, which the kernel can drop at will and which does not count in the process's RSS.
``read="mmap"`` indexes the memory map (faster when the file is small or already resident);
``benchmarks/stream_memory.py`` measures both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch import Tensor

from ..errors import FairDistillError
from ..validate import one_line
from .files import corrupt
from .pixels import normalise_uint8

Reader = Literal["pread", "mmap"]

#: ``transform(pixels, rows)``: uint8 rows as stored (a tensor, channels first) and their row numbers
#: in the file -> float32 model-space images. The default normalises with the store's mean and std.
Transform = Callable[[Tensor, Tensor], Tensor]


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a ``.npy`` file, read from its header only.

    Raises numpy's own errors (ValueError, OSError, EOFError...) on a malformed header;
    :func:`inspect_npy` turns them into one "corrupt" line and checks the header against the file.
    """
    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            # 3.0 is the 2.0 layout with a UTF-8 header; a numeric array's header is ASCII, the same bytes
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), f.tell()


@dataclass(frozen=True)
class NpyFile:
    """A ``.npy`` file's header, checked against the file: what :func:`inspect_npy` returns.

    ``size`` and ``mtime_ns`` are the file's, from the same ``stat`` (they identify the file's
    version cheaply, see :meth:`fairdistill.data.FairDataset.fingerprint`).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    size: int
    mtime_ns: int

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """The bytes of data the header declares (a Python int: no overflow whatever the shape)."""
        return math.prod(self.shape) * self.dtype.itemsize


def inspect_npy(path: str | Path) -> NpyFile:
    """Read a ``.npy`` file's header and check it against the file, reading none of the data.

    Refused, each with one line naming the file: an unreadable or malformed header, a negative
    dimension, a file whose size after the header differs from what the shape and dtype declare
    (a header claiming 10^15 rows of a small file is refused here, before numpy allocates anything
    for it): "corrupt"; a dtype holding Python objects (that would need unpickling, which
    fairdistill never does). Format versions 1.0, 2.0 and 3.0 are read.
    """
    path = Path(path)
    try:
        st = path.stat()
        shape, dtype, fortran, offset = npy_header(path)
    except FairDistillError:
        raise
    except Exception as err:  # noqa: BLE001 - numpy's header parser fails in many ways; each means corrupt
        raise corrupt(path, f"not a readable .npy array ({one_line(str(err), 160)})") from None
    if dtype.hasobject:
        raise FairDistillError(
            f"{path}: holds Python objects ({dtype}); only plain numeric arrays are read, never pickles"
        )
    if any(s < 0 for s in shape):
        raise corrupt(path, f"its header declares the impossible shape {shape}")
    meta = NpyFile(path, shape, dtype, fortran, offset, int(st.st_size), int(st.st_mtime_ns))
    have = meta.size - offset
    if have < meta.nbytes:
        raise corrupt(
            path, f"its header declares {dtype} {shape} ({meta.nbytes} bytes) but only {max(have, 0)} bytes follow it"
        )
    if have > meta.nbytes:
        extra = have - meta.nbytes
        raise corrupt(path, f"{extra} bytes follow the {meta.nbytes} its header declares ({dtype} {shape})")
    return meta


def load_npy(meta: NpyFile, *, mmap: bool) -> np.ndarray:
    """The array of a checked ``.npy`` file (:func:`inspect_npy`): memory-mapped read-only, or read whole."""
    try:
        return np.load(meta.path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # e.g. the file changed since it was inspected
        raise corrupt(meta.path, f"not a readable .npy array ({one_line(str(err), 160)})") from None


class Uint8Images:
    """uint8 images (N, C, H, W) decoded to model space on demand.

    Parameters
    ----------
    pixels : uint8 array, (N, C, H, W) or, with ``channels_last``, (N, H, W, C); an in-memory
        array or a ``numpy.memmap`` of a whole ``.npy`` file (read with ``os.pread``, see ``read``)
    mean, std : per-channel normalisation of pixels in [0, 1]
    channels_last : the stored layout is (N, H, W, C); rows are transposed when read
    rows : optional (M,) int64 row numbers: this store shows ``pixels[rows]`` (a subset, no copy)
    transform : optional decoder ``(uint8 rows, row numbers) -> float32 model-space images``
        replacing the plain normalisation (e.g. recolouring by group); ``shape`` must then be given
    shape : (C, H, W) of the decoded images when ``transform`` changes it
    read : "pread" (default; constant RSS) or "mmap" (index the memory map; its pages stay resident)
    """

    def __init__(
        self,
        pixels: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        channels_last: bool = False,
        rows: np.ndarray | None = None,
        transform: Transform | None = None,
        shape: tuple[int, int, int] | None = None,
        read: Reader = "pread",
    ) -> None:
        if read not in ("pread", "mmap"):
            raise FairDistillError(f"unknown read mode {read!r}; allowed: mmap, pread")
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
            raise FairDistillError(f"expected a uint8 numpy array of pixels, got {getattr(pixels, 'dtype', pixels)}")
        if transform is None and pixels.ndim != 4:
            raise FairDistillError(f"expected uint8 pixels of shape (N, C, H, W), got {pixels.shape}")
        self.pixels = pixels
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.channels_last = channels_last
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.transform = transform
        self.read = read
        self._file = _file_of(pixels)
        n = len(pixels) if self.rows is None else len(self.rows)
        if shape is None:
            c, h, w = pixels.shape[1:] if not channels_last else (pixels.shape[3], *pixels.shape[1:3])
            shape = (int(c), int(h), int(w))
        self.shape = torch.Size((int(n), *shape))
        if transform is None and self.shape[1] != len(self.mean):
            raise FairDistillError(f"images have {self.shape[1]} channels, normalisation has {len(self.mean)}")

    @classmethod
    def from_npy(cls, path: str | Path, mean: tuple[float, ...], std: tuple[float, ...], **kwargs: Any) -> Uint8Images:
        """A store over the ``.npy`` file at ``path`` (memory-mapped read-only, rows read on demand).

        The header is checked against the file first (:func:`inspect_npy`).
        """
        return cls(load_npy(inspect_npy(path), mmap=True), mean, std, **kwargs)

    # ---- tensor-like facts -------------------------------------------------------------------
    ndim = 4
    dtype = torch.float32  # of what indexing returns
    device = torch.device("cpu")

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        where = f"file {self._file[0]}" if self._file else "memory"
        return f"Uint8Images(shape={tuple(self.shape)}, {where}, read={self.read!r})"

    @property
    def nbytes(self) -> int:
        """Bytes of the uint8 pixels this store shows."""
        return int(np.prod(self.shape)) if self.transform is None else len(self) * int(np.prod(self.pixels.shape[1:]))

    # ---- reading -----------------------------------------------------------------------------
    def __getitem__(self, index: Tensor | np.ndarray | slice | int) -> Tensor:
        """Float32 model-space images at ``index`` (an index tensor / array, a slice or an int)."""
        if isinstance(index, int | np.integer):
            return self[torch.tensor([int(index)])][0]
        rows = self._stored_rows(index)
        raw = torch.from_numpy(self._read(rows))
        if self.channels_last:
            raw = raw.permute(0, 3, 1, 2).contiguous()
        if self.transform is not None:
            return self.transform(raw, torch.from_numpy(rows))
        return normalise_uint8(raw, self.mean, self.std)

    def _stored_rows(self, index: Tensor | np.ndarray | slice) -> np.ndarray:
        """The row numbers in ``pixels`` of the images at ``index`` (indices, a boolean mask or a slice)."""
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index).cpu()
            if idx.dtype == torch.bool:
                idx = idx.nonzero().flatten()
            idx = idx.numpy().astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        idx = np.where(idx < 0, idx + len(self), idx)
        return idx if self.rows is None else self.rows[idx]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The stored uint8 rows ``rows``, in that order."""
        if self._file is None or self.read == "mmap" or rows.size == 0:
            return np.ascontiguousarray(self.pixels[rows])
        path, offset = self._file
        row_bytes = int(np.prod(self.pixels.shape[1:]))
        order = np.unique(rows)  # sorted, distinct
        out = np.empty((len(order), *self.pixels.shape[1:]), dtype=np.uint8)
        flat = memoryview(out.reshape(-1))
        # runs of consecutive rows: one pread each
        breaks = np.flatnonzero(np.diff(order) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [len(order)]])
        fd = os.open(path, os.O_RDONLY)
        try:
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                want = (b - a) * row_bytes
                view = flat[a * row_bytes : b * row_bytes]
                got = os.preadv(fd, [view], offset + int(order[a]) * row_bytes)
                while got < want:  # short reads are legal; finish the run
                    more = os.preadv(fd, [view[got:]], offset + int(order[a]) * row_bytes + got)
                    if more <= 0:
                        raise FairDistillError(f"{path}: file ends early (truncated?)")
                    got += more
        finally:
            os.close(fd)
        return out[np.searchsorted(order, rows)]

    def select(self, index: Tensor | np.ndarray) -> Uint8Images:
        """A store of the images at ``index`` (row numbers only; no pixels are read)."""
        return Uint8Images(
            self.pixels,
            self.mean,
            self.std,
            channels_last=self.channels_last,
            rows=self._stored_rows(index),
            transform=self.transform,
            shape=tuple(self.shape[1:]),
            read=self.read,
        )

    def materialise(self, block: int = 4096) -> Tensor:
        """The whole split as one float32 tensor (N, C, H, W), decoded block by block."""
        out = torch.empty(self.shape, dtype=torch.float32)
        for start in range(0, len(self), block):
            stop = min(start + block, len(self))
            out[start:stop] = self[torch.arange(start, stop)]
        return out

    def to(self, device: torch.device | str | None = None) -> Tensor:
        """The whole split materialised on ``device`` (see :meth:`materialise`)."""
        x = self.materialise()
        return x if device is None else x.to(device)


def _file_of(pixels: np.ndarray) -> tuple[str, int] | None:
    """(path, data offset) when ``pixels`` is a memory map of a whole C-ordered ``.npy`` file, else None."""
    if not isinstance(pixels, np.memmap) or not getattr(pixels, "filename", None):
        return None
    try:
        shape, dtype, fortran, offset = npy_header(pixels.filename)
    except (OSError, ValueError):
        return None
    # a slice of a memmap keeps its parent's filename and offset: only trust a map of the whole array
    if fortran or shape != pixels.shape or dtype != pixels.dtype or not pixels.flags.c_contiguous:
        return None
    return str(pixels.filename), offset


__all__ = ["NpyFile", "Reader", "Uint8Images", "inspect_npy", "load_npy", "npy_header"]
