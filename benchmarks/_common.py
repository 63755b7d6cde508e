"""Shared helpers of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def finish(name: str, headline: dict, details: dict) -> None:
    """Write results/<name>.json and print the headline JSON as the last line of output."""
    RESULTS_DIR.mkdir(exist_ok=True)
    record = {"benchmark": name, "machine": machine(), "headline": headline, **details}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(headline))


def time_loads(load, repeats: int, probe=lambda d: None) -> tuple[float, list[float], object, object]:
    """Seconds of a first ``load()`` (an empty cache: the decode) and of ``repeats`` loads after it
    (from the cache), with ``probe`` of the first and of the last dataset (e.g. its shapes or a few
    rows); only one dataset is held at a time."""
    start = time.perf_counter()
    d = load()
    first_s, first = time.perf_counter() - start, probe(d)
    del d
    cached, last = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        d = load()
        cached.append(time.perf_counter() - start)
        last = probe(d)
        del d
    return first_s, cached, first, last
