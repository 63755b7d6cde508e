"""Distances between a synthetic statistic and its target.

A distance maps two tensors of shape (..., D) to (...,): the reduction runs over the last
dimension only, so one call serves every class (and every group) at once.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .registry import Registry

Distance = Callable[[Tensor, Tensor], Tensor]

DISTANCES: Registry[Distance] = Registry("distance")


@DISTANCES.register("l2sq", "squared Euclidean distance (DM, FairDD)")
def l2sq(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).sum(-1)


@DISTANCES.register("l1", "L1 distance (the published COBRA-DM code)")
def l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().sum(-1)


def get_distance(name: str) -> Distance:
    return DISTANCES.get(name)


def list_distances(pattern: str = "*") -> list[str]:
    return DISTANCES.list(pattern)
