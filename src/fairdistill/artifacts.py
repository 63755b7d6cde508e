"""Saving and loading results safely: synthetic sets (safetensors + JSON metadata), JSON records, grids.

Writing
    Every file is written atomically (to a temporary ``.NAME.XXXX.tmp`` in the same folder, then
    renamed), with the permissions the umask allows (``0o666 & ~umask``, as ``open()`` would give;
    ``tempfile`` alone would leave 0600). A temporary file is removed on every way out of the
    write (an error, Ctrl-C); only a SIGKILL can leave one, and the next run in that folder
    removes it.

The final files of a run are one unit (:func:`final_files`)
    ``distill`` and ``compare`` write their final files (the set, ``record.json``, ``grid.png``,
    ``summary.json`` ...) into a temporary folder inside the output folder, ``.final.XXXX.tmp``.
    When every file is complete the folder is renamed ``.final.XXXX.ready`` (one atomic rename:
    the commit point) and its files are moved into place, ``record.json`` / ``summary.json`` last;
    then the folder is removed. A run killed before the commit point leaves the earlier run's files
    untouched (the next run deletes the unfinished folder); one killed while moving leaves a
    ``.ready`` folder that whoever next reads or writes that output folder finishes moving (it is a
    journal: the new unit is complete, so rolling it forward is always right). So a reader never
    sees a new set beside an old ``record.json``. Chosen over a run id stamped into every file
    because it also keeps the files on disk consistent, not only the readers' view of them.

Integrity
    A saved set records, in its safetensors metadata, the SHA-256 of its tensors (names, dtypes,
    shapes and bytes) and of its metadata text; loading recomputes both and refuses a file whose
    content changed since it was written (a flipped bit is "corrupt", not a silently different
    set). Sets written before the hashes existed still load, with a warning (they cannot be
    verified, but are otherwise checked like any other).

Checking
    :func:`check_synthetic` is the one check of a set, used by every reader (``load_synthetic``,
    hence ``evaluate``, ``export`` and ``report``) and by the exports of in-memory sets: metadata a
    JSON object of the right types (pydantic), images float32 (N, C, H, W) with N > 0, 1, 3 or 4
    channels, finite; labels an integer (not bool) 1-D tensor, one per image, each in
    ``[0, number of classes)`` (the metadata's class names, else at most one class per image);
    ``mean`` / ``std`` finite, one per channel, ``std`` > 0.

Loading never unpickles.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from .errors import FairDistillError
from .validate import parse, read_json_text

log = logging.getLogger("fairdistill")

SYNTHETIC_FILE = "synthetic.safetensors"
#: the safetensors metadata key of a set's JSON metadata
SET_META_KEY = "fairdistill"
#: the safetensors metadata keys of the content hashes (hex SHA-256)
TENSORS_HASH_KEY = "fairdistill_sha256_tensors"
METADATA_HASH_KEY = "fairdistill_sha256_metadata"
#: the channel counts a set may have (those of the datasets: grey, RGB, RGBA)
SET_CHANNELS = (1, 3, 4)
#: the prefix of the folder a run's final files are written into before they are moved into place
FINAL_PREFIX = ".final."
_STAGING_SUFFIX = ".tmp"
_PENDING_SUFFIX = ".ready"
#: in a unit of final files these are moved into place last (the record that describes the rest)
_LAST = ("record.json", "summary.json")
#: the files a run writes straight into its output folder (stale temporaries of these are removed)
_OWN_FILES = (SYNTHETIC_FILE, "record.json", "grid.png", "summary.json", "report.html", "report.md")


@dataclass
class SyntheticSet:
    """Distilled images (model space, (N, C, H, W), ordered by class) with labels and metadata.

    ``labels``: (N,) class indices; a set read from another tool (:mod:`fairdistill.layouts`) may hold
    soft labels instead, (N, K) class probabilities, which only evaluation takes.
    """

    images: Tensor
    labels: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        """Images of the largest class (of soft labels, (N, K) probabilities: by each image's likeliest class)."""
        labels = self.labels.argmax(1) if self.labels.ndim == 2 else self.labels
        return int(torch.bincount(labels).max())

    def to_pixels(self) -> Tensor:
        """The images in pixel space, ``images * std + mean`` clamped to [0, 1] (needs meta ``mean`` / ``std``)."""
        if not isinstance(self.meta.get("mean"), list) or not isinstance(self.meta.get("std"), list):
            raise FairDistillError("the synthetic set has no normalisation (meta 'mean' / 'std'): cannot make pixels")
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
_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask: ``0o666 & ~umask``.

    The umask can only be read by setting it; it is set to a strict 0o077 for that instant (so a
    file another thread creates meanwhile errs on the private side) and put back.
    """
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with the umask's permissions; no temporary file survives an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    done = False
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600 whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:  # any way out, KeyboardInterrupt included
            Path(tmp).unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXX.tmp``) a killed atomic write left in ``folder``.

    ``names``: only those of these files (default: every one, for folders fairdistill owns).
    """
    removed = []
    patterns = [".*.tmp"] if names is None else [f".{glob.escape(n)}.*.tmp" for n in names]
    if folder.is_dir():
        for pattern in patterns:
            for p in folder.glob(pattern):
                if p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    return removed


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
    """A JSON artifact of ours (bounded in size and depth), after finishing an interrupted unit write beside it."""
    from .validate import read_json_file

    path = Path(path)
    if not path.is_file():
        raise FairDistillError(f"file not found: {path}")
    finish_interrupted_writes(path.parent, parent=True)
    return read_json_file(path)


# ---- the final files of a run: one unit -------------------------------------------------------
@contextmanager
def final_files(out: str | Path) -> Iterator[Path]:
    """A temporary folder inside ``out`` to write a run's final files into; on success they move into ``out``.

    Use as ``with final_files(out) as stage: save_synthetic(s, stage); write_json(stage / "record.json", r)``.
    Paths inside ``stage`` map to the same paths inside ``out`` (subfolders included). If the block
    raises (or is interrupted), nothing in ``out`` changes and the temporary folder is removed. See
    the module docstring for what happens when the process is killed.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    finish_interrupted_writes(out, writer=True)
    stage = Path(tempfile.mkdtemp(prefix=FINAL_PREFIX, suffix=_STAGING_SUFFIX, dir=out))
    ready: Path | None = None
    try:
        yield stage
        pending = stage.with_name(stage.name[: -len(_STAGING_SUFFIX)] + _PENDING_SUFFIX)
        os.replace(stage, pending)  # the commit point: from here on the unit is rolled forward
        ready = pending
        _fsync_dir(out)
        try:
            _move_into_place(ready, out)
        except OSError as err:
            raise FairDistillError(
                f"cannot move the final files into {out}: {err.strerror or err} ({err.filename}); "
                f"they are kept in {ready}"
            ) from None
    finally:
        if ready is None:
            shutil.rmtree(stage, ignore_errors=True)
        elif ready.exists():  # interrupted while moving (Ctrl-C): finish now if possible, else the next reader does
            try:
                _move_into_place(ready, out)
            except OSError:
                pass


def finish_interrupted_writes(folder: str | Path, *, writer: bool = False, parent: bool = False) -> None:
    """Finish what a killed :func:`final_files` left in ``folder``: move a complete (``.ready``) unit into place.

    ``writer`` (a run about to write into ``folder``): also delete unfinished (``.tmp``) units and
    stale temporary files. ``parent``: also finish a unit in ``folder``'s parent that holds
    ``folder`` (a method folder of a ``compare`` run). Readers call this before reading.
    """
    folder = Path(folder)
    places: list[tuple[Path, str | None]] = [(folder, None)]
    if parent:
        places.append((folder.parent, folder.name))
    for place, sub in places:
        if not place.is_dir():
            continue
        for unit in sorted(place.glob(f"{glob.escape(FINAL_PREFIX)}*{_PENDING_SUFFIX}")):
            if not unit.is_dir() or unit.is_symlink() or (sub is not None and not (unit / sub).exists()):
                continue
            try:
                _move_into_place(unit, place)
            except OSError as err:
                raise FairDistillError(
                    f"{place} holds the final files of an interrupted run ({unit.name}) that cannot be "
                    f"moved into place: {err.strerror or err} ({err.filename})"
                ) from None
            log.warning("finished moving the final files of an interrupted run into %s", place)
    if writer and folder.is_dir():
        for unit in folder.glob(f"{glob.escape(FINAL_PREFIX)}*{_STAGING_SUFFIX}"):
            if unit.is_dir() and not unit.is_symlink():
                shutil.rmtree(unit, ignore_errors=True)
        remove_stale_temporaries(folder, _OWN_FILES)  # only ours: OUT may be a folder the user shares


def _move_into_place(unit: Path, out: Path) -> None:
    """Move every file of ``unit`` to the same relative path in ``out`` (records last), then remove ``unit``.

    Idempotent, and safe beside another process doing the same: a file already moved is skipped.
    """
    files = [p for p in unit.rglob("*") if p.is_file() and not p.is_symlink()]
    files.sort(key=lambda p: (p.name in _LAST, p.name == "summary.json", str(p.relative_to(unit))))
    folders = set()
    for src in files:
        dest = out / src.relative_to(unit)
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest.parent, [dest.name])  # what an older, non-staged write may have left
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            if src.exists():
                raise
        folders.add(dest.parent)
    for f in folders:
        _fsync_dir(f)
    shutil.rmtree(unit, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- content hashes ---------------------------------------------------------------------------
def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 (hex) of named tensors: each one's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def content_hashes(tensors: Mapping[str, Tensor], meta_text: str) -> dict[str, str]:
    """The safetensors metadata entries that let a reader verify ``tensors`` and ``meta_text``."""
    return {TENSORS_HASH_KEY: tensors_sha256(tensors), METADATA_HASH_KEY: text_sha256(meta_text)}


def verify_content(what: str, tensors: Mapping[str, Tensor], meta_text: str, recorded: Mapping[str, str]) -> bool:
    """Check ``tensors`` and ``meta_text`` against the hashes in ``recorded``; False when none are recorded.

    A mismatch raises the one-line "``what`` is corrupt: ..." error.
    """
    if TENSORS_HASH_KEY not in recorded and METADATA_HASH_KEY not in recorded:
        return False
    if recorded.get(TENSORS_HASH_KEY) != tensors_sha256(tensors):
        raise FairDistillError(f"{what} is corrupt: its tensors do not match the hash recorded when it was written")
    if recorded.get(METADATA_HASH_KEY) != text_sha256(meta_text):
        raise FairDistillError(f"{what} is corrupt: its metadata does not match the hash recorded when it was written")
    return True


def read_safetensors(path: Path, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file; any damage is a one-line "corrupt or truncated"."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except OSError as err:
        raise FairDistillError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    try:
        tensors = load(data)  # checks the header and that the offsets fit the file (no allocation beyond it)
    except (SafetensorError, Exception) as err:  # whatever the parser objects to, the file is damaged
        why = f"not a readable safetensors file: {err}"
        raise FairDistillError(f"{what} {path} is corrupt or truncated ({why})") from None
    header_len = int.from_bytes(data[:8], "little")
    header = read_json_text(data[8 : 8 + header_len], f"{what} {path} (corrupt or truncated?)")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FairDistillError(f"{what} {path} is corrupt or truncated (its metadata is not a table of strings)")
    return tensors, meta


# ---- synthetic sets: the one check ------------------------------------------------------------
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[str, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=1)]

#: metadata fields that may be absent but, when present, may not be null
_NOT_NULL = (
    "method",
    "config",
    "dataset",
    "class_names",
    "group_names",
    "mean",
    "std",
    "ipc",
    "seed",
    "environment",
    "factor",
    "images_per_class",
    "stored_images",
    "processes",
)


class _MethodMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: Name | None = None
    backbone: Name | None = None
    target: Name | None = None
    distance: Name | None = None
    embedder: Name | None = None
    sampling: Name | None = None
    settings: dict[str, Any] | None = None


class SetMeta(BaseModel):
    """The metadata of a saved set: the fields fairdistill reads, typed; anything else is kept as it is."""

    model_config = ConfigDict(extra="allow")

    method: _MethodMeta | None = None
    config: dict[str, Any] | None = None
    dataset: Name | None = None
    dataset_fingerprint: Name | None = None
    class_names: list[Name] | None = None
    group_names: list[Name] | None = None
    mean: list[FiniteFloat] | None = Field(default=None, min_length=1)
    std: list[Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]] | None = Field(
        default=None, min_length=1
    )
    dsa_strategy: Name | None = None
    ipc: Count | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    preset: Name | None = None
    environment: dict[str, Any] | None = None
    sampling: Name | None = None
    seconds: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)] | None = None
    processes: Count | None = None
    factor: Count | None = None
    images_per_class: Count | None = None
    stored_images: Name | None = None
    group_labels: dict[str, Any] | None = None

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _given_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


def check_synthetic(synset: SyntheticSet, what: str = "the synthetic set", *, finite: bool = True) -> SyntheticSet:
    """Refuse a set that no reader could use, in one line naming ``what``; returns it with int64 labels.

    The checks are listed in the module docstring. Images must be float32 (fairdistill writes
    nothing else; a float16 / float64 set made elsewhere is refused rather than converted, so that
    what is evaluated is exactly what is in the file: convert it with ``images.float()`` and save it
    again). ``finite=False`` skips the NaN / inf scan (writing: the runs check it themselves, with
    a message that says where their last good checkpoint is).
    """
    meta = synset.meta
    if not isinstance(meta, dict):
        raise FairDistillError(f"{what}: its metadata must be a JSON object, got {_kind(meta)}")
    parsed = parse(SetMeta, meta, f"{what}: metadata")
    images, labels = synset.images, synset.labels
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise FairDistillError(f"{what}: images and labels must be tensors")
    if images.ndim != 4:
        raise FairDistillError(f"{what}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.float32:
        raise FairDistillError(
            f"{what}: images are {str(images.dtype).removeprefix('torch.')}, fairdistill sets hold float32 "
            "(convert with images.float() and save again)"
        )
    n, c = images.shape[:2]
    if n == 0:
        raise FairDistillError(f"{what}: the set is empty (no images)")
    if c not in SET_CHANNELS or images.shape[2] < 1 or images.shape[3] < 1:
        raise FairDistillError(
            f"{what}: images of shape {tuple(images.shape[1:])}: a set has 1, 3 or 4 channels and at least one pixel"
        )
    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise FairDistillError(f"{what}: labels must be integers, got {str(labels.dtype).removeprefix('torch.')}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise FairDistillError(f"{what}: need one label per image ({n}), got labels of shape {tuple(labels.shape)}")
    for key in ("mean", "std"):
        values = getattr(parsed, key)
        if values is not None and len(values) != c:
            raise FairDistillError(f"{what}: metadata {key} has {len(values)} values, the images have {c} channels")
    names = parsed.class_names
    k = len(names) if names else n
    labels = labels.detach().cpu().long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        bad = low if low < 0 else high
        where = f"the set's {k} class names" if names else f"at most one class per image ({n} images)"
        raise FairDistillError(f"{what}: label {bad} is out of range: labels lie in [0, {k}) ({where})")
    if finite and not bool(torch.isfinite(images).all()):
        raise FairDistillError(f"{what}: images contain NaN or infinite values")
    return SyntheticSet(images, labels, meta)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def save_synthetic(synset: SyntheticSet, path: str | Path) -> Path:
    """Save to ``path`` (a ``.safetensors`` file, or a folder that receives ``synthetic.safetensors``).

    The set is checked first (:func:`check_synthetic`, except for NaN / inf: a run refuses those
    itself) and the file records the SHA-256 of its tensors and metadata.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / SYNTHETIC_FILE
    synset = check_synthetic(synset, f"cannot save {path}", finite=False)
    tensors = {"images": synset.images.detach().cpu().contiguous(), "labels": synset.labels.cpu().contiguous()}
    text = json.dumps(_jsonable(synset.meta))
    meta = {SET_META_KEY: text, **content_hashes(tensors, text)}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_synthetic(path: str | Path) -> SyntheticSet:
    """Load a synthetic set saved by :func:`save_synthetic` (a file or the folder holding it), checked.

    Refused in one line: an unreadable or truncated file, content that does not match its recorded
    hashes ("corrupt"), anything :func:`check_synthetic` refuses. A set written before the hashes
    existed loads with a warning.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    finish_interrupted_writes(folder, parent=True)
    if path.is_dir():
        path = path / SYNTHETIC_FILE
    if not path.is_file():
        raise FairDistillError(f"synthetic set not found: {path}")
    what = f"synthetic set {path}"
    tensors, header = read_safetensors(path, "synthetic set")
    text = header.get(SET_META_KEY, "{}")
    if not verify_content(what, tensors, text, header):
        log.warning("%s was written without content hashes (by an older fairdistill): it cannot be verified", path)
    if set(tensors) != {"images", "labels"}:
        raise FairDistillError(f"{what}: expected the tensors 'images' and 'labels', got {sorted(tensors)[:8]}")
    meta = read_json_text(text, f"{what}: metadata")
    return check_synthetic(SyntheticSet(tensors["images"], tensors["labels"], meta), what)


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
