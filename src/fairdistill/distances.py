"""Distances between a synthetic statistic and its target.

Two kinds, one registry each, because the statistics differ in shape:

* **feature distances** (:data:`DISTANCES`; DM and other mean-matching backbones) map two tensors
  of shape (..., D) to (...,): the reduction runs over the last dimension only, so one call
  serves every class (and every group) at once.
* **gradient distances** (:data:`GRADIENT_DISTANCES`; DC) compare two gradients of a network, each
  a sequence of per-parameter tensors (one per ``net.parameters()``, same order), and return a
  scalar. The layer structure matters here: the published DC distance is a cosine per output
  unit of each weight tensor.

A backbone names the registry it draws from and its default (``Backbone.distances``,
``Backbone.default_distance``), so ``MethodSpec.distance`` is validated against the right one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
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


# ---- gradient distances ------------------------------------------------------------------------
GradientDistance = Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]

GRADIENT_DISTANCES: Registry[GradientDistance] = Registry("gradient distance")

#: added to the product of norms, as in the published DC code, so a zero gradient gives cosine 0, not NaN
COSINE_EPS = 1e-6


@GRADIENT_DISTANCES.register(
    "layer-cosine", "sum over weight tensors and output units of 1 - cosine; 1-D parameters ignored (DC)"
)
def layer_cosine(real: Sequence[Tensor], syn: Sequence[Tensor]) -> Tensor:
    """Zhao et al. (2021), eq. 7: ``sum_l sum_i (1 - cos(G_real[l, i], G_syn[l, i]))``.

    Each weight tensor is read as (output units, rest): conv (out, in, kh, kw) -> (out, in*kh*kw),
    linear (out, in) as is. Biases and normalisation scales (1-D) carry no per-unit direction and
    are ignored, as published.
    """
    total = syn[0].new_zeros(())
    for r, s in zip(real, syn, strict=True):
        if s.dim() < 2:
            continue
        r2, s2 = r.reshape(r.shape[0], -1), s.reshape(s.shape[0], -1)
        cos = (r2 * s2).sum(-1) / (r2.norm(dim=-1) * s2.norm(dim=-1) + COSINE_EPS)
        total = total + (1 - cos).sum()
    return total


@GRADIENT_DISTANCES.register("l2sq", "squared Euclidean distance over every parameter's gradient (DC 'mse')")
def gradient_l2sq(real: Sequence[Tensor], syn: Sequence[Tensor]) -> Tensor:
    return sum(((s - r).pow(2).sum() for r, s in zip(real, syn, strict=True)), syn[0].new_zeros(()))


@GRADIENT_DISTANCES.register("cosine", "1 - cosine of the whole flattened gradient vector (DC 'cos')")
def gradient_cosine(real: Sequence[Tensor], syn: Sequence[Tensor]) -> Tensor:
    r = torch.cat([t.reshape(-1) for t in real])
    s = torch.cat([t.reshape(-1) for t in syn])
    return 1 - (r * s).sum() / (r.norm() * s.norm() + COSINE_EPS)


def get_gradient_distance(name: str) -> GradientDistance:
    return GRADIENT_DISTANCES.get(name)


def list_gradient_distances(pattern: str = "*") -> list[str]:
    return GRADIENT_DISTANCES.list(pattern)
