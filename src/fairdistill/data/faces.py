"""The three face benchmarks, read from their released folder layouts: UTKFace, BFFHQ and CelebA.

Every loader decodes with Pillow, converts to RGB, takes the centred square of the image (side =
the shorter edge, offsets rounded as torchvision's ``CenterCrop`` does) and resizes it to
``image_size`` x ``image_size`` with Pillow. The released images are already square for UTKFace
(200x200 "aligned & cropped") and BFFHQ (128x128), so for them this is a plain resize; CelebA's
aligned 178x218 images become their central 178x178 square, the reference's "CenterCrop(178) +
Resize(64)" (identical on the released images). The filter follows the reference: bicubic for
BFFHQ (a plain PIL ``resize``, whose default is bicubic in current Pillow), bilinear for UTKFace
and CelebA (torchvision's ``Resize`` on PIL images). Pixels are stored uint8 (N, 3, H, W) in the
decoded-data cache (:func:`~fairdistill.data.cache.cached_arrays`; the filter is part of the
entry's parameters) and normalised with the reference's per-dataset statistics (PUBLISHED.md
section 1): UTKFace mean (0.6136, 0.4723, 0.4070), std (0.2549, 0.2305, 0.2283); BFFHQ CIFAR-10's
(0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010); CelebA mean (0.5063, 0.4258, 0.3832), std
(0.2676, 0.2453, 0.2410). With ``stream=True`` the training split keeps the pixels uint8
(memory-mapped from the cache) and decodes a batch at a time
(:class:`~fairdistill.data.store.Uint8Images`), with bit-identical results.

Every file listing is sorted (by name, or by path relative to the dataset folder), so labels,
splits and pixels are identical on any machine. Names starting with ``.`` (such as macOS's
``._x.jpg`` companions) are never read as images. An image Pillow cannot decode raises a
:class:`~fairdistill.data.files.MissingDataError` naming the file; missing folders raise the
layout error listing what was expected and what was found.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import rng
from ..errors import FairDistillError, unknown_name
from .cache import cached_arrays
from .dataset import FairDataset, FairSplit
from .files import Layout, MissingDataError, corrupt, data_root_from
from .pixels import normalise_uint8
from .store import Uint8Images

log = logging.getLogger(__name__)

Norm = tuple[float, float, float]
#: per-channel normalisation (mean, std) of each benchmark, the reference's (PUBLISHED.md section 1)
UTKFACE_NORM: tuple[Norm, Norm] = ((0.6136, 0.4723, 0.4070), (0.2549, 0.2305, 0.2283))
BFFHQ_NORM: tuple[Norm, Norm] = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))  # CIFAR-10's
CELEBA_NORM: tuple[Norm, Norm] = ((0.5063, 0.4258, 0.3832), (0.2676, 0.2453, 0.2410))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Resample = Literal["bilinear", "bicubic"]
_PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
#: how the pixels are made from a file with each filter; part of every cache entry's parameters,
#: so a changed decoding makes a new entry instead of reusing stale pixels
TRANSFORMS: dict[str, str] = {"bilinear": "rgb-centre-square-bilinear", "bicubic": "rgb-centre-square-bicubic"}
TRANSFORM = TRANSFORMS["bilinear"]
#: decode in a thread pool from this many images on (a few files are faster in one thread)
THREADED_FROM = 256

UTK_CLASSES = ("<20", "20-39", ">=40")
UTK_RACES = ("White", "Black", "Asian", "Indian")  # race 4, "Others", is dropped
UTK_OTHERS = 4
BFFHQ_CLASSES = ("young", "old")
BFFHQ_GROUPS = ("female", "male")
BFFHQ_PERCENT = "0.5pct"
CELEBA_NUM_ATTRIBUTES = 40


# ---- decoding ---------------------------------------------------------------------------------
def decode_face(path: Path, size: int, resample: Resample = "bilinear") -> np.ndarray:
    """One image file -> (3, size, size) uint8: RGB, centred square crop, Pillow resize (``resample``)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # forces the full decode, so a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise corrupt(Path(path), f"Pillow cannot decode this image ({err})") from err
    w, h = rgb.size
    side = min(w, h)
    if (w, h) != (side, side):
        left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
        rgb = rgb.crop((left, top, left + side, top + side))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), _PIL_FILTERS[resample])
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(
    paths: Sequence[Path], size: int, *, what: str = "images", resample: Resample = "bilinear"
) -> np.ndarray:
    """Decode ``paths`` in order into one (N, 3, size, size) uint8 array (threads: Pillow releases the GIL)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    workers = max(1, min(8, os.cpu_count() or 1))
    chunk = 4096
    if workers == 1 or len(paths) < THREADED_FROM:
        for i, p in enumerate(paths):
            out[i] = decode_face(p, size, resample)
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), chunk):
            block = paths[start : start + chunk]
            for i, arr in enumerate(pool.map(lambda p: decode_face(p, size, resample), block)):
                out[start + i] = arr
            log.info("%s: decoded %d / %d", what, min(start + chunk, len(paths)), len(paths))
    return out


def _model_space(pixels: np.ndarray, norm: tuple[Norm, Norm], index: np.ndarray | None = None) -> Tensor:
    """Normalised float32 images of ``pixels[index]``, filled block by block (no full-size temporaries)."""
    n = len(pixels) if index is None else len(index)
    out = torch.empty((n, *pixels.shape[1:]), dtype=torch.float32)
    step = 4096
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = pixels[start:stop] if index is None else pixels[index[start:stop]]
        out[start:stop] = normalise_uint8(np.ascontiguousarray(block), *norm)
    return out


def _split(
    pixels: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    index: np.ndarray | None = None,
    *,
    norm: tuple[Norm, Norm],
    stream: bool = False,
) -> FairSplit:
    """A split of ``pixels[index]``; ``stream``: kept as uint8 (memory-mapped) and decoded per batch."""
    y, a = (labels, groups) if index is None else (labels[index], groups[index])
    return FairSplit(
        Uint8Images(pixels, *norm, rows=index) if stream else _model_space(pixels, norm, index),
        torch.as_tensor(np.asarray(y, dtype=np.int64)),
        torch.as_tensor(np.asarray(a, dtype=np.int64)),
    )


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or not 8 <= image_size <= 512:
        raise FairDistillError(f"image_size must be an integer in [8, 512], got {image_size!r}")
    return int(image_size)


def _first(names: Sequence[str], shown: int) -> str:
    """The first ``shown`` of ``names``, joined by commas, with ", ..." when some are left out."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _cached_pixels(
    key: str,
    sources: Sequence[Path],
    params: dict,
    parts: dict[str, tuple[str, Sequence[Path]]],
    *,
    size: int,
    resample: Resample = "bilinear",
    cache_dir: str | Path | None,
    cache: bool,
) -> dict[str, np.ndarray]:
    """The decoded pixels of each named list of image files, from the cache or decoded (and stored) now.

    ``parts`` maps each array name of the entry to (what the progress log calls it, its files), decoded
    in that order; ``sources`` and ``params`` identify the entry (see
    :func:`~fairdistill.data.cache.cached_arrays`).
    """

    def build() -> dict[str, np.ndarray]:
        return {name: decode_images(paths, size, what=what, resample=resample) for name, (what, paths) in parts.items()}

    return cached_arrays(key, sources, params, build, cache_dir=cache_dir, cache=cache)


def _cell_sizes(labels: np.ndarray, groups: np.ndarray, cells: Sequence[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """How many images fall in each (class, group) cell of ``cells``."""
    return {cell: int(((labels == cell[0]) & (groups == cell[1])).sum()) for cell in cells}


def _face_dataset(name: str, norm: tuple[Norm, Norm], **fields) -> FairDataset:
    """A face benchmark's :class:`FairDataset`, its mean and std both taken from ``norm``."""
    return FairDataset(name=name, mean=norm[0], std=norm[1], **fields)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _images_in(folder: Path, *, nested: bool) -> list[Path]:
    """Image files in ``folder`` (and, if ``nested``, in its immediate sub-folders), sorted by relative path."""
    found: list[Path] = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_file() and _is_image_name(e.name):
                found.append(Path(e.path))
            elif nested and e.is_dir():
                with os.scandir(e.path) as inner:
                    found.extend(Path(s.path) for s in inner if s.is_file() and _is_image_name(s.name))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _cell_sample(
    labels: np.ndarray,
    groups: np.ndarray,
    cells: Sequence[tuple[int, int]],
    quota: Callable[[int], int],
    seed: int,
    keys: tuple,
) -> np.ndarray:
    """Sorted indices: from each (class, group) cell, the first ``quota(n)`` of a permutation of its members.

    The permutation of cell ``(y, a)`` comes from ``rng.generator(seed, *keys, y, a)``, so each cell's
    draw depends on nothing but the seed, the keys and the cell.
    """
    chosen = []
    for y, a in cells:
        members = np.flatnonzero((labels == y) & (groups == a))
        if len(members) == 0:
            continue
        g = rng.generator(seed, *keys, y, a)
        order = torch.randperm(len(members), generator=g).numpy()
        chosen.append(members[order[: quota(len(members))]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


# ---- UTKFace ----------------------------------------------------------------------------------
_UTK_NAME = re.compile(r"(\d+)_(\d+)_(\d+)_[^_]+", re.ASCII)
_UTK_SUFFIXES = (".jpg.chip.jpg", ".jpg", ".jpeg", ".png")


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` from ``{age}_{gender}_{race}_{datetime}.jpg`` (or ``.jpg.chip.jpg``, ``.png``).

    None when the name does not follow the pattern (a field missing, gender not 0/1, race not 0..4).
    """
    lower = name.lower()
    for suffix in _UTK_SUFFIXES:
        if lower.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    else:
        return None
    m = _UTK_NAME.fullmatch(stem)
    if m is None:
        return None
    age, gender, race = (int(v) for v in m.groups())
    if gender not in (0, 1) or not 0 <= race <= UTK_OTHERS:
        return None
    return age, gender, race


def utk_age_bin(age: int) -> int:
    """0: under 20, 1: 20 to 39, 2: 40 and over."""
    return 0 if age < 20 else 1 if age < 40 else 2


class _UTKFaceLayout(Layout):
    """A folder counts as UTKFace when it directly holds at least one image file."""

    def missing_in(self, folder: Path) -> list[str]:
        with os.scandir(folder) as entries:
            if any(e.is_file() and _is_image_name(e.name) for e in entries):
                return []
        return ["{age}_{gender}_{race}_{datetime}.jpg images"]

    def expected(self) -> str:
        where = " or ".join(f"<root>/{f}" if f != "." else "<root>" for f in self.folders)
        return f"{where} holding the images named {{age}}_{{gender}}_{{race}}_{{datetime}}.jpg ({self.note})"


UTKFACE_LAYOUT = _UTKFaceLayout(
    key="utkface",
    folders=("UTKFace", "utkface", "UTKFace/UTKFace", "utkface/UTKFace", "."),
    note="the 'aligned & cropped' release names them ...jpg.chip.jpg; .png is accepted too",
)


def utkface(
    *,
    data_root: str | Path | None = None,
    image_size: int = 64,
    seed: int = 0,
    test_per_cell: int = 100,
    test_cells: Literal["equal", "capped"] = "equal",
    cache_dir: str | Path | None = None,
    cache: bool = True,
    stream: bool = False,
) -> FairDataset:
    """UTKFace: class = age bin (<20, 20-39, >=40), group = race (White, Black, Asian, Indian).

    Files: ``<root>/UTKFace/`` (or ``utkface/``, ``UTKFace/UTKFace/``, ``utkface/UTKFace/``, the root
    itself) holding ``{age}_{gender}_{race}_{datetime}.jpg`` (``.jpg.chip.jpg`` in the aligned &
    cropped release; ``.png`` accepted). Race 4 ("Others") is dropped; files whose name does not
    parse (the release has a few with a field missing) are skipped and counted in a warning.

    Split (the FairDD / COBRA setup, ``test_cells="equal"``): ``k = min(test_per_cell, smallest
    cell)`` images from EVERY (age bin, race) cell go to test, so the test set is balanced over the
    cells; the rest is the natural, unbalanced train set. (The smallest cell is taken over the
    non-empty cells; an empty cell, which the release does not have, is logged.) Our option
    ``test_cells="capped"`` takes ``min(n, test_per_cell)`` from each cell instead (unbalanced when a
    cell is small). Which images: a permutation seeded by ``seed`` and the cell over the cell's
    members in sorted-file-name order. The images are 200x200 faces, simply resized (bilinear) to
    ``image_size``; normalised with the reference's UTKFace statistics (:data:`UTKFACE_NORM`).

    Cache: one entry of pixels for every kept image (keyed by ``image_size``), stamped by each image
    file's size and modification time; labels and the split are recomputed from the names on every
    load, so changing ``seed`` or ``test_per_cell`` does not decode again.
    """
    size = _check_size(image_size)
    _check_utkface_split(test_per_cell, test_cells)
    folder = UTKFACE_LAYOUT.find(data_root_from(data_root))
    paths, ages, races = _utkface_images(folder)
    pixels = _cached_pixels(
        "utkface",
        paths,
        {"image_size": size, "transform": TRANSFORM},
        {"pixels": ("UTKFace", paths)},
        size=size,
        cache_dir=cache_dir,
        cache=cache,
    )["pixels"]
    labels = np.array([utk_age_bin(a) for a in ages], dtype=np.int64)
    groups = np.array(races, dtype=np.int64)
    test_idx, what = _utkface_test_rows(labels, groups, test_per_cell, test_cells, seed)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return _face_dataset(
        "utkface",
        UTKFACE_NORM,
        train=_split(pixels, labels, groups, np.flatnonzero(train_mask), norm=UTKFACE_NORM, stream=stream),
        test=_split(pixels, labels, groups, test_idx, norm=UTKFACE_NORM),
        class_names=UTK_CLASSES,
        group_names=UTK_RACES,
        description=f"UTKFace {size}x{size}: age bin by race, natural train, test {what}",
        params={
            "image_size": size,
            "seed": seed,
            "test_per_cell": test_per_cell,
            "test_cells": test_cells,
            "transform": TRANSFORM,
        },
    )


def _check_utkface_split(test_per_cell: int, test_cells: str) -> None:
    """Refuse a ``test_per_cell`` that is not a positive integer and an unknown ``test_cells``."""
    if isinstance(test_per_cell, bool) or not isinstance(test_per_cell, int) or test_per_cell < 1:
        raise FairDistillError(f"test_per_cell must be a positive integer, got {test_per_cell!r}")
    if test_cells not in ("equal", "capped"):
        raise FairDistillError(f"unknown test_cells {test_cells!r}; allowed: capped, equal")


def _utkface_images(folder: Path) -> tuple[list[Path], list[int], list[int]]:
    """The kept images of a UTKFace folder, in file-name order, with the age and race their names give.

    A name that does not parse is skipped with a warning, a race-4 ("Others") image is dropped
    (logged); a folder left with no image raises :class:`MissingDataError`.
    """
    paths: list[Path] = []
    ages: list[int] = []
    races: list[int] = []
    bad: list[str] = []
    others = 0
    for path in _images_in(folder, nested=False):
        parsed = parse_utkface_name(path.name)
        if parsed is None:
            bad.append(path.name)
        elif parsed[2] == UTK_OTHERS:
            others += 1
        else:
            paths.append(path)
            ages.append(parsed[0])
            races.append(parsed[2])
    if bad:
        log.warning(
            "UTKFace: skipped %d file(s) in %s whose names do not read as {age}_{gender}_{race}_{datetime}: %s",
            len(bad),
            folder,
            _first(bad, 5),
        )
    if others:
        log.info("UTKFace: dropped %d image(s) of race 4 ('Others')", others)
    if not paths:
        raise MissingDataError(f"{folder}: no UTKFace image of race 0-3 with a readable name")
    return paths, ages, races


def _utkface_test_rows(
    labels: np.ndarray, groups: np.ndarray, test_per_cell: int, test_cells: str, seed: int
) -> tuple[np.ndarray, str]:
    """The sorted rows that form the UTKFace test set, and how the description states its size.

    ``"equal"``: the same number from every cell, ``test_per_cell`` or the smallest non-empty
    cell's size when that is less; ``"capped"``: up to ``test_per_cell`` from each cell.
    """
    cells = [(y, a) for y in range(len(UTK_CLASSES)) for a in range(len(UTK_RACES))]
    if test_cells == "equal":
        sizes = _cell_sizes(labels, groups, cells)
        empty = [f"({UTK_CLASSES[y]}, {UTK_RACES[a]})" for (y, a), n in sizes.items() if n == 0]
        if empty:
            log.warning("UTKFace: no image in cell(s) %s; the test share is set by the other cells", ", ".join(empty))
        per_cell = min(test_per_cell, min(n for n in sizes.values() if n))
        what = f"{per_cell} per cell"
    else:
        per_cell = test_per_cell
        what = f"<= {test_per_cell} per cell (capped, our option)"
    return _cell_sample(labels, groups, cells, lambda n: min(n, per_cell), seed, ("utkface-test",)), what


# ---- BFFHQ ------------------------------------------------------------------------------------
BFFHQ_LAYOUT = Layout(
    key="bffhq",
    folders=("bffhq", "."),
    dirs=(f"{BFFHQ_PERCENT}/align", f"{BFFHQ_PERCENT}/conflict", "test"),
    note="images named <id>_<age>_<gender>.png, age 0 young / 1 old, gender 0 female / 1 male; "
    "align/, conflict/ and test/ may hold them directly or in one level of sub-folders",
)


def parse_bffhq_name(path: Path) -> tuple[int, int]:
    """``(age class, gender)`` from the last two underscore-separated fields of a BFFHQ file name."""
    stem = path.name.split(".")[0]
    fields = stem.split("_")
    if len(fields) < 2 or fields[-2] not in ("0", "1") or fields[-1] not in ("0", "1"):
        raise MissingDataError(
            f"{path}: a BFFHQ file name must end in _<age>_<gender> (each 0 or 1), like 00123_0_0.png"
        )
    return int(fields[-2]), int(fields[-1])


def bffhq(
    *,
    data_root: str | Path | None = None,
    image_size: int = 64,
    resample: Resample = "bicubic",
    cache_dir: str | Path | None = None,
    cache: bool = True,
    stream: bool = False,
) -> FairDataset:
    """BFFHQ: class = age (0 young, 1 old), group = gender (0 female, 1 male); 99.5% bias-aligned train.

    The release that accompanies "Learning Debiased Representation via Disentangled Feature
    Augmentation" (Lee et al., NeurIPS 2021; the BiaSwap data of Kim et al., ICCV 2021):
    ``<root>/bffhq/0.5pct/align/``, ``<root>/bffhq/0.5pct/conflict/`` (the training set) and
    ``<root>/bffhq/test/`` (the official test split); ``<root>/0.5pct`` and ``<root>/test`` directly
    under the root are accepted too. The released ``align``/``conflict`` folders hold per-class
    sub-folders (``align/0/...``); flat folders and a ``test`` split into sub-folders are accepted
    as well. ``valid/`` is not used.

    A file's last two underscore-separated fields are ``{age}_{gender}`` (``00123_0_0.png``), as
    that code reads them; an image is bias-aligned when the two are equal, and the aligned pairs are
    young women and old men, hence gender 0 = female, 1 = male. The whole official test folder is
    used (the DisEnt code reports accuracy on its bias-conflicting half only). The 128x128 images
    are resized to ``image_size`` with Pillow's bicubic filter, as the reference's plain
    ``Image.resize`` does (``resample="bilinear"`` is our option); normalised with CIFAR-10's
    statistics, as the reference does (:data:`BFFHQ_NORM`).

    Cache: one entry with the train and test pixels, stamped by every image file.
    """
    size = _check_size(image_size)
    if resample not in TRANSFORMS:
        raise FairDistillError(f"unknown resample {resample!r}; allowed: {', '.join(sorted(TRANSFORMS))}")
    transform = TRANSFORMS[resample]
    root = data_root_from(data_root)
    listed, attrs = _bffhq_images(root, BFFHQ_LAYOUT.find(root))
    train_paths = listed["align"] + listed["conflict"]
    test_paths = listed["test"]
    arrays = _cached_pixels(
        "bffhq",
        train_paths + test_paths,
        {"image_size": size, "transform": transform, "percent": BFFHQ_PERCENT},
        {"train": ("BFFHQ train", train_paths), "test": ("BFFHQ test", test_paths)},
        size=size,
        resample=resample,
        cache_dir=cache_dir,
        cache=cache,
    )
    train_attr = np.concatenate([attrs["align"], attrs["conflict"]])
    test_attr = attrs["test"]
    return _face_dataset(
        "bffhq",
        BFFHQ_NORM,
        train=_split(arrays["train"], train_attr[:, 0], train_attr[:, 1], norm=BFFHQ_NORM, stream=stream),
        test=_split(arrays["test"], test_attr[:, 0], test_attr[:, 1], norm=BFFHQ_NORM),
        class_names=BFFHQ_CLASSES,
        group_names=BFFHQ_GROUPS,
        description=(
            f"BFFHQ {size}x{size} ({resample}): age by gender, {BFFHQ_PERCENT} bias-conflicting train, official test"
            + ("" if resample == "bicubic" else "; bilinear resize, our option")
        ),
        params={"image_size": size, "percent": BFFHQ_PERCENT, "transform": transform},
    )


def _bffhq_images(root: Path, folder: Path) -> tuple[dict[str, list[Path]], dict[str, np.ndarray]]:
    """The image files of the parts ``align``, ``conflict`` and ``test``, and their (age, gender) rows.

    A part without images raises the layout error. An ``align`` image whose two fields differ (or a
    ``conflict`` one whose fields agree) is only counted in a warning: its labels are kept as named.
    """
    parts = {
        "align": folder / BFFHQ_PERCENT / "align",
        "conflict": folder / BFFHQ_PERCENT / "conflict",
        "test": folder / "test",
    }
    listed: dict[str, list[Path]] = {}
    for part, where in parts.items():
        listed[part] = _images_in(where, nested=True)
        if not listed[part]:
            raise BFFHQ_LAYOUT.error(root, [folder], f"dataset 'bffhq': no images in {where}")
    attrs = {part: np.array([parse_bffhq_name(p) for p in ps], dtype=np.int64) for part, ps in listed.items()}
    for part, aligned in (("align", True), ("conflict", False)):
        odd = int(((attrs[part][:, 0] == attrs[part][:, 1]) != aligned).sum())
        if odd:
            kind = "conflicting" if aligned else "aligned"
            log.warning("BFFHQ: %d image(s) in %s are bias-%s by their names", odd, parts[part], kind)
    return listed, attrs


# ---- CelebA -----------------------------------------------------------------------------------
CELEBA_LAYOUT = Layout(
    key="celeba",
    folders=("celeba", "CelebA", "celeba/celeba", "."),
    files=(("list_attr_celeba.txt",), ("list_eval_partition.txt",)),
    dirs=("img_align_celeba",),
    note="the aligned jpgs 000001.jpg ... and the two text files of the official release",
)


def _text_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise corrupt(path, f"cannot read it as text ({err})") from err
    return text.splitlines()


def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(attribute names, file names, values)`` of ``list_attr_celeba.txt``; values (N, 40) int8 in {1, -1}.

    Line 1 is the number of images, line 2 the 40 attribute names, then ``file v1 ... v40`` per
    image (whitespace separated). Every deviation raises a :class:`MissingDataError` naming the line.
    """
    lines = _text_lines(path)
    if len(lines) < 2:
        raise corrupt(path, "expected the image count on line 1 and the attribute names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise corrupt(path, f"line 1 should be the number of images, found {lines[0].strip()[:40]!r}") from None
    names = lines[1].split()
    if len(names) != CELEBA_NUM_ATTRIBUTES or len(set(names)) != len(names):
        raise corrupt(path, f"line 2 should name {CELEBA_NUM_ATTRIBUTES} distinct attributes, found {len(names)}")
    files: list[str] = []
    values: list[list[str]] = []
    line_of: list[int] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != CELEBA_NUM_ATTRIBUTES + 1:
            raise corrupt(
                path, f"line {number}: expected a file name and {CELEBA_NUM_ATTRIBUTES} values, found {len(fields) - 1}"
            )
        files.append(fields[0])
        values.append(fields[1:])
        line_of.append(number)
    if len(files) != count:
        raise corrupt(path, f"line 1 announces {count} images but {len(files)} rows follow")
    table = np.array(values, dtype=str).reshape(len(files), CELEBA_NUM_ATTRIBUTES)  # no truncation: "-10" stays
    ok = (table == "1") | (table == "-1")
    if not ok.all():
        row, col = (int(v[0]) for v in np.nonzero(~ok))
        raise corrupt(path, f"line {line_of[row]}: value {str(table[row, col])!r} for {names[col]} (allowed: 1, -1)")
    seen: set[str] = set()
    for name, number in zip(files, line_of, strict=True):
        if name in seen:
            raise corrupt(path, f"line {number}: {name} is listed twice")
        seen.add(name)
    return names, files, np.where(table == "1", 1, -1).astype(np.int8)


def read_celeba_partition(path: Path) -> dict[str, int]:
    """``{file name: 0 | 1 | 2}`` (train / valid / test) from ``list_eval_partition.txt``."""
    result: dict[str, int] = {}
    for number, line in enumerate(_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise corrupt(path, f"line {number}: expected '<file> 0|1|2', found {line.strip()[:60]!r}")
        if fields[0] in result:
            raise corrupt(path, f"line {number}: {fields[0]} is listed twice")
        result[fields[0]] = int(fields[1])
    return result


def _celeba_image_folder(folder: Path) -> tuple[Path, set[str]]:
    """The image folder and its file names (Kaggle's copy nests ``img_align_celeba/img_align_celeba``)."""
    img_dir = folder / "img_align_celeba"
    names = set(os.listdir(img_dir))
    nested = img_dir / "img_align_celeba"
    if nested.is_dir() and not any(_is_image_name(n) for n in names):
        img_dir, names = nested, set(os.listdir(nested))
    return img_dir, names


def celeba(
    *,
    data_root: str | Path | None = None,
    target: str = "Attractive",
    sensitive: str = "Male",
    image_size: int = 64,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    stream: bool = False,
) -> FairDataset:
    """CelebA: class = ``target`` attribute, group = ``sensitive`` attribute (1 -> 1, -1 -> 0).

    Files: ``<root>/celeba/`` (or ``CelebA/``, ``celeba/celeba/``, the root itself) holding
    ``img_align_celeba/`` (the aligned 178x218 jpgs), ``list_attr_celeba.txt`` and
    ``list_eval_partition.txt``. Both text files are validated (row count against line 1, 40 values
    of 1 / -1 per row, the same file names in both, every one present in the image folder); an
    error names the file and line.

    Train = partition 0, all of it (natural, unbalanced). Test = partition 2 balanced over the four
    (class, group) cells: each cell gives the size of the smallest cell, chosen by a permutation
    seeded by ``seed``, the two attributes and the cell, over the cell's members in file-name order.
    Partition 1 (validation) is not used. Images: the centred 178x178 square, bilinear to
    ``image_size`` (the reference's CenterCrop(178) + Resize(64) on the released 178x218 images; on
    images of another size we crop the centred square of the shorter edge instead of 178 px);
    normalised with the reference's CelebA statistics (:data:`CELEBA_NORM`).

    Cache: one entry holds the pixels of every partition-0 and partition-2 image (keyed by
    ``image_size`` only, so every attribute pair and seed shares it). With ~180k images, stamping
    each file would cost a stat per image on every load; the entry is instead stamped by
    ``list_eval_partition.txt`` and by the image folder itself, whose modification time changes
    whenever a file is added, removed or renamed in it. An image rewritten in place under the same
    name is therefore not noticed: delete the entry (or load with ``cache=False``) after doing that.
    Labels are read from ``list_attr_celeba.txt`` on every load, never from the cache.
    """
    size = _check_size(image_size)
    folder = CELEBA_LAYOUT.find(data_root_from(data_root))
    attr_file, part_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    names, files, values, partition = _celeba_tables(attr_file, part_file, target, sensitive)
    img_dir = _celeba_images_present(folder, files, attr_file)
    files, values, train_rows, test_rows = _celeba_partitions(files, values, partition, part_file)
    arrays = _cached_pixels(
        "celeba",
        [part_file, img_dir],
        {"image_size": size, "transform": TRANSFORM, "partitions": [0, 2]},
        {
            "train": ("CelebA train", [img_dir / files[i] for i in train_rows]),
            "test": ("CelebA test", [img_dir / files[i] for i in test_rows]),
        },
        size=size,
        cache_dir=cache_dir,
        cache=cache,
    )
    labels = (values[:, names.index(target)] == 1).astype(np.int64)
    groups = (values[:, names.index(sensitive)] == 1).astype(np.int64)
    y_test, a_test = labels[test_rows], groups[test_rows]
    chosen, per_cell = _celeba_balanced_test(y_test, a_test, target, sensitive, seed)
    return _face_dataset(
        "celeba",
        CELEBA_NORM,
        train=_split(arrays["train"], labels[train_rows], groups[train_rows], norm=CELEBA_NORM, stream=stream),
        test=_split(arrays["test"], y_test, a_test, chosen, norm=CELEBA_NORM),
        class_names=(f"not {target}", target),
        group_names=(f"not {sensitive}", sensitive),
        description=f"CelebA {size}x{size}: {target} by {sensitive}, natural train, balanced test ({per_cell}/cell)",
        params={"target": target, "sensitive": sensitive, "image_size": size, "seed": seed, "transform": TRANSFORM},
    )


def _celeba_tables(
    attr_file: Path, part_file: Path, target: str, sensitive: str
) -> tuple[list[str], list[str], np.ndarray, dict[str, int]]:
    """CelebA's two text files, read and checked against each other and against the chosen attributes.

    Returns what :func:`read_celeba_attributes` reads (attribute names, file names, values) and each
    file's partition. Both attributes must be among the names and differ, and both files must list
    the same images.
    """
    names, files, values = read_celeba_attributes(attr_file)
    for attribute in (target, sensitive):
        if attribute not in names:
            raise unknown_name("CelebA attribute", attribute, names)
    if target == sensitive:
        raise FairDistillError(f"CelebA: target and sensitive attribute are both {target!r}")
    partition = read_celeba_partition(part_file)
    extra = sorted(set(partition) - set(files))
    lacking = [f for f in files if f not in partition]
    if extra or lacking:
        which = f"{lacking[0]} is missing" if lacking else f"{extra[0]} is not in {attr_file.name}"
        raise corrupt(part_file, f"it must list the same images as {attr_file.name}, but {which}")
    return names, files, values, partition


def _celeba_images_present(folder: Path, files: list[str], attr_file: Path) -> Path:
    """The image folder, once every file that ``attr_file`` lists is known to be in it."""
    img_dir, present = _celeba_image_folder(folder)
    missing = [f for f in files if f not in present]
    if missing:
        raise MissingDataError(
            f"{img_dir}: {len(missing)} image(s) listed in {attr_file} are missing: {_first(missing, 3)}"
        )
    return img_dir


def _celeba_partitions(
    files: list[str], values: np.ndarray, partition: dict[str, int], part_file: Path
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The files and values in file-name order (whatever the text files' order), and the train and test rows.

    Train is partition 0 and test partition 2; ``part_file`` is named in the error when either is empty.
    """
    order = np.argsort(np.array(files))
    files = [files[i] for i in order]
    values = values[order]
    split_of = np.array([partition[f] for f in files], dtype=np.int64)
    train_rows = np.flatnonzero(split_of == 0)
    test_rows = np.flatnonzero(split_of == 2)
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise corrupt(part_file, "it needs images in partition 0 (train) and partition 2 (test)")
    return files, values, train_rows, test_rows


def _celeba_balanced_test(
    y_test: np.ndarray, a_test: np.ndarray, target: str, sensitive: str, seed: int
) -> tuple[np.ndarray, int]:
    """Positions in the test partition that balance its four (class, group) cells, and how many per cell.

    Every cell gives as many images as the smallest has; an empty cell makes that impossible and raises.
    """
    cells = [(y, a) for y in (0, 1) for a in (0, 1)]
    sizes = _cell_sizes(y_test, a_test, cells)
    per_cell = min(sizes.values())
    if per_cell == 0:
        empty = [c for c, n in sizes.items() if n == 0]
        shown = ", ".join(f"{target}={'1' if y else '-1'} & {sensitive}={'1' if a else '-1'}" for y, a in empty)
        raise FairDistillError(f"CelebA test partition has no image with {shown}: it cannot be balanced")
    chosen = _cell_sample(y_test, a_test, cells, lambda n: per_cell, seed, ("celeba-test", target, sensitive))
    return chosen, per_cell


__all__ = [
    "BFFHQ_LAYOUT",
    "BFFHQ_NORM",
    "CELEBA_NORM",
    "UTKFACE_NORM",
    "CELEBA_LAYOUT",
    "UTKFACE_LAYOUT",
    "bffhq",
    "celeba",
    "decode_face",
    "decode_images",
    "parse_bffhq_name",
    "parse_utkface_name",
    "read_celeba_attributes",
    "read_celeba_partition",
    "utkface",
]
