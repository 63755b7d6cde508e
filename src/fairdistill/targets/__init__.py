"""Targets: what the synthetic statistic is matched to (SPEC section 2).

:mod:`~fairdistill.targets.core` holds the group statistics and the targets that aggregate group
means (population, FairDD's group-sync, COBRA's barycenter, uniform sampling);
:mod:`~fairdistill.targets.barycenters` the generalised barycenters solved from the group means
(``bary-l1`` ... ``bary-huber``) and the Wasserstein-2 barycenter (``bary-w2``). Both register
themselves in :data:`TARGETS`, which lives in ``core``; importing this package loads both.
"""

from __future__ import annotations

from . import barycenters as barycenters
from .core import (
    ALL,
    SAMPLINGS,
    TARGETS,
    Barycenter,
    GroupStats,
    GroupSync,
    GroupSyncMean,
    Population,
    Target,
    UniformSampling,
    resolve_sampling,
)


def get_target(name: str) -> Target:
    return TARGETS.get(name)()


def list_targets(pattern: str = "*") -> list[str]:
    return TARGETS.list(pattern)


__all__ = [
    "ALL",
    "SAMPLINGS",
    "TARGETS",
    "Barycenter",
    "GroupStats",
    "GroupSync",
    "GroupSyncMean",
    "Population",
    "Target",
    "UniformSampling",
    "barycenters",
    "get_target",
    "list_targets",
    "resolve_sampling",
]
