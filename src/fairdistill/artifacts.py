"""Saving and loading results safely: synthetic sets (safetensors + JSON metadata), JSON records, grids.

Every file is written atomically (to a temporary file in the same folder, then renamed), so an
interrupted run never leaves a half-written artifact behind. Loading never unpickles.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import FairDistillError

SYNTHETIC_FILE = "synthetic.safetensors"


@dataclass
class SyntheticSet:
    """Distilled images (model space, (N, C, H, W), ordered by class) with labels and metadata."""

    images: Tensor
    labels: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        return int(torch.bincount(self.labels).max())

    def to_pixels(self) -> Tensor:
        mean = torch.tensor(self.meta["mean"], dtype=self.images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.meta["std"], dtype=self.images.dtype).view(1, -1, 1, 1)
        return (self.images.detach().cpu() * std + mean).clamp(0, 1)


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions and machine: package, torch, numpy, python, platform, torch threads; the device if given."""
    import numpy

    from . import __version__

    env: dict[str, Any] = {
        "fairdistill": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
    if device is not None:
        env["device"] = str(device)
        if torch.device(device).type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


# ---- atomic writes ----------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically; NaN becomes null."""
    return atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2) + "\n").encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FairDistillError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FairDistillError(f"{path} is not valid JSON: {err}") from err


# ---- synthetic sets ---------------------------------------------------------------------------
def save_synthetic(synset: SyntheticSet, path: str | Path) -> Path:
    """Save to ``path`` (a ``.safetensors`` file, or a folder that receives ``synthetic.safetensors``)."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / SYNTHETIC_FILE
    tensors = {"images": synset.images.detach().cpu().contiguous(), "labels": synset.labels.cpu().contiguous()}
    meta = {"fairdistill": json.dumps(_jsonable(synset.meta))}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_synthetic(path: str | Path) -> SyntheticSet:
    """Load a synthetic set saved by :func:`save_synthetic` (a file or the folder holding it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        path = path / SYNTHETIC_FILE
    if not path.is_file():
        raise FairDistillError(f"synthetic set not found: {path}")
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("fairdistill", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise FairDistillError(f"{path} is not a readable synthetic set (corrupt or truncated?): {err}") from err
    if set(tensors) != {"images", "labels"} or tensors["images"].ndim != 4:
        raise FairDistillError(f"{path}: expected tensors 'images' (N, C, H, W) and 'labels', got {sorted(tensors)}")
    if tensors["images"].shape[0] != tensors["labels"].shape[0]:
        raise FairDistillError(f"{path}: {tensors['images'].shape[0]} images but {tensors['labels'].shape[0]} labels")
    if not torch.isfinite(tensors["images"]).all():
        raise FairDistillError(f"{path}: images contain NaN or infinite values")
    return SyntheticSet(tensors["images"], tensors["labels"].long(), meta)


def save_grid(pixels: Tensor, path: str | Path, *, per_row: int, pad: int = 2, scale: int = 2) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid with ``per_row`` images per row."""
    from PIL import Image

    n, c, h, w = pixels.shape
    rows = math.ceil(n / per_row)
    canvas = torch.ones(3, rows * (h + pad) + pad, per_row * (w + pad) + pad)
    x = pixels.detach().cpu().float().clamp(0, 1)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    for i in range(n):  # a few hundred thumbnails at most
        r, col = divmod(i, per_row)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, top : top + h, left : left + w] = x[i, :3]
    arr = (canvas.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
