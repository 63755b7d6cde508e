"""Writers of small CIFAR-10 "python version" folders for the loader tests.

``write_cifar_batches`` produces the real file set (``data_batch_1`` .. ``data_batch_5``,
``test_batch``, ``batches.meta``) with the real dict keys, filled with random pixels. By default
the pickles are written the way the originals were, by Python 2: protocol 2, every string a
Python-2 ``str`` (SHORT_BINSTRING / BINSTRING opcodes, read back as ``bytes`` with
``encoding="bytes"``) and numpy's functions named under ``numpy.core``. That needs the pure-Python
pickler (``pickle._Pickler``), whose opcode writers can be replaced. ``style="py3"`` writes what
``pickle.dumps(..., protocol=2)`` gives in Python 3 (bytes through ``_codecs.encode``), and
``style="protocol5"`` the newest protocol (arrays through ``numpy``'s ``_frombuffer``).
"""

from __future__ import annotations

import io
import pickle
import shlex
import struct
from pathlib import Path
from typing import Any

import numpy as np

LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: strings as 8-bit ``str``, numpy globals under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj: bytes | str) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        name = name or obj.__qualname__
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)


def dump(obj: Any, path: str | Path, style: str = "py2") -> Path:
    """Pickle ``obj`` to ``path`` in one of the styles described in the module docstring."""
    path = Path(path)
    if style == "py2":
        buf = io.BytesIO()
        _Py2Pickler(buf, protocol=2).dump(obj)
        path.write_bytes(buf.getvalue())
    elif style == "py3":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    elif style == "protocol5":
        path.write_bytes(pickle.dumps(obj, protocol=5))
    else:
        raise ValueError(f"unknown pickle style {style!r}")
    return path


def write_batch(path: str | Path, images: np.ndarray, labels: Any, *, style: str = "py2", label: str = "") -> Path:
    """One batch file: ``images`` (N, 3, 32, 32) uint8 stored as the (N, 3072) ``data`` rows."""
    images = np.asarray(images)
    n = images.shape[0]
    batch = {
        b"batch_label": (label or "batch").encode(),
        b"labels": [int(v) for v in labels],  # a plain list of ints, as in the originals
        b"data": np.ascontiguousarray(images.reshape(n, -1)),
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(n)],
    }
    return dump(batch, path, style)


def write_meta(path: str | Path, names: tuple[str, ...] = LABEL_NAMES, *, style: str = "py2") -> Path:
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    return dump(meta, path, style)


def write_malicious_pickle(path: str | Path, marker: str | Path) -> Path:
    """A protocol-0 pickle that calls ``os.system("touch <marker>")`` when loaded by a plain unpickler."""
    command = f"touch {shlex.quote(str(marker))}"
    Path(path).write_bytes(b"cos\nsystem\n(V" + command.encode() + b"\ntR.")
    return Path(path)


def write_cifar_batches(
    root: str | Path,
    *,
    n_train_per_class: int = 6,
    n_test_per_class: int = 3,
    seed: int = 0,
    folder: str = "cifar-10-batches-py",
    style: str = "py2",
) -> dict[str, Any]:
    """Write a complete, small CIFAR-10 python folder under ``root``; return what was written.

    Labels are shuffled and the training images dealt over the five batches in order, so the
    loader's concatenation of the batches gives back ``train_images`` / ``train_labels`` exactly.
    """
    rng = np.random.default_rng(seed)
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)

    def draw(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.int64), n_per_class))
        images = rng.integers(0, 256, size=(labels.shape[0], 3, 32, 32), dtype=np.uint8)
        return images, labels

    train_x, train_y = draw(n_train_per_class)
    test_x, test_y = draw(n_test_per_class)
    for i, part in enumerate(np.array_split(np.arange(train_y.shape[0]), 5), start=1):
        label = f"training batch {i} of 5"
        write_batch(out / f"data_batch_{i}", train_x[part], train_y[part], style=style, label=label)
    write_batch(out / "test_batch", test_x, test_y, style=style, label="testing batch 1 of 1")
    write_meta(out / "batches.meta", style=style)
    return {
        "folder": out,
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
        "label_names": LABEL_NAMES,
    }
