"""CUDA checks for a machine with a GPU (CI has none): reproducibility, the nccl seam, every backbone.

    python benchmarks/gpu_check.py [--iterations 30]

1. the same seed twice on CUDA (DM COBRA, warm embedder, cmnist-fg-mini): max |difference| of the sets
   (deterministic kernels on, the default; FAIRDISTILL_CUDA_DETERMINISTIC=0 turns them off);
2. the nccl runtime, started as a 1-process torchrun would start it (RANK=0, WORLD_SIZE=1): its
   collectives on CUDA tensors, and a DM run under it against the plain single-process run;
3. DC, IDC and CAFE on CUDA under the nccl runtime: one iteration each, finite images.

Records results/gpu_check.json. A 2-process nccl run needs 2 GPUs; on CPU the 2- and 3-process
runs are in tests/test_distributed.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

import fairdistill.api as fd  # noqa: E402
from fairdistill import runtime  # noqa: E402


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: this script checks the CUDA paths")
    out: dict = {"settings": vars(args), "deterministic": runtime.deterministic_cuda()}
    kw = dict(preset="cobra", ipc=10, iterations=args.iterations, device="cuda", seed=0)

    t = time.perf_counter()
    first = fd.distill("cmnist-fg-mini", **kw)
    out["dm_seconds_cuda"] = round(time.perf_counter() - t, 2)
    second = fd.distill("cmnist-fg-mini", **kw)
    out["same_seed_twice_max_abs_diff"] = diff(first.images, second.images)
    out["same_seed_twice_bit_identical"] = bool(torch.equal(first.images, second.images))

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    rt = runtime.Distributed("cuda")
    out["backend"] = rt.backend
    x = torch.arange(6.0, device="cuda").view(3, 2)
    ok = torch.equal(rt.all_reduce(x.clone()), x) and torch.equal(rt.broadcast(x.clone()), x)
    ok = ok and torch.equal(rt.gather_rows(x), x) and torch.equal(rt.gather_rows(x.cpu()), x.cpu())
    rt.barrier()
    out["nccl_collectives_ok"] = bool(ok)
    previous, runtime._current = runtime._current, rt
    try:
        under = fd.distill("cmnist-fg-mini", **kw)
        out["nccl_vs_single_max_abs_diff"] = diff(under.images, first.images)
        for backbone in ("dc", "idc", "cafe"):
            t = time.perf_counter()
            s = fd.distill("cmnist-fg-mini", preset="cobra", backbone=backbone, ipc=10, iterations=1, device="cuda")
            out[f"{backbone}_1_iteration_seconds"] = round(time.perf_counter() - t, 2)
            out[f"{backbone}_finite"] = bool(torch.isfinite(s.images).all())
    finally:
        runtime._current = previous
        rt.close()
    for k, v in out.items():
        print(f"{k:<36} {v}")
    finish("gpu_check", {k: v for k, v in out.items() if k != "settings"}, {"settings": vars(args)})


if __name__ == "__main__":
    main()
