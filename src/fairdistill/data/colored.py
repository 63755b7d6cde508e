"""Coloured digits (C-MNIST style) from any grayscale digit source.

Ten colours, one per group; in the training split a class takes its "own" colour (group index =
class index) for a fraction ``rho`` of its images and the other nine colours in equal parts for
the rest. Test images are shown in every colour (a counterfactual, group-balanced test set).

Two variants: ``fg`` colours the digit (stroke = intensity x colour, black background); ``bg``
colours the background and keeps the stroke white. The background blend is
``x = g + (1 - g) * colour`` with the grayscale ``g`` in [0, 1]: a convex combination, so it never
leaves [0, 1]. (The reference FashionMNIST-background code adds colour to uint8 pixels and lets
the cast wrap around, so its pixels depend on the platform; ours do not.) With colour 9 (white)
the ``bg`` variant shows a white digit on a white background: that is what the published colour
map implies, and we keep it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import FairDistillError

#: RGB colours of groups 0-9 (SPEC section 3).
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 128, 0),
    (255, 255, 0),
    (255, 255, 128),
    (0, 255, 0),
    (0, 255, 255),
    (0, 0, 255),
    (128, 0, 255),
    (255, 0, 255),
    (255, 255, 255),
)
COLOUR_NAMES: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "light-yellow",
    "green",
    "cyan",
    "blue",
    "violet",
    "magenta",
    "white",
)

Variant = Literal["fg", "bg"]


def colourize(gray: Tensor, colour_index: Tensor, variant: Variant) -> Tensor:
    """Colour grayscale images.

    Parameters
    ----------
    gray : (N, H, W) float tensor in [0, 1]
    colour_index : (N,) int64 in [0, 10)
    variant : "fg" (colour the stroke) or "bg" (colour the background, white stroke)

    Returns
    -------
    (N, 3, H, W) float32 pixels in [0, 1].
    """
    if variant not in ("fg", "bg"):
        raise FairDistillError(f"unknown colouring variant {variant!r}; allowed: bg, fg")
    palette = torch.tensor(COLOURS, dtype=torch.float32) / 255.0
    colour = palette[colour_index].view(-1, 3, 1, 1)
    g = gray.float().unsqueeze(1)
    if variant == "fg":
        return g * colour
    return g + (1.0 - g) * colour


def biased_groups(labels: Tensor, rho: float, *, generator: torch.Generator, num_groups: int = 10) -> Tensor:
    """Assign a colour group to each training image with an exact bias.

    Within class ``c`` (shuffled by ``generator``), ``round(rho * n_c)`` images get group
    ``c % num_groups``; the rest are dealt round-robin over the other groups in a random order,
    so the minority colours get equal shares (up to one image). Exact quotas instead of
    independent coin flips make the bias ratio a fact of the dataset, not a sample.
    """
    if not 0.0 <= rho <= 1.0:
        raise FairDistillError(f"bias ratio rho must lie in [0, 1], got {rho}")
    groups = torch.empty_like(labels)
    for c in torch.unique(labels).tolist():  # ten classes: a loop over classes, not images
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_major = int(round(rho * len(idx)))
        own = c % num_groups
        groups[idx[:n_major]] = own
        others = torch.tensor([g for g in range(num_groups) if g != own], dtype=torch.long)
        others = others[torch.randperm(len(others), generator=generator)]
        rest = idx[n_major:]
        groups[rest] = others[torch.arange(len(rest)) % len(others)]
    return groups


def counterfactual_test(gray: Tensor, labels: Tensor, num_groups: int = 10) -> tuple[Tensor, Tensor, Tensor]:
    """Every test image once in every colour: returns (gray repeated, labels, colour index)."""
    n = labels.shape[0]
    groups = torch.arange(num_groups).repeat_interleave(n)
    return gray.repeat(num_groups, 1, 1), labels.repeat(num_groups), groups


def balanced_groups(labels: Tensor, *, generator: torch.Generator, num_groups: int = 10) -> Tensor:
    """One colour per test image, dealt evenly within each class: every (class, colour) cell gets
    ``n_c // num_groups`` or one more image, in a seeded random order."""
    groups = torch.empty_like(labels)
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        order = torch.randperm(num_groups, generator=generator)
        groups[idx] = order[torch.arange(len(idx)) % num_groups]
    return groups
