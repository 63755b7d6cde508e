"""Loading a full-size (60,000 + 10,000 image) IDX dataset: first decode vs the decoded cache.

Generates MNIST-format IDX files of the full size (random pixels, balanced labels; gzipped, as
published) in a temporary folder, then times in one run:

* ``decode``: ``load_dataset("cmnist-fg", data_root=...)`` with an empty cache (gunzip + parse +
  check + write the cache entry + colour, pad and normalise);
* ``cached``: the same call again, several times (the arrays come memory-mapped from the cache;
  colouring, padding and normalising are redone, as at every load). The median is reported.

    python benchmarks/data_cache.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import finish, time_loads  # noqa: E402
from files_mnist import write_mnist  # noqa: E402

from fairdistill.data import load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        start = time.perf_counter()
        write_mnist(root, train_per_class=6000, test_per_class=1000)
        generate = time.perf_counter() - start

        decode, cached, shapes, _ = time_loads(
            lambda: load_dataset("cmnist-fg", data_root=root, cache_dir=cache),
            args.repeats,
            lambda d: [list(d.train.images.shape), list(d.test.images.shape)],
        )
    headline = {
        "images": shapes,
        "decode_s": round(decode, 3),
        "cached_median_s": round(statistics.median(cached), 3),
        "cached_max_s": round(max(cached), 3),
        "speedup": round(decode / statistics.median(cached), 2),
    }
    finish(
        "data_cache",
        headline,
        {"settings": vars(args), "generate_files_s": round(generate, 2), "cached_s": [round(t, 3) for t in cached]},
    )


if __name__ == "__main__":
    main()
