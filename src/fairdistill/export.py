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
  and RGB for three; class folder names are the class names made safe for file systems, bounded
  in length and made unique (``x``, ``x_2``, ``x_3``... in order of first appearance). A
  ``meta.json`` beside the class folders maps each label to its folder.

The output path is checked before anything is written (:mod:`fairdistill.outputs`), and nothing is
written through a symbolic link found inside it. Every file is written atomically; the ``.pt`` files
hold only tensors, lists and dicts, so ``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from .artifacts import SyntheticSet, atomic_write_bytes, check_synthetic, write_json
from .errors import FairDistillError, unknown_name
from .outputs import check_inside, check_out_dir, check_out_file

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
    check_synthetic(synset, "the set to export")  # labels, dtypes, channels, metadata: the one check of a set
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


def check_export_out(out: str | Path, fmt: str) -> Path:
    """Check the format and the output path of an export before anything is loaded or written.

    ``dc-pt`` writes a ``.pt`` file (an existing file of that name is replaced; an existing folder of
    that name is refused) or, for any other name, a folder that receives :data:`DC_FILE`; ``tensor``
    and ``png`` write a folder, which may not be an existing file or end in a file suffix.
    """
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    suffix = Path(os.fspath(out)).suffix.lower() if isinstance(out, str | os.PathLike) else ""
    if fmt == "dc-pt" and suffix == ".pt":
        return check_out_file(out, "export file", example=DC_FILE)
    if fmt == "tensor" and suffix == ".pt":
        raise FairDistillError(f"the tensor export writes a folder ({IMAGES_FILE} + {LABELS_FILE}), not {out}")
    writes = {"dc-pt": DC_FILE, "tensor": f"{IMAGES_FILE}, {LABELS_FILE}, {META_FILE}"}.get(
        fmt, f"<class>/<index>.png, {META_FILE}"
    )
    return check_out_dir(out, "export folder", writes=writes)


def export_dc(synset: SyntheticSet, out: str | Path) -> Path:
    """``{"data": [[images, labels]]}`` to ``out`` (a ``.pt`` file, or a folder that receives ``synthetic_dc.pt``)."""
    path = check_export_out(out, "dc-pt")
    if path.suffix != ".pt":
        check_inside(path, [DC_FILE], "export folder")
        path = path / DC_FILE
    images, labels = _tensors(synset)
    return _save_torch({"data": [[images, labels]]}, path)


def export_tensor(synset: SyntheticSet, out: str | Path) -> list[Path]:
    """``images.pt``, ``labels.pt`` and ``meta.json`` into the folder ``out``."""
    folder = check_export_out(out, "tensor")
    check_inside(folder, [IMAGES_FILE, LABELS_FILE, META_FILE], "export folder")
    images, labels = _tensors(synset)
    return [
        _save_torch(images, folder / IMAGES_FILE),
        _save_torch(labels, folder / LABELS_FILE),
        write_json(folder / META_FILE, _export_meta(synset, "tensor")),
    ]


#: the longest class folder name before a collision suffix (``_2``...), in bytes: far below any file
#: system's 255, so that suffixes, the PNG names and the temporary files fit
MAX_FOLDER_BYTES = 96


def _safe_name(name: object, k: int) -> str:
    """A class name made safe for file systems: ASCII letters, digits, ``.``, ``_``, ``-``; bounded in bytes.

    Runs of other characters become one ``_``; leading and trailing dots and underscores go (no
    hidden folders, no ``.`` / ``..``); an empty result becomes ``class_<k>``. The result is ASCII,
    so :data:`MAX_FOLDER_BYTES` characters are as many bytes.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return safe[:MAX_FOLDER_BYTES].rstrip("._") or f"class_{k}"


def class_folders(names: list[str]) -> list[str]:
    """File-system-safe, unique folder names for the class names (in label order).

    Each name is made safe by :func:`_safe_name`; a name whose safe form is already taken (compared
    without case, as macOS and Windows file systems do) gets the first free suffix ``_2``, ``_3``...
    in order of first appearance, so ``["x", "x_2", "x"]`` becomes ``["x", "x_2", "x_3"]`` and no two
    classes share a folder. Linear in the number of classes.
    """
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}
    out: list[str] = []
    for k, name in enumerate(names):
        base = folder = _safe_name(name, k)
        if folder.casefold() in taken:
            n = next_suffix.get(base.casefold(), 2)
            while f"{base}_{n}".casefold() in taken:
                n += 1
            next_suffix[base.casefold()] = n + 1
            folder = f"{base}_{n}"
        taken.add(folder.casefold())
        out.append(folder)
    return out


def _png_classes(synset: SyntheticSet) -> tuple[list[int], list[str], torch.Tensor]:
    """The class ids to give folders, their names, and the labels (1-D int64), checked before any allocation.

    With ``class_names`` in the metadata every label must index one of them; without, the labels
    present are the classes (so a stray label of 10^9 costs nothing but an error or one folder).
    """
    labels = synset.labels.detach().cpu()
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        shape = tuple(labels.shape)
        raise FairDistillError(f"PNG export needs 1-D integer labels, got {labels.dtype} of shape {shape}")
    labels = labels.long()
    if len(labels) and int(labels.min()) < 0:
        raise FairDistillError(f"PNG export: label {int(labels.min())} is negative")
    names = synset.meta.get("class_names")
    if names is not None:
        if not isinstance(names, list | tuple):
            raise FairDistillError(f"PNG export: class_names must be a list, got {type(names).__name__}")
        if len(labels) and int(labels.max()) >= len(names):
            raise FairDistillError(
                f"PNG export: label {int(labels.max())} has no class name ({len(names)} classes are named)"
            )
        return list(range(len(names))), [str(n) for n in names], labels
    present = torch.unique(labels).tolist()
    return present, [str(c) for c in present], labels


def export_png(synset: SyntheticSet, out: str | Path) -> list[Path]:
    """One PNG per image under ``out/<class folder>/<index>.png``, plus ``meta.json``.

    Everything is checked before the first file is written: the output folder, the labels, the
    folder names (unique and bounded, see :func:`class_folders`) and that no existing path inside
    ``out`` is a symbolic link. ``meta.json`` lists every class with its label, name, folder and
    image count, and marks the folders that had to be renamed (``"renamed": true``).
    """
    from PIL import Image

    folder = check_export_out(out, "png")
    if "mean" not in synset.meta or "std" not in synset.meta:
        raise FairDistillError("the synthetic set has no normalisation (meta 'mean' / 'std'): cannot make pixels")
    if synset.images.ndim != 4 or synset.images.shape[1] not in (1, 3):
        raise FairDistillError(f"PNG export needs (N, 1 or 3, H, W) images, got shape {tuple(synset.images.shape)}")
    ids, names, labels = _png_classes(synset)
    folders = class_folders(names)
    index_of = {c: i for i, c in enumerate(ids)}
    present, counts_present = torch.unique(labels, return_counts=True)
    counts = [0] * len(ids)
    for c, n in zip(present.tolist(), counts_present.tolist(), strict=True):
        counts[index_of[c]] = n
    width = len(str(max(counts, default=1) - 1))
    seen = [0] * len(ids)
    targets = []
    for label in labels.tolist():
        i = index_of[label]
        targets.append(f"{folders[i]}/{seen[i]:0{width}d}.png")
        seen[i] += 1
    check_inside(folder, [*targets, META_FILE], "export folder")
    pixels = (synset.to_pixels() * 255).round().to(torch.uint8)
    channels = pixels.shape[1]
    written = []
    for img, target in zip(pixels, targets, strict=True):
        arr = img[0].numpy() if channels == 1 else img.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")  # uint8 (H, W) is grey, (H, W, 3) RGB
        written.append(atomic_write_bytes(folder / target, buf.getvalue()))
    classes = []
    for i, (c, n, f) in enumerate(zip(ids, names, folders, strict=True)):
        entry: dict[str, Any] = {"label": c, "name": n, "folder": f, "images": counts[i]}
        if f != _safe_name(n, i):
            entry["renamed"] = True  # another class had taken its safe name first
        classes.append(entry)
    written.append(write_json(folder / META_FILE, _export_meta(synset, "png", classes=classes)))
    return written


def export_synthetic(synset: SyntheticSet, out: str | Path, fmt: str) -> list[Path]:
    """Write ``synset`` to ``out`` in format ``fmt`` (one of :data:`FORMATS`); returns the files written."""
    check_export_out(out, fmt)
    synset = check_synthetic(synset, "the set to export")
    if fmt == "dc-pt":
        return [export_dc(synset, out)]
    if fmt == "tensor":
        return export_tensor(synset, out)
    return export_png(synset, out)


__all__ = [
    "FORMATS",
    "check_export_out",
    "class_folders",
    "export_dc",
    "export_png",
    "export_synthetic",
    "export_tensor",
]
