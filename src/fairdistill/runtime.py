"""Where computation runs: the device choice (the distributed seam will live here too)."""

from __future__ import annotations

import re

import torch

from .errors import FairDistillError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU. Asking for CUDA without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise FairDistillError(f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FairDistillError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
    return torch.device(name)
