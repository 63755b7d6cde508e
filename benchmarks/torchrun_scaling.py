"""Wall time of a class-sharded DM distillation: torchrun with 2 processes against 1 process.

Writes a biased dataset of 32x32 colour images in the ``npy`` folder format (streamed; the same
generator as ``stream_memory.py``) and runs ``fairdistill distill`` on it three times, each a fresh
command, side by side in one run:

* ``one-1t``: one process, 1 torch thread (what each torchrun process gets);
* ``one-2t``: one process, 2 threads (all cores of a 2-core machine: the fair baseline);
* ``two``: ``torchrun --standalone --nproc_per_node 2``, 1 thread each (gloo).

Reports the wall times, the ratios and whether ``two`` gave the same synthetic set as ``one-1t``
(bit for bit, expected: the same thread count per process). The command's wall time includes
Python start-up and data loading in each process.

    python benchmarks/torchrun_scaling.py [--images 60000] [--iterations 30] [--preset vanilla]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402
from stream_memory import write_dataset  # noqa: E402

from fairdistill.artifacts import load_synthetic  # noqa: E402


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FAIRDISTILL_CACHE": "off"}
    env.pop("WORLD_SIZE", None)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60_000)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--preset", default="vanilla")
    ap.add_argument("--batch-real", type=int, default=256)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="torchrun-scaling-"))
    try:
        root = base / "data"
        write_dataset(root, args.images)
        common = ["distill", "--dataset", "npy", "--data-root", str(root), "--preset", args.preset, "--ipc", "10"]
        common += ["--iterations", str(args.iterations), "--device", "cpu", "--checkpoint-every", "0", "--quiet"]
        torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
        single = [sys.executable, "-m", "fairdistill", *common]
        seconds = {
            "one-1t": run([*single, "--out", str(base / "one-1t")], 1),
            "one-2t": run([*single, "--out", str(base / "one-2t")], 2),
            "two": run(
                [
                    torchrun,
                    "--standalone",
                    "--nproc_per_node=2",
                    "-m",
                    "fairdistill",
                    *common,
                    "--out",
                    str(base / "two"),
                ],
                1,
            ),
        }
        a, b = load_synthetic(base / "one-1t"), load_synthetic(base / "two")
        identical = bool(torch.equal(a.images, b.images))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for k, v in seconds.items():
        print(f"{k:<8} {v:7.1f} s")
    headline = {
        "images": args.images,
        "iterations": args.iterations,
        "preset": args.preset,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "ratio_two_over_one_1thread": round(seconds["two"] / seconds["one-1t"], 3),
        "ratio_two_over_one_2threads": round(seconds["two"] / seconds["one-2t"], 3),
        "two_equals_one_1thread": identical,
    }
    finish("torchrun_scaling", headline, {"settings": vars(args), "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
