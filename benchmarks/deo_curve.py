"""When does COBRA halve vanilla's worst-class gap (DEO_M)? Class-uniform vs group-stratified real batches.

Distils vanilla and COBRA with each real-batch sampling in lockstep (shared networks and
augmentations), evaluates the synthetic sets at checkpoints, and reports the first checkpoint at
which COBRA's DEO_M is at most half of vanilla's, in iterations and in minutes of distillation
(the lockstep wall time divided evenly over the methods is NOT used: minutes are measured by
distilling each COBRA variant alone for a few iterations and scaling).

    python benchmarks/deo_curve.py [--checkpoints 100,200,300,500,1000,1500] [--models 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

from fairdistill.backbones import get_backbone  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.evaluate import evaluate_images  # noqa: E402
from fairdistill.presets import get_method, profile_configs  # noqa: E402
from fairdistill.runtime import resolve_device  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--checkpoints", default="100,200,300,500,1000,1500")
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    data = load_dataset(args.dataset)
    dcfg, ecfg = profile_configs(args.profile, 10, args.seed)
    dcfg = replace(dcfg, iterations=checkpoints[-1])
    ecfg = replace(ecfg, num_models=args.models)
    specs = [
        get_method("vanilla"),
        replace(get_method("cobra"), name="cobra-stratified", sampling="stratified"),
        replace(get_method("cobra"), name="cobra-class", sampling="class"),
    ]
    # seconds per iteration of each method alone (what a user distilling one method pays)
    per_it = {}
    for spec in specs:
        t = time.perf_counter()
        get_backbone("dm").distill(data, [spec], replace(dcfg, iterations=10), device=device)
        per_it[spec.name] = (time.perf_counter() - t) / 10

    snaps: dict[int, dict[str, torch.Tensor]] = {}

    def keep(state) -> None:
        if state.done in checkpoints:
            snaps[state.done] = {k: v.clone().cpu() for k, v in state.images.items()}
            print(f"checkpoint {state.done}", flush=True)

    labels = torch.arange(data.num_classes).repeat_interleave(dcfg.ipc)
    get_backbone("dm").distill(data, specs, dcfg, device=device, callback=keep)
    curve: dict[str, dict[int, dict[str, float]]] = {s.name: {} for s in specs}
    for it in checkpoints:
        for name, images in snaps[it].items():
            agg = evaluate_images(images, labels, data, ecfg, device=device).aggregate()
            curve[name][it] = {k: round(agg[k]["mean"], 2) for k in ("acc", "deo_m", "deo_a")}
            print(
                f"{it:>5} {name:<18} ACC {agg['acc']['mean']:5.1f}  DEO_M {agg['deo_m']['mean']:5.1f}  "
                f"DEO_A {agg['deo_a']['mean']:5.1f}",
                flush=True,
            )

    halving = {}
    for name in ("cobra-stratified", "cobra-class"):
        first = next((it for it in checkpoints if curve[name][it]["deo_m"] <= curve["vanilla"][it]["deo_m"] / 2), None)
        halving[name] = {
            "iterations": first,
            "minutes": None if first is None else round(first * per_it[name] / 60, 2),
        }
        print(
            f"{name}: DEO_M halves at {first} iterations "
            f"({halving[name]['minutes']} min at {per_it[name]:.3f} s/iteration)"
        )
    headline = {
        "dataset": args.dataset,
        "profile": args.profile,
        "halving_iterations_stratified": halving["cobra-stratified"]["iterations"],
        "halving_minutes_stratified": halving["cobra-stratified"]["minutes"],
        "halving_iterations_class": halving["cobra-class"]["iterations"],
        "halving_minutes_class": halving["cobra-class"]["minutes"],
    }
    finish("deo_curve", headline, {"settings": vars(args), "sec_per_iteration": per_it, "curve": curve})


if __name__ == "__main__":
    main()
