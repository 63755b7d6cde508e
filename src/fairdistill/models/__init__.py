"""Networks, by name: ``create_model("convnet", channels=3, num_classes=10, image_size=28, width=64)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..registry import Registry
from .convnet import ConvNet

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

MODELS.add("convnet", ConvNet, "ConvNet-3 (width 128, instance norm, ReLU, avg pool): the DD-standard net")
MODELS.add("convnet-d4", lambda **kw: ConvNet(**{"depth": 4, **kw}), "ConvNet with 4 blocks (64-px data)")
MODELS.add("convnet-bn", lambda **kw: ConvNet(**{"norm": "batch", **kw}), "ConvNet with batch norm")


def create_model(
    name: str, *, channels: int, num_classes: int, image_size: int | tuple[int, int], **kwargs: Any
) -> nn.Module:
    """Build the network registered as ``name``; ``kwargs`` override its architecture knobs."""
    return MODELS.get(name)(channels=channels, num_classes=num_classes, image_size=image_size, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.list(pattern)


__all__ = ["MODELS", "ConvNet", "create_model", "list_models"]
