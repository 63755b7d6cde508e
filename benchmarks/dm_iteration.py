"""Seconds per DM iteration: population vs barycenter target (same random embedder), and the warm-start cost.

Group statistics come from the same single forward pass whatever the target, so the barycenter
should cost what the population target costs. Blocks of iterations of each variant are
interleaved and the median block time is reported, so background load hits all variants alike.

    python benchmarks/dm_iteration.py [--width 32] [--batch-real 64] [--iterations 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

from fairdistill.backbones import get_backbone  # noqa: E402
from fairdistill.config import DistillConfig, MethodSpec  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.runtime import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=5, help="iterations per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per variant")
    ap.add_argument("--warm-epochs", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tag", default="", help="suffix of the results file (results/dm_iteration-TAG.json)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    data = load_dataset(args.dataset)
    variants = {
        # same sampling: the target is the only difference
        "population/stratified": MethodSpec("p", target="population", sampling="stratified"),
        "barycenter/stratified": MethodSpec("b", target="barycenter", sampling="stratified"),
        # each target's default sampling (vanilla: class batches as published; COBRA: stratified)
        "population/class": MethodSpec("p", target="population", sampling="class"),
        "barycenter/stratified+l1": MethodSpec("b", target="barycenter", distance="l1"),
        "group-sync/stratified": MethodSpec("g", target="group-sync"),
        "barycenter/stratified+warm": MethodSpec("w", target="barycenter", embedder="warm"),
    }
    cfg = DistillConfig(
        ipc=args.ipc,
        iterations=args.iterations,
        batch_real=args.batch_real,
        model_kwargs={"width": args.width},
        warm_epochs=args.warm_epochs,
    )
    dm = get_backbone("dm")
    times: dict[str, list[float]] = {k: [] for k in variants}
    dm.distill(data, [variants["population/class"]], cfg, device=device)  # warm-up
    for _ in range(args.repeats):
        for name, spec in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            dm.distill(data, [spec], cfg, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t) / args.iterations)
    sec = {k: statistics.median(v) for k, v in times.items()}
    for k, v in sec.items():
        print(f"{k:<28} {v:.4f} s/iteration")
    headline = {
        "device": str(device),
        "width": args.width,
        "sec_per_it_population": round(sec["population/stratified"], 4),
        "sec_per_it_barycenter": round(sec["barycenter/stratified"], 4),
        "ratio_barycenter_over_population": round(sec["barycenter/stratified"] / sec["population/stratified"], 3),
        "ratio_cobra_sampling_over_vanilla_sampling": round(
            sec["barycenter/stratified+l1"] / sec["population/class"], 3
        ),
        "ratio_group_sync_over_population": round(sec["group-sync/stratified"] / sec["population/stratified"], 3),
        "warm_start_epochs": args.warm_epochs,
        "sec_per_it_warm_start_extra": round(sec["barycenter/stratified+warm"] - sec["barycenter/stratified"], 4),
        "ratio_warm_over_random": round(sec["barycenter/stratified+warm"] / sec["barycenter/stratified"], 3),
    }
    finish(
        "dm_iteration" + (f"-{args.tag}" if args.tag else ""),
        headline,
        {"settings": vars(args), "sec_per_iteration": sec, "blocks": times},
    )


if __name__ == "__main__":
    main()
