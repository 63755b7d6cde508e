"""Export a synthetic set to the formats other dataset-distillation tools read.

- ``dc-pt``: one ``.pt`` file holding ``{"data": [[images, labels]]}``, the layout the DC / DSA /
  DM reference code saves its results in (one ``[images, labels]`` pair per experiment, here one),
  images in model space (normalised with the set's ``mean`` / ``std``) as that code trains on them.
- ``tensor``: a folder with ``images.pt`` (the bare (N, C, H, W) float tensor, model space) and
  ``labels.pt`` (the (N,) int64 labels), the two files DD-Ranking's examples load with
  ``torch.load`` and pass to ``compute_metrics(image_tensor=..., hard_labels=...)``; plus
  ``meta.json``.
- ``png``: a folder of PNG files, ``<out>/<class folder>/<index>.png`` (the index counts within the
  class), pixels from :meth:`SyntheticSet.to_pixels` (``round(255 * pixel)``), grey for one channel
  and RGB for three; class folder names are the class names made safe for file systems. A
  ``meta.json`` beside the class folders maps each label to its folder.

Every file is written atomically; the ``.pt`` files hold only tensors, lists and dicts, so
``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from .artifacts import SyntheticSet, atomic_write_bytes, write_json
from .errors import FairDistillError, unknown_name

FORMATS = ("dc-pt", "tensor", "png")
DC_FILE = "synthetic_dc.pt"
IMAGES_FILE = "images.pt"
LABELS_FILE = "labels.pt"
META_FILE = "meta.json"
#: metadata too large (or binary) to repeat in meta.json
_BULKY_META = ("stored_images",)


def _save_torch(obj: Any, path: Path) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _tensors(synset: SyntheticSet) -> tuple[torch.Tensor, torch.Tensor]:
    images = synset.images.detach().cpu().float().contiguous()
    labels = synset.labels.detach().cpu().long().contiguous()
    return images, labels


def _export_meta(synset: SyntheticSet, fmt: str, **extra: Any) -> dict[str, Any]:
    meta = {k: v for k, v in synset.meta.items() if k not in _BULKY_META}
    images = synset.images
    return {
        "format": fmt,
        "num_images": int(images.shape[0]),
        "shape": list(images.shape[1:]),
        "space": "model: pixels = images * std + mean (clamped to [0, 1])",
        **extra,
        "synthetic": meta,
    }


def export_dc(synset: SyntheticSet, out: str | Path) -> Path:
    """``{"data": [[images, labels]]}`` to ``out`` (a ``.pt`` file, or a folder that receives ``synthetic_dc.pt``)."""
    path = Path(out)
    if path.suffix != ".pt":
        path = path / DC_FILE
    images, labels = _tensors(synset)
    return _save_torch({"data": [[images, labels]]}, path)


def export_tensor(synset: SyntheticSet, out: str | Path) -> list[Path]:
    """``images.pt``, ``labels.pt`` and ``meta.json`` into the folder ``out``."""
    folder = Path(out)
    if folder.suffix == ".pt":
        raise FairDistillError(f"the tensor export writes a folder ({IMAGES_FILE} + {LABELS_FILE}), not {folder}")
    images, labels = _tensors(synset)
    return [
        _save_torch(images, folder / IMAGES_FILE),
        _save_torch(labels, folder / LABELS_FILE),
        write_json(folder / META_FILE, _export_meta(synset, "tensor")),
    ]


def class_folders(names: list[str]) -> list[str]:
    """File-system-safe, unique folder names for the class names (in label order)."""
    out: list[str] = []
    for k, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or f"class_{k}"
        if safe in out:
            safe = f"{safe}_{k}"
        out.append(safe)
    return out


def export_png(synset: SyntheticSet, out: str | Path) -> list[Path]:
    """One PNG per image under ``out/<class folder>/<index>.png``, plus ``meta.json``."""
    from PIL import Image

    folder = Path(out)
    if "mean" not in synset.meta or "std" not in synset.meta:
        raise FairDistillError("the synthetic set has no normalisation (meta 'mean' / 'std'): cannot make pixels")
    pixels = (synset.to_pixels() * 255).round().to(torch.uint8)
    labels = synset.labels.cpu()
    channels = pixels.shape[1]
    if channels not in (1, 3):
        raise FairDistillError(f"PNG export needs 1 or 3 channels, got {channels}")
    k = int(labels.max()) + 1 if len(labels) else 0
    names = list(synset.meta.get("class_names") or [])
    names += [str(c) for c in range(len(names), k)]
    folders = class_folders(names)
    counts = torch.bincount(labels, minlength=len(names)).tolist()
    width = len(str(max(counts, default=1) - 1))
    written = []
    seen = [0] * len(names)
    for img, label in zip(pixels, labels.tolist(), strict=True):
        arr = img[0].numpy() if channels == 1 else img.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")  # uint8 (H, W) is grey, (H, W, 3) RGB
        index = seen[label]
        seen[label] += 1
        written.append(atomic_write_bytes(folder / folders[label] / f"{index:0{width}d}.png", buf.getvalue()))
    classes = [
        {"label": c, "name": n, "folder": f, "images": counts[c]}
        for c, (n, f) in enumerate(zip(names, folders, strict=True))
    ]
    written.append(write_json(folder / META_FILE, _export_meta(synset, "png", classes=classes)))
    return written


def export_synthetic(synset: SyntheticSet, out: str | Path, fmt: str) -> list[Path]:
    """Write ``synset`` to ``out`` in format ``fmt`` (one of :data:`FORMATS`); returns the files written."""
    if fmt == "dc-pt":
        return [export_dc(synset, out)]
    if fmt == "tensor":
        return export_tensor(synset, out)
    if fmt == "png":
        return export_png(synset, out)
    raise unknown_name("export format", fmt, FORMATS)


__all__ = ["FORMATS", "class_folders", "export_dc", "export_png", "export_synthetic", "export_tensor"]
