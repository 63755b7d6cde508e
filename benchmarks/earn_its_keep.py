"""Does fair distillation earn its keep? Our ``fair`` recipe, FairDD and COBRA against ``random-balanced``.

For every dataset and backbone (cpu profile, IPC 10), ``fairdistill.api.compare`` runs the methods
in lockstep beside the ``random-balanced`` baseline (the same number of real images from every
group of a class), once per distillation seed. The rows that decide the criterion (``fair`` and
``random-balanced``) run at every seed; FairDD and COBRA, for reference (``--reference``), at the
first seed only (``--all-seeds``: at every seed) and on the datasets of ``--reference-on`` (default:
all). The evaluation seed follows the run's seed.

    python benchmarks/earn_its_keep.py                      # the four colour benchmarks, DM and DC, seeds 0-2
    python benchmarks/earn_its_keep.py --datasets cmnist-fg-mini --backbones dm --seeds 0

C-FMNIST comes from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
``cfmnist-bg`` is built with the reference code's pixels (``fmnist_bg="reference"``, as ``fairdistill
reproduce`` builds it), because the intended blend makes the white group blank (DEO_M 100 for every
set). Every finished (dataset, backbone, seed) is written to the results file at once (merged with
what another invocation wrote meanwhile, so DM and DC can run side by side), and a rerun skips what
the file already holds, so an interrupted run continues. Writes
``results/earn_its_keep.json`` and ``results/earn_its_keep.md`` (mean ± std over the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS_DIR, machine  # noqa: E402

import fairdistill.api as fd  # noqa: E402
from fairdistill.data import load_dataset  # noqa: E402

DATASETS = ("cmnist-fg-mini", "cmnist-bg-mini", "cfmnist-fg", "cfmnist-bg")
#: how each dataset is built (what is not the loader's default)
DATA_OPTIONS = {"cfmnist-bg": {"fmnist_bg": "reference"}}
METRICS = ("acc", "deo_m", "deo_a")
OURS, BAR = "fair", "random-balanced"


def run_one(dataset: str, backbone: str, seed: int, methods: list[str]) -> dict:
    data = load_dataset(dataset, **DATA_OPTIONS.get(dataset, {}))
    start = time.perf_counter()
    r = fd.compare(data, methods=methods, baselines=[BAR], backbone=backbone, preset="cpu", seed=seed, device="cpu")
    rows = {name: {k: m[k]["mean"] for k in METRICS} for name, m in r.summary["methods"].items()}
    return {"rows": rows, "seconds": round(time.perf_counter() - start), "timings": r.summary["seconds"]}


def summarise(runs: dict) -> dict:
    """(dataset, backbone) -> method -> metric -> {mean, std, n} over the seeds, and the criterion."""
    out: dict = {}
    for key, by_seed in runs.items():
        dataset, backbone = key.split("|")
        methods: dict[str, dict[str, list[float]]] = {}
        for run in by_seed.values():
            for name, row in run["rows"].items():
                for k in METRICS:
                    methods.setdefault(name, {}).setdefault(k, []).append(row[k])
        table = {
            name: {
                k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
                for k, v in vals.items()
            }
            for name, vals in methods.items()
        }
        verdict = None
        if OURS in table and BAR in table:
            f, b = table[OURS], table[BAR]
            slack = max(f["deo_m"]["std"], b["deo_m"]["std"])
            verdict = {
                "acc": f["acc"]["mean"] > b["acc"]["mean"],
                "deo_a": f["deo_a"]["mean"] < b["deo_a"]["mean"],
                "deo_m": f["deo_m"]["mean"] <= b["deo_m"]["mean"] + slack,
                "seeds": min(f["acc"]["n"], b["acc"]["n"]),
            }
            verdict["met"] = verdict["acc"] and verdict["deo_a"] and verdict["deo_m"] and verdict["seeds"] >= 3
        out.setdefault(dataset, {})[backbone] = {"table": table, "criterion": verdict}
    return out


def markdown(summary: dict) -> str:
    lines = [
        "| dataset | backbone | fair | FairDD | COBRA | random-balanced | criterion |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict | None) -> str:
        if row is None:
            return "-"
        n = row["acc"]["n"]
        parts = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}" if n > 1 else f"{row[k]['mean']:.1f}" for k in METRICS]
        return " / ".join(parts) + f" (n={n})"

    for dataset, by_backbone in summary.items():
        for backbone, entry in by_backbone.items():
            t, v = entry["table"], entry["criterion"]
            failed = [k for k in ("acc", "deo_a", "deo_m") if v is not None and not v[k]]
            if v is None:
                verdict = "-"
            elif failed:
                verdict = "not met: " + ", ".join(failed)
            elif v["seeds"] < 3:
                verdict = f"holds at {v['seeds']} seed(s), 3 needed"
            else:
                verdict = "met"
            row = [cell(t.get(m)) for m in (OURS, "fairdd", "cobra", BAR)]
            lines.append(f"| {dataset} | {backbone} | " + " | ".join(row) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--backbones", default="dm,dc")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--all-seeds", action="store_true", help="the reference methods at every seed too")
    ap.add_argument("--reference", default="fairdd,cobra", help="methods run beside fair at the first seed")
    ap.add_argument("--reference-on", default=None, help="datasets that get the reference methods (default: all)")
    ap.add_argument("--name", default="earn_its_keep")
    ap.add_argument("--table-only", action="store_true", help="rewrite the markdown table from the results file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    references = [m for m in args.reference.split(",") if m]
    reference_on = set((args.reference_on or args.datasets).split(","))
    path = RESULTS_DIR / f"{args.name}.json"
    record = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    runs = record["runs"]
    if args.table_only:
        record["summary"] = summarise(runs)
        path.write_text(json.dumps(record, indent=2) + "\n")
        (RESULTS_DIR / f"{args.name}.md").write_text(markdown(record["summary"]))
        print(markdown(record["summary"]))
        return
    for dataset in args.datasets.split(","):
        for backbone in args.backbones.split(","):
            key = f"{dataset}|{backbone}"
            for seed in seeds:
                if str(seed) in runs.get(key, {}):
                    continue
                with_refs = (args.all_seeds or seed == seeds[0]) and dataset in reference_on
                methods = [OURS] + (references if with_refs else [])
                got = run_one(dataset, backbone, seed, methods)
                if path.exists():  # another invocation (other backbones) may have written meanwhile
                    for k, by_seed in json.loads(path.read_text())["runs"].items():
                        for s, r in by_seed.items():
                            runs.setdefault(k, {}).setdefault(s, r)
                runs.setdefault(key, {})[str(seed)] = got
                shown = {n: {k: round(v, 1) for k, v in r.items()} for n, r in got["rows"].items()}
                print(key, seed, json.dumps(shown), f"{got['seconds']} s", flush=True)
                record.update(
                    machine=machine(),
                    data_options=DATA_OPTIONS,
                    summary=summarise(runs),
                    command="python benchmarks/earn_its_keep.py " + " ".join(sys.argv[1:]),
                )
                RESULTS_DIR.mkdir(exist_ok=True)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(record, indent=2) + "\n")
                tmp.replace(path)
                (RESULTS_DIR / f"{args.name}.md").write_text(markdown(record["summary"]))
    print(markdown(record.get("summary", {})))


if __name__ == "__main__":
    main()
