"""Does a change keep every result bit for bit? Runs ``fairdistill compare`` at two commits and compares.

    python scripts/same_results.py REV              # REV against the working tree (the checkout's src/)
    python scripts/same_results.py REV --other HEAD  # two commits
    python scripts/same_results.py REV --quick       # short runs of every backbone, for a first look

Each commit is checked out in a temporary ``git worktree`` and run from its own ``src/`` with the
same interpreter and the same number of threads (``--threads``, default 2). The cases (``--cases``):

* ``default``: ``fairdistill compare`` as the README runs it (the cpu profile on ``cmnist-fg-mini``);
* ``dc``, ``idc``, ``cafe``: ``fairdistill compare --backbone B --iterations 2``;
* ``--quick``: every backbone at 2 iterations with one evaluation model of 2 epochs.

What must be equal: every synthetic set (``torch.equal`` of images and labels, and their metadata
but for the environment) and every number and string of ``summary.json`` except wall times, the
environment and paths. A commit's outputs are kept under ``--cache`` (default
``~/.cache/fairdistill-same-results/SHA/CASE``) and reused, so the reference runs once.
Exit status 0 when every case is the same, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "default": [],
    "dc": ["--backbone", "dc", "--iterations", "2"],
    "idc": ["--backbone", "idc", "--iterations", "2"],
    "cafe": ["--backbone", "cafe", "--iterations", "2"],
}
QUICK = ["--iterations", "2", "--models", "1", "--epochs", "2", "--baselines", "random-balanced"]
QUICK_CASES = {f"quick-{b}": ["--backbone", b, *QUICK] for b in ("dm", "dc", "idc", "cafe")}
#: summary keys that differ between two runs of the same code (wall time, where and on what it ran)
VOLATILE = {"seconds", "timings", "environment", "checkpoint", "out", "path", "report"}


def sha_of(rev: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", rev], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def run_case(src: Path, args: list[str], out: Path, threads: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "fairdistill", "compare", *args, "--out", str(out), "--no-report", "--quiet"]
    print("  $", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=out.parent)


def outputs(label: str, src: Path, cases: dict[str, list[str]], cache: Path | None, threads: int) -> dict[str, Path]:
    """Run every case from ``src`` (reusing ``cache`` where it holds a finished case); the output folders."""
    done = {}
    for name, args in cases.items():
        where = (cache / name) if cache is not None else Path(tempfile.mkdtemp(prefix=f"same-{name}-")) / "out"
        if not (where / "summary.json").exists():
            print(f"{label}: {name}", flush=True)
            if where.exists():
                shutil.rmtree(where)
            where.parent.mkdir(parents=True, exist_ok=True)
            run_case(src, args, where, threads)
        done[name] = where
    return done


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                out.append(f"{path}/{key}: only in {'the second' if key not in a else 'the first'}")
            else:
                out.extend(differences(a[key], b[key], f"{path}/{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} against {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b or (a != a and b != b) else [f"{path}: {a!r} against {b!r}"]  # NaN equals NaN here


def compare_sets(a: Path, b: Path) -> list[str]:
    import torch
    from safetensors import safe_open

    out = []
    sets_a = sorted(p.relative_to(a) for p in a.glob("*/synthetic.safetensors"))
    sets_b = sorted(p.relative_to(b) for p in b.glob("*/synthetic.safetensors"))
    if sets_a != sets_b:
        return [f"synthetic sets {[str(s) for s in sets_a]} against {[str(s) for s in sets_b]}"]
    for rel in sets_a:
        with safe_open(a / rel, "pt") as fa, safe_open(b / rel, "pt") as fb:
            if sorted(fa.keys()) != sorted(fb.keys()):
                out.append(f"{rel}: tensors {sorted(fa.keys())} against {sorted(fb.keys())}")
                continue
            for key in fa.keys():
                if not torch.equal(fa.get_tensor(key), fb.get_tensor(key)):
                    out.append(f"{rel}: {key} differ")
            meta_a, meta_b = fa.metadata() or {}, fb.metadata() or {}
        for key in sorted(set(meta_a) | set(meta_b)):
            va, vb = meta_a.get(key), meta_b.get(key)
            try:
                va, vb = json.loads(va), json.loads(vb)
            except (TypeError, ValueError):
                pass
            out.extend(f"{rel} meta {d}" for d in differences({key: va}, {key: vb}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="the reference commit")
    ap.add_argument("--other", default=None, help="a second commit (default: the working tree)")
    ap.add_argument("--cases", default=None, help=f"comma-separated, of {', '.join([*CASES, *QUICK_CASES])}")
    ap.add_argument("--quick", action="store_true", help="the quick cases (every backbone, 2 iterations, tiny eval)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fairdistill-same-results"))
    args = ap.parse_args()
    everything = {**CASES, **QUICK_CASES}
    names = args.cases.split(",") if args.cases else list(QUICK_CASES if args.quick else CASES)
    unknown = [n for n in names if n not in everything]
    if unknown:
        ap.error(f"unknown cases {unknown}")
    cases = {n: everything[n] for n in names}
    cache = Path(args.cache)
    results = {}
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp:
        for side, rev in (("reference", args.rev), ("other", args.other)):
            if rev is None:
                results[side] = outputs("working tree", REPO / "src", cases, None, args.threads)
                continue
            sha = sha_of(rev)
            wt = Path(tmp) / sha[:12]
            cached = all((cache / f"{sha}-t{args.threads}" / n / "summary.json").exists() for n in cases)
            if not cached:
                subprocess.run(["git", "worktree", "add", "--detach", str(wt), sha], cwd=REPO, check=True)
            try:
                results[side] = outputs(
                    f"{rev} ({sha[:9]})", wt / "src", cases, cache / f"{sha}-t{args.threads}", args.threads
                )
            finally:
                if not cached:
                    subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=REPO, check=True)
    same = True
    for name in cases:
        a, b = results["reference"][name], results["other"][name]
        diffs = differences(json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text()))
        diffs += compare_sets(a, b)
        print(f"{name}: {'same' if not diffs else f'{len(diffs)} difference(s)'}")
        for d in diffs[:20]:
            print("   ", d)
        same = same and not diffs
    print("same results bit for bit" if same else "results differ")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
