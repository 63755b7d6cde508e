"""The ConvNet family used throughout dataset distillation.

``depth`` blocks of [3x3 conv (``width`` channels) -> norm -> activation -> 2x2 pool], then a
linear classifier on the flattened features. ``embed()`` returns those features (the
representation DM matches). With the defaults (width 128, depth 3, instance norm, ReLU, average
pooling) this is the network every DD paper evaluates with. Works for inputs from 8 to 64 px.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FairDistillError

Norm = Literal["instance", "batch", "layer", "group", "none"]
Pool = Literal["avg", "max", "none"]
Act = Literal["relu", "leakyrelu", "sigmoid", "gelu"]

NORMS = ("instance", "batch", "layer", "group", "none")
POOLS = ("avg", "max", "none")
ACTS = ("relu", "leakyrelu", "sigmoid", "gelu")


def _check(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FairDistillError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def make_norm(norm: str, channels: int) -> nn.Module:
    _check("norm", norm, NORMS)
    if norm == "instance":  # per-sample, per-channel statistics with a learned affine (DD convention)
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "layer":  # per-sample statistics over all channels and pixels
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(4, channels), channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def make_act(act: str) -> nn.Module:
    _check("activation", act, ACTS)
    # ReLU in place: every block applies it to the fresh output of a norm or conv layer, whose
    # backward does not need that output, so the values and gradients are the same and one
    # activation-sized tensor per block is never allocated
    makers = {"relu": lambda: nn.ReLU(inplace=True), "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid}
    return {**makers, "gelu": nn.GELU}[act]()


class _SumPool2x2(torch.autograd.Function):
    """2x2 average pooling as four strided slices summed in ``avg_pool2d``'s order, times 0.25; its
    backward spreads a quarter of each gradient over the window (differentiable again, for MTT's
    unroll). The same values as ``F.avg_pool2d(x, 2)`` bit for bit, forward and backward."""

    #: images summed per piece: a piece's four slices and its output stay in the cache, and summing in
    #: place into the output allocates nothing else (256 maps of 128 x 32 x 32 on two cores: 40 ms
    #: against 68 ms summed into new tensors, 71 ms for avg_pool2d; benchmarks/pieces.py)
    piece = 16

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.size = tuple(x.shape[-2:])
        n, c, h, w = x.shape
        out = x.new_empty(n, c, h // 2, w // 2)
        x = x[..., : h // 2 * 2, : w // 2 * 2]
        for s in range(0, n, _SumPool2x2.piece):
            xs, o = x[s : s + _SumPool2x2.piece], out[s : s + _SumPool2x2.piece]
            torch.add(xs[..., 0::2, 0::2], xs[..., 0::2, 1::2], out=o)
            o += xs[..., 1::2, 0::2]
            o += xs[..., 1::2, 1::2]
            o *= 0.25
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (height, width), (n, c, h, w) = ctx.size, grad.shape
        spread = (grad * 0.25)[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)
        if (2 * h, 2 * w) != (height, width):  # the odd last row or column, which pooling drops
            spread = F.pad(spread, (0, width - 2 * w, 0, height - 2 * h))
        return spread


class AvgPool2x2(nn.AvgPool2d):
    """``nn.AvgPool2d(2)`` with the same values, faster on the CPU: there, maps of 16 px and more are
    pooled by :class:`_SumPool2x2` (on two cores 2.6x faster forward at 32 px, 22-31% less time forward
    and backward; summed in place by pieces of 16 images, also faster for batches of hundreds), the rest
    by ``F.avg_pool2d``."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or min(x.shape[-2:]) < 16:
            return F.avg_pool2d(x, 2)
        return _SumPool2x2.apply(x)


class ConvNet(nn.Module):
    """ConvNet-``depth`` with ``width`` channels per layer."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        width: int = 128,
        depth: int = 3,
        norm: Norm = "instance",
        act: Act = "relu",
        pool: Pool = "avg",
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        _check("pooling", pool, POOLS)
        if depth < 1 or width < 1:
            raise FairDistillError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        layers: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), make_norm(norm, width), make_act(act)]
            if pool != "none":
                if min(h, w) < 2:
                    raise FairDistillError(
                        f"input {image_size} px is too small for {depth} pooling layers; use a smaller depth"
                    )
                layers.append(AvgPool2x2() if pool == "avg" else nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features, flattened: (B, feature_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


__all__ = ["ConvNet"]
