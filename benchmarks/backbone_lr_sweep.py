"""Vanilla, FairDD and COBRA on one backbone's cpu profile with one setting overridden (e.g. the image rate).

Distils the three methods in lockstep on the embedded default and evaluates them with the profile's
evaluation settings (no baselines), to choose a CPU profile's image learning rate:

    python benchmarks/backbone_lr_sweep.py --backbone dc --lr-img 3.0

Writes ``results/lr_sweep-<backbone>-lr<rate>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

import fairdistill.api as fd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="dc")
    ap.add_argument("--lr-img", type=float, required=True)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    r = fd.compare(args.dataset, backbone=args.backbone, preset="cpu", baselines=(), device="cpu", lr_img=args.lr_img)
    headline = {
        name: {k: round(m[k]["mean"], 1) for k in ("acc", "deo_m", "deo_a")} for name, m in r.summary["methods"].items()
    }
    headline["seconds"] = round(time.perf_counter() - start)
    finish(
        f"lr_sweep-{args.backbone}-lr{args.lr_img:g}",
        headline,
        {"settings": vars(args), "timings": r.summary["seconds"], "distill_config": r.summary["distill_config"]},
    )


if __name__ == "__main__":
    main()
