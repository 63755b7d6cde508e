"""The image step of the fair targets, swept side by side: initialisation x optimiser x rate, per target.

FairDD's loss sums one distance per present group, so at a shared SGD rate it moves the images
|A| times further than one barycenter term (squared L2: exactly); an L1 distance has yet another
scale. This sweep distils every (target, init, optimiser, rate) variant in ONE lockstep run (the
same networks, DSA draws and real batches for all), evaluates each set with the profile's
evaluation settings, and evaluates ``random-balanced`` beside them, so that the image step a
recipe uses is read off a table instead of guessed:

    python benchmarks/fair_steps.py --backbone dm --dataset cmnist-fg-mini
    python benchmarks/fair_steps.py --backbone dc --variants fairdd:balanced:adam:0.03,cobra:balanced:sgd:3

A variant is ``RECIPE:INIT:OPTIMISER:RATE`` (the recipe of the backbone under the cpu profile;
INIT real / balanced / noise; OPTIMISER sgd / adam). Writes ``results/fair_steps-<backbone>-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from _common import finish  # noqa: E402

from fairdistill.backbones import get_backbone  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.evaluate import EvalJob, baseline_indices, evaluate_sets  # noqa: E402
from fairdistill.presets import get_method, profile_configs  # noqa: E402

DEFAULT_VARIANTS = {
    "dm": [
        f"{r}:{init}:{opt}:{lr}"
        for r in ("fairdd", "barycenter-l2sq", "barycenter-l1")
        for init, opt, lr in (
            ("real", "sgd", 1.0),
            ("balanced", "sgd", 1.0),
            ("balanced", "adam", 0.01),
            ("balanced", "adam", 0.03),
            ("balanced", "adam", 0.1),
        )
    ],
    "dc": [
        f"{r}:{init}:{opt}:{lr}"
        for r in ("fairdd", "cobra")
        for init, opt, lr in (
            ("real", "sgd", 3.0),
            ("balanced", "sgd", 3.0),
            ("balanced", "adam", 0.01),
            ("balanced", "adam", 0.03),
            ("balanced", "adam", 0.1),
        )
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="dm")
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--variants", default=None, help="comma-separated RECIPE:INIT:OPTIMISER:RATE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    variants = args.variants.split(",") if args.variants else DEFAULT_VARIANTS[args.backbone]
    start = time.perf_counter()
    data = load_dataset(args.dataset)
    dcfg, ecfg = profile_configs("cpu", 10, args.seed, args.backbone, args.dataset)
    specs = []
    for v in variants:
        recipe, init, opt, lr = v.split(":")
        base = get_method(recipe, args.backbone, "cpu")
        settings = {**base.settings, "init": init, "img_optimizer": opt, "lr_img": float(lr)}
        specs.append(replace(base, name=v, settings=settings).validate())
    device = torch.device("cpu")
    sets = get_backbone(args.backbone).distill(data, specs, dcfg, device=device)
    distill_s = time.perf_counter() - start
    jobs = [EvalJob(s.images, s.labels, name) for name, s in sets.items()]
    idx = baseline_indices("random-balanced", data, 10, args.seed)
    jobs.append(EvalJob(data.train.images[idx], data.train.labels[idx], "random-balanced"))
    results = evaluate_sets(jobs, data, ecfg, device=device)
    table = {}
    for job, r in zip(jobs, results, strict=True):
        agg = r.aggregate()
        table[job.name] = {k: [round(agg[k]["mean"], 2), round(agg[k]["std"], 2)] for k in ("acc", "deo_m", "deo_a")}
        print(job.name, table[job.name], flush=True)
    headline = {"rows": table, "seconds": round(time.perf_counter() - start), "distill_seconds": round(distill_s)}
    name = f"fair_steps-{args.backbone}-{args.dataset}{args.tag}"
    finish(name, headline, {"settings": vars(args), "distill_config": dcfg.to_dict(), "eval_config": ecfg.to_dict()})


if __name__ == "__main__":
    main()
