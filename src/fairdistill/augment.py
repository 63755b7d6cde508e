"""Differentiable Siamese augmentation (DSA, Zhao & Bilen 2021).

Dataset distillation matches what a network does on a batch of real images of a class with what
it does on the synthetic images of the same class. DSA augments both batches with the *same*
random transform and keeps every operation differentiable, so the matching gradient flows
through the augmentation into the synthetic pixels.

Parameters are drawn once for ``n`` transforms (:meth:`DSA.sample`) and every image picks its
transform through an integer ``index`` (:meth:`DSA.apply`): for distillation ``index`` is the
image's class label, for ordinary training augmentation ``index = arange(batch)``.

Operations (joined by ``"_"`` in the strategy string):

``color``
    brightness, saturation and contrast jitter, applied in that order.
``crop``
    translation by a whole number of pixels, zero padding outside.
``cutout``
    a zeroed square at a random centre (clipped at the borders).
``flip``
    horizontal flip.
``scale``
    independent scaling of the two axes.
``rotate``
    rotation about the image centre.

Whatever their order in the strategy string, the operations run as colour, then geometry, then
cutout. The geometric operations (crop, flip, scale, rotate) are composed, in strategy order,
into one affine matrix per transform and applied by a single ``affine_grid`` / ``grid_sample``
for the whole batch: one resampling instead of four keeps the result sharp and the backward pass
cheap. Cutout therefore removes an axis-aligned square of the *warped* image (the published code
cuts before flip/scale/rotate, so its square can end up rotated); the centre is uniform either
way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fairdistill.errors import FairDistillError, unknown_name

__all__ = ["DEFAULT_STRATEGY", "DSA", "DSAConfig", "DSAParams", "OPS", "no_flip", "parse_strategy"]

OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
MODES: tuple[str, ...] = ("single", "batch", "all")
GEOMETRIC = frozenset({"crop", "flip", "scale", "rotate"})

# Uniform numbers each operation consumes per transform.
_DRAWS = {"color": 3, "crop": 2, "cutout": 2, "flip": 1, "scale": 2, "rotate": 1}


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string into its operation names.

    Parameters
    ----------
    strategy : str
        Operation names joined by ``"_"``, e.g. ``"color_crop_cutout"``.

    Returns
    -------
    tuple of str
        The names in strategy order.

    Raises
    ------
    FairDistillError
        If the string is empty, names an unknown operation or repeats one.
    """
    names = tuple(strategy.split("_")) if strategy else ()
    if not names:
        raise FairDistillError("augmentation strategy is empty; name at least one of " + ", ".join(OPS))
    seen: set[str] = set()
    for name in names:
        if name not in OPS:
            raise unknown_name("augmentation", name, OPS)
        if name in seen:
            raise FairDistillError(f"augmentation {name!r} appears twice in strategy {strategy!r}")
        seen.add(name)
    return names


def no_flip(strategy: str) -> str:
    """Return ``strategy`` without ``"flip"`` (digits and text must not be mirrored).

    Parameters
    ----------
    strategy : str
        Operation names joined by ``"_"``.

    Returns
    -------
    str
        The same names in the same order, ``flip`` removed.
    """
    return "_".join(name for name in strategy.split("_") if name and name != "flip")


@dataclass(frozen=True)
class DSAConfig:
    """Settings of differentiable Siamese augmentation; the defaults are the published ones.

    Attributes
    ----------
    strategy : str
        Operation names joined by ``"_"``.
    mode : {"single", "batch", "all"}
        ``"single"`` applies one operation of the strategy, chosen at random per transform;
        ``"batch"`` one operation chosen at random for all the transforms of one :meth:`DSA.sample`
        (each with its own parameters: the reference code's non-Siamese training augmentation,
        which picks one operation family per batch); ``"all"`` applies every operation.
    brightness : float
        Brightness shift is ``(u - 0.5) * brightness``.
    saturation : float
        Saturation factor is ``u * saturation``.
    contrast : float
        Contrast factor is ``u + contrast``.
    crop_ratio : float
        Largest translation as a fraction of the image size (rounded to whole pixels).
    cutout_ratio : float
        Side of the cutout square as a fraction of the image size.
    scale_ratio : float
        Scale factors are uniform in ``[1 / scale_ratio, scale_ratio]``.
    rotate_deg : float
        Angles are uniform in ``[-rotate_deg, rotate_deg]`` degrees.
    flip_prob : float
        Probability of a horizontal flip.
    exact : bool
        The slower arithmetic that is exact to rounding: the colour jitter on every image (an
        identity jitter where the transform has none, which rounds) and the warp sampled in float64.
        Off (the default, the reference codebases' arithmetic): the jitter only on the images whose
        transform has one, and the warp in the images' dtype (float32: flips and whole-pixel crops
        then exact to about 3e-6, any warp within about 5e-5 of the float64 one on unit-scale
        pixels). Either way, images whose transform is the identity skip the warp and an all-ones
        cutout mask is never applied: both change nothing.
    """

    strategy: str = DEFAULT_STRATEGY
    mode: Literal["single", "batch", "all"] = "single"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop_ratio: float = 0.125
    cutout_ratio: float = 0.5
    scale_ratio: float = 1.2
    rotate_deg: float = 15.0
    flip_prob: float = 0.5
    exact: bool = False


@dataclass(frozen=True)
class DSAParams:
    """Drawn parameters of ``n`` transforms; every tensor has leading dimension ``n``.

    Operations a transform does not apply hold their identity value (shift 0, factor 1, no flip,
    angle 0, ``crop_on``/``cutout_on`` false), so :meth:`DSA.apply` needs no branching per
    transform.

    Attributes
    ----------
    ops : tuple of str
        The strategy the parameters were drawn for.
    chosen : Tensor
        ``(n,)`` long: position in ``ops`` of the operation picked in ``"single"`` mode, ``-1``
        in ``"all"`` mode.
    brightness : Tensor
        ``(n,)`` additive brightness shift.
    saturation : Tensor
        ``(n,)`` saturation factor.
    contrast : Tensor
        ``(n,)`` contrast factor.
    crop : Tensor
        ``(n, 2)`` uniforms ``(x, y)`` in ``[0, 1)``, turned into whole-pixel shifts once the image
        size is known (:meth:`DSA.crop_shifts`).
    crop_on : Tensor
        ``(n,)`` bool, whether the transform translates.
    flip : Tensor
        ``(n,)`` ``-1`` (mirror) or ``1``.
    scale : Tensor
        ``(n, 2)`` scale factors ``(sx, sy)`` of the sampling grid (above 1 zooms out).
    angle : Tensor
        ``(n,)`` rotation in radians.
    cutout : Tensor
        ``(n, 2)`` uniforms ``(x, y)`` in ``[0, 1)`` placing the cutout centre.
    cutout_on : Tensor
        ``(n,)`` bool, whether the transform cuts out a square.
    """

    ops: tuple[str, ...]
    chosen: Tensor
    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    crop: Tensor
    crop_on: Tensor
    flip: Tensor
    scale: Tensor
    angle: Tensor
    cutout: Tensor
    cutout_on: Tensor

    @property
    def n(self) -> int:
        """Number of transforms."""
        return int(self.chosen.shape[0])

    @property
    def device(self) -> torch.device:
        """Device holding the tensors."""
        return self.chosen.device

    def to(self, device: torch.device | str) -> DSAParams:
        """Return a copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "ops"}
        return DSAParams(ops=self.ops, **moved)


class DSA:
    """Differentiable Siamese augmentation.

    Parameters
    ----------
    config : DSAConfig, optional
        Settings; the published defaults when omitted.
    **overrides
        Fields of :class:`DSAConfig` to replace, e.g. ``DSA(strategy="crop_scale")``.

    Raises
    ------
    FairDistillError
        For an unknown operation or option name, an unknown mode or an out-of-range setting.

    Examples
    --------
    >>> dsa = DSA(strategy=no_flip(DEFAULT_STRATEGY))
    >>> g = torch.Generator().manual_seed(0)
    >>> params = dsa.sample(10, generator=g)                        # one transform per class
    >>> real_aug = dsa.apply(real, params, real_labels)             # doctest: +SKIP
    >>> syn_aug = dsa.apply(syn, params, syn_labels)                # doctest: +SKIP
    """

    def __init__(self, config: DSAConfig | None = None, **overrides: object) -> None:
        config = config if config is not None else DSAConfig()
        if overrides:
            allowed = [f.name for f in dataclasses.fields(DSAConfig)]
            for key in overrides:
                if key not in allowed:
                    raise unknown_name("augmentation option", key, allowed)
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.ops = parse_strategy(config.strategy)
        if config.mode not in MODES:
            raise unknown_name("augmentation mode", str(config.mode), MODES)
        _check_range("brightness", config.brightness, 0.0, math.inf)
        _check_range("saturation", config.saturation, 0.0, math.inf)
        _check_range("contrast", config.contrast, 0.0, math.inf)
        _check_range("crop_ratio", config.crop_ratio, 0.0, 0.5)
        _check_range("cutout_ratio", config.cutout_ratio, 0.0, 1.0)
        _check_range("scale_ratio", config.scale_ratio, 1.0, math.inf)
        _check_range("rotate_deg", config.rotate_deg, 0.0, 180.0)
        _check_range("flip_prob", config.flip_prob, 0.0, 1.0)

    def __repr__(self) -> str:
        return f"DSA({self.config!r})"

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str | None = None) -> DSAParams:
        """Draw parameters for ``n`` transforms.

        Parameters
        ----------
        n : int
            Number of transforms (for distillation, the number of classes).
        generator : torch.Generator
            Source of all randomness; the draw happens on the generator's device.
        device : torch.device or str, optional
            Where the returned tensors live; the generator's device when omitted.

        Returns
        -------
        DSAParams
            One row per transform.
        """
        if not isinstance(generator, torch.Generator):
            raise FairDistillError("DSA.sample needs an explicit torch.Generator")
        if int(n) < 1:
            raise FairDistillError(f"DSA.sample needs n >= 1 transforms, got {n}")
        n = int(n)
        cfg = self.config
        k = len(self.ops)
        widths = [_DRAWS[op] for op in self.ops]
        # One draw for everything: the sequence consumed from the generator depends only on n and
        # the strategy, never on the mode or on which operations get chosen.
        u = torch.rand(n, 1 + sum(widths), generator=generator, device=generator.device)
        u = u.to(device if device is not None else generator.device)
        dev = u.device

        if cfg.mode in ("single", "batch"):
            chosen = (u[:, 0] * k).long().clamp_(max=k - 1)
            if cfg.mode == "batch":  # the first transform's pick for all of them
                chosen = chosen[:1].expand(n).contiguous()
            active = chosen[:, None] == torch.arange(k, device=dev)
        else:
            chosen = torch.full((n,), -1, dtype=torch.long, device=dev)
            active = torch.ones(n, k, dtype=torch.bool, device=dev)

        draws: dict[str, Tensor] = {}
        on: dict[str, Tensor] = {}
        for i, (op, chunk) in enumerate(zip(self.ops, u[:, 1:].split(widths, dim=1), strict=True)):
            draws[op] = chunk
            on[op] = active[:, i]
        off = torch.zeros(n, dtype=torch.bool, device=dev)
        half = torch.full((n, 2), 0.5, device=dev)

        def pick(op: str, value: Tensor, identity: float) -> Tensor:
            if op not in draws:
                return torch.full_like(value, identity)
            mask = on[op] if value.dim() == 1 else on[op][:, None]
            return torch.where(mask, value, torch.full_like(value, identity))

        colour = draws.get("color", torch.full((n, 3), 0.5, device=dev))
        lo = 1.0 / cfg.scale_ratio
        scale_u = draws.get("scale", half)
        flip_u = draws.get("flip", torch.ones(n, 1, device=dev))[:, 0]
        rotate_u = draws.get("rotate", torch.full((n, 1), 0.5, device=dev))[:, 0]
        return DSAParams(
            ops=self.ops,
            chosen=chosen,
            brightness=pick("color", (colour[:, 0] - 0.5) * cfg.brightness, 0.0),
            saturation=pick("color", colour[:, 1] * cfg.saturation, 1.0),
            contrast=pick("color", colour[:, 2] + cfg.contrast, 1.0),
            crop=draws.get("crop", half),
            crop_on=on.get("crop", off),
            flip=pick("flip", torch.where(flip_u < cfg.flip_prob, -1.0, 1.0), 1.0),
            scale=pick("scale", lo + scale_u * (cfg.scale_ratio - lo), 1.0),
            angle=pick("rotate", (2.0 * rotate_u - 1.0) * math.radians(cfg.rotate_deg), 0.0),
            cutout=draws.get("cutout", half),
            cutout_on=on.get("cutout", off),
        )

    # ------------------------------------------------------------------ size-dependent pieces

    def crop_shifts(self, params: DSAParams, height: int, width: int) -> Tensor:
        """Whole-pixel translations ``(dx, dy)`` of each transform for a ``height x width`` image.

        Content moves right by ``dx`` and down by ``dy``; both lie in ``[-m, m]`` with
        ``m = round(crop_ratio * size)`` of the matching axis, and are 0 where crop is off.

        Returns
        -------
        Tensor
            ``(n, 2)`` long.
        """
        limit = torch.tensor(
            [_round_half_up(self.config.crop_ratio * width), _round_half_up(self.config.crop_ratio * height)],
            device=params.device,
        )
        shift = torch.floor(params.crop * (2 * limit + 1)).long() - limit
        shift = torch.maximum(torch.minimum(shift, limit), -limit)  # guards u -> 1 rounding
        return shift * params.crop_on[:, None].long()

    def theta(self, params: DSAParams, height: int, width: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """Normalised ``affine_grid`` matrices of the composed geometric operations.

        Parameters
        ----------
        params : DSAParams
            Drawn parameters.
        height, width : int
            Image size; crop shifts and the aspect ratio depend on it.
        dtype : torch.dtype
            Floating type of the result.

        Returns
        -------
        Tensor
            ``(n, 2, 3)`` matrices mapping output to input in ``align_corners=False`` coordinates.
        """
        n, dev = params.n, params.device
        one = torch.ones(n, dtype=dtype, device=dev)
        zero = torch.zeros(n, dtype=dtype, device=dev)
        # Compose in centred pixel units so that rotations stay rotations on non-square images.
        total = torch.eye(3, dtype=dtype, device=dev).expand(n, 3, 3)
        for op in self.ops:
            if op == "crop":
                shift = self.crop_shifts(params, height, width).to(dtype)
                rows = [one, zero, -shift[:, 0], zero, one, -shift[:, 1]]
            elif op == "flip":
                rows = [params.flip.to(dtype), zero, zero, zero, one, zero]
            elif op == "scale":
                scale = params.scale.to(dtype)
                rows = [scale[:, 0], zero, zero, zero, scale[:, 1], zero]
            elif op == "rotate":
                angle = params.angle.to(dtype)
                cos, sin = torch.cos(angle), torch.sin(angle)
                rows = [cos, -sin, zero, sin, cos, zero]
            else:
                continue
            step = torch.stack([*rows, zero, zero, one], dim=1).view(n, 3, 3)
            # Each step maps its output to its input, so later steps multiply on the right.
            total = total @ step
        # theta = P^-1 M P with P = diag(W/2, H/2, 1) converting normalised to centred pixels.
        conv = torch.tensor(
            [[1.0, height / width, 2.0 / width], [width / height, 1.0, 2.0 / height]], dtype=dtype, device=dev
        )
        return total[:, :2, :] * conv

    def cutout_mask(self, params: DSAParams, height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """Multiplicative cutout masks: 0 inside each transform's square, 1 elsewhere.

        The square has sides ``round(cutout_ratio * size)`` and its centre pixel is uniform over
        the image; parts that fall outside are clipped.

        Returns
        -------
        Tensor
            ``(n, 1, height, width)``.
        """
        dev = params.device
        side_h = _round_half_up(self.config.cutout_ratio * height)
        side_w = _round_half_up(self.config.cutout_ratio * width)
        cx = torch.floor(params.cutout[:, 0] * width).long().clamp_(0, width - 1)
        cy = torch.floor(params.cutout[:, 1] * height).long().clamp_(0, height - 1)
        x0, y0 = (cx - side_w // 2)[:, None], (cy - side_h // 2)[:, None]
        cols = torch.arange(width, device=dev)[None, :]
        rows = torch.arange(height, device=dev)[None, :]
        in_x = (cols >= x0) & (cols < x0 + side_w)
        in_y = (rows >= y0) & (rows < y0 + side_h)
        inside = in_y[:, :, None] & in_x[:, None, :] & params.cutout_on[:, None, None]
        return (~inside).to(dtype).unsqueeze(1)

    # ------------------------------------------------------------------ application

    def apply(self, x: Tensor, params: DSAParams, index: Tensor) -> Tensor:
        """Augment ``x``; image ``b`` gets transform ``index[b]``.

        Parameters
        ----------
        x : Tensor
            ``(B, C, H, W)`` floating images; gradients flow back into them.
        params : DSAParams
            Parameters from :meth:`sample` of a DSA with the same strategy.
        index : Tensor
            ``(B,)`` integer transform ids in ``[0, params.n)`` (not range-checked here, to avoid
            a device synchronisation).

        Returns
        -------
        Tensor
            ``(B, C, H, W)``, same dtype and device as ``x``.
        """
        if x.dim() != 4 or not x.is_floating_point():
            raise FairDistillError(f"DSA expects floating images of shape (B, C, H, W), got {tuple(x.shape)}")
        if index.dim() != 1 or index.shape[0] != x.shape[0] or index.is_floating_point():
            raise FairDistillError(
                f"DSA index must be an integer tensor of shape ({x.shape[0]},), got {index.dtype} {tuple(index.shape)}"
            )
        if params.ops != self.ops:
            raise FairDistillError(
                f"DSA params were drawn for strategy {'_'.join(params.ops)!r}, not {self.config.strategy!r}"
            )
        if params.device != x.device:
            params = params.to(x.device)
        index = index.to(device=x.device, dtype=torch.long)
        dtype = x.dtype
        height, width = int(x.shape[2]), int(x.shape[3])

        exact = self.config.exact
        if "color" in self.ops:
            x = _colour(x, params, index, only_drawn=not exact)
        if GEOMETRIC.intersection(self.ops):
            # In float32, grid_sample's own un-normalisation misses pixel centres by ~1e-6 pixel
            # at sizes like 28, so flips and whole-pixel crops would be off by up to ~3e-6;
            # sampling in float64 (``exact``) makes them exact to rounding (DSA as a whole 2.6x slower).
            # The matrices are composed in float64 either way. (MPS has no float64.)
            wide = dtype if x.device.type == "mps" else torch.float64
            theta = self.theta(params, height, width, wide)
            x = _warp(x, theta if exact else theta.to(dtype), index)
        if "cutout" in self.ops and bool(params.cutout_on.any()):  # an all-ones mask would change nothing
            x = x * self.cutout_mask(params, height, width, dtype)[index]
        return x

    def __call__(self, x: Tensor, *, generator: torch.Generator, index: Tensor | None = None) -> Tensor:
        """Draw parameters and apply them in one go.

        Parameters
        ----------
        x : Tensor
            ``(B, C, H, W)`` images.
        generator : torch.Generator
            Source of all randomness (may live on another device than ``x``).
        index : Tensor, optional
            ``(B,)`` transform ids; ``None`` gives every image its own transform.

        Returns
        -------
        Tensor
            The augmented batch.
        """
        if x.dim() != 4:
            raise FairDistillError(f"DSA expects images of shape (B, C, H, W), got {tuple(x.shape)}")
        if index is None:
            index = torch.arange(x.shape[0], device=x.device)
            n = int(x.shape[0])
        else:
            if index.numel() == 0 or index.is_floating_point():
                raise FairDistillError("DSA index must be a non-empty integer tensor")
            if int(index.min()) < 0:
                raise FairDistillError("DSA index must be non-negative")
            n = int(index.max()) + 1
        params = self.sample(n, generator=generator, device=x.device)
        return self.apply(x, params, index)


def _rows(on: Tensor) -> Tensor | None:
    """The batch rows where ``on`` holds (None: every row)."""
    return None if bool(on.all()) else on.nonzero().squeeze(1)


def _colour(x: Tensor, params: DSAParams, index: Tensor, *, only_drawn: bool) -> Tensor:
    """Brightness, saturation and contrast jitter of every image, or (``only_drawn``) of the images
    whose transform has any, the others passing through untouched rather than through an identity
    jitter (which rounds: ``(x - m) * 1 + m`` is not always ``x``)."""
    dtype = x.dtype
    rows = None
    if only_drawn:
        on = ((params.brightness != 0) | (params.saturation != 1) | (params.contrast != 1))[index]
        if not bool(on.any()):
            return x
        rows = _rows(on)
    part, index = (x, index) if rows is None else (x.index_select(0, rows), index[rows])
    part = part + params.brightness.to(dtype)[index].view(-1, 1, 1, 1)
    mean = part.mean(dim=1, keepdim=True)  # per-pixel grey level
    part = (part - mean) * params.saturation.to(dtype)[index].view(-1, 1, 1, 1) + mean
    mean = part.mean(dim=(1, 2, 3), keepdim=True)
    part = (part - mean) * params.contrast.to(dtype)[index].view(-1, 1, 1, 1) + mean
    return part if rows is None else x.index_copy(0, rows, part)


def _warp(x: Tensor, theta: Tensor, index: Tensor) -> Tensor:
    """``x`` resampled by ``theta[index]`` (bilinear, zero padding) in ``theta``'s dtype, cast back to
    ``x``'s. Images whose transform is exactly the identity (colour or cutout drawn, a zero crop, no
    flip) are passed through unsampled: the identity warp in float64 reproduces every float32 pixel
    exactly, so skipping it changes no value and no gradient, only the time."""
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=theta.dtype, device=theta.device)
    moved = (theta != identity).flatten(1).any(1)[index]
    if not bool(moved.any()):
        return x
    which = _rows(moved)
    part = x if which is None else x.index_select(0, which)
    grid = F.affine_grid(theta[index if which is None else index[which]], list(part.shape), align_corners=False)
    out = F.grid_sample(part.to(theta.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype) if which is None else x.index_copy(0, which, out.to(x.dtype))


def _round_half_up(value: float) -> int:
    """Round to the nearest integer, halves up (Python's ``round`` would give 14 for 14.5)."""
    return int(math.floor(value + 0.5))


def _check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise unless ``low <= value <= high`` (and finite where ``high`` is)."""
    if not isinstance(value, int | float) or math.isnan(value) or not low <= value <= high:
        raise FairDistillError(f"DSA {name} must lie in [{low}, {high}], got {value!r}")
