"""IDC: dataset condensation via efficient synthetic-data parameterization (Kim et al., ICML 2022), any target.

IDC is DC's gradient matching (subclassed: targets, distances, BatchNorm, Siamese DSA) with three changes:
**multi-formation** (:mod:`~fairdistill.backbones.formation`: each stored image is decoded into
``factor**2`` training images, and the matching gradient flows back through the decoding); the
**mix initialisation** (each stored image holds ``factor**2`` downsampled real images of its class;
``idc_init='single'``, COBRA's script: one full real image); and a **network trained on real data**
between image updates (``embedder='random'``: ``inner_loop`` passes over ``NET_REAL_IMAGES`` random
training images, SGD momentum 0.9, weight decay 5e-4, batch 64, DSA, one optimiser per iteration;
trained once and copied into every method's network, since it does not depend on the synthetic
set; ``'fixed'``, what the COBRA paper ran: never trained). IDC's [0, 1] pixel clamp every
iteration applies in model space unless ``clamp_pixels`` is off (COBRA's script does not clamp).
The set handed back holds the DECODED images; the stored ones are in ``meta["stored_images"]``.
Known differences from the published code: ``l2sq`` covers every parameter (the published ``mse``
skips biases, normalisation scales and the classifier); one image step per outer step for all
classes; no ``batch_syn_max`` cap (it bites only from IPC 33 at factor 2); no CutMix.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from .. import rng
from ..artifacts import SyntheticSet
from ..config import DistillConfig
from ..data.dataset import FairDataset
from ..distances import GRADIENT_DISTANCES
from ..training import SGDConfig, train
from .base import BACKBONES, initial_images
from .bilevel import Iteration
from .dc import DC
from .engine import Engine, MethodRun
from .formation import decode, mixed_initial_images, pack_images

#: image updates per network (the published code's ``inner_loop``; each iteration draws a fresh network)
PUBLISHED_OUTER = 100
#: passes of network training on real data between two image updates (published ``net_epoch``)
PUBLISHED_INNER = 1
#: real training images per network update (published ``n_data``: 500; CIFAR-10 used 2000)
NET_REAL_IMAGES = 500
#: the published network optimiser on real data (its learning rate is ``DistillConfig.lr_net``, published 0.01)
NET_MOMENTUM, NET_WEIGHT_DECAY, NET_BATCH = 0.9, 5e-4, 64


def idc_loops(config: DistillConfig) -> tuple[int, int]:
    """(image updates per network, network passes on real data between them): the config's, else published."""
    return (
        config.outer_loop if config.outer_loop is not None else PUBLISHED_OUTER,
        config.inner_loop if config.inner_loop is not None else PUBLISHED_INNER,
    )


@BACKBONES.register(
    "idc", "multi-formation gradient matching: factor^2 decoded images per stored one, network trained on real data"
)
class IDC(DC):
    name = "idc"
    distances = GRADIENT_DISTANCES
    default_distance = "l2sq"  # the published "mse"
    # random: the published schedule (a fresh network per iteration, trained on real data); fixed: never trained
    embedders = ("random", "fixed")

    def schedule(self, config: DistillConfig) -> tuple[int, int]:
        return idc_loops(config)

    def initial_images(self, dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
        if config.init == "noise" or config.idc_init == "single":  # single: one full real image per stored one
            return initial_images(dataset, config)
        return mixed_initial_images(dataset, config)

    def class_images(self, engine: Engine, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return decode(images, labels, engine.config.factor, engine.config.idc_align_corners)

    def prepare(self, engine: Engine, it: int) -> Iteration:
        state = super().prepare(engine, it)
        mean = torch.tensor(engine.dataset.mean, device=engine.device).view(1, -1, 1, 1)
        std = torch.tensor(engine.dataset.std, device=engine.device).view(1, -1, 1, 1)
        if engine.config.clamp_pixels:
            with torch.no_grad():  # IDC's [0, 1] pixel clamp, in model space
                for run in engine.runs:
                    run.images.clamp_(min=-mean / std, max=(1 - mean) / std)
        if any(r.spec.embedder != "fixed" for r in engine.runs):
            ref = copy.deepcopy(state.net)
            opt = torch.optim.SGD(
                ref.parameters(), lr=engine.config.lr_net, momentum=NET_MOMENTUM, weight_decay=NET_WEIGHT_DECAY
            )
            state.trainer = (ref, opt)
        return state

    def between(self, engine: Engine, state: Iteration, it: int, step: int) -> None:
        """The reference network takes ``inner_loop`` passes over real images; every trained method copies it."""
        if engine.inner <= 0 or state.trainer is None:
            return
        net, optimizer = state.trainer
        gen = rng.generator(engine.config.seed, "idc-net", it, step)
        idx = torch.randperm(len(engine.dataset.train), generator=gen)[:NET_REAL_IMAGES].to(engine.device)
        sgd = SGDConfig(
            lr=engine.config.lr_net,
            momentum=NET_MOMENTUM,
            weight_decay=NET_WEIGHT_DECAY,
            batch_size=NET_BATCH,
            decay_at=None,
        )
        real = engine.dataset.train.take(idx, engine.device)
        train(
            net,
            real,
            engine.real_y[idx],
            epochs=engine.inner,
            generator=gen,
            sgd=sgd,
            dsa=engine.train_dsa,
            optimizer=optimizer,
        )
        weights = net.state_dict()
        for run in engine.runs:
            if run.spec.embedder != "fixed":  # every trained method follows the same real-data trajectory
                assert run.net is not None
                run.net.load_state_dict(weights)

    def finish(self, engine: Engine, run: MethodRun, synset: SyntheticSet) -> SyntheticSet:
        f = engine.config.factor
        images, labels = decode(synset.images, synset.labels, f, engine.config.idc_align_corners)
        meta = synset.meta
        meta.update(factor=f, images_per_class=engine.config.ipc * f * f, stored_images=pack_images(synset.images))
        return SyntheticSet(images, labels, meta)
