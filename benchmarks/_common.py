"""Shared helpers of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
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
