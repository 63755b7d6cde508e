"""Networks, by name: ``create_model("convnet", channels=3, num_classes=10, image_size=28, width=64)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

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


#: images per piece of a forward pass without gradients, by device type (absent: the whole batch).
#: On two CPU cores a ConvNet forward of 320 to 4,000 images ran 1.2 to 2.0 times faster in pieces of
#: 32 (the activations of a piece stay in cache), with the same values bit for bit
#: (benchmarks/RESULTS.md section 17); a GPU wants large batches, so it gets the whole batch.
FORWARD_CHUNK: dict[str, int] = {"cpu": 32}

#: images per piece of a real-batch gradient (a forward and backward whose parameter gradients are
#: summed over the pieces), by device type. On two CPU cores the CE gradient of ConvNet-128 on 256
#: images of 32 px took 0.59 s in pieces of 32 against 0.79 s whole, 0.32 against 0.36 s on 96; the
#: sum equals the whole batch's gradient up to float rounding, 1.3e-6 relative there
#: (benchmarks/pieces.py, RESULTS.md 17.7).
GRADIENT_CHUNK: dict[str, int] = {"cpu": 32}


def forward_chunk(
    device: torch.device | str, setting: int | None = None, defaults: dict[str, int] = FORWARD_CHUNK
) -> int | None:
    """The piece size of a forward pass on ``device``: ``setting`` when given (0: the whole batch), else
    ``defaults``' for the device type (:data:`FORWARD_CHUNK`; :data:`GRADIENT_CHUNK` for gradients;
    None: the whole batch)."""
    if setting is not None:
        return setting or None
    return defaults.get(torch.device(device).type)


def uses_batch_statistics(net: nn.Module) -> bool:
    """Whether ``net`` has a batch norm in training mode: then its outputs depend on the whole batch,
    and computing it in pieces would change what it computes."""
    return any(isinstance(m, _BatchNorm) and m.training for m in net.modules())


def forward_in_chunks(fn: Callable[[Tensor], Any], net: nn.Module, x: Tensor, chunk: int | None) -> Any:
    """``fn(x)`` computed ``chunk`` images at a time and put back together (a tensor, or a list or tuple
    of tensors, each along its first dimension). A network whose batch norm uses batch statistics
    (training mode) runs on the whole batch: pieces would change what it computes."""
    if chunk is None or x.shape[0] <= chunk or uses_batch_statistics(net):
        return fn(x)
    parts = [fn(piece) for piece in x.split(chunk)]
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return type(parts[0])(torch.cat(column) for column in zip(*parts, strict=True))


__all__ = [
    "FORWARD_CHUNK",
    "GRADIENT_CHUNK",
    "MODELS",
    "VGG11",
    "AlexNet",
    "ConvNet",
    "ResNet18",
    "create_model",
    "forward_chunk",
    "forward_in_chunks",
    "list_models",
    "uses_batch_statistics",
]
