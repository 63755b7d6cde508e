"""DM + COBRA beyond the plain mean: other barycenter discrepancies, W2, and scarce group labels.

On one dataset (default the embedded ``cmnist-fg-mini``) with the cpu profile, ACC / DEO_M / DEO_A of:

* ``reference``: vanilla, FairDD and COBRA with the true groups, and COBRA with every generalised
  barycenter target (``cobra-bary-l1`` ... ``cobra-bary-w2``), all distilled in lockstep;
* ``partial-P``: COBRA when only a fraction P of the training images carry a group label;
* ``noise-R``: COBRA when a fraction R of the group labels are flipped;
* ``infer-...``: COBRA on pseudo-groups found by clustering (``--groups infer:kmeans:10``, ``infer:dbscan``,
  ``infer:kmeans:2``: the majority look against the rest).

    python benchmarks/beyond_mean.py [--dataset cmnist-bg-mini] [--only reference,partial-0.05]

Each run is appended to ``results/beyond_mean-<dataset>.json`` as it finishes (runs already there
are skipped, so an interrupted study resumes), and the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS_DIR, machine  # noqa: E402

import fairdistill.api as fd  # noqa: E402
from fairdistill.artifacts import write_json  # noqa: E402

BARY = ["cobra-bary-l1", "cobra-bary-l2", "cobra-bary-linf", "cobra-bary-cosine", "cobra-bary-huber", "cobra-bary-w2"]
RUNS: dict[str, dict] = {
    "reference": {"methods": ["vanilla", "fairdd", "cobra", *BARY]},
    "partial-0.05": {"methods": ["cobra"], "group_label_fraction": 0.05},
    "partial-0.25": {"methods": ["cobra"], "group_label_fraction": 0.25},
    "noise-0.2": {"methods": ["cobra"], "group_label_noise": 0.2},
    "noise-0.5": {"methods": ["cobra"], "group_label_noise": 0.5},
    "infer-kmeans-10": {"methods": ["cobra"], "groups": "infer:kmeans:10"},
    "infer-dbscan": {"methods": ["cobra"], "groups": "infer:dbscan"},
    "infer-kmeans-2": {"methods": ["cobra"], "groups": "infer:kmeans:2"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--only", default=",".join(RUNS), help="comma-separated run names")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    path = RESULTS_DIR / f"beyond_mean-{args.dataset}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"benchmark": "beyond_mean", "runs": {}}
    record.update({"dataset": args.dataset, "machine": machine()})
    for name in args.only.split(","):
        if name in record["runs"]:
            continue
        options = dict(RUNS[name])
        start = time.perf_counter()
        r = fd.compare(args.dataset, preset="cpu", baselines=(), device="cpu", **options)
        rows = {
            m: {k: round(v[k]["mean"], 1) for k in ("acc", "deo_m", "deo_a", "worst_group_acc")}
            for m, v in r.summary["methods"].items()
        }
        record["runs"][name] = {
            "options": options,
            "rows": rows,
            "group_labels": r.summary.get("group_labels"),
            "seconds": round(time.perf_counter() - start),
        }
        write_json(path, record)
        print(name, json.dumps(rows), flush=True)
    print(f"{'run':<18} {'method':<20} {'ACC':>6} {'DEO_M':>6} {'DEO_A':>6}")
    for name, run in record["runs"].items():
        for m, row in run["rows"].items():
            print(f"{name:<18} {m:<20} {row['acc']:6.1f} {row['deo_m']:6.1f} {row['deo_a']:6.1f}")


if __name__ == "__main__":
    main()
