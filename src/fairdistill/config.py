"""The knobs of a distillation run, as plain frozen dataclasses.

:class:`MethodSpec` is *what* is distilled (backbone x target x distance x embedder x sampling);
:class:`DistillConfig` is *how much* (IPC, iterations, batch sizes, network) and
:class:`EvalConfig` how a synthetic set is judged. Presets (``presets.py``) fill them in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import FairDistillError

#: how DSA picks its operation when a network trains on a batch: per image, or one for the batch
DSA_MODES: tuple[str, ...] = ("single", "batch")
#: evaluation training schedules (see :class:`EvalConfig`)
SCHEDULES: tuple[str, ...] = ("reference", "single")


@dataclass(frozen=True)
class MethodSpec:
    """One distillation method: a point in the backbone x target x distance x embedder design."""

    name: str
    backbone: str = "dm"
    target: str = "population"
    distance: str | None = None  # None: the backbone's default (dm: l2sq, dc: layer-cosine, idc: l2sq)
    embedder: str = "random"
    sampling: str | None = None  # None: the target's default ("class" for population, else "stratified")
    #: :class:`DistillConfig` fields this method alone sets differently from the run's config (a backbone
    #: that allows it lists them in ``method_settings``; e.g. COBRA-CAFE's layer weights and no
    #: discrimination term, distilled in lockstep with vanilla CAFE)
    settings: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> MethodSpec:
        """This spec with the backbone's default distance filled in (what runs, and what is recorded)."""
        if self.distance is not None:
            return self
        from .backbones import BACKBONES

        return replace(self, distance=BACKBONES.get(self.backbone).default_distance)

    def validate(self) -> MethodSpec:
        from .backbones import BACKBONES
        from .embedders import EMBEDDERS
        from .targets import get_target, resolve_sampling

        backbone = BACKBONES.get(self.backbone)
        # each backbone names the registry its distances come from (features vs gradients)
        backbone.distances.get(self.resolved().distance)
        EMBEDDERS.get(self.embedder)
        if backbone.embedders is not None and self.embedder not in backbone.embedders:
            raise FairDistillError(
                f"backbone {self.backbone!r} cannot use embedder {self.embedder!r}; allowed: "
                f"{', '.join(backbone.embedders)}"
            )
        target = get_target(self.target)
        resolve_sampling(target, self.sampling)
        backbone.check_target(target)
        unknown = sorted(set(self.settings) - set(backbone.method_settings))
        if unknown:
            allowed = ", ".join(backbone.method_settings) or "none"
            raise FairDistillError(
                f"method {self.name!r} sets {', '.join(unknown)} per method, which backbone {self.backbone!r} "
                f"cannot vary between methods of one run; per-method settings it allows: {allowed}"
            )
        return self

    def config_for(self, config: DistillConfig) -> DistillConfig:
        """The run's ``config`` with this method's own ``settings`` applied."""
        return replace(config, **self.settings).validate() if self.settings else config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DistillConfig:
    """Compute settings of a distillation run (filled in by a preset's profile)."""

    ipc: int = 10
    iterations: int = 500
    lr_img: float = 1.0
    img_momentum: float = 0.5
    batch_real: int = 64  # real images per class per iteration
    init: str = "real"  # "real" (random real images of the class) or "noise"
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dsa: bool = True
    #: the DSA operations; None: the dataset's own (digits are never flipped)
    dsa_strategy: str | None = None
    #: how DSA picks operations when a network is TRAINED on the synthetic set (warm start, inner loops):
    #: "single" (one operation per image) or "batch" (one operation for the whole batch, as the
    #: reference code's non-Siamese DSA does); distillation's Siamese DSA is always one transform per class
    train_dsa_mode: str = "single"
    warm_epochs: int | None = None  # None: COBRA's schedule for the IPC (embedders.warm_epochs_for)
    # the warm-started embedder's SGD (lr 0.01, batch 256; the reference: no momentum, no weight decay)
    warm_momentum: float = 0.9
    warm_weight_decay: float = 5e-4
    # DC (gradient matching) only: image updates per iteration, inner training epochs between them
    # (None: DC's schedule for the IPC, see backbones.dc.published_loops) and the inner lr
    outer_loop: int | None = None
    inner_loop: int | None = None
    lr_net: float = 0.01
    # CAFE (layer-wise feature alignment) only, see backbones.cafe: the weight of each matched layer
    # (the blocks' outputs, then the embedding; None: CAFE's own weights), the discrimination
    # term's weight and temperature, and when the inner loop stops before ``inner_loop`` epochs
    # (the network's accuracy on the synthetic set reaches ``inner_stop_acc``, or has not improved for
    # ``inner_patience`` epochs; None turns either off)
    layer_weights: tuple[float, ...] | None = None
    disc_weight: float = 0.01
    disc_temperature: float = 1.0
    inner_stop_acc: float | None = 1.0
    inner_patience: int | None = 5
    # IDC only: multi-formation factor; each stored image is cut into factor x factor tiles, each one a
    # full-size training image (backbones.idc.decode)
    factor: int = 2
    #: IDC: "mix" (factor**2 real images per stored image, one per tile, as IDC published) or "single"
    #: (one real image downsampled into the whole stored image, as COBRA's IDC script does)
    idc_init: str = "mix"
    #: IDC: ``align_corners`` of the bilinear upsampling that decodes the tiles
    idc_align_corners: bool = False
    #: IDC: clamp the stored pixels to [0, 1] (in model space) at the start of every iteration
    clamp_pixels: bool = True
    #: CAFE: "sum" of the per-class feature losses, or "mean" over the classes (COBRA-CAFE divides by K)
    class_reduction: str = "sum"
    seed: int = 0

    def validate(self) -> DistillConfig:
        if self.ipc < 1:
            raise FairDistillError(f"ipc must be >= 1, got {self.ipc}")
        if self.iterations < 0:
            raise FairDistillError(f"iterations must be >= 0, got {self.iterations}")
        if self.batch_real < 1:
            raise FairDistillError(f"batch_real must be >= 1, got {self.batch_real}")
        if self.init not in ("real", "noise"):
            raise FairDistillError(f"unknown init {self.init!r}; allowed: noise, real")
        if self.warm_epochs is not None and self.warm_epochs < 0:
            raise FairDistillError(f"warm_epochs must be >= 0, got {self.warm_epochs}")
        if self.outer_loop is not None and self.outer_loop < 1:
            raise FairDistillError(f"outer_loop must be >= 1, got {self.outer_loop}")
        if self.inner_loop is not None and self.inner_loop < 0:
            raise FairDistillError(f"inner_loop must be >= 0, got {self.inner_loop}")
        if not self.lr_net > 0:
            raise FairDistillError(f"lr_net must be > 0, got {self.lr_net}")
        if self.layer_weights is not None and (not self.layer_weights or min(self.layer_weights) < 0):
            raise FairDistillError(f"layer_weights must be non-empty and >= 0, got {self.layer_weights}")
        if self.disc_weight < 0:
            raise FairDistillError(f"disc_weight must be >= 0, got {self.disc_weight}")
        if not self.disc_temperature > 0:
            raise FairDistillError(f"disc_temperature must be > 0, got {self.disc_temperature}")
        if self.inner_stop_acc is not None and not 0 <= self.inner_stop_acc <= 1:
            raise FairDistillError(f"inner_stop_acc must lie in [0, 1] (or be None), got {self.inner_stop_acc}")
        if self.inner_patience is not None and self.inner_patience < 1:
            raise FairDistillError(f"inner_patience must be >= 1 (or None), got {self.inner_patience}")
        if self.factor < 1:
            raise FairDistillError(f"factor must be >= 1, got {self.factor}")
        if self.train_dsa_mode not in DSA_MODES:
            raise FairDistillError(f"unknown train_dsa_mode {self.train_dsa_mode!r}; allowed: {', '.join(DSA_MODES)}")
        if self.idc_init not in ("mix", "single"):
            raise FairDistillError(f"unknown idc_init {self.idc_init!r}; allowed: mix, single")
        if self.class_reduction not in ("sum", "mean"):
            raise FairDistillError(f"unknown class_reduction {self.class_reduction!r}; allowed: mean, sum")
        if self.warm_momentum < 0 or self.warm_weight_decay < 0:
            raise FairDistillError("warm_momentum and warm_weight_decay must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalConfig:
    """How a synthetic set is judged: train ``num_models`` fresh networks on it, test on real data."""

    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_models: int = 5
    epochs: int = 1000
    full_epochs: int = 30  # epochs for the full-training-set baseline
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    #: the DSA operations; None: the dataset's own (digits are never flipped)
    dsa_strategy: str | None = None
    #: "single": one DSA operation per image; "batch": one per batch (the reference code's non-Siamese DSA)
    dsa_mode: str = "single"
    #: "reference": E + 1 epochs, lr x 0.1 after epoch E // 2 + 1 by a NEW optimiser (momentum reset), as
    #: both reference codebases train; "single": E epochs, one optimiser, lr x 0.1 from epoch E // 2
    schedule: str = "reference"
    empty_cells: str = "ignore"
    seed: int = 0
    # cross-architecture evaluation: train num_models networks of each of these (empty: just ``model``);
    # ``model_kwargs`` configure ``model``, ``arch_kwargs[name]`` any architecture (e.g. a smaller width)
    eval_models: tuple[str, ...] = ()
    arch_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def architectures(self) -> tuple[str, ...]:
        """The architectures evaluated, the headline one (reported at the top level) first."""
        return tuple(self.eval_models) or (self.model,)

    def kwargs_for(self, name: str) -> dict[str, Any]:
        """Constructor knobs of architecture ``name``."""
        base = self.model_kwargs if name == self.model else {}
        return {**base, **self.arch_kwargs.get(name, {})}

    def validate(self) -> EvalConfig:
        from .models import MODELS

        if self.num_models < 1:
            raise FairDistillError(f"num_models must be >= 1, got {self.num_models}")
        for name in (*self.architectures(), *self.arch_kwargs):
            MODELS.get(name)
        if len(set(self.architectures())) != len(self.architectures()):
            raise FairDistillError(f"evaluation models must be unique, got {', '.join(self.architectures())}")
        if self.epochs < 1 or self.full_epochs < 1:
            raise FairDistillError("evaluation epochs must be >= 1")
        if self.empty_cells not in ("ignore", "zero"):
            raise FairDistillError(f"unknown empty_cells {self.empty_cells!r}; allowed: ignore, zero")
        if self.dsa_mode not in DSA_MODES:
            raise FairDistillError(f"unknown dsa_mode {self.dsa_mode!r}; allowed: {', '.join(DSA_MODES)}")
        if self.schedule not in SCHEDULES:
            raise FairDistillError(f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
