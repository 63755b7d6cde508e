"""IDC: dataset condensation via efficient synthetic-data parameterization (Kim et al., ICML 2022), any target.

IDC is DC's gradient matching (:class:`~fairdistill.backbones.dc.DC`, subclassed here: targets as
per-sample weights, the one-backward barycenter, per-group group-sync, gradient distances, BatchNorm
handling, Siamese DSA, lockstep) with three changes:

1. **Multi-formation.** Each *stored* synthetic image is cut into ``factor x factor`` tiles and every
   tile is upsampled (bilinear) to the full image size (:func:`decode`), so ``ipc`` stored images per
   class stand for ``ipc * factor**2`` training images: more examples for the same number of pixels.
   The matching loss sees the decoded images and its gradient flows back through the decoding.
2. **Initialisation** (published ``init='mix'``): each stored image is made of ``factor**2`` real
   images of its class, each downsampled (nearest, PyTorch's default as published) into one tile
   (:func:`mixed_initial_images`). ``init='noise'`` starts from noise as in DC.
3. **The network** (``embedder``). ``random``, the published schedule: every iteration draws a fresh
   network, and between two image updates it is trained on *real* data (``inner_loop`` passes over
   ``NET_REAL_IMAGES`` random training images; SGD lr ``lr_net``, momentum 0.9, weight decay 5e-4,
   batch 64, DSA per image; one optimiser per iteration, so momentum carries over). DC instead
   trains it on the synthetic set. The real-data trajectory does not depend on the synthetic set,
   so it is trained once and copied into every method's network: lockstep costs no extra network
   training. ``fixed``, the variant the COBRA paper ran: the random network is never trained.

IDC's code also clamps the stored pixels to [0, 1] at the start of every iteration; here the same
range is applied in model space (``(0 - mean) / std`` to ``(1 - mean) / std``) unless
``clamp_pixels`` is off (COBRA's IDC script does not clamp). COBRA's script also initialises each
stored image with one full real image (``idc_init="single"``) and decodes with
``align_corners=True`` (``idc_align_corners``).

Schedule (:func:`idc_loops`): ``outer_loop`` image updates per network (published: 100, the code's
``inner_loop``) and ``inner_loop`` network passes between them (published: 1, the code's
``net_epoch``). The image optimiser is DC's (SGD, momentum ``img_momentum``), as in the published
code (SGD, momentum 0.5).

What the backbone returns: a :class:`SyntheticSet` whose ``images`` are the DECODED set
(``K * ipc * factor**2`` images ordered by class, with their labels), so ``evaluate`` and ``compare``
train on exactly what IDC trains on, unchanged. The stored images and the factor are kept in
``meta`` (``meta["stored_images"]``, read back by :func:`stored_images`; ``meta["factor"]``;
``meta["ipc"]`` is the stored number per class, ``meta["images_per_class"]`` the decoded one).

Known differences from the published code: the ``l2sq`` gradient distance covers every parameter
(the published ``mse`` skips biases, normalisation scales and the classifier, ``bias=False,
fc=False``; its per-unit ``cos`` skips them too, ``layer-cosine`` keeps the classifier); one image
step per outer step for all classes (the published code steps after each class, on one tensor
holding every class: the same total step under momentum, on another time scale); no cap on the
decoded images per matching step (published ``batch_syn_max = 128``, which only bites from IPC 33
at factor 2); no CutMix in the network updates; for image sizes not divisible by the factor,
decoding uses the initialisation's tile layout (the first ``size % factor`` tiles one pixel
larger) instead of padding with 0.5 and cropping.
"""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import rng
from ..artifacts import SyntheticSet
from ..config import DistillConfig
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler, balanced_subset
from ..distances import GRADIENT_DISTANCES
from ..errors import FairDistillError
from ..training import SGDConfig, train
from . import BACKBONES
from .base import balanced_generator, check_ipc, initial_images
from .dc import DC, MatchContext, _Run

#: image updates per network (the published code's ``inner_loop``; each iteration draws a fresh network)
PUBLISHED_OUTER = 100
#: passes of network training on real data between two image updates (published ``net_epoch``)
PUBLISHED_INNER = 1
#: real training images per network update (published ``n_data``: 500; CIFAR-10 used 2000)
NET_REAL_IMAGES = 500
#: the published network optimiser on real data (its learning rate is ``DistillConfig.lr_net``, published 0.01)
NET_MOMENTUM, NET_WEIGHT_DECAY, NET_BATCH = 0.9, 5e-4, 64


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


def idc_loops(config: DistillConfig) -> tuple[int, int]:
    """(image updates per network, network passes on real data between them): the config's, else published."""
    return (
        config.outer_loop if config.outer_loop is not None else PUBLISHED_OUTER,
        config.inner_loop if config.inner_loop is not None else PUBLISHED_INNER,
    )


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


# ---- the backbone --------------------------------------------------------------------------------
@dataclass
class _RealTrainer:
    """The iteration's network trained on real data, and its optimiser (kept across image updates)."""

    net: nn.Module
    optimizer: torch.optim.Optimizer


def _trains(run: _Run) -> bool:
    return run.spec.embedder != "fixed"


@BACKBONES.register(
    "idc", "multi-formation gradient matching: factor^2 decoded images per stored one, network trained on real data"
)
class IDC(DC):
    name = "idc"
    distances = GRADIENT_DISTANCES
    default_distance = "l2sq"  # the published "mse"
    # random: the published schedule (a fresh network per iteration, trained on real data); fixed: never trained
    embedders = ("random", "fixed")

    def _loops(self, config: DistillConfig) -> tuple[int, int]:
        return idc_loops(config)

    def _initial_images(self, dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
        if config.init == "noise" or config.idc_init == "single":  # single: one full real image per stored one
            return initial_images(dataset, config)
        return mixed_initial_images(dataset, config)

    def _class_images(self, images: Tensor, labels: Tensor, ctx: MatchContext) -> tuple[Tensor, Tensor]:
        return decode(images, labels, ctx.config.factor, ctx.config.idc_align_corners)

    def _begin_iteration(self, net: nn.Module, runs: Sequence[_Run], ctx: MatchContext, it: int) -> _RealTrainer | None:
        mean = torch.tensor(ctx.dataset.mean, device=ctx.device).view(1, -1, 1, 1)
        std = torch.tensor(ctx.dataset.std, device=ctx.device).view(1, -1, 1, 1)
        if ctx.config.clamp_pixels:
            with torch.no_grad():  # IDC's [0, 1] pixel clamp, in model space
                for run in runs:
                    run.images.clamp_(min=-mean / std, max=(1 - mean) / std)
        if not any(_trains(r) for r in runs):
            return None
        ref = copy.deepcopy(net)
        opt = torch.optim.SGD(
            ref.parameters(), lr=ctx.config.lr_net, momentum=NET_MOMENTUM, weight_decay=NET_WEIGHT_DECAY
        )
        return _RealTrainer(ref, opt)

    def _update_networks(
        self, runs: Sequence[_Run], ctx: MatchContext, state: _RealTrainer | None, it: int, ol: int
    ) -> None:
        if state is None:
            return
        gen = rng.generator(ctx.config.seed, "idc-net", it, ol)
        idx = torch.randperm(len(ctx.dataset.train), generator=gen)[:NET_REAL_IMAGES].to(ctx.device)
        sgd = SGDConfig(
            lr=ctx.config.lr_net,
            momentum=NET_MOMENTUM,
            weight_decay=NET_WEIGHT_DECAY,
            batch_size=NET_BATCH,
            decay_at=None,
        )
        train(
            state.net,
            ctx.dataset.train.take(idx, ctx.device),
            ctx.real_y[idx],
            epochs=ctx.inner,
            generator=gen,
            sgd=sgd,
            dsa=ctx.train_dsa,
            optimizer=state.optimizer,
        )
        weights = state.net.state_dict()
        for run in runs:
            if _trains(run):  # every trained method follows the same real-data trajectory
                assert run.net is not None
                run.net.load_state_dict(weights)

    def _result(self, run: _Run, ctx: MatchContext) -> SyntheticSet:
        stored = super()._result(run, ctx)
        f = ctx.config.factor
        images, labels = decode(stored.images, stored.labels, f, ctx.config.idc_align_corners)
        meta = stored.meta
        meta.update(factor=f, images_per_class=ctx.config.ipc * f * f, stored_images=pack_images(stored.images))
        return SyntheticSet(images, labels, meta)
