"""Wall time of an evaluation sweep: sequential vs ``--eval-workers 2``, and whether the numbers agree.

Evaluates ``--models`` ConvNets (the CPU profile's evaluation settings: width 32, instance norm,
200 epochs, DSA) on one random real subset of ``cmnist-fg-mini`` at ``--ipc`` images per class,
through :func:`fairdistill.evaluate.evaluate_images`, the path ``fairdistill evaluate`` takes:

* ``sequential``: in this process with torch's default thread count (all cores);
* ``workers``: ``--workers`` workers of ``--executor`` (``local``: spawned processes; ``ray``: Ray
  tasks on a local Ray instance), each with its share of the threads (the pool's start-up, i.e.
  spawning and importing torch, or starting Ray, is inside the timed wall time);
* ``sequential-same-threads`` (unless ``--no-same-threads``): in this process again, with the
  workers' per-worker thread count, to check that the workers' numbers are exactly those.

    python benchmarks/eval_workers.py [--models 4] [--workers 2] [--executor local] [--epochs 200]
        [--dataset cmnist-fg-mini] [--tag T]

The headline gives both ratios: ``ratio`` (workers / sequential at torch's default thread count)
and ``ratio_same_threads`` (workers / sequential at the workers' per-worker thread count, the run
whose numbers the workers reproduce exactly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import finish  # noqa: E402

from fairdistill.data import load_dataset  # noqa: E402
from fairdistill.evaluate import EvalResult, baseline_indices, evaluate_images, evaluation_executor  # noqa: E402
from fairdistill.executor import worker_threads  # noqa: E402
from fairdistill.presets import profile_configs  # noqa: E402


def reports(result: EvalResult) -> list[dict]:
    return [{"seed": s, **r.to_dict()} for s, r in zip(result.seeds, result.reports, strict=True)]


def identical(a: EvalResult, b: EvalResult) -> bool:
    """Every number of every model's report equal (NaN equal to NaN)."""
    return json.dumps(reports(a), default=str) == json.dumps(reports(b), default=str)


def max_diff(a: EvalResult, b: EvalResult) -> float:
    keys = ("acc", "deo_m", "deo_a", "worst_group_acc")
    return max(abs(getattr(x, k) - getattr(y, k)) for x, y in zip(a.reports, b.reports, strict=True) for k in keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="cmnist-fg-mini")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="local", help="local or ray")
    ap.add_argument("--epochs", type=int, default=None, help="default: the CPU profile's (200)")
    ap.add_argument("--tag", default="", help="suffix of the results file (results/eval_workers-TAG.json)")
    ap.add_argument("--no-same-threads", action="store_true", help="skip the sequential run at the workers' threads")
    args = ap.parse_args()

    cpu = torch.device("cpu")
    data = load_dataset(args.dataset)
    _, cfg = profile_configs("cpu", args.ipc, 0, "dm")
    cfg = replace(cfg, num_models=args.models, epochs=args.epochs or cfg.epochs)
    idx = baseline_indices("random", data, args.ipc, seed=0)
    x, y = data.train.images[idx], data.train.labels[idx]
    threads = torch.get_num_threads()
    per_worker = worker_threads(args.workers)
    print(
        f"{args.models} x {cfg.model} {cfg.model_kwargs}, {cfg.epochs} epochs, {len(idx)} images; "
        f"{threads} threads sequential, {args.workers} workers x {per_worker} thread(s)",
        flush=True,
    )

    start = time.perf_counter()
    seq = evaluate_images(x, y, data, cfg, device=cpu)
    t_seq = time.perf_counter() - start
    print(f"sequential ({threads} threads): {t_seq:.1f} s", flush=True)

    start = time.perf_counter()
    with evaluation_executor(data, args.workers, args.executor) as pool:
        par = evaluate_images(x, y, data, cfg, device=cpu, executor=pool)
    t_par = time.perf_counter() - start
    print(f"{args.workers} {args.executor} workers: {t_par:.1f} s, ratio {t_par / t_seq:.2f}", flush=True)

    same_threads = None
    if not args.no_same_threads:
        torch.set_num_threads(per_worker)
        start = time.perf_counter()
        seq1 = evaluate_images(x, y, data, cfg, device=cpu)
        same_threads = {"threads": per_worker, "seconds": round(time.perf_counter() - start, 2)}
        same_threads |= {"identical_to_workers": identical(seq1, par), "max_abs_diff": max_diff(seq1, par)}
        torch.set_num_threads(threads)
        print(f"sequential ({per_worker} thread): {same_threads}", flush=True)

    headline = {
        "models": args.models,
        "epochs": cfg.epochs,
        "sequential_s": round(t_seq, 2),
        "workers": args.workers,
        "executor": args.executor,
        "workers_s": round(t_par, 2),
        "ratio": round(t_par / t_seq, 3),
        "sequential_same_threads_s": None if same_threads is None else same_threads["seconds"],
        "ratio_same_threads": None if same_threads is None else round(t_par / same_threads["seconds"], 3),
        "identical_to_sequential": identical(seq, par),
        "max_abs_diff_vs_sequential": max_diff(seq, par),
        "identical_to_sequential_same_threads": None if same_threads is None else same_threads["identical_to_workers"],
    }
    finish(
        "eval_workers" + (f"-{args.tag}" if args.tag else ""),
        headline,
        {
            "args": vars(args),
            "sequential_threads": threads,
            "threads_per_worker": per_worker,
            "eval_config": cfg.to_dict(),
            "sequential_same_threads": same_threads,
            "acc": {"sequential": [r.acc for r in seq.reports], "workers": [r.acc for r in par.reports]},
            "deo_a": {"sequential": [r.deo_a for r in seq.reports], "workers": [r.deo_a for r in par.reports]},
            "worker_seconds": par.seconds,
        },
    )


if __name__ == "__main__":
    main()
