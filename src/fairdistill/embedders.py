"""The network whose features are matched: a random one, or one warm-started on the synthetic set.

Each DM iteration draws a fresh randomly initialised network (shared by every method distilled
in lockstep). The ``random`` embedder uses it as is (DM, FairDD). The ``warm`` embedder first
trains a copy of it for K epochs on the method's current synthetic images, as the published
COBRA-DM code does (K = 50 at IPC 50, 100 at IPC 100, 10 at every other IPC; SGD lr 0.01, batch 256,
non-Siamese DSA). The reference's SGD has no momentum and no weight decay; the DM backbone takes both
from the config (``warm_momentum``, ``warm_weight_decay``), so a profile says which it uses.

Gradient-matching backbones train the iteration's network themselves between image updates (DC on
the synthetic set, IDC on real data): there ``random`` means that published schedule, and ``fixed``
keeps the network at its random initialisation for the whole iteration (the IDC variant the COBRA
paper ran). DM never trains its networks, so for DM ``fixed`` is the same as ``random``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .augment import DSA
from .config import DistillConfig
from .registry import Registry
from .training import SGDConfig, train

#: the warm start's learning rate and batch size (COBRA train_dm.py: --lr_net 0.01, --batch_train 256)
WARM_LR, WARM_BATCH = 0.01, 256


def warm_epochs_for(ipc: int) -> int:
    """The warm-start epochs of COBRA's train_dm.py: 50 at IPC 50, 100 at IPC 100, else 10."""
    return {50: 50, 100: 100}.get(ipc, 10)


class Embedder:
    name: str = ""
    shares_network: bool = True  # the iteration's random network can be used as is, by every method

    def prepare(
        self, net: nn.Module, syn_images: Tensor, syn_labels: Tensor, *, generator: torch.Generator, dsa: DSA | None
    ) -> nn.Module:
        raise NotImplementedError


EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")


@EMBEDDERS.register("random", "a freshly initialised network every iteration (DM, FairDD)")
class RandomEmbedder(Embedder):
    name = "random"

    def prepare(self, net, syn_images, syn_labels, *, generator, dsa):
        return net


@EMBEDDERS.register("fixed", "a fresh random network every iteration, never trained (gradient matching, no updates)")
class FixedEmbedder(RandomEmbedder):
    name = "fixed"


@EMBEDDERS.register("warm", "the iteration's network trained K epochs on the current synthetic set (COBRA-DM)")
@dataclass
class WarmEmbedder(Embedder):
    epochs: int = 10
    sgd: SGDConfig = SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, decay_at=None)
    name = "warm"
    shares_network = False

    def prepare(self, net, syn_images, syn_labels, *, generator, dsa):
        warm = copy.deepcopy(net)
        for p in warm.parameters():
            p.requires_grad_(True)
        with torch.enable_grad():
            train(warm, syn_images.detach(), syn_labels, epochs=self.epochs, generator=generator, sgd=self.sgd, dsa=dsa)
        warm.train()  # DM embeds in training mode (batch statistics for BN nets)
        for p in warm.parameters():
            p.requires_grad_(False)
        return warm


def create_embedder(name: str, **kwargs) -> Embedder:
    cls = EMBEDDERS.get(name)
    return cls(**kwargs) if kwargs else cls()


def list_embedders(pattern: str = "*") -> list[str]:
    return EMBEDDERS.list(pattern)


def embedder_for(name: str, config: DistillConfig) -> Embedder:
    """A method's embedder with the run's settings (``warm``: its epochs, momentum and weight decay)."""
    if name != "warm":
        return create_embedder(name)
    epochs = config.warm_epochs if config.warm_epochs is not None else warm_epochs_for(config.ipc)
    sgd = SGDConfig(
        lr=WARM_LR,
        momentum=config.warm_momentum,
        weight_decay=config.warm_weight_decay,
        batch_size=WARM_BATCH,
        decay_at=None,
    )
    return WarmEmbedder(epochs=epochs, sgd=sgd)
