"""Networks, by name: ``create_model("convnet", channels=3, num_classes=10, image_size=28, width=64)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry
from .convnet import ConvNet
from .crossarch import VGG11, AlexNet, ResNet18

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

MODELS.add("convnet", ConvNet, "ConvNet-3 (width 128, instance norm, ReLU, avg pool): the DD-standard net")
MODELS.add("convnet-d4", lambda **kw: ConvNet(**{"depth": 4, **kw}), "ConvNet with 4 blocks (64-px data)")
MODELS.add("convnet-bn", lambda **kw: ConvNet(**{"norm": "batch", **kw}), "ConvNet with batch norm")
# cross-architecture evaluation (small-image forms, as in the DC / DSA / DM benchmark code)
MODELS.add("alexnet", AlexNet, "AlexNet for small images: 5 convs (width 128), 3 max pools, no norm")
MODELS.add("vgg11", VGG11, "VGG11 for small images (width 64, instance norm)")
MODELS.add("vgg11-bn", lambda **kw: VGG11(**{"norm": "batch", **kw}), "VGG11 with batch norm")
MODELS.add("resnet18", ResNet18, "ResNet18 for small images: 3x3 stem, BasicBlocks (width 64, instance norm)")
MODELS.add("resnet18-bn", lambda **kw: ResNet18(**{"norm": "batch", **kw}), "ResNet18 with batch norm")


def create_model(
    name: str, *, channels: int, num_classes: int, image_size: int | tuple[int, int], **kwargs: Any
) -> nn.Module:
    """Build the network registered as ``name``; ``kwargs`` override its architecture knobs."""
    return MODELS.get(name)(channels=channels, num_classes=num_classes, image_size=image_size, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.list(pattern)


__all__ = ["MODELS", "VGG11", "AlexNet", "ConvNet", "ResNet18", "create_model", "list_models"]
