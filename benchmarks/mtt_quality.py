"""MTT on the default data: vanilla (population experts) against COBRA (barycentric experts), per image rate.

For each image learning rate of ``--lr-img``, ``fairdistill.api.compare`` runs ``mtt-vanilla`` and
``mtt-cobra`` in lockstep on ``cmnist-fg-mini`` with the cpu profile (its experts: trained once and
found in the cache afterwards; ``--iterations`` overrides the profile's), evaluated by the profile's
2 models; ``random-balanced`` beside them at the first rate (it does not depend on the rate).

    python benchmarks/mtt_quality.py --lr-img 30,100,300,1000

Writes ``results/mtt_quality.json`` (ACC / DEO_M / DEO_A / worst group, mean over the models, and the
wall time of each run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

import fairdistill.api as fd  # noqa: E402

METRICS = ("acc", "deo_m", "deo_a", "worst_group_acc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--lr-img", default="30,100,300,1000")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = {}
    for i, lr in enumerate(float(x) for x in args.lr_img.split(",")):
        start = time.perf_counter()
        baselines = ["random-balanced"] if i == 0 else []
        r = fd.compare(
            args.dataset,
            methods=["vanilla", "cobra"],
            baselines=baselines,
            backbone="mtt",
            preset="cpu",
            seed=args.seed,
            device="cpu",
            iterations=args.iterations,
            lr_img=lr,
        )
        for name, m in r.summary["methods"].items():
            key = name if name == "random-balanced" else f"{name} lr_img {lr:g}"
            rows[key] = {k: round(m[k]["mean"], 2) for k in METRICS}
            print(key, rows[key], flush=True)
        rows[f"seconds lr_img {lr:g}"] = round(time.perf_counter() - start)
    finish("mtt_quality", {"dataset": args.dataset}, {"rows": rows, "iterations": args.iterations})


if __name__ == "__main__":
    main()
