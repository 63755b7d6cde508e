"""Backbones: what is matched (DM features, DC gradients, IDC multi-formation gradients, CAFE layers, MTT trajectories).

A backbone distils one or several :class:`~fairdistill.config.MethodSpec` at once ("lockstep":
every method sees the same networks, real batches and augmentations, and shared forward passes
are done once). The loop that does this is the same for every backbone and lives in
:mod:`~fairdistill.backbones.engine`; a backbone's module states only what it matches.

Importing this package registers every backbone (each module registers itself in
:data:`~fairdistill.backbones.base.BACKBONES`, which lives below them).
"""

from __future__ import annotations

from .base import BACKBONES, Backbone, check_method, resolve_method
from .cafe import CAFE
from .dc import DC
from .dm import DM
from .engine import Engine, IterationCallback, IterationState, LockstepBackbone, MethodRun
from .idc import IDC
from .mtt import MTT


def get_backbone(name: str) -> Backbone:
    return BACKBONES.get(name)()


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.list(pattern)


__all__ = [
    "BACKBONES",
    "CAFE",
    "DC",
    "DM",
    "Engine",
    "IDC",
    "MTT",
    "Backbone",
    "IterationCallback",
    "IterationState",
    "LockstepBackbone",
    "MethodRun",
    "check_method",
    "get_backbone",
    "list_backbones",
    "resolve_method",
]
