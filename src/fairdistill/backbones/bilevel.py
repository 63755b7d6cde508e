"""What the bi-level backbones share: a fresh network per iteration that each method trains in between.

DC, IDC and CAFE draw one network per iteration (the same initial weights for every method of the
run) and give each method its own copy (``run.net``), since each copy is trained on a different
synthetic set. Before each image update a BatchNorm network forwards 16 real images per class in
train mode to set its running statistics and then switches its BN layers to eval mode, so that a
sample's output does not depend on the rest of its batch (the per-sample weighting of gradient
matching relies on that); a network without BatchNorm is put in train mode.

Also here: DC's published (outer_loop, inner_loop) schedule, which CAFE runs too, and the inner
loop that trains a network on the synthetic set, with CAFE's optional early stop
(:class:`InnerStop`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..augment import DSA
from ..config import DistillConfig
from ..errors import FairDistillError
from ..training import SGDConfig, train
from .base import make_network
from .engine import Engine, LockstepBackbone, MethodRun

#: published (outer_loop, inner_loop) by IPC (Zhao et al. 2021); every IPC above 50 gets (100, 10)
PUBLISHED_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}
ABOVE_50_LOOPS = (100, 10)

#: real images per class forwarded to set the BatchNorm statistics before each outer step (published)
BN_IMAGES_PER_CLASS = 16
#: batch size of the inner training on the synthetic set (published ``batch_train``)
INNER_BATCH = 256


def published_loops(ipc: int) -> tuple[int, int]:
    """The (outer_loop, inner_loop) schedule of DC for ``ipc``.

    The published IPCs (1, 10, 20, 30, 40, 50) get their published pair and every IPC above 50 gets
    (100, 10). The published code refuses any other IPC; here an IPC between two published ones
    takes the pair of the nearest published IPC below it (2-9 -> (1, 1), 15 -> (10, 50), ...), i.e.
    no more outer steps than the published schedule would make for a larger set.
    """
    if ipc < 1:
        raise FairDistillError(f"ipc must be >= 1, got {ipc}")
    if ipc > 50:
        return ABOVE_50_LOOPS
    return PUBLISHED_LOOPS[max(k for k in PUBLISHED_LOOPS if k <= ipc)]


def dc_loops(config: DistillConfig) -> tuple[int, int]:
    """(outer_loop, inner_loop) of a run: the config's values where set, else the published schedule."""
    outer, inner = published_loops(config.ipc)
    return (
        config.outer_loop if config.outer_loop is not None else outer,
        config.inner_loop if config.inner_loop is not None else inner,
    )


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in net.modules())


def freeze_batchnorm(net: nn.Module, images: Tensor) -> None:
    """Update the BN running statistics with one train-mode forward of ``images``, then fix them.

    As published: the network stays in train mode except its BN layers, which switch to eval mode
    so that matching sees per-sample (batch-independent) outputs.
    """
    net.train()
    with torch.no_grad():
        net(images)
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


@dataclass
class Iteration:
    """An iteration of a bi-level backbone: its fresh network, and what the backbone keeps beside it."""

    net: nn.Module
    batchnorm: bool
    #: IDC: the network trained on real data that every method's copy follows
    trainer: Any = None


class Bilevel(LockstepBackbone):
    """A backbone whose methods each train a copy of the iteration's network between image updates."""

    def schedule(self, config: DistillConfig) -> tuple[int, int]:
        return dc_loops(config)

    def prepare(self, engine: Engine, it: int) -> Iteration:
        net = make_network(engine.dataset, engine.config, f"{self.draws}-net", it, device=engine.device)
        for run in engine.runs:
            run.net = copy.deepcopy(net)
        return Iteration(net, has_batchnorm(net))

    def ready(self, engine: Engine, run: MethodRun, state: Iteration, it: int, step: int) -> nn.Module:
        """The method's network, set up for matching at this step (BatchNorm statistics fixed)."""
        assert run.net is not None
        if state.batchnorm:
            freeze_batchnorm(run.net, engine.real_images(BN_IMAGES_PER_CLASS, "bn", it, step))
        else:
            run.net.train()
        return run.net


def inner_sgd(config: DistillConfig) -> SGDConfig:
    """The plain SGD of a network trained on the synthetic set (DC's: no momentum, batch 256)."""
    return SGDConfig(lr=config.lr_net, momentum=0.0, weight_decay=0.0, batch_size=INNER_BATCH, decay_at=None)


# ---- CAFE's inner loop with an early stop ------------------------------------------------------------
@dataclass(frozen=True)
class InnerStop:
    """When the inner loop (training the network on the synthetic set) ends before its epoch cap.

    The monitored value is the network's accuracy on the (un-augmented) synthetic set: ``history[0]``
    before the loop's first epoch, ``history[e]`` after epoch e. After each epoch the loop stops when

    * ``accuracy``: the network classifies at least this share of the synthetic set correctly, or
    * ``patience``: the accuracy has not risen above its best before the last ``patience`` epochs
      (the net has stopped learning from this synthetic set; further epochs only over-fit it).

    ``None`` turns a criterion off; with both off the loop always runs its full cap.
    """

    accuracy: float | None = 1.0
    patience: int | None = 5

    @classmethod
    def from_config(cls, config: DistillConfig) -> InnerStop:
        return cls(config.inner_stop_acc, config.inner_patience)

    @property
    def enabled(self) -> bool:
        return self.accuracy is not None or self.patience is not None

    def check(self, history: Sequence[float]) -> str | None:
        """``"accuracy"`` or ``"plateau"`` if the loop should stop now, else ``None`` (at least one epoch runs)."""
        epochs = len(history) - 1
        if epochs < 1:
            return None
        if self.accuracy is not None and history[-1] >= self.accuracy:
            return "accuracy"
        p = self.patience
        if p is not None and epochs >= p and max(history[-p:]) <= max(history[:-p]):
            return "plateau"
        return None


@torch.no_grad()
def synthetic_accuracy(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of the synthetic images that ``net`` (in eval mode) puts in their own class."""
    net.eval()
    return float((net(images).argmax(1) == labels).float().mean())


def train_inner(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    max_epochs: int,
    stop: InnerStop,
    generator: torch.Generator,
    sgd: SGDConfig,
    dsa: DSA | None,
) -> tuple[int, str | None]:
    """Train ``net`` on the synthetic set one epoch at a time (DC's :func:`train`), stopping by ``stop``.

    Returns (epochs trained, the reason it stopped early or ``None``). The SGD has no momentum or
    weight decay, so epoch-by-epoch calls with one generator equal a single ``max_epochs`` call.
    """
    images = images.detach()
    history = [synthetic_accuracy(net, images, labels)] if stop.enabled else []
    for epoch in range(1, max_epochs + 1):
        train(net, images, labels, epochs=1, generator=generator, sgd=sgd, dsa=dsa)
        if stop.enabled:
            history.append(synthetic_accuracy(net, images, labels))
            reason = stop.check(history)
            if reason is not None:
                return epoch, reason
    return max_epochs, None
