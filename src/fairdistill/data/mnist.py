"""C-MNIST and C-FMNIST (digit or background colour) from the standard IDX files of a local root.

Folder layouts looked for under the data root (the first that holds all four files wins):

* MNIST: ``MNIST/raw``, ``mnist``, ``MNIST``;
* FashionMNIST: ``FashionMNIST/raw``, ``fashion-mnist``, ``fashion_mnist``, ``FashionMNIST``, then
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package), which is also
  used when no data root is given.

Each folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, gzipped (``.gz``) or not. The files are decoded once into the cache
(:mod:`fairdistill.data.cache`); the colouring is recomputed at every load (it is cheap and keeps
the pixels exact). Shapes and class counts are validated, not checksums: Debian's FashionMNIST
files are repacked and their md5s differ from upstream's lists.

Train: the official 60,000 images with the exact bias of :func:`~fairdistill.data.colored.biased_groups`;
test: the official 10,000 images, one colour each, dealt evenly within each class (group-balanced).

Pixels, as the reference builds them (PUBLISHED.md section 1; :mod:`fairdistill.data.colored`):
the 28x28 images are zero-padded to 32x32 at offset (4, 4), all the padding on the top and left
(``padding="centre"`` is our own option). MNIST is binarised at 128: ``cmnist-fg`` is the stroke
in the colour on black, ``cmnist-bg`` a black stroke on the colour (padding included).
FashionMNIST is not binarised: ``cfmnist-fg`` is ``colour * v / 255``, ``cfmnist-bg`` the blend
``g + (1 - g) * colour`` from the colour (v = 0) to white (v = 255). That blend is what the
reference intends and our default; its code overflows a uint8 cast on garment pixels, and those
are the pixels the papers measured: ``fmnist_bg="reference"`` builds them (deterministically, see
:func:`~fairdistill.data.colored.reference_background`), and ``fairdistill reproduce`` uses it.
In the intended blend colour 9 (white) is a blank image. ``binarize`` overrides the source's
choice (``binarize=False`` on MNIST is our own grey-ramp colouring, not the benchmark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .cache import cached_arrays
from .colored import FmnistBg, Padding, Variant
from .dataset import FairDataset
from .embedded import DIGIT_NAMES, TestColours, coloured_digits, describe_colouring
from .files import Layout, corrupt, data_root_from
from .idx import read_idx

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_NAMES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

IDX_FILES = (
    ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"),
    ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"),
    ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"),
)


def idx_layout(key: str, source: str) -> Layout:
    if source == "mnist":
        return Layout(key, ("MNIST/raw", "mnist", "MNIST"), IDX_FILES, note="the standard MNIST IDX files")
    return Layout(
        key,
        ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "FashionMNIST"),
        IDX_FILES,
        fallbacks=(DEBIAN_FASHION_MNIST,),
        note="the standard FashionMNIST IDX files; `apt-get install dataset-fashion-mnist` provides them",
    )


def _decode(files: list[Path]) -> dict[str, np.ndarray]:
    """Read and check the four IDX files: uint8 images (N, H, W) and labels (N,) per split."""
    out: dict[str, np.ndarray] = {}
    for split, (img_path, lab_path) in (("train", files[:2]), ("test", files[2:])):
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise corrupt(img_path, f"expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise corrupt(lab_path, f"expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise corrupt(lab_path, f"{len(labels)} labels for {len(images)} images in {img_path.name}")
        if len(labels) and labels.max() > 9:
            raise corrupt(lab_path, f"labels must lie in 0..9, found {int(labels.max())}")
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.astype(np.int64)
    return out


def load_idx_pairs(
    key: str,
    source: str,
    data_root: str | Path | None,
    *,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> tuple[dict[str, np.ndarray], Path]:
    """The decoded IDX arrays of ``source`` ("mnist" or "fashion-mnist") and the folder they came from."""
    layout = idx_layout(key, source)
    folder = layout.find(data_root_from(data_root))
    files = [layout.pick(folder, names[::-1]) for names in IDX_FILES]  # prefer .gz when both are there
    arrays = cached_arrays(source, files, {"decoder": "idx"}, lambda: _decode(files), cache_dir=cache_dir, cache=cache)
    return arrays, folder


#: the note that names our one deliberate difference from the reference's C-FMNIST background
FMNIST_BG_NOTE = (
    "the reference's uint8 overflow on garment pixels is deliberately not reproduced (so colour 9, white, "
    "is a blank image; fmnist_bg='reference' builds the reference's pixels)"
)
#: the note of the reference's own C-FMNIST background pixels
FMNIST_BG_REFERENCE_NOTE = (
    "background coloured as the reference's code computes it, garment pixels wrapped modulo 256 by its uint8 cast "
    "(fmnist_bg='reference')"
)


def coloured_idx(
    key: str,
    source: str,
    variant: Variant,
    *,
    data_root: str | Path | None = None,
    rho: float = 0.9,
    seed: int = 0,
    image_size: int | None = 32,
    padding: Padding = "top-left",
    binarize: bool | None = None,
    fmnist_bg: FmnistBg = "blend",
    test_colours: TestColours = "balanced",
    cache_dir: str | Path | None = None,
    cache: bool = True,
    stream: bool = False,
) -> FairDataset:
    """C-MNIST / C-FMNIST ``variant`` ("fg" or "bg") from the IDX files under the data root.

    ``image_size`` and ``padding``: 32 and "top-left" (the reference's offset (4, 4)); "centre" is
    ours. ``binarize``: None decides by the source, True for MNIST (threshold 128, as published),
    False for FashionMNIST (grey ramp / blend, as published). ``fmnist_bg``: the C-FMNIST
    background's pixels, the intended "blend" (default) or the "reference" code's, wrap included.
    ``stream``: the training digits stay
    uint8 (memory-mapped from the cache) and are padded, coloured and normalised a batch at a time,
    with bit-identical images. The cache holds the decoded IDX pixels only (the colouring is
    recomputed at every load), so these options never reuse stale pixels.
    """
    arrays, folder = load_idx_pairs(key, source, data_root, cache_dir=cache_dir, cache=cache)
    published = source == "mnist"
    binarize = published if binarize is None else binarize
    what, thing = ("MNIST digits", "digit") if source == "mnist" else ("FashionMNIST images", "garment")
    notes = []
    if binarize != published:
        notes.append("our own colouring option, not the benchmark's")
    if source != "mnist" and variant == "bg" and not binarize:
        if fmnist_bg != "reference":
            notes.append(FMNIST_BG_NOTE)
    if padding != "top-left" and image_size is not None:
        notes.append(f"{padding} padding, our option")
    colouring = (
        FMNIST_BG_REFERENCE_NOTE if fmnist_bg == "reference" else describe_colouring(variant, binarize, thing=thing)
    )
    return coloured_digits(
        key,
        (
            arrays["train_images"] if stream else torch.from_numpy(arrays["train_images"]),
            torch.from_numpy(arrays["train_labels"]),
        ),
        (torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])),
        variant=variant,
        rho=rho,
        seed=seed,
        image_size=image_size,
        padding=padding,
        binarize=binarize,
        fmnist_bg=fmnist_bg,
        description=f"{what} ({folder}), {colouring}, {rho:.0%} one colour per class"
        + "".join(f"; {n}" for n in notes),
        test_colours=test_colours,
        class_names=DIGIT_NAMES if source == "mnist" else FASHION_NAMES,
        params={"source": str(folder)},
        stream=stream,
    )
