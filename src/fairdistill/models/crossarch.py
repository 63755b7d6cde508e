"""Cross-architecture evaluation networks: AlexNet, VGG11 and ResNet18 for small images.

Written for the image sizes of dataset distillation (8 to 64 px), in the style of the networks
the DC / DSA / DM benchmark code evaluates distilled sets with, not the 224-px ImageNet designs:

- :class:`AlexNet`: five convolutions (5x5, 5x5, 3x3, 3x3, 3x3; ``width`` x 1, 1.5, 2, 1.5, 1.5
  channels), max pooling after the 1st, 2nd and 5th, a single linear classifier on a grid of at
  most 4x4 cells. No normalisation by default (``norm="batch"`` for the BN variant).
- :class:`VGG11`: eight 3x3 convolutions (``width`` x 1, 2, 4, 4, 8, 8, 8, 8) with a norm and
  ReLU each, five 2x2 max pools, a linear classifier on ``8 * width`` features. Instance norm by
  default (the DD convention), ``norm="batch"`` for VGG11-BN.
- :class:`ResNet18`: a 3x3 stride-1 stem (no 7x7 conv, no stem pooling: small images), four
  stages of two BasicBlocks (``width`` x 1, 2, 4, 8 channels; stride 2 from the second stage on),
  global average pooling, a linear classifier. Instance norm by default, ``norm="batch"`` for BN.

Any input size works: a pooling or stride-2 step is skipped when it would shrink a side below 2
pixels (instance norm over a single pixel is constant, so a 1x1 map would carry no signal), and
the last pooling is adaptive. At 32 px the layer shapes are the benchmark networks' shapes.
Each network has ``embed()`` (flattened penultimate features) and ``feature_dim`` like ConvNet.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import FairDistillError
from .convnet import NORMS, Norm, _check, make_norm


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if min(h, w) < 1:
        raise FairDistillError(f"image size must be positive, got {image_size}")
    return h, w


def _check_width(width: int) -> None:
    if width < 1:
        raise FairDistillError(f"width must be >= 1, got {width}")


def _scaled(width: int, factor: float) -> int:
    return max(1, round(width * factor))


class _Classifier(nn.Module):
    """Shared tail: ``features`` -> flatten -> linear."""

    features: nn.Module
    classifier: nn.Linear
    feature_dim: int

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features, flattened: (B, feature_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


class AlexNet(_Classifier):
    """AlexNet for small images: 5 convolutions, 3 max pools, one linear layer."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        width: int = 128,
        norm: Norm = "none",
    ) -> None:
        super().__init__()
        _check("norm", norm, NORMS)
        _check_width(width)
        h, w = _size(image_size)
        plan = [(width, 5, True), (_scaled(width, 1.5), 5, True), (2 * width, 3, False)]
        plan += [(_scaled(width, 1.5), 3, False), (_scaled(width, 1.5), 3, False)]
        layers: list[nn.Module] = []
        c = channels
        for out, k, pool in plan:
            layers += [nn.Conv2d(c, out, k, padding=k // 2), make_norm(norm, out), nn.ReLU(inplace=True)]
            if pool and min(h, w) >= 4:  # keep at least 2x2 for the convolutions that follow
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        # the last pool: a 2x2 max pool at 32 px (8x8 -> 4x4), adaptive elsewhere; at most a 4x4 grid
        gh, gw = max(1, min(4, h // 2)), max(1, min(4, w // 2))
        layers.append(nn.AdaptiveMaxPool2d((gh, gw)))
        self.features = nn.Sequential(*layers)
        self.feature_dim = c * gh * gw
        self.classifier = nn.Linear(self.feature_dim, num_classes)


#: VGG11's layers: channel multipliers of ``width``, "M" a 2x2 max pool
VGG11_PLAN: tuple[int | str, ...] = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(_Classifier):
    """VGG11 for small images: 8 convolutions with norm and ReLU, 5 max pools, one linear layer."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        width: int = 64,
        norm: Norm = "instance",
    ) -> None:
        super().__init__()
        _check("norm", norm, NORMS)
        _check_width(width)
        h, w = _size(image_size)
        layers: list[nn.Module] = []
        c = channels
        for i, item in enumerate(VGG11_PLAN):
            if item == "M":
                if i == len(VGG11_PLAN) - 1:
                    layers.append(nn.AdaptiveMaxPool2d(1))  # the last pool: down to one cell
                elif min(h, w) >= 4:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out = width * int(item)
            layers += [nn.Conv2d(c, out, 3, padding=1), make_norm(norm, out), nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.feature_dim = c
        self.classifier = nn.Linear(self.feature_dim, num_classes)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with norms and a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), make_norm(norm, out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet18(_Classifier):
    """ResNet18 for small images: 3x3 stem, 4 stages of 2 BasicBlocks, global average pooling."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        *,
        width: int = 64,
        norm: Norm = "instance",
    ) -> None:
        super().__init__()
        _check("norm", norm, NORMS)
        _check_width(width)
        h, w = _size(image_size)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            make_norm(norm, width),
            nn.ReLU(inplace=True),
        ]
        c = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            out = width * mult
            stride = 2 if stage > 0 and min(h, w) >= 4 else 1
            layers += [BasicBlock(c, out, stride, norm), BasicBlock(out, out, 1, norm)]
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            c = out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.feature_dim = c
        self.classifier = nn.Linear(self.feature_dim, num_classes)


__all__ = ["VGG11_PLAN", "AlexNet", "BasicBlock", "ResNet18", "VGG11"]
