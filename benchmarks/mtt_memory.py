"""MTT's memory: the plain unroll against ``--unroll-checkpoint``, at syn_steps 10, 20 and 40, side by side.

One MTT update on the default data's shape (100 synthetic images of 3 x 32 x 32, IPC 10 x 10
classes, the whole set per student step as MTT does at IPC 10; ConvNet-32 with instance norm, the
cpu profile's network) is timed and measured in a fresh process per (syn_steps, mode), the
modes interleaved. Peak memory: on CPU the process's peak resident set (``ru_maxrss``), reported
whole and above the process's peak before the first unroll (what the unroll itself holds); on CUDA
``torch.cuda.max_memory_allocated``. Seconds per update: the median of ``--reps`` updates after
one warm-up.

    python benchmarks/mtt_memory.py                  # cpu, syn_steps 10 20 40
    python benchmarks/mtt_memory.py --device cuda

Writes ``results/mtt_memory.json`` and prints the table with the ratio checkpointed / plain.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402


def child(steps: int, checkpoint: bool, device: str, reps: int) -> dict:
    import torch

    from fairdistill.backbones.mtt import Student, checkpointed_unroll, plain_unroll
    from fairdistill.models import create_model
    from fairdistill.training import init_weights

    dev = torch.device(device)
    net = create_model("convnet", channels=3, num_classes=10, image_size=(32, 32), width=32, depth=3, norm="instance")
    net = init_weights(net, torch.Generator().manual_seed(0)).to(dev)
    student = Student(net)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1)).to(dev)
    images = torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(dev).requires_grad_(True)
    labels = torch.arange(10, device=dev).repeat_interleave(10)
    batches = [(lambda: images, labels)] * steps
    alpha = torch.tensor(0.01, device=dev, requires_grad=True)
    unroll = checkpointed_unroll if checkpoint else plain_unroll
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
    times = []
    for _ in range(reps + 1):
        images.grad, alpha.grad = None, None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        unroll(student, start, target, batches, alpha, [images, alpha])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    out = {"syn_steps": steps, "checkpoint": checkpoint, "seconds": statistics.median(times[1:])}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        out.update(peak_mib=round(peak, 1), above_start_mib=round(peak - base, 1), measure="max_memory_allocated")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.update(peak_mib=round(peak, 1), above_start_mib=round(peak - before, 1), measure="ru_maxrss")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", default="10,20,40")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1] == "1", args.device, args.reps)))
        return
    rows = []
    for steps in [int(s) for s in args.steps.split(",")]:
        for ckpt in (False, True):  # interleaved: each (steps, mode) in a fresh process
            cmd = [sys.executable, __file__, "--device", args.device, "--reps", str(args.reps), "--child", str(steps)]
            res = subprocess.run([*cmd, "1" if ckpt else "0"], check=True, capture_output=True, text=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table = []
    for steps in sorted({r["syn_steps"] for r in rows}):
        plain = next(r for r in rows if r["syn_steps"] == steps and not r["checkpoint"])
        ckpt = next(r for r in rows if r["syn_steps"] == steps and r["checkpoint"])
        table.append(
            {
                "syn_steps": steps,
                "plain_peak_mib": plain["peak_mib"],
                "checkpoint_peak_mib": ckpt["peak_mib"],
                "plain_above_start_mib": plain["above_start_mib"],
                "checkpoint_above_start_mib": ckpt["above_start_mib"],
                "peak_ratio": round(ckpt["peak_mib"] / plain["peak_mib"], 3),
                "above_start_ratio": round(ckpt["above_start_mib"] / max(plain["above_start_mib"], 1e-9), 3),
                "plain_s": round(plain["seconds"], 3),
                "checkpoint_s": round(ckpt["seconds"], 3),
                "time_ratio": round(ckpt["seconds"] / plain["seconds"], 3),
            }
        )
    print("syn_steps | peak MiB plain / ckpt (ratio) | above start plain / ckpt (ratio) | s plain / ckpt (ratio)")
    for t in table:
        peak = f"{t['plain_peak_mib']:.0f} / {t['checkpoint_peak_mib']:.0f} ({t['peak_ratio']:.2f})"
        plain, ckpt = t["plain_above_start_mib"], t["checkpoint_above_start_mib"]
        above = f"{plain:.0f} / {ckpt:.0f} ({t['above_start_ratio']:.2f})"
        secs = f"{t['plain_s']:.2f} / {t['checkpoint_s']:.2f} ({t['time_ratio']:.2f})"
        print(f"{t['syn_steps']:9d} | {peak} | {above} | {secs}")
    at = next((t for t in table if t["syn_steps"] == 40), table[-1])
    headline = {
        "syn_steps": at["syn_steps"],
        "peak_ratio": at["peak_ratio"],
        "above_start_ratio": at["above_start_ratio"],
    }
    finish("mtt_memory", headline, {"device": args.device, "rows": rows, "table": table})


if __name__ == "__main__":
    main()
