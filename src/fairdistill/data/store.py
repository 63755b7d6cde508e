"""Images kept in their compact uint8 form and decoded a batch at a time (a *streamed* split).

A :class:`Uint8Images` holds uint8 pixels, in memory or in a ``.npy`` file on disk, plus the
normalisation of the dataset. Indexing it with an index tensor returns float32 model-space images
``(x / 255 - mean) / std``, computed exactly as :func:`~fairdistill.data.dataset.normalise_uint8`
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

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch import Tensor

from ..errors import FairDistillError

Reader = Literal["pread", "mmap"]

#: ``transform(pixels, rows)``: uint8 rows as stored (a tensor, channels first) and their row numbers
#: in the file -> float32 model-space images. The default normalises with the store's mean and std.
Transform = Callable[[Tensor, Tensor], Tensor]


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a ``.npy`` file, read from its header only."""
    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:  # (3, 0) differs from 2.0 only in the header's text encoding
            shape, fortran, dtype = npy_format._read_array_header(f, version)  # noqa: SLF001
        return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), f.tell()


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
        """A store over the ``.npy`` file at ``path`` (memory-mapped read-only, rows read on demand)."""
        return cls(np.load(path, mmap_mode="r", allow_pickle=False), mean, std, **kwargs)

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
        from .dataset import normalise_uint8

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


__all__ = ["Reader", "Uint8Images", "npy_header"]
