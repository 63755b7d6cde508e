"""Read a distilled set made by any tool, recognised by its layout, and check it against a dataset.

``fairdistill evaluate PATH`` reads PATH in any of the layouts below (:data:`LAYOUTS`), told apart by
what the path holds:

``safetensors``
    ours: a ``.safetensors`` file, or a folder holding ``synthetic.safetensors``
    (:func:`~fairdistill.artifacts.load_synthetic`).
``dc-pt``
    a ``.pt`` file as the DC / DSA / DM code saves its results, ``{"data": [[images, labels], ...]}``
    (other keys, such as ``accs_all_exps``, are ignored), or a bare ``(images, labels)`` pair; or a
    folder holding our export's ``synthetic_dc.pt``. That code saves one pair per experiment: the
    FIRST pair is evaluated, with a warning, and the record says so (``"pair": 0``, ``"pairs": n``).
``tensor``
    a folder with ``images.pt`` (an (N, C, H, W) tensor) and ``labels.pt`` (DD-Ranking's layout), with
    the ``meta.json`` of ``fairdistill export --format tensor`` when it came from there.
``png``
    a folder of ``<class>/<index>.png`` (``fairdistill export --format png`` writes one). Every
    non-hidden subfolder is a class, holding only ``.png`` files (hidden files are skipped; files
    beside the class folders other than ``meta.json`` are not read). The folders are mapped to the
    dataset's classes by the first rule that fits all of them, and the record says which
    (``classes_from``): our export's ``meta.json``; the dataset's class names made file-safe as
    :func:`~fairdistill.export.class_folders` makes them; integer names ``0`` .. ``K-1``. Images
    are read class by class in label order, files by their integer index (else by name).

Every set is checked against the dataset it is evaluated on: channels, image size, the number of
classes, labels (one per image, in ``[0, K)``), finite images; each mismatch is one line.

The dataset. Our sets and our exports' ``meta.json`` name it; a set from another tool does not, and
then ``--dataset`` (``dataset=``) is required.

Model space or pixels. Evaluation trains on images in model space, ``(pixel - mean) / std`` with the
dataset's mean and std. Our sets and our tensor export (its ``meta.json`` says so) are in model
space; PNG files and uint8 tensors hold 8-bit pixels. For float tensors from another tool nothing
says which, and nothing is guessed from their values: ``--normalised true`` (model space) or
``--normalised false`` (pixels in [0, 1], normalised here) is required, and without it the set is
refused with a message that gives the value range found. A flag that contradicts what the layout
says is refused too. Float16 / float64 tensors are converted to float32 (ours are refused instead:
:func:`~fairdistill.artifacts.check_synthetic`).

Labels. An integer (N,) tensor is hard labels; a float (N, K) tensor is soft labels (class
probabilities, as DATM, SRe2L or RDED store them): rows finite, non-negative and summing to 1;
logits are refused, not softmaxed (:func:`~fairdistill.training.soft_label_problem`). The evaluation
then trains with soft cross-entropy and its record says ``"labels": "soft"``.

Safety. ``.pt`` files are read with ``torch.load(path, weights_only=True)`` only: a file that needs
pickle (it holds some object other than tensors, lists, dicts and numbers) is refused, since
unpickling runs whatever code the file names.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from .artifacts import SYNTHETIC_FILE, SetMeta, SyntheticSet, check_synthetic, finish_interrupted_writes, load_synthetic
from .data.dataset import FairDataset
from .errors import FairDistillError
from .export import DC_FILE, IMAGES_FILE, LABELS_FILE, META_FILE, class_folders
from .training import label_kind, soft_label_problem
from .validate import one_line, parse, read_json_file

log = logging.getLogger("fairdistill")

LAYOUTS = ("safetensors", "dc-pt", "tensor", "png")
#: what evaluate reads, for the message that refuses anything else
ACCEPTED = (
    "a .safetensors file or a folder holding synthetic.safetensors (ours), a .pt file holding "
    '{"data": [[images, labels]]} or (images, labels) (DC / DSA / DM), a folder with images.pt + labels.pt '
    "(DD-Ranking), or a folder of <class>/<index>.png"
)
#: the PIL mode a PNG must have (after palette images are expanded) for a dataset of that many channels
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_SPACE_WORDS = {"model": "in model space (normalised)", "pixels": "pixels in [0, 1]"}


class _ExportClass(BaseModel):
    model_config = ConfigDict(extra="allow")

    label: Annotated[int, Field(strict=True, ge=0)]
    folder: Annotated[str, Field(strict=True)]


class ExportMeta(BaseModel):
    """The ``meta.json`` of ``fairdistill export`` (tensor and png), the fields read here, typed."""

    model_config = ConfigDict(extra="allow")

    format: Annotated[str, Field(strict=True)]
    space: Annotated[str, Field(strict=True)] | None = None
    classes: list[_ExportClass] | None = None
    synthetic: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class FoundSet:
    """A set whose layout is recognised, before its tensors are read and checked against a dataset.

    ``synset``: the set itself when it is ours (saved or in memory), already checked; ``export``:
    the ``meta.json`` of our export beside a tensor or png set (None: none, or not ours).
    """

    layout: str
    path: Path | None
    synset: SyntheticSet | None = None
    export: ExportMeta | None = None

    @property
    def what(self) -> str:
        return "the synthetic set" if self.path is None else f"{self.layout} set {self.path}"

    @property
    def dataset(self) -> str | None:
        """The dataset the set names (None: it names none, as sets from other tools do)."""
        meta = self.synset.meta if self.synset is not None else self.export.synthetic if self.export else {}
        name = meta.get("dataset")
        return name if isinstance(name, str) else None

    def no_dataset(self) -> FairDistillError:
        """The error for a set that names no dataset when none was given."""
        if self.synset is not None:
            return FairDistillError("the synthetic set does not say which dataset it came from; pass --dataset")
        return FairDistillError(
            f"{self.what} does not say which dataset it belongs to (only our sets and exports with a meta.json "
            "do); pass --dataset"
        )


@dataclass
class _Raw:
    """Tensors as a layout holds them, with what the layout says about their space."""

    images: Any
    labels: Any
    #: "model" or "pixels" when the layout says (None: it cannot tell)
    space: str | None
    #: how the layout knows its space (for the record and the messages)
    space_from: str = ""
    #: what the record says about how the set was read
    facts: dict[str, Any] = field(default_factory=dict)


# ---- recognising ---------------------------------------------------------------------------------
def find_set(synthetic: str | Path | SyntheticSet) -> FoundSet:
    """The layout of ``synthetic`` (a set in memory or a path), with what it says about itself; no tensors read
    (but for our own sets, which are loaded and checked whole)."""
    if isinstance(synthetic, SyntheticSet):
        return FoundSet("in-memory", None, synset=_check_in_memory(synthetic))
    path = Path(synthetic)
    finish_interrupted_writes(path if path.is_dir() else path.parent, parent=True)
    if not path.exists():
        raise FairDistillError(f"synthetic set not found: {path}")
    if path.is_dir():
        return _folder_layout(path)
    if path.suffix == ".safetensors":
        return FoundSet("safetensors", path, synset=load_synthetic(path))
    if path.suffix == ".pt":
        return FoundSet("dc-pt", path)
    raise FairDistillError(
        f"{path}: unknown layout (a file named *{path.suffix or '(no suffix)'}); evaluate reads {ACCEPTED}"
    )


def _check_in_memory(synset: SyntheticSet) -> SyntheticSet:
    """A set handed in from Python: checked as a saved one would be; soft labels are checked for their shape
    and rows here, against the dataset's classes in :func:`read_set`."""
    if label_kind(synset.labels) == "hard":
        return check_synthetic(synset)
    problem = soft_label_problem(synset.labels, synset.labels.shape[1])
    if problem is not None:
        raise FairDistillError(f"the synthetic set: soft labels: {problem}")
    check_synthetic(SyntheticSet(synset.images, synset.labels.argmax(1), synset.meta))  # images and metadata
    return synset


def _folder_layout(folder: Path) -> FoundSet:
    """The one layout a folder holds; none or several are refused, naming what was found."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    names = {p.name for p in entries}
    found = {
        "safetensors": SYNTHETIC_FILE in names,
        "dc-pt": DC_FILE in names,
        "tensor": IMAGES_FILE in names or LABELS_FILE in names,
        "png": any(p.is_dir() and _only_pngs(p) for p in entries),
    }
    layouts = [name for name, here in found.items() if here]
    if len(layouts) > 1:
        raise FairDistillError(
            f"{folder} holds sets of several layouts ({', '.join(layouts)}): pass the file itself, "
            "or a folder that holds one set"
        )
    if not layouts:
        raise _unknown_layout(folder, entries)
    layout = layouts[0]
    if layout == "safetensors":
        return FoundSet(layout, folder, synset=load_synthetic(folder))
    if layout == "dc-pt":
        return FoundSet(layout, folder / DC_FILE)
    return FoundSet(layout, folder, export=_export_meta(folder, layout))


def _only_pngs(folder: Path) -> bool:
    """Whether ``folder`` holds PNG files and nothing else but hidden files (a class folder of a PNG set)."""
    files = [f for f in folder.iterdir() if not f.name.startswith(".")]
    return bool(files) and all(f.suffix.lower() == ".png" and f.is_file() for f in files)


def _unknown_layout(folder: Path, entries: list[Path]) -> FairDistillError:
    """The error for a folder of no known layout: what it holds, and what is read."""
    shown = [f"{p.name}/" if p.is_dir() else p.name for p in entries[:6]]
    more = f" and {len(entries) - 6} more" if len(entries) > 6 else ""
    what = ", ".join(shown) + more if shown else "nothing (an empty folder)"
    hint = ""
    if any(p.suffix == ".pt" for p in entries):
        hint = "; a .pt file is read when it is passed itself"
    elif any((p / SYNTHETIC_FILE).is_file() for p in entries if p.is_dir()):
        hint = "; its subfolders hold sets: pass one of them"
    return FairDistillError(f"{folder}: unknown layout: found {what}{hint}; evaluate reads {ACCEPTED}")


def _export_meta(folder: Path, layout: str) -> ExportMeta | None:
    """Our export's ``meta.json`` in ``folder``, checked (None: there is none, or another tool's)."""
    path = folder / META_FILE
    if not path.is_file():
        return None
    doc = read_json_file(path)
    if not isinstance(doc, dict) or doc.get("format") not in ("tensor", "png"):
        log.warning("%s is not the meta.json of a fairdistill export: ignored", path)
        return None
    meta = parse(ExportMeta, doc, str(path))
    if meta.format != layout:
        raise FairDistillError(f"{path} describes a {meta.format} export, but the folder holds a {layout} set")
    parse(SetMeta, meta.synthetic, f"{path}: synthetic")
    return meta


# ---- reading -----------------------------------------------------------------------------------
def read_set(found: FoundSet, data: FairDataset, *, normalised: bool | None = None) -> SyntheticSet:
    """``found``'s set in ``data``'s model space, checked against ``data`` (see the module docstring).

    ``normalised``: whether float tensors of a ``.pt`` layout are in model space (True) or pixels in
    [0, 1] (False); needed where the layout cannot tell, refused where it contradicts the layout.
    A set read from another layout than ours has ``meta["source"]``: its layout, path, space and how
    that was known, label kind and, by layout, the pair read or how class folders were mapped.
    """
    if found.synset is not None:  # ours, model space by construction
        _space(found, _Raw(None, None, "model", "fairdistill sets are stored in model space"), normalised, None)
        synset = found.synset
        _check_images(synset.images, data, found.what)
        labels = _labels(synset.labels, len(synset.images), data, found.what)
        _check_class_names(synset.meta.get("class_names"), data, found.what)
        return SyntheticSet(synset.images, labels, synset.meta)
    reader = {"dc-pt": _read_dc, "tensor": _read_tensors, "png": _read_png}[found.layout]
    raw = reader(found, data)
    what = found.what
    images = _check_images(raw.images, data, what)
    space = _space(found, raw, normalised, images)
    images = images.float() if space == "model" else _normalise(images, data, what)
    labels = _labels(raw.labels, len(images), data, what)
    meta = dict(found.export.synthetic) if found.export is not None else {}
    _check_class_names(meta.get("class_names"), data, what)
    facts = {"layout": found.layout, "path": str(found.path), "space": space, "space_from": raw.space_from}
    meta.update(_dataset_meta(data, space, meta), source={**facts, "labels": label_kind(labels), **raw.facts})
    parse(SetMeta, meta, f"{what}: metadata")
    return SyntheticSet(images.contiguous(), labels, meta)


def _dataset_meta(data: FairDataset, space: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What a set read from another layout takes from the dataset: its name and class names where the set
    has none; its normalisation when the images were normalised here (pixels) or the set says none."""
    out: dict[str, Any] = {
        "dataset": meta.get("dataset", data.name),
        "class_names": meta.get("class_names", list(data.class_names)),
        "group_names": meta.get("group_names", list(data.group_names)),
    }
    if space == "pixels" or "mean" not in meta or "std" not in meta:
        out.update(mean=list(data.mean), std=list(data.std))
    return out


def load_pt(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file that needs pickle, or is not a torch file,
    is refused in one line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises what its unpickler or zip reader met: all mean "cannot read"
        text = str(err)
        if "Weights only load failed" in text:
            named = re.search(r"GLOBAL ([\w.]+)", text)
            held = f" (it holds a {named.group(1)})" if named else ""
            raise FairDistillError(
                f"{what} {path} needs pickle to load{held}: refused, because unpickling runs whatever code the "
                "file names; save only tensors, lists and dicts (torch.save({'data': [[images, labels]]}, path))"
            ) from None
        raise FairDistillError(
            f"{what} {path} cannot be read as a torch file ({type(err).__name__}: {one_line(text, 120)})"
        ) from None


def _read_dc(found: FoundSet, data: FairDataset) -> _Raw:
    """The (first) images / labels pair of a DC-style ``.pt`` file, or of a bare ``(images, labels)``."""
    path = found.path
    obj = load_pt(path, "synthetic set")
    facts: dict[str, Any] = {}
    if isinstance(obj, dict):
        if "data" not in obj:
            keys = ", ".join(repr(k) for k in list(obj)[:6])
            raise FairDistillError(
                f"{path}: a dict without 'data' (keys: {keys}); the DC layout is {{'data': [[images, labels]]}}"
            )
        pairs = obj["data"]
        if not isinstance(pairs, list | tuple) or not pairs:
            raise FairDistillError(f"{path}: 'data' must be a non-empty list of [images, labels] pairs")
        if len(pairs) > 1:
            log.warning(
                "%s holds %d [images, labels] pairs (one per experiment): evaluating the first", path, len(pairs)
            )
        obj, facts = pairs[0], {"pair": 0, "pairs": len(pairs)}
    elif isinstance(obj, Tensor):
        raise FairDistillError(
            f"{path} holds one tensor, no labels: pass the folder holding {IMAGES_FILE} and {LABELS_FILE}, "
            "or save {'data': [[images, labels]]}"
        )
    if not isinstance(obj, list | tuple) or len(obj) != 2 or not all(isinstance(t, Tensor) for t in obj):
        kind = type(obj).__name__ + (f" of {len(obj)}" if isinstance(obj, list | tuple) else "")
        raise FairDistillError(f"{path}: expected an [images, labels] pair of tensors, found a {kind}")
    return _Raw(obj[0], obj[1], _uint8_space(obj[0]), _uint8_from(obj[0]), facts)


def _read_tensors(found: FoundSet, data: FairDataset) -> _Raw:
    """``images.pt`` and ``labels.pt`` of a folder; our export's ``meta.json`` says their space."""
    folder = found.path
    tensors = []
    for name in (IMAGES_FILE, LABELS_FILE):
        if not (folder / name).is_file():
            raise FairDistillError(f"{folder} has no {name}: the tensor layout is {IMAGES_FILE} + {LABELS_FILE}")
        t = load_pt(folder / name, "tensor file")
        if not isinstance(t, Tensor):
            raise FairDistillError(f"{folder / name} holds a {type(t).__name__}, not a tensor")
        tensors.append(t)
    space, space_from = _uint8_space(tensors[0]), _uint8_from(tensors[0])
    export = found.export
    if space is None and export is not None and (export.space or "").startswith("model"):
        space, space_from = "model", f"{folder / META_FILE} says so"
    return _Raw(tensors[0], tensors[1], space, space_from)


def _uint8_space(images: Tensor) -> str | None:
    return "pixels" if images.dtype == torch.uint8 else None


def _uint8_from(images: Tensor) -> str:
    return "uint8 tensors hold 8-bit pixels" if images.dtype == torch.uint8 else ""


def _space(found: FoundSet, raw: _Raw, normalised: bool | None, images: Tensor | None) -> str:
    """The images' space, ``"model"`` or ``"pixels"``: what the layout says (a ``normalised`` that contradicts it
    is refused), else what ``normalised`` says (neither: refused, with the values' range)."""
    given = None if normalised is None else "model" if normalised else "pixels"
    flag = f"--normalised {str(normalised).lower()}"
    if raw.space is not None:
        if given is not None and given != raw.space:
            raise FairDistillError(
                f"{flag} contradicts {found.what}: its images are {_SPACE_WORDS[raw.space]} ({raw.space_from})"
            )
        return raw.space
    if given is None:
        low, high = float(images.min()), float(images.max())
        raise FairDistillError(
            f"{found.what}: nothing says whether its images are normalised (model space) or pixels in [0, 1] "
            f"(their values lie in [{low:.3g}, {high:.3g}]); pass --normalised true or --normalised false"
        )
    raw.space_from = flag
    return given


def _check_images(images: Any, data: FairDataset, what: str) -> Tensor:
    """``images`` as an (N, C, H, W) float or uint8 tensor of ``data``'s channels and size, finite."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise FairDistillError(f"{what}: images must be an (N, C, H, W) tensor, got {shape}")
    if not (images.dtype.is_floating_point or images.dtype == torch.uint8):
        raise FairDistillError(f"{what}: images are {str(images.dtype).removeprefix('torch.')}: need float or uint8")
    if images.shape[0] == 0:
        raise FairDistillError(f"{what}: the set is empty (no images)")
    (c, h, w), k = images.shape[1:], data.channels
    if c != k:
        raise FairDistillError(f"{what}: images have {c} channel(s), {data.name} images have {k} (N, C, H, W expected)")
    if (h, w) != tuple(data.image_size):
        size = "x".join(map(str, data.image_size))
        raise FairDistillError(f"{what}: images are {h}x{w} pixels, {data.name} images are {size}; they do not match")
    if images.dtype.is_floating_point and not bool(torch.isfinite(images).all()):
        raise FairDistillError(f"{what}: images contain NaN or infinite values")
    return images


def _normalise(pixels: Tensor, data: FairDataset, what: str) -> Tensor:
    """Pixels (uint8, or floats in [0, 1]) to ``data``'s model space, ``(pixel - mean) / std``, float32."""
    x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise FairDistillError(
            f"{what}: pixels must lie in [0, 1], these lie in [{low:.3g}, {high:.3g}] "
            "(normalised images? pass --normalised true)"
        )
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def _labels(labels: Any, n: int, data: FairDataset, what: str) -> Tensor:
    """Hard labels as int64 (N,) in [0, K), or soft labels as float32 (N, K) probabilities."""
    if not isinstance(labels, Tensor):
        raise FairDistillError(f"{what}: labels must be a tensor, got {type(labels).__name__}")
    k = data.num_classes
    if label_kind(labels) == "soft":
        problem = soft_label_problem(labels, k)
        if labels.shape[0] != n:
            problem = f"need one row per image ({n}), got shape {tuple(labels.shape)}"
        if problem is not None:
            raise FairDistillError(f"{what}: soft labels: {problem}")
        return labels.float()
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        kind = str(labels.dtype).removeprefix("torch.")
        raise FairDistillError(
            f"{what}: labels are {kind} of shape {tuple(labels.shape)}: need (N,) integers or (N, K) probabilities"
        )
    if labels.ndim != 1 or labels.shape[0] != n:
        raise FairDistillError(f"{what}: need one label per image ({n}), got labels of shape {tuple(labels.shape)}")
    labels = labels.long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        bad = low if low < 0 else high
        raise FairDistillError(
            f"{what}: label {bad} is out of range: labels lie in [0, {k}) ({data.name} has {k} classes)"
        )
    return labels


def _check_class_names(names: Any, data: FairDataset, what: str) -> None:
    """A set that names its classes must have as many as the dataset."""
    if isinstance(names, list) and len(names) != data.num_classes:
        raise FairDistillError(f"{what}: the set has {len(names)} classes, {data.name} has {data.num_classes}")


# ---- PNG folders -------------------------------------------------------------------------------
def _read_png(found: FoundSet, data: FairDataset) -> _Raw:
    """The class folders' PNG files as uint8 (N, C, H, W), class by class in label order."""
    folder = found.path
    classes = _class_files(folder)
    labels, rule = png_class_labels([name for name, _ in classes], data, found.export, folder)
    order = sorted(range(len(classes)), key=lambda i: labels[i])
    pixels, ys = [], []
    for i in order:
        for f in classes[i][1]:
            pixels.append(_png_pixels(f, data))
            ys.append(labels[i])
    if not pixels:
        raise FairDistillError(f"{folder}: the class folders hold no PNG files")
    x = torch.from_numpy(np.stack(pixels))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return _Raw(x, torch.tensor(ys), "pixels", "PNG files hold 8-bit pixels", {"classes_from": rule})


def _class_files(folder: Path) -> list[tuple[str, list[Path]]]:
    """Each class folder's name and PNG files (integer names in numeric order, then the others by name)."""
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for f in sub.iterdir():
            if f.name.startswith("."):
                continue
            if not f.is_file() or f.suffix.lower() != ".png":
                raise FairDistillError(f"{f}: a class folder of a PNG set holds only <index>.png files")
            files.append(f)
        files.sort(key=lambda f: (0, int(f.stem), "") if f.stem.isdecimal() else (1, 0, f.name))
        out.append((sub.name, files))
    return out


def png_class_labels(
    folders: list[str], data: FairDataset, export: ExportMeta | None = None, where: Path | str = "the PNG set"
) -> tuple[list[int], str]:
    """The class of each folder name, and by which rule: ``"meta.json"`` (our export's mapping), ``"class
    names"`` (the dataset's, made file-safe as the export makes them) or ``"integer folder names"`` (0..K-1)."""
    k = data.num_classes
    if len(folders) > k:
        raise FairDistillError(f"{where}: {len(folders)} class folders, {data.name} has {k} classes")
    safe = {name: c for c, name in enumerate(class_folders(list(data.class_names)))}
    if export is not None and export.classes is not None:
        mapping, rule = {c.folder: c.label for c in export.classes}, META_FILE
    elif all(name in safe for name in folders):
        mapping, rule = safe, "class names"
    elif all(re.fullmatch(r"[0-9]{1,9}", name) for name in folders):
        mapping, rule = {name: int(name) for name in folders}, "integer folder names"
    else:
        odd = next(name for name in folders if name not in safe)
        shown = ", ".join(list(safe)[:4]) + (", ..." if k > 4 else "")
        raise FairDistillError(
            f"{where}: class folder {odd!r} is neither one of {data.name}'s class names ({shown}) "
            f"nor an integer 0..{k - 1}"
        )
    missing = [name for name in folders if name not in mapping]
    if missing:
        raise FairDistillError(f"{where}: {META_FILE} lists no class folder {missing[0]!r}")
    labels = [mapping[name] for name in folders]
    if len(set(labels)) != len(labels):
        twice = next(c for c in labels if labels.count(c) > 1)
        raise FairDistillError(f"{where}: two class folders are class {twice} ({rule})")
    return labels, rule


def _png_pixels(path: Path, data: FairDataset) -> np.ndarray:
    """One PNG as uint8 (H, W) or (H, W, C), checked for the dataset's size and channels before decoding."""
    from PIL import Image

    (h, w), c = data.image_size, data.channels
    arr = None
    try:
        with Image.open(path) as img:
            fmt, mode, size = img.format, img.mode, img.size
            if fmt == "PNG" and size == (w, h):
                if mode == "P":  # a palette: expand to the colours it stands for
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif mode == "1":
                    img = img.convert("L")
                mode = img.mode
                arr = np.asarray(img, dtype=np.uint8) if mode == PNG_MODES.get(c) else None
    except (OSError, Image.DecompressionBombError) as err:
        raise FairDistillError(f"{path} cannot be read as an image ({one_line(str(err), 120)})") from None
    if fmt != "PNG":
        raise FairDistillError(f"{path} is a {fmt or 'non-image'} file, not a PNG")
    if size != (w, h):
        raise FairDistillError(f"{path}: image of {size[1]}x{size[0]} pixels, {data.name} images are {h}x{w}")
    if arr is None:
        raise FairDistillError(
            f"{path}: PNG mode {mode}, {data.name} images have {c} channel(s) (8-bit {PNG_MODES.get(c, '?')} PNGs)"
        )
    return arr


__all__ = ["ACCEPTED", "LAYOUTS", "ExportMeta", "FoundSet", "find_set", "load_pt", "png_class_labels", "read_set"]
