"""Probe: COBRA on a gradient / layer-wise backbone with a larger image learning rate.

Distils ``{backbone}-cobra-cpu`` on the embedded default with ``--lr-img`` instead of the preset's
and evaluates it with the preset's evaluation settings. Used to check the step-size explanation of
RESULTS.md section 6 (group-sync sums |A| terms, the barycenter has one).

    python benchmarks/cobra_lr_probe.py --backbone cafe --lr-img 1.0
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
    ap.add_argument("--backbone", default="cafe")
    ap.add_argument("--lr-img", type=float, default=1.0)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    preset = f"{args.backbone}-cobra-cpu"
    start = time.perf_counter()
    synset = fd.distill(args.dataset, preset=preset, lr_img=args.lr_img, device="cpu")
    agg = fd.evaluate(synset, device="cpu", preset=preset).aggregate()
    headline = {
        "backbone": args.backbone,
        "lr_img": args.lr_img,
        **{k: round(agg[k]["mean"], 1) for k in ("acc", "deo_m", "deo_a")},
        "seconds": round(time.perf_counter() - start),
    }
    finish(f"cobra_lr_probe-{args.backbone}", headline, {"settings": vars(args), "aggregate": agg})


if __name__ == "__main__":
    main()
