"""Write small MNIST-style IDX files (the real format) for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairdistill.data.idx import write_idx


def write_mnist(
    root: Path,
    folder: str = "MNIST/raw",
    *,
    train_per_class: int = 20,
    test_per_class: int = 10,
    size: int = 28,
    gz: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random uint8 digits with shuffled balanced labels; returns the arrays written (uint8)."""
    rng = np.random.default_rng(seed)
    out = {}
    target = Path(root) / folder
    target.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, prefix, per_class in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        images = rng.integers(0, 256, size=(len(labels), size, size), dtype=np.uint8)
        write_idx(target / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(target / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out
