"""Writes a small dataset in the ``npy`` folder format (the "bring your own data" layout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def write_npy(root: Path, *, n: int = 240, n_test: int = 60, size: int = 8, layout: str = "NHWC", seed: int = 0):
    """A biased 4-class, 2-group uint8 dataset in the ``npy`` folder format; returns the arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, m in (("train", n), ("test", n_test)):
        y = rng.permutation(np.arange(m) % 4)
        a = (rng.random(m) < (0.2 if split == "train" else 0.5)).astype(np.int64)
        a[:8] = np.arange(8) % 2  # every (class, group) cell present
        y[:8] = np.arange(8) // 2
        shape = (m, size, size, 3) if layout == "NHWC" else (m, 3, size, size)
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        out.update({f"{split}_images": x, f"{split}_labels": y, f"{split}_groups": a})
    for k, v in out.items():
        np.save(root / f"{k}.npy", v)
    meta = {"classes": ["a", "b", "c", "d"], "groups": ["g0", "g1"], "mean": list(MEAN), "std": list(STD)}
    (root / "meta.json").write_text(json.dumps(meta))
    return out
