"""Plain supervised training of a network on a (small) tensor dataset, with explicit randomness.

Shared by evaluation (fresh models trained on a synthetic set) and by the warm-started embedder
(a network trained for a few epochs on the current synthetic set).

Labels are hard (an (N,) tensor of class indices, trained with cross-entropy) or soft (an (N, K)
float tensor of class probabilities, as DATM, SRe2L or RDED store them, trained with the soft
cross-entropy ``-(p * log_softmax(logits)).sum(1).mean()``). Hard labels take exactly the path they
always took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import DSA
from .models import forward_chunk, forward_in_chunks


@dataclass(frozen=True)
class SGDConfig:
    """SGD with momentum and weight decay, and when its learning rate drops 10x.

    ``schedule="single"``: ``epochs`` epochs with one optimiser, the rate x 0.1 from epoch
    ``int(epochs * decay_at)``. ``schedule="reference"`` (how both reference codebases train their
    evaluation networks): ``epochs + 1`` epochs; after epoch ``epochs // 2 + 1`` (0-based) a NEW
    optimiser at a tenth of the rate takes over, so the momentum restarts from zero. ``decay_at=None``:
    no drop (and no extra epoch).
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at: float | None = 0.5
    schedule: str = "single"

    def epochs_run(self, epochs: int) -> int:
        """How many passes ``epochs`` asks for under this schedule."""
        return epochs + 1 if self.schedule == "reference" and self.decay_at is not None else epochs


#: the loss each kind of label trains with, as the evaluation records name it
LOSSES = {"hard": "cross-entropy", "soft": "soft cross-entropy"}
#: how far a row of soft labels may sum from 1 (float16 rounding of a few hundred classes stays inside)
SOFT_LABEL_TOLERANCE = 1e-3


def label_kind(labels: Tensor) -> str:
    """``"soft"`` for a 2-D float tensor (one row of class probabilities per image), else ``"hard"``."""
    return "soft" if labels.ndim == 2 and labels.dtype.is_floating_point else "hard"


def soft_label_problem(labels: Tensor, num_classes: int) -> str | None:
    """Why ``labels`` are not soft labels over ``num_classes`` classes, in a few words (None: they are).

    Soft labels are an (N, K) float tensor, K the number of classes, whose rows are probabilities:
    finite, non-negative, summing to 1 (within :data:`SOFT_LABEL_TOLERANCE`). Logits (a teacher's raw
    outputs) are refused, not softmaxed here: whether and at what temperature to soften them is the
    tool's choice, so the message asks for ``labels.softmax(1)`` instead.
    """
    if labels.ndim != 2 or not labels.dtype.is_floating_point:
        kind = str(labels.dtype).removeprefix("torch.")
        return f"need a float (N, K) tensor, got {kind} of shape {tuple(labels.shape)}"
    if labels.shape[1] != num_classes:
        return f"{labels.shape[1]} columns (classes), the dataset has {num_classes} classes"
    if labels.shape[0] == 0:
        return "no rows (the set is empty)"
    if not bool(torch.isfinite(labels).all()):
        return "they contain NaN or infinite values"
    if bool((labels < 0).any()):
        return "they hold negative values (rows must be probabilities; logits? save labels.softmax(1))"
    error = (labels.double().sum(1) - 1).abs()
    worst = int(error.argmax())
    if float(error[worst]) > SOFT_LABEL_TOLERANCE:
        total = float(labels[worst].double().sum())
        return f"row {worst} sums to {total:.4g}, not 1 (rows must be probabilities; logits? save labels.softmax(1))"
    return None


def supervised_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` against class indices, or against class probabilities ``p`` (soft labels):
    ``-(p * log_softmax(logits)).sum(1).mean()``."""
    if targets.ndim == 2:
        return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, targets)


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw conv / linear weights from ``generator`` (PyTorch's default ranges), reset norms.

    Module constructors draw from the global RNG; redrawing from an explicit generator makes every
    network a function of the run's seed only.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                w = torch.empty(m.weight.shape).uniform_(-bound, bound, generator=generator)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=generator))
        elif isinstance(m, nn.GroupNorm | nn.BatchNorm2d | nn.LayerNorm):
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    return model


def train(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    generator: torch.Generator,
    sgd: SGDConfig = SGDConfig(),
    dsa: DSA | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Train ``model`` in place for ``epochs`` passes over (images, labels); returns it in eval mode.

    ``labels``: (N,) class indices, or (N, K) class probabilities (soft labels, :func:`supervised_loss`).

    Batches are shuffled and, if ``dsa`` is given, every image gets its own random augmentation,
    all drawn from ``generator``. ``optimizer``: an optimizer over ``model``'s parameters to use
    instead of a fresh SGD from ``sgd`` (whose batch size and decay still apply), so that momentum
    carries over between calls.
    """
    images, labels = images.detach(), labels.detach()

    def fresh(lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)

    opt = optimizer if optimizer is not None else fresh(sgd.lr)
    n = images.shape[0]
    restart = sgd.schedule == "reference" and sgd.decay_at is not None
    if sgd.decay_at is None:
        decay_epoch = None
    elif restart:
        decay_epoch = epochs // 2 + 2  # the new optimiser takes over after epoch epochs // 2 + 1
    else:
        decay_epoch = int(epochs * sgd.decay_at)
    model.train()
    for epoch in range(sgd.epochs_run(epochs)):
        if epoch == decay_epoch and epoch > 0:
            if restart:
                opt = fresh(sgd.lr * 0.1)
            else:
                for group in opt.param_groups:
                    group["lr"] = sgd.lr * 0.1
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, sgd.batch_size):
            idx = order[start : start + sgd.batch_size]
            x, y = images[idx], labels[idx]
            if dsa is not None:
                x = dsa(x, generator=generator)
            loss = supervised_loss(model(x), y)  # hard labels: F.cross_entropy, as always
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int | None = None) -> Tensor:
    """Arg-max class of every image, ``batch_size`` images at a time (None: the device's piece size,
    :data:`~fairdistill.models.FORWARD_CHUNK`, else 2,048)."""
    model.eval()
    batch_size = batch_size or forward_chunk(images.device) or 2048
    return forward_in_chunks(lambda piece: model(piece).argmax(1), model, images, batch_size)
