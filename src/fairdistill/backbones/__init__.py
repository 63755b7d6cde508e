"""Backbones: what is matched (DM features, DC gradients, IDC multi-formation gradients, CAFE layers; MTT later).

A backbone distils one or several :class:`~fairdistill.config.MethodSpec` at once ("lockstep":
every method sees the same networks, real batches and augmentations, and shared forward passes
are done once).
"""

from __future__ import annotations

from ..registry import Registry
from .base import Backbone, IterationCallback, IterationState

BACKBONES: Registry[type[Backbone]] = Registry("backbone")

from .cafe import CAFE  # noqa: E402  (registers itself)
from .dc import DC  # noqa: E402  (registers itself)
from .dm import DM  # noqa: E402  (registers itself)
from .idc import IDC  # noqa: E402  (registers itself)


def get_backbone(name: str) -> Backbone:
    return BACKBONES.get(name)()


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.list(pattern)


__all__ = [
    "BACKBONES",
    "CAFE",
    "DC",
    "DM",
    "IDC",
    "Backbone",
    "IterationCallback",
    "IterationState",
    "get_backbone",
    "list_backbones",
]
