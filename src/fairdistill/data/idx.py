"""The IDX file format of MNIST and FashionMNIST (gzipped or not), read with numpy and checked.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. MNIST's files hold unsigned bytes
(type code 0x08): images ``(N, 28, 28)`` and labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .files import corrupt

#: IDX type code -> numpy big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` decompressed on the fly); a clear error when corrupt."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise corrupt(path, f"cannot read: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise corrupt(path, "not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES or ndim == 0:
        raise corrupt(path, f"unknown IDX type code 0x{code:02x} or {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(path, "IDX header cut short")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise corrupt(path, f"IDX header says {shape} ({expected} bytes of data) but the file has {len(raw) - header}")
    values = np.frombuffer(bytearray(raw), dtype, offset=header)  # a bytearray: the array is writable
    return values.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``); for tests and fixtures."""
    path = Path(path)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    arr = np.ascontiguousarray(array)
    code = codes.get(arr.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = header + arr.astype(np.dtype(IDX_TYPES[code]), copy=False).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path
