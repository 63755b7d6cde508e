"""Coloured digits (C-MNIST / C-FMNIST style) from any grayscale source.

Ten colours, one per group; in the training split a class takes its "own" colour (group index =
class index) for a fraction ``rho`` of its images and the other nine colours in equal parts for
the rest. Test images are shown in every colour, or one colour each dealt evenly per class (a
group-balanced test set).

The pixels follow the reference benchmarks (PUBLISHED.md section 1). Two variants, ``fg`` (colour
the digit / garment) and ``bg`` (colour the background), each in two forms chosen by the source:

* ``binarize=True`` (MNIST digits): the grey pixel ``v`` (0..255) is thresholded at 128
  (``v >= 128`` is the stroke). ``fg``: stroke = colour, everything else black. ``bg``: the stroke
  is black and every pixel below 128, background and padding alike, takes the colour; so colour 9
  (white) is a black digit on white.
* ``binarize=False`` (FashionMNIST): no threshold. ``fg``: ``colour * v / 255``, a ramp from black
  to the colour. ``bg``: the blend ``g + (1 - g) * colour`` with ``g = v / 255``, from the colour
  (``v = 0``, padding included) to white (``v = 255``). This is the blend the reference intends
  and our default (``fmnist_bg="blend"``), a deliberate, named difference from its code: there the
  arithmetic starts from 255 instead of 1 and the float-to-uint8 cast wraps garment pixels modulo
  256. ``fmnist_bg="reference"`` computes exactly that, in float32 as the reference does, with the
  wrap made explicit (truncate, then modulo 256: what the cast does on the CPUs the papers used),
  so it no longer depends on the platform. It matters: in the intended blend colour 9 (white) is a
  blank image, every pixel white whatever the garment, so no model can classify that group and
  DEO_M is 100 for every method; in the reference's pixels the white group shows a dark garment.

``binarize=False`` on MNIST digits is our own grey-ramp colouring (not the benchmark's). The 28x28
images are padded to 32x32 with zeros as the reference does, at offset (4, 4): all the padding on
the top and left (``padding="top-left"``); ``padding="centre"`` (2 px on every side) is our option.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import FairDistillError

#: RGB colours of groups 0-9 (the reference colour map, PUBLISHED.md section 1).
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
#: where the zero padding of a smaller image goes: the reference's "top-left" (image at offset
#: (4, 4) for 28 -> 32) or our "centre"
Padding = Literal["top-left", "centre"]
PADDINGS: tuple[str, ...] = ("top-left", "centre")
#: the C-FMNIST background pixels: the intended "blend" (our default) or the "reference" code's
FmnistBg = Literal["blend", "reference"]
FMNIST_BGS: tuple[str, ...] = ("blend", "reference")


#: the stroke of a binarised digit: grey value ``v >= 128`` of 0..255, i.e. ``v / 255 > 0.5`` (127.5
#: is the midpoint between 127 and 128, so the float comparison is exact for every uint8 value)
BINARY_THRESHOLD = 0.5


def check_fmnist_bg(fmnist_bg: str, variant: str, binarize: bool) -> None:
    """Refuse an unknown ``fmnist_bg``, or "reference" where there is no C-FMNIST background."""
    if fmnist_bg not in FMNIST_BGS:
        raise FairDistillError(f"unknown fmnist_bg {fmnist_bg!r}; allowed: {', '.join(FMNIST_BGS)}")
    if fmnist_bg != "blend" and (binarize or variant != "bg"):
        raise FairDistillError(
            "fmnist_bg='reference' applies to the unbinarised background colouring (C-FMNIST BG) only"
        )


def colourize(
    gray: Tensor, colour_index: Tensor, variant: Variant, *, binarize: bool = False, fmnist_bg: FmnistBg = "blend"
) -> Tensor:
    """Colour grayscale images (see the module docstring for the four cases).

    Parameters
    ----------
    gray : (N, H, W) float tensor in [0, 1] (``v / 255`` for uint8 sources)
    colour_index : (N,) int64 in [0, 10)
    variant : "fg" (colour the stroke) or "bg" (colour the background)
    binarize : threshold at 128 (MNIST); fg = mask x colour, bg = black stroke on the colour.
        False: fg = ``g * colour``, bg = ``g + (1 - g) * colour``.
    fmnist_bg : for ``binarize=False`` and "bg" only: "blend" (the formula above) or "reference"
        (:func:`reference_background`).

    Returns
    -------
    (N, 3, H, W) float32 pixels in [0, 1].
    """
    if variant not in ("fg", "bg"):
        raise FairDistillError(f"unknown colouring variant {variant!r}; allowed: bg, fg")
    check_fmnist_bg(fmnist_bg, variant, binarize)
    palette = torch.tensor(COLOURS, dtype=torch.float32) / 255.0
    colour = palette[colour_index].view(-1, 3, 1, 1)
    g = gray.float().unsqueeze(1)
    if binarize:
        stroke = (g > BINARY_THRESHOLD).float()
        return stroke * colour if variant == "fg" else (1.0 - stroke) * colour
    if variant == "fg":
        return g * colour
    if fmnist_bg == "reference":
        return reference_background(g, colour)
    return g + (1.0 - g) * colour


def reference_background(g: Tensor, colour: Tensor) -> Tensor:
    """The C-FMNIST background pixels as the reference's code computes them.

    With ``v`` the grey value (0..255) and ``c`` the colour in [0, 1], in float32:
    ``x = 255 * (255 + (1 - v / 255) * (c - 255))``, which is ``255 c`` at ``v = 0`` (the
    background and padding get the colour) and far above 255 on the garment; the cast to uint8 then
    keeps ``trunc(x) mod 256``. ``g`` is ``v / 255`` (broadcast against ``colour``); returns pixels
    ``(trunc(x) mod 256) / 255`` in [0, 1].
    """
    v = torch.round(g * 255.0)
    d = (255.0 - v) / 255.0
    x = (255.0 + d * (colour - 255.0)) * 255.0  # float32 throughout; x < 2**17, so trunc and fmod are exact
    return torch.fmod(torch.trunc(x), 256.0).div_(255.0)


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
