"""Loading a 20,000-image ``folder`` dataset (PNG files + metadata.csv): first decode vs the decoded cache.

Generates, in a temporary folder, 20,000 small PNG images (random pixels, 32 x 32 by default, 2
classes x 2 groups, 80% train / 20% test) and the ``metadata.csv`` that lists them, then times in
one run:

* ``decode``: ``load_dataset("folder", data_root=...)`` with an empty cache (read and check the
  table, check every path, read every image's size, decode every PNG with Pillow, write the cache
  entry, build the streamed dataset);
* ``cached``: the same call again, several times: the table and the paths are read and checked
  again and every image file is stat-ed for the cache stamp, but no image is opened (the pixels
  come memory-mapped from the cache). The median is reported.

    OMP_NUM_THREADS=1 python benchmarks/folder_cache.py [--images 20000] [--size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish, time_loads  # noqa: E402

from fairdistill.data import load_dataset  # noqa: E402


def write_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` random-pixel PNGs in 100 sub-folders of ``root/images`` and the ``metadata.csv`` listing them."""
    rng = np.random.default_rng(seed)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "split"])
        for i in range(n):
            rel = f"images/{i % 100:02d}/{i:05d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(root / rel)
            w.writerow([rel, i % 2, (i // 2) % 2, "test" if i % 5 == 0 else "train"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        root.mkdir()
        start = time.perf_counter()
        write_images(root, args.images, args.size)
        generate = time.perf_counter() - start

        def probe(d):
            rows = d.train.images[np.arange(0, len(d.train), 997)]
            return [list(d.train.images.shape), list(d.test.images.shape)], rows

        decode, cached, (shapes, first), (_, last) = time_loads(
            lambda: load_dataset("folder", data_root=root, cache_dir=cache), args.repeats, probe
        )
        same = bool((last == first).all())
    headline = {
        "images": shapes,
        "decode_s": round(decode, 3),
        "cached_median_s": round(statistics.median(cached), 3),
        "cached_max_s": round(max(cached), 3),
        "speedup": round(decode / statistics.median(cached), 2),
        "same_pixels": same,
    }
    times = [round(t, 3) for t in cached]
    details = {"settings": vars(args), "generate_files_s": round(generate, 2), "cached_s": times}
    finish("folder_cache", headline, details)


if __name__ == "__main__":
    main()
