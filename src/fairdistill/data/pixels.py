"""From stored uint8 pixels to the float32 images the models see.

Kept in a module of its own, below both :mod:`~fairdistill.data.dataset` and
:mod:`~fairdistill.data.store`, so that every loader and the batch-at-a-time image store apply one
and the same arithmetic: a streamed split then gives exactly the bytes of one normalised up front.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import FairDistillError


def normalise_uint8(pixels: Tensor | Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 pixels (N, C, H, W) (a tensor or numpy array) -> float32 model-space images ``(x / 255 - mean) / std``."""
    x = torch.as_tensor(pixels)
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise FairDistillError(f"expected uint8 pixels of shape (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


__all__ = ["normalise_uint8"]
