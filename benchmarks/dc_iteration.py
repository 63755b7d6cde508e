"""Seconds per DC outer step (gradient matching + one image update, no inner loop): population vs barycenter.

The barycenter of the group gradients is one backward pass of a per-sample-weighted CE (SPEC
section 2, fact 2), so COBRA-DC should cost what vanilla DC costs (target: at most 1.2x; the
published code, one backward per group, is 3.7-4.3x slower with 10 groups). Group-sync (FairDD)
genuinely needs per-group gradients and is timed for reference.

Each block is one ``distill`` call with ``outer_loop=1`` (so no inner loop runs) and
``iterations + 1`` iterations; the time from the first to the last iteration callback, divided by
``iterations``, is the time of one outer step plus drawing the iteration's network. Blocks of the
variants are interleaved and the median block is reported, so background load hits all alike.

    python benchmarks/dc_iteration.py [--width 32] [--batch-real 64] [--iterations 3] [--repeats 5]
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
from fairdistill.backbones.engine import IterationState  # noqa: E402
from fairdistill.config import DistillConfig, MethodSpec  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.runtime import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-real", type=int, default=64)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=3, help="timed outer steps per block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per variant")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset)
    variants = {
        # same sampling: the target is the only difference
        "population/stratified": MethodSpec("p", backbone="dc", target="population", sampling="stratified"),
        "barycenter/stratified": MethodSpec("b", backbone="dc", target="barycenter", sampling="stratified"),
        # vanilla DC as published: class batches
        "population/class": MethodSpec("p", backbone="dc", target="population", sampling="class"),
        # per-group gradients (FairDD), for reference
        "group-sync/stratified": MethodSpec("g", backbone="dc", target="group-sync"),
    }
    cfg = DistillConfig(
        ipc=args.ipc,
        iterations=args.iterations + 1,  # the first iteration's callback starts the clock
        batch_real=args.batch_real,
        model_kwargs={"width": args.width},
        lr_img=0.1,
        outer_loop=1,
        inner_loop=0,
    )
    dc = get_backbone("dc")

    def block(spec: MethodSpec) -> float:
        stamps: list[float] = []

        def tick(_: IterationState) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        dc.distill(data, [spec], cfg, device=device, callback=tick)
        return (stamps[-1] - stamps[0]) / args.iterations

    block(variants["population/class"])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, spec in variants.items():
            times[name].append(block(spec))
    sec = {k: statistics.median(v) for k, v in times.items()}
    for k, v in sec.items():
        print(f"{k:<24} {v:.4f} s/outer step")
    headline = {
        "device": str(device),
        "dataset": args.dataset,
        "width": args.width,
        "batch_real": args.batch_real,
        "groups": data.num_groups,
        "sec_per_step_population": round(sec["population/stratified"], 4),
        "sec_per_step_barycenter": round(sec["barycenter/stratified"], 4),
        "ratio_barycenter_over_population": round(sec["barycenter/stratified"] / sec["population/stratified"], 3),
        "ratio_cobra_sampling_over_vanilla_sampling": round(sec["barycenter/stratified"] / sec["population/class"], 3),
        "ratio_group_sync_over_population": round(sec["group-sync/stratified"] / sec["population/stratified"], 3),
    }
    finish("dc_iteration", headline, {"settings": vars(args), "sec_per_outer_step": sec, "blocks": times})


if __name__ == "__main__":
    main()
