"""The knobs of a distillation run, as plain frozen dataclasses, and the bounds of every number.

:class:`MethodSpec` is *what* is distilled (backbone x target x distance x embedder x sampling);
:class:`DistillConfig` is *how much* (IPC, iterations, batch sizes, network) and
:class:`EvalConfig` how a synthetic set is judged. Presets (``presets.py``) fill them in.

The bounds live here, in one place, for the CLI and the Python API alike: every count is an
integer in [minimum, :data:`MAX_COUNT`] (10^9; above it a run could never finish and products of
counts leave int64), with a one-line warning above its :data:`SANE_COUNTS` entry; every rate is
finite (learning rates > 0, momenta in [0, 1), weight decays >= 0); a seed lies in [0, 2^63 - 1];
at most :data:`MAX_WORKERS` evaluation workers. ``validate()`` of each dataclass and
:func:`check_run_values` (the first lines of :func:`fairdistill.api.distill` and friends) apply them.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import FairDistillError

log = logging.getLogger("fairdistill")

# ---- the bounds of every number a user sets (one place; the CLI and the Python API share them) -----
#: the largest count (iterations, epochs, models, images per class, batch sizes, checkpoint interval)
#: any setting may take. Above it a value is refused: no run could finish it, and products of such
#: counts leave the 64-bit integers torch computes with.
MAX_COUNT = 10**9
#: counts above these are valid but odd: they are accepted with a one-line warning (a run of that size
#: takes days or more on any machine; the published settings are far below them)
SANE_COUNTS: dict[str, int] = {
    "iterations": 1_000_000,
    "epochs": 100_000,
    "full_epochs": 100_000,
    "num_models": 1_000,
    "batch_real": 100_000,
    "batch_size": 100_000,
    "warm_epochs": 100_000,
    "outer_loop": 10_000,
    "inner_loop": 10_000,
    "inner_patience": 100_000,
    "factor": 64,
}
#: the most evaluation worker processes a run may start (each one is a process with its own copy of the data)
MAX_WORKERS = 1_024
#: a seed is an integer in [0, MAX_SEED] (what a 64-bit generator state takes)
MAX_SEED = 2**63 - 1

_warned: set[tuple[str, int]] = set()


def _show_int(value: int) -> str:
    """A (possibly enormous) integer for a message: itself, or its order of magnitude (no 10^6-digit line)."""
    if abs(value) < 10**24:
        return str(value)
    digits = int(abs(value).bit_length() * math.log10(2))
    return f"{'-' if value < 0 else ''}about 10^{digits}"


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as a count in [``minimum``, :data:`MAX_COUNT`]; warn once when it passes :data:`SANE_COUNTS`.

    Refuses bools, floats and anything that is not an integer (``iterations=2.5``), with a
    :class:`FairDistillError` naming the setting.
    """
    if isinstance(value, bool):
        raise FairDistillError(f"{name} must be an integer, got {value!r}")
    if not isinstance(value, int):
        try:  # numpy and torch integers are integers
            value = operator.index(value)
        except TypeError:
            raise FairDistillError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise FairDistillError(f"{name} must be >= {minimum}, got {_show_int(value)}")
    if value > MAX_COUNT:
        raise FairDistillError(f"{name} must be at most {MAX_COUNT} (10^9), got {_show_int(value)}")
    sane = SANE_COUNTS.get(name)
    if sane is not None and value > sane and (name, value) not in _warned:
        _warned.add((name, value))  # a config is validated several times: say it once
        log.warning("%s %d is far beyond the usual (up to %d): this run will take very long", name, value, sane)
    return int(value)


def check_optional_count(name: str, value: Any, minimum: int = 0) -> int | None:
    """:func:`check_count`, with None passing through (the preset's or the schedule's value)."""
    return None if value is None else check_count(name, value, minimum)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in [0, :data:`MAX_SEED`]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FairDistillError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise FairDistillError(f"{name} must lie in [0, 2^63 - 1], got {_show_int(value)}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within the bounds (``low_open`` / ``high_open``: the bound itself is excluded)."""
    if isinstance(value, bool | str | bytes) or not isinstance(value, int | float):
        try:
            if isinstance(value, bool | str | bytes):
                raise TypeError
            value = float(value)  # numpy and torch scalars
        except (TypeError, ValueError):
            raise FairDistillError(f"{name} must be a number, got {value!r}") from None
    try:
        v = float(value)
    except OverflowError:  # an int beyond the floats
        raise FairDistillError(f"{name} must be a finite number, got {_show_int(value)}") from None
    if not math.isfinite(v):
        raise FairDistillError(f"{name} must be a finite number, got {value!r}")
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise FairDistillError(f"{name} must lie in {interval}, got {value!r}")
    return v


def check_share(name: str, value: Any, *, zero: bool = True) -> float | None:
    """An optional share in [0, 1] (``zero=False``: (0, 1]); None passes through."""
    if value is None:
        return None
    return check_number(name, value, low=0.0, high=1.0, low_open=not zero)


def check_workers(value: Any) -> int:
    """The number of evaluation worker processes: an integer in [1, :data:`MAX_WORKERS`]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FairDistillError(f"eval_workers must be an integer >= 1 (1: evaluate in this process), got {value!r}")
    if not 1 <= value <= MAX_WORKERS:
        raise FairDistillError(
            f"eval_workers must lie in [1, {MAX_WORKERS}] (1: evaluate in this process), got {_show_int(value)}"
        )
    return value


def check_run_values(
    *,
    seed: Any = 0,
    ipc: Any = 1,
    counts: dict[str, Any] | None = None,
    shares: dict[str, Any] | None = None,
    eval_workers: Any = 1,
) -> None:
    """The numbers a command is given, checked before any work (the API's first lines call this).

    ``counts``: optional counts by setting name (``iterations``, ``num_models``, ``epochs``,
    ``checkpoint_every``; None skipped), each checked by :func:`check_count` (``checkpoint_every``
    from 0, the others from 1 except ``iterations``); ``shares``: ``group_label_fraction`` (in
    (0, 1]) and ``group_label_noise`` (in [0, 1]).
    """
    check_seed(seed)
    check_count("ipc", ipc, 1)
    for name, value in (counts or {}).items():
        check_optional_count(name, value, 0 if name in ("iterations", "checkpoint_every") else 1)
    for name, value in (shares or {}).items():
        check_share(name, value, zero=name != "group_label_fraction")
    check_workers(eval_workers)


#: how DSA picks its operation when a network trains on a batch: per image, or one for the batch
DSA_MODES: tuple[str, ...] = ("single", "batch")
#: how a synthetic set starts (:class:`DistillConfig` ``init``)
INITS: tuple[str, ...] = ("real", "balanced", "noise")
#: optimisers of the synthetic images (:class:`DistillConfig` ``img_optimizer``)
IMG_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
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
    #: the starting synthetic set: "real" (random real images of the class, as the data comes), "balanced"
    #: (the group-balanced real subset that the ``random-balanced`` baseline selects with the same seed)
    #: or "noise"
    init: str = "real"
    #: the optimiser of the synthetic images: "sgd" (with ``img_momentum``, as every reference) or "adam"
    #: (a step of about ``lr_img`` per pixel whatever the loss's scale, so targets whose gradients differ
    #: in size, FairDD's sum over |A| groups against one barycenter term, take matched steps)
    img_optimizer: str = "sgd"
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dsa: bool = True
    #: the DSA operations; None: the dataset's own (digits are never flipped)
    dsa_strategy: str | None = None
    #: DSA's arithmetic exact to rounding (float64 warp, colour jitter on every image; DSA 2.6x
    #: slower); False: the images' dtype and only the drawn operations, as the reference codebases
    dsa_exact: bool = False
    #: real images per piece of a forward pass without gradients (DM's and CAFE's real batch); the
    #: same values bit for bit, only faster where the pieces fit in cache. None: the device's default
    #: (models.FORWARD_CHUNK: 32 on CPU, the whole batch on a GPU); 0: the whole batch
    real_chunk: int | None = None
    #: real images per piece of a real-batch gradient (DC's and IDC's real gradient): the pieces'
    #: gradients are summed, which equals the whole batch's gradient up to float rounding (the order of
    #: the sum over images; 1.3e-6 relative in float32 on 256 images) and is faster where a piece's activations
    #: fit in cache. None: the device's default (models.GRADIENT_CHUNK: 32 on CPU, the whole batch on a
    #: GPU); 0: the whole batch in one backward pass (the arithmetic before this setting existed)
    real_grad_chunk: int | None = None
    #: how DSA picks operations when a network is TRAINED on the synthetic set (warm start, inner loops):
    #: "single" (one operation per image) or "batch" (one operation for the whole batch, as the
    #: reference code's non-Siamese DSA does); distillation's Siamese DSA is always one transform per class
    train_dsa_mode: str = "single"
    warm_epochs: int | None = None  # None: COBRA's schedule for the IPC (embedders.warm_epochs_for)
    # the warm-started embedder's SGD (lr 0.01, batch 256; the reference: no momentum, no weight decay)
    warm_momentum: float = 0.9
    warm_weight_decay: float = 5e-4
    # DC (gradient matching) only: image updates per iteration, inner training epochs between them
    # (None: DC's schedule for the IPC, see backbones.bilevel.published_loops) and the inner lr
    outer_loop: int | None = None
    inner_loop: int | None = None
    lr_net: float = 0.01
    # CAFE (layer-wise feature alignment) only, see backbones.layers: the weight of each matched layer
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
    # full-size training image (backbones.formation.decode)
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
    # MTT (trajectory matching) only, see backbones.mtt and experts: the student's SGD steps on the
    # synthetic set per iteration, the expert epochs it must cover, the bound the start epoch is drawn
    # below (as MTT draws it), the learning rate of the learnable step size and that step size's start,
    # the synthetic images per student step (None: all of them), and whether the unrolled steps are
    # recomputed in the backward
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    batch_syn: int | None = None
    unroll_checkpoint: bool = False
    # MTT's experts (fairdistill.experts): how many, their epochs on the real data, their plain SGD
    # (MTT: lr 0.01, no momentum, no weight decay) and batch, DSA while they train, and where their
    # buffers live (None: the cache folder, keyed by the dataset and these settings)
    num_experts: int = 100
    expert_train_epochs: int = 50
    expert_lr: float = 0.01
    expert_batch: int = 256
    expert_dsa: bool = True
    experts_dir: str | None = None
    seed: int = 0

    def _validate_mtt(self) -> None:
        for name, low in (("syn_steps", 1), ("expert_epochs", 1), ("max_start_epoch", 1), ("num_experts", 1)):
            check_count(name, getattr(self, name), low)
        check_count("expert_train_epochs", self.expert_train_epochs, 1)
        check_count("expert_batch", self.expert_batch, 1)
        check_optional_count("batch_syn", self.batch_syn, 1)
        for name in ("lr_lr", "lr_teacher", "expert_lr"):
            check_number(name, getattr(self, name), low=0.0, low_open=True)

    def validate(self) -> DistillConfig:
        """Check every setting (types, ranges, finiteness; :data:`MAX_COUNT`), raising :class:`FairDistillError`."""
        check_count("ipc", self.ipc, 1)
        check_count("iterations", self.iterations, 0)
        check_count("batch_real", self.batch_real, 1)
        for name in ("real_chunk", "real_grad_chunk"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name), 0)
        check_number("lr_img", self.lr_img, low=0.0, low_open=True)
        check_number("img_momentum", self.img_momentum, low=0.0, high=1.0, high_open=True)
        check_seed(self.seed)
        if self.init not in INITS:
            raise FairDistillError(f"unknown init {self.init!r}; allowed: {', '.join(sorted(INITS))}")
        if self.img_optimizer not in IMG_OPTIMIZERS:
            raise FairDistillError(
                f"unknown img_optimizer {self.img_optimizer!r}; allowed: {', '.join(IMG_OPTIMIZERS)}"
            )
        check_optional_count("warm_epochs", self.warm_epochs, 0)
        check_optional_count("outer_loop", self.outer_loop, 1)
        check_optional_count("inner_loop", self.inner_loop, 0)
        check_number("lr_net", self.lr_net, low=0.0, low_open=True)
        if self.layer_weights is not None:
            if not self.layer_weights:
                raise FairDistillError("layer_weights must be non-empty (or None: CAFE's own)")
            for i, w in enumerate(self.layer_weights):
                check_number(f"layer_weights[{i}]", w, low=0.0)
        check_number("disc_weight", self.disc_weight, low=0.0)
        check_number("disc_temperature", self.disc_temperature, low=0.0, low_open=True)
        if self.inner_stop_acc is not None:
            check_number("inner_stop_acc", self.inner_stop_acc, low=0.0, high=1.0)
        check_optional_count("inner_patience", self.inner_patience, 1)
        check_count("factor", self.factor, 1)
        if self.train_dsa_mode not in DSA_MODES:
            raise FairDistillError(f"unknown train_dsa_mode {self.train_dsa_mode!r}; allowed: {', '.join(DSA_MODES)}")
        self._validate_mtt()
        if self.idc_init not in ("mix", "single"):
            raise FairDistillError(f"unknown idc_init {self.idc_init!r}; allowed: mix, single")
        if self.class_reduction not in ("sum", "mean"):
            raise FairDistillError(f"unknown class_reduction {self.class_reduction!r}; allowed: mean, sum")
        check_number("warm_momentum", self.warm_momentum, low=0.0, high=1.0, high_open=True)
        check_number("warm_weight_decay", self.warm_weight_decay, low=0.0)
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
    #: DSA's arithmetic exact to rounding (see DistillConfig.dsa_exact)
    dsa_exact: bool = False
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
        """Check every setting (types, ranges, finiteness; :data:`MAX_COUNT`), raising :class:`FairDistillError`."""
        from .models import MODELS

        check_count("num_models", self.num_models, 1)
        for name in (*self.architectures(), *self.arch_kwargs):
            MODELS.get(name)
        if len(set(self.architectures())) != len(self.architectures()):
            raise FairDistillError(f"evaluation models must be unique, got {', '.join(self.architectures())}")
        check_count("epochs", self.epochs, 1)
        check_count("full_epochs", self.full_epochs, 1)
        check_count("batch_size", self.batch_size, 1)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_seed(self.seed)
        if self.empty_cells not in ("ignore", "zero"):
            raise FairDistillError(f"unknown empty_cells {self.empty_cells!r}; allowed: ignore, zero")
        if self.dsa_mode not in DSA_MODES:
            raise FairDistillError(f"unknown dsa_mode {self.dsa_mode!r}; allowed: {', '.join(DSA_MODES)}")
        if self.schedule not in SCHEDULES:
            raise FairDistillError(f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
