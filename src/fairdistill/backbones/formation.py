"""IDC's multi-formation: stored images cut into tiles and decoded to full-size training images.

Each stored synthetic image is cut into ``factor x factor`` tiles and every tile is upsampled
(bilinear) to the full image size (:func:`decode`), so ``ipc`` stored images per class stand for
``ipc * factor**2`` training images. The published initialisation (``mix``) fills each stored image
with ``factor**2`` real images of its class, one per tile (:func:`mixed_initial_images`). A set
keeps its stored images in its metadata (:func:`pack_images`, read back by :func:`stored_images`).
"""

from __future__ import annotations

import base64
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import rng
from ..artifacts import SyntheticSet
from ..config import DistillConfig
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler, balanced_subset
from ..errors import FairDistillError
from .base import balanced_generator, check_ipc


# ---- multi-formation -----------------------------------------------------------------------------
def tile_slices(size: int, factor: int) -> list[slice]:
    """``factor`` contiguous slices covering ``range(size)``; the first ``size % factor`` are one longer."""
    if factor < 1:
        raise FairDistillError(f"factor must be >= 1, got {factor}")
    if size < factor:
        raise FairDistillError(f"cannot cut {size} pixels into {factor} tiles")
    base, extra = divmod(size, factor)
    bounds = [0]
    for i in range(factor):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def decode(images: Tensor, labels: Tensor, factor: int, align_corners: bool = False) -> tuple[Tensor, Tensor]:
    """Multi-formation: every image (N, C, H, W) becomes ``factor**2`` full-size images, one per tile.

    Tile (i, j) of the ``factor x factor`` grid (row-major) is upsampled bilinearly to (H, W). The
    ``factor**2`` images of input n are consecutive (index ``n * factor**2 + t``) and keep its label,
    so a set ordered by class stays ordered by class. Differentiable; ``factor=1`` returns the inputs.
    ``align_corners``: of the bilinear upsampling (COBRA's IDC script: True; IDC's own code: False).
    """
    if factor == 1:
        return images, labels
    n, c, h, w = images.shape
    size = (h, w)
    tiles = [
        F.interpolate(images[:, :, rows, cols], size=size, mode="bilinear", align_corners=align_corners)
        for rows, cols in itertools.product(tile_slices(h, factor), tile_slices(w, factor))
    ]
    out = torch.stack(tiles, 1).reshape(n * factor**2, c, h, w)
    return out, labels.repeat_interleave(factor**2)


def mixed_initial_images(dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
    """The published ``mix`` initialisation: each stored image holds ``factor**2`` real images of its class.

    Per class, ``ipc * factor**2`` real images are drawn (uniformly over the class, as DC's real
    initialisation; with ``init="balanced"`` spread evenly over the class's groups instead);
    block t of ``ipc`` of them is downsampled (nearest) into tile t of the class's
    ``ipc`` stored images. Returns (images, labels) ordered by class.
    """
    check_ipc(dataset, config.ipc)
    k, ipc, f = dataset.num_classes, config.ipc, config.factor
    need = ipc * f * f
    smallest = int(dataset.class_counts("train").min())
    if need > smallest:
        raise FairDistillError(
            f"the mixed initialisation needs ipc * factor**2 = {need} real images per class, but the smallest "
            f"class of {dataset.name} has {smallest}; lower ipc or factor, or use init='noise'"
        )
    c, h, w = dataset.train.images.shape[1:]
    if config.init == "balanced":  # ipc * factor**2 real images per class, spread evenly over its groups
        idx = balanced_subset(dataset.train, k, dataset.num_train_groups, need, balanced_generator(config.seed))
    else:
        sampler = RealSampler(dataset.train, k, dataset.num_train_groups)
        idx = sampler.class_batch(need, rng.generator(config.seed, "idc-init"))
    idx = idx[torch.argsort(dataset.train.labels[idx], stable=True)]
    real = dataset.train.take(idx).view(k, f * f, ipc, c, h, w)
    out = torch.empty(k, ipc, c, h, w, dtype=real.dtype)
    for t, (rows, cols) in enumerate(itertools.product(tile_slices(h, f), tile_slices(w, f))):
        size = (rows.stop - rows.start, cols.stop - cols.start)
        small = F.interpolate(real[:, t].reshape(k * ipc, c, h, w), size=size, mode="nearest")
        out[:, :, :, rows, cols] = small.view(k, ipc, c, *size)
    return out.reshape(k * ipc, c, h, w), torch.arange(k).repeat_interleave(ipc)


# ---- the stored images in the artifact ----------------------------------------------------------------
def pack_images(images: Tensor) -> str:
    """``images`` as text for JSON metadata: a safetensors blob in base64 (exact, about 1.33 bytes per byte)."""
    from safetensors.torch import save

    return base64.b64encode(save({"images": images.detach().cpu().contiguous()})).decode("ascii")


def stored_images(synset: SyntheticSet) -> Tensor:
    """The images IDC stored (``K * ipc``, before decoding) of a synthetic set, read from its metadata."""
    from safetensors.torch import load

    blob = synset.meta.get("stored_images")
    if not isinstance(blob, str):
        raise FairDistillError("this synthetic set holds no stored IDC images (meta['stored_images'])")
    return load(base64.b64decode(blob))["images"]
