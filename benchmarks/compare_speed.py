"""How much faster is the default ``fairdistill compare`` than at an earlier commit? Both timed in one run.

    python benchmarks/compare_speed.py REV                  # REV against the working tree (its src/)
    python benchmarks/compare_speed.py REV --repeats 2      # A B B A: each side twice, order alternated

REV is checked out in a temporary ``git worktree``; each side runs ``python -m fairdistill compare
--no-report --quiet`` (the README's first command without the report) from its own ``src/`` in a
fresh process with the same interpreter and threads (``--threads``, default 2). The runs alternate
(A B, then B A, ...) so that slow spells of a shared machine fall on both sides. Reported: the wall
time of each run, the median per side, their ratio, the per-phase seconds of ``summary.json``, and
every ACC / DEO_M / DEO_A that differs between the two sides (a change that only moves rounding
moves them a little; an exact change moves none). Extra arguments after ``--`` go to both
``compare`` runs. Writes ``results/compare_speed[-TAG].json``; the last line is a JSON object with
``speedup`` (REV's median wall / the working tree's) and ``faster_pct``. ``--save-after FILE`` keeps
the working tree's ``summary.json`` (the default compare's numbers, for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METRICS = ("acc", "deo_m", "deo_a")


def run_compare(src: Path, out: Path, threads: int, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "fairdistill", "compare", *extra, "--out", str(out), "--no-report", "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=out.parent, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def metrics(summary: dict) -> dict[str, dict[str, float]]:
    return {name: {k: m[k]["mean"] for k in METRICS} for name, m in summary["methods"].items()}


def moved(a: dict, b: dict) -> list[str]:
    out = []
    for name in sorted(set(a) | set(b)):
        for k in METRICS:
            va, vb = a.get(name, {}).get(k), b.get(name, {}).get(k)
            if va != vb:
                out.append(f"{name} {k}: {va} -> {vb}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="the earlier commit")
    ap.add_argument("--repeats", type=int, default=1, help="runs per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--save-after", default=None, help="also copy the working tree's last summary.json here")
    ap.add_argument("extra", nargs="*", help="arguments for both compare runs (after --)")
    args = ap.parse_args()
    sha = subprocess.run(["git", "rev-parse", args.rev], cwd=REPO, check=True, capture_output=True, text=True)
    sha = sha.stdout.strip()
    sides = {"before": None, "after": REPO / "src"}
    walls: dict[str, list[float]] = {"before": [], "after": []}
    summaries: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="compare-speed-") as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), sha], cwd=REPO, check=True)
        sides["before"] = wt / "src"
        try:
            for r in range(args.repeats):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                for side in order:
                    out = Path(tmp) / f"{side}-{r}" / "out"
                    out.parent.mkdir(parents=True)
                    walls[side].append(run_compare(sides[side], out, args.threads, args.extra))
                    summaries[side] = json.loads((out / "summary.json").read_text())
                    print(f"{side} ({'REV ' + sha[:9] if side == 'before' else 'working tree'}) run {r}: "
                          f"{walls[side][-1]:.1f} s", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=REPO, check=True)
    if args.save_after:
        Path(args.save_after).write_text(json.dumps(summaries["after"], indent=1) + "\n")
    med = {side: statistics.median(w) for side, w in walls.items()}
    speedup = med["before"] / med["after"]
    changes = moved(metrics(summaries["before"]), metrics(summaries["after"]))
    print(f"median wall: before {med['before']:.1f} s, after {med['after']:.1f} s; "
          f"{100 * (1 - med['after'] / med['before']):.1f}% faster (x{speedup:.3f})")  # fmt: skip
    print("numbers: identical" if not changes else "numbers that moved:\n  " + "\n  ".join(changes))
    headline = {"speedup": round(speedup, 4), "faster_pct": round(100 * (1 - med["after"] / med["before"]), 2)}
    details = {
        "rev": sha,
        "extra": args.extra,
        "threads": args.threads,
        "walls": walls,
        "phases": {side: summaries[side]["seconds"] for side in summaries},
        "metrics": {side: metrics(summaries[side]) for side in summaries},
        "moved": changes,
    }
    finish("compare_speed" + (f"-{args.tag}" if args.tag else ""), headline, details)


if __name__ == "__main__":
    main()
