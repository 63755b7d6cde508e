"""Peak memory of a DM distillation on a streamed training set: 60,000 vs 600,000 images.

Writes biased datasets of 32x32 colour images (uint8, 10 classes, 10 colour groups, 90% of a
class in its own group) in the ``npy`` folder format, then, in a fresh Python process per run,
loads ``load_dataset("npy", data_root=..., stream=..., read=...)`` and runs a short DM
distillation (``fairdistill.api.distill``, vanilla DM, IPC 10, 256 real images per class per
iteration). Each child reports its peak RSS (``VmHWM`` of ``/proc/self/status``), its RSS after
the imports and after loading. (Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the
maximum over ``execve``, and ``subprocess`` starts the child with ``vfork``, so the child's value
includes the parent's own peak: the parent's RSS while it wrote the 1.8 GB file. It is recorded
as ``ru_maxrss_mb`` for the record.) Runs:

* ``stream`` (``read="pread"``, the default) at each size;
* ``mmap`` (streamed, rows read by indexing the memory map) at each size: its touched pages stay
  resident, so its RSS grows with the number of distinct rows read;
* ``in-memory`` (``stream=False``: the whole split normalised to float32 up front) at 60,000.

The pixels are random noise tinted by the group colour (cheap to write; the memory does not
depend on what the pixels show). The data go under ``--dir`` (default: a temporary folder) and
are deleted afterwards.

    python benchmarks/stream_memory.py [--sizes 60000,600000] [--iterations 20] [--dir /big/tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

CHILD = r"""
import json, resource, sys, time
def rss_mb(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")
import torch
torch.set_num_threads(int(sys.argv[5]))
from fairdistill import api
from fairdistill.data import load_dataset
after_import = rss_mb()
root, stream, read, iterations = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
data = load_dataset("npy", data_root=root, stream=stream, read=read)
load_s = time.perf_counter() - t0
after_load = rss_mb()
t0 = time.perf_counter()
api.distill(data, preset="vanilla", backbone="dm", ipc=10, iterations=iterations, batch_real=256, device="cpu")
distill_s = time.perf_counter() - t0
print(json.dumps({
    "peak_rss_mb": rss_mb("VmHWM"),
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_after_import_mb": after_import, "rss_after_load_mb": after_load, "rss_end_mb": rss_mb(),
    "load_s": load_s, "distill_s": distill_s, "images": len(data.train),
}))
"""

COLOURS = np.array(
    [[255, 0, 0], [255, 128, 0], [255, 255, 0], [255, 255, 128], [0, 255, 0]]
    + [[0, 255, 255], [0, 0, 255], [128, 0, 255], [255, 0, 255], [255, 255, 255]],
    dtype=np.uint16,
)


def write_split(root: Path, split: str, n: int, rng: np.random.Generator, bias: float, chunk: int = 20_000) -> None:
    """``n`` images of a biased split, written chunk by chunk (never the whole array in memory)."""
    labels = rng.permutation(np.arange(n) % 10)
    own = rng.random(n) < bias
    groups = np.where(own, labels, (labels + rng.integers(1, 10, n)) % 10)
    np.save(root / f"{split}_labels.npy", labels.astype(np.int64))
    np.save(root / f"{split}_groups.npy", groups.astype(np.int64))
    out = npy_format.open_memmap(root / f"{split}_images.npy", mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        noise = rng.integers(0, 256, (stop - start, 32, 32, 1), dtype=np.uint16)
        out[start:stop] = (noise * COLOURS[groups[start:stop]][:, None, None, :] // 255).astype(np.uint8)
    out.flush()
    del out


def write_dataset(root: Path, n: int, seed: int = 0) -> int:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    write_split(root, "train", n, rng, bias=0.9)
    write_split(root, "test", 2_000, rng, bias=0.1)
    names = ["red", "orange", "yellow", "light-yellow", "green", "cyan", "blue", "violet", "magenta", "white"]
    meta = {"name": f"noise-{n}", "classes": [f"c{i}" for i in range(10)], "groups": names, "layout": "NHWC"}
    (root / "meta.json").write_text(json.dumps(meta))
    return sum(f.stat().st_size for f in root.iterdir())


def run_child(root: Path, *, stream: bool, read: str, iterations: int, threads: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(root), "1" if stream else "0", read, str(iterations), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="60000,600000", help="comma-separated training-set sizes")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the datasets (default: a temp folder)")
    ap.add_argument("--no-mmap", action="store_true", help="skip the read='mmap' runs")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="stream-memory-", dir=args.dir))
    runs: list[dict] = []
    try:
        for n in sizes:
            root = base / f"n{n}"
            t0 = time.perf_counter()
            disk = write_dataset(root, n)
            print(f"{n}: wrote {disk / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s", flush=True)
            modes = [("stream", True, "pread")]
            if not args.no_mmap:
                modes.append(("mmap", True, "mmap"))
            if n == min(sizes):
                modes.append(("in-memory", False, "pread"))
            for mode, stream, read in modes:
                r = run_child(root, stream=stream, read=read, iterations=args.iterations, threads=args.threads)
                r.update(mode=mode, size=n, disk_mb=disk / 2**20)
                runs.append(r)
                print(json.dumps(r), flush=True)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def peak(mode: str, n: int) -> float | None:
        return next((r["peak_rss_mb"] for r in runs if r["mode"] == mode and r["size"] == n), None)

    small, big = min(sizes), max(sizes)
    disk = {r["size"]: r["disk_mb"] for r in runs}
    headline = {
        "iterations": args.iterations,
        **{f"stream_peak_rss_mb_{n}": peak("stream", n) for n in sizes},
        **({f"mmap_peak_rss_mb_{n}": peak("mmap", n) for n in sizes} if not args.no_mmap else {}),
        f"in_memory_peak_rss_mb_{small}": peak("in-memory", small),
        **{f"disk_mb_{n}": disk[n] for n in sizes},
    }
    if big != small:
        headline["stream_growth_mb"] = peak("stream", big) - peak("stream", small)
        headline["data_growth_mb"] = disk[big] - disk[small]
    finish("stream_memory", headline, {"runs": runs, "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
