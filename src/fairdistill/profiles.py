"""Compute profiles as data: every setting with where it comes from.

A profile gives, per backbone, the settings of :class:`~fairdistill.config.DistillConfig` (how a
run distils) and :class:`~fairdistill.config.EvalConfig` (how its sets are judged), and may change
the knobs of the method recipes (``presets.py``) for that backbone. Each setting is a
:class:`Setting`: a value (or a rule that gives it from the IPC and the dataset) and its *source*,
either a reference script and flag (``COBRA train_dm.py --Iteration 2600``) or
``fairdistill: <why>`` for a choice of ours.

Two kinds of profile:

* ``cobra-paper`` and ``fairdd-paper`` run each method the way that paper's scripts ran it
  (``../shared/PUBLISHED.md`` section 2; a test holds them to a transcription of it). Where a paper
  has no script for a method (FairDD has no COBRA; COBRA's CAFE script has no FairDD mode) the
  method is either absent or its knobs say ``fairdistill`` in their source.
* ``cpu`` and ``gpu`` are ours: ``gpu`` is our recommended GPU recipe, ``cpu`` finishes the default
  ``compare`` in minutes on two cores. Their improvements (group-stratified batches, DSA on gradient
  matching, digits never flipped, the CAFE early stop, a warm start with momentum) carry our name.

A setting a profile does not name takes the library default of :data:`FIELD_SOURCES`.
:func:`cpu_scale` cuts a paper profile down to what two CPU cores can run, and lists every cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .config import DistillConfig, EvalConfig, MethodSpec
from .errors import FairDistillError, unknown_name
from .registry import Registry
from .targets import get_target

OURS = "fairdistill"


@dataclass(frozen=True)
class Context:
    """What a rule may depend on: the IPC, and the dataset once it is known."""

    ipc: int
    dataset: str | None = None


@dataclass(frozen=True)
class Setting:
    """One setting and its source; ``rule`` (when given) computes the value from a :class:`Context`."""

    value: Any
    source: str
    rule: Callable[[Context], Any] | None = None

    def resolve(self, ctx: Context) -> Any:
        return self.rule(ctx) if self.rule is not None else self.value


def ours(value: Any, why: str, rule: Callable[[Context], Any] | None = None) -> Setting:
    return Setting(value, f"{OURS}: {why}", rule)


def is_ours(source: str) -> bool:
    return source.startswith(OURS)


#: the source of every config field a profile does not set (the library default)
FIELD_SOURCES: dict[str, str] = {
    "ipc": "the command line (--ipc)",
    "seed": "the command line (--seed)",
    "iterations": f"{OURS}: library default",
    "lr_img": f"{OURS}: library default",
    "img_momentum": "both reference codebases: image SGD with momentum 0.5",
    "img_optimizer": "both reference codebases: SGD on the images",
    "batch_real": f"{OURS}: library default",
    "init": "both reference codebases: --init real (random real images of the class)",
    "model": "both reference codebases: ConvNet",
    "model_kwargs": f"{OURS}: library default",
    "dsa": f"{OURS}: DSA on (library default)",
    "dsa_strategy": f"{OURS}: the dataset's own strategy (digits and clothes are never flipped)",
    "dsa_exact": "both reference codebases: DSA in float32, only the drawn operation applied "
    "(--dsa-exact: fairdistill's float64 warp, exact to rounding)",
    "train_dsa_mode": f"{OURS}: one DSA operation per image when a network trains",
    "real_chunk": f"{OURS}: the real batch's forward in pieces of the device's size (the same values, faster)",
    "real_grad_chunk": f"{OURS}: DC's and IDC's real gradient summed over pieces of the device's size "
    "(the same gradient up to float rounding, faster; 0: one backward pass, as the reference codebases)",
    "warm_epochs": "COBRA train_dm.py --cobra_warmup_epochs -1: 50 at IPC 50, 100 at IPC 100, else 10",
    "warm_momentum": f"{OURS}: momentum 0.9 in the warm start (the reference: none)",
    "warm_weight_decay": f"{OURS}: weight decay 5e-4 in the warm start (the reference: none)",
    "outer_loop": f"{OURS}: DC's get_loops, an IPC between two defined ones taking the lower one's",
    "inner_loop": f"{OURS}: DC's get_loops, an IPC between two defined ones taking the lower one's",
    "lr_net": "both reference codebases: --lr_net 0.01",
    "layer_weights": "CAFE (Wang et al.) distill.py defaults: 0.1, 0.1, 1 on the blocks, 2 on the embedding",
    "disc_weight": "CAFE --inner_weight 0.01",
    "disc_temperature": "CAFE: no temperature (1)",
    "inner_stop_acc": f"{OURS}: the CAFE inner loop stops once the net fits the synthetic set",
    "inner_patience": f"{OURS}: the CAFE inner loop stops after 5 epochs without progress",
    "factor": "IDC (Kim et al.): multi-formation factor 2",
    "idc_init": "IDC (Kim et al.): init 'mix', factor**2 real images per stored image",
    "idc_align_corners": "IDC (Kim et al.): bilinear decoding with align_corners=False",
    "clamp_pixels": "IDC (Kim et al.): stored pixels clamped to [0, 1] every iteration",
    "class_reduction": "CAFE: the feature losses summed over the classes",
    "syn_steps": "MTT (Cazenavette et al.): 20 student steps (library default)",
    "expert_epochs": "MTT (Cazenavette et al.): 2 expert epochs per segment",
    "max_start_epoch": "MTT (Cazenavette et al.): --max_start_epoch 20 (start epochs 0-19)",
    "lr_lr": "MTT (Cazenavette et al.): --lr_lr 1e-05",
    "lr_teacher": "MTT (Cazenavette et al.): the step size starts at 0.01",
    "batch_syn": "MTT (Cazenavette et al.): the whole synthetic set per student step",
    "unroll_checkpoint": f"{OURS}: the plain unroll (--unroll-checkpoint recomputes the steps in the backward)",
    "num_experts": "MTT (Cazenavette et al.) buffer.py: 100 experts",
    "expert_train_epochs": "MTT (Cazenavette et al.) buffer.py: 50 epochs",
    "expert_lr": "MTT (Cazenavette et al.) buffer.py: plain SGD at 0.01",
    "expert_batch": "MTT (Cazenavette et al.) buffer.py: batch 256",
    "expert_dsa": "MTT (Cazenavette et al.) buffer.py: DSA on",
    "experts_dir": f"{OURS}: the cache folder, keyed by the dataset and the expert settings",
    # evaluation
    "num_models": f"{OURS}: library default",
    "epochs": f"{OURS}: library default",
    "full_epochs": f"{OURS}: the full-training-set baseline (no reference script trains one)",
    "lr": "both reference codebases (evaluate_synset): SGD lr 0.01",
    "momentum": "both reference codebases (evaluate_synset): momentum 0.9",
    "weight_decay": "both reference codebases (evaluate_synset): weight decay 5e-4",
    "batch_size": "both reference codebases (evaluate_synset): batch 256",
    "dsa_mode": f"{OURS}: one DSA operation per image",
    "schedule": "both reference codebases (evaluate_synset): E + 1 epochs, a new optimiser at lr x 0.1 "
    "after epoch E // 2 + 1",
    "empty_cells": f"{OURS}: an empty (group, class) test cell has no TPR and is left out, with a warning",
    "eval_models": "the command line (--eval-models)",
    "arch_kwargs": f"{OURS}: library default",
}

#: the :class:`DistillConfig` fields each backbone reads (``presets show`` prints these)
_COMMON = (
    "ipc", "iterations", "lr_img", "img_momentum", "img_optimizer", "batch_real", "init", "model",
    "model_kwargs", "dsa", "dsa_strategy", "dsa_exact", "seed",
)  # fmt: skip
BACKBONE_FIELDS: dict[str, tuple[str, ...]] = {
    "mtt": (
        *_COMMON, "syn_steps", "expert_epochs", "max_start_epoch", "lr_lr", "lr_teacher", "batch_syn",
        "unroll_checkpoint", "num_experts", "expert_train_epochs", "expert_lr", "expert_batch", "expert_dsa",
        "experts_dir",
    ),  # fmt: skip
    "dm": (*_COMMON, "train_dsa_mode", "warm_epochs", "warm_momentum", "warm_weight_decay"),
    "dc": (*_COMMON, "train_dsa_mode", "outer_loop", "inner_loop", "lr_net", "real_grad_chunk"),
    "idc": (
        *_COMMON,
        "train_dsa_mode",
        "outer_loop",
        "inner_loop",
        "lr_net",
        "real_grad_chunk",
        "factor",
        "idc_init",
        "idc_align_corners",
        "clamp_pixels",
    ),  # fmt: skip
    "cafe": (
        *_COMMON,
        "train_dsa_mode",
        "outer_loop",
        "inner_loop",
        "lr_net",
        "layer_weights",
        "disc_weight",
        "disc_temperature",
        "inner_stop_acc",
        "inner_patience",
        "class_reduction",
    ),  # fmt: skip
}
EVAL_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(EvalConfig) if f.name not in ("seed", "model", "eval_models", "arch_kwargs")
)
#: the method-recipe knobs a profile may set
METHOD_KNOBS: tuple[str, ...] = ("target", "distance", "embedder", "sampling", "settings")


@dataclass(frozen=True)
class BackboneProfile:
    """One backbone's settings in a profile.

    ``methods``: recipe -> knob -> :class:`Setting` of the recipes this profile changes (a paper
    profile names every knob of every recipe it runs); ``recipes``: the recipes the profile runs on
    this backbone (``None``: every registered one); ``group_settings``: per-method settings
    (:data:`fairdistill.backbones.base.IMAGE_SETTINGS`) that every recipe with a group target
    (FairDD, the barycenters, uniform sampling) gets unless the recipe sets them itself.
    """

    distill: Mapping[str, Setting]
    evaluation: Mapping[str, Setting]
    methods: Mapping[str, Mapping[str, Setting]] = field(default_factory=dict)
    recipes: tuple[str, ...] | None = None
    group_settings: Mapping[str, Setting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.distill:
            if name not in DistillConfig.__dataclass_fields__:
                raise ValueError(f"profile names an unknown distillation setting {name!r}")
        for name in self.evaluation:
            if name not in EvalConfig.__dataclass_fields__:
                raise ValueError(f"profile names an unknown evaluation setting {name!r}")
        for recipe, knobs in self.methods.items():
            for knob in knobs:
                if knob not in METHOD_KNOBS:
                    raise ValueError(f"profile sets an unknown knob {knob!r} of recipe {recipe!r}")


@dataclass(frozen=True)
class Profile:
    """Compute settings per backbone, with provenance; ``paper`` names the paper a profile follows."""

    name: str
    description: str
    backbones: Mapping[str, BackboneProfile]
    paper: str | None = None

    def of(self, backbone: str) -> BackboneProfile:
        try:
            return self.backbones[backbone]
        except KeyError:
            raise unknown_name(f"backbone for profile {self.name!r}", backbone, self.backbones) from None

    def configs(self, ipc: int, backbone: str, dataset: str | None = None) -> tuple[DistillConfig, EvalConfig]:
        ctx = Context(ipc, dataset)
        bp = self.of(backbone)
        distill = DistillConfig(ipc=ipc, **{k: s.resolve(ctx) for k, s in bp.distill.items()})
        evaluation = EvalConfig(**{k: s.resolve(ctx) for k, s in bp.evaluation.items()})
        return distill, evaluation

    def check_recipe(self, recipe: str, backbone: str) -> None:
        allowed = self.of(backbone).recipes
        if allowed is not None and recipe not in allowed:
            raise FairDistillError(
                f"profile {self.name!r} has no recipe {recipe!r} for backbone {backbone!r} "
                f"(the {self.paper or self.name} scripts run: {', '.join(allowed)})"
            )

    def method(self, base: MethodSpec, recipe: str, backbone: str, ipc: int = 10) -> MethodSpec:
        """The recipe ``base`` with this profile's knobs for it."""
        self.check_recipe(recipe, backbone)
        bp = self.of(backbone)
        knobs = bp.methods.get(recipe, {})
        ctx = Context(ipc)
        spec = replace(base, **{k: s.resolve(ctx) for k, s in knobs.items()})
        extra = self.group_settings_for(spec, backbone)
        return replace(spec, settings={**extra, **spec.settings}) if extra else spec

    def group_settings_for(self, spec: MethodSpec, backbone: str) -> dict[str, Any]:
        """The :attr:`BackboneProfile.group_settings` that ``spec`` gets (none for a population target)."""
        bp = self.of(backbone)
        if not bp.group_settings or get_target(spec.target).default_sampling != "stratified":
            return {}
        return {k: s.value for k, s in bp.group_settings.items() if k not in spec.settings}

    def settings(self, ipc: int, backbone: str, dataset: str | None = None) -> dict[str, dict[str, tuple[Any, str]]]:
        """Every setting the backbone reads, resolved, with its source: {"distill": ..., "evaluation": ...}."""
        distill, evaluation = self.configs(ipc, backbone, dataset)
        bp = self.of(backbone)
        out: dict[str, dict[str, tuple[Any, str]]] = {"distill": {}, "evaluation": {}}
        for name in BACKBONE_FIELDS[backbone]:
            src = bp.distill[name].source if name in bp.distill else FIELD_SOURCES[name]
            out["distill"][name] = (getattr(distill, name), src)
        for name in EVAL_FIELDS:
            src = bp.evaluation[name].source if name in bp.evaluation else FIELD_SOURCES[name]
            out["evaluation"][name] = (getattr(evaluation, name), src)
        return out


# ---- shared pieces -------------------------------------------------------------------------------------
NET128 = {"width": 128, "depth": 3, "norm": "instance"}
NET32 = {"width": 32, "depth": 3, "norm": "instance"}
NET16 = {"width": 16, "depth": 3, "norm": "instance"}
#: the DSA strategy every reference script passes (flips included, also for digits)
REF_DSA = "color_crop_cutout_flip_scale_rotate"

_CONVNET = "utils.get_default_convnet_setting: ConvNet width 128, depth 3, instance norm, ReLU, average pooling"


def _loops_cobra(ctx: Context) -> tuple[int, int]:
    if ctx.ipc < 10:
        return (5, 10)
    table = {10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    if ctx.ipc > 50:
        return (100, 10)
    if ctx.ipc not in table:
        raise FairDistillError(
            f"COBRA's get_loops defines no schedule for IPC {ctx.ipc} (defined: < 10, 10-50 by 10, > 50)"
        )
    return table[ctx.ipc]


def _loops_fairdd(ctx: Context) -> tuple[int, int]:
    table = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    if ctx.ipc not in table:
        raise FairDistillError(
            f"FairDD's get_loops defines no schedule for IPC {ctx.ipc} (defined: 1, 10, 20, 30, 40, 50)"
        )
    return table[ctx.ipc]


def _loop_settings(rule: Callable[[Context], tuple[int, int]], where: str) -> dict[str, Setting]:
    return {
        "outer_loop": Setting(None, f"{where} get_loops(ipc) outer", lambda c: rule(c)[0]),
        "inner_loop": Setting(None, f"{where} get_loops(ipc) inner", lambda c: rule(c)[1]),
    }


def _paper_common(script: str) -> dict[str, Setting]:
    return {
        "img_momentum": Setting(0.5, f"{script}: SGD([image_syn], momentum=0.5)"),
        "img_optimizer": Setting("sgd", f"{script}: torch.optim.SGD on the synthetic images"),
        "init": Setting("real", f"{script} --init real"),
        "model": Setting("convnet", f"{script} --model ConvNet"),
        "model_kwargs": Setting(dict(NET128), _CONVNET),
        "dsa_exact": Setting(False, f"{script}: utils.DiffAugment in the images' float32, the drawn operation only"),
    }


def _real_gradient(script: str) -> dict[str, Setting]:
    """DC's and IDC's real gradient: the script's one backward pass over the batch equals the sum over
    pieces up to float rounding, so a paper profile takes the device's piece size like our profiles."""
    return {
        "real_grad_chunk": Setting(
            None,
            f"{script}: one backward pass over the real batch; fairdistill sums the gradients of pieces of the "
            "device's size (models.GRADIENT_CHUNK; the same gradient up to float rounding; 0: one pass)",
        )
    }


def _dsa_off(source: str) -> dict[str, Setting]:
    """A script that runs without DSA: off, no strategy, and the (unused) training mode."""
    return {
        "dsa": Setting(False, source),
        "dsa_strategy": Setting(None, source),
        "train_dsa_mode": Setting("batch", f"{source} (unused: DSA off)"),
    }


def _paper_eval(script: str, models: int, epochs: int, dsa: bool, flags: str) -> dict[str, Setting]:
    aug = (
        f"{script}: DSA {REF_DSA} in evaluate_synset" if dsa else f"{script}: no augmentation (DSA off, dc_aug 'none')"
    )
    return {
        "model_kwargs": Setting(dict(NET128), _CONVNET),
        "num_models": Setting(models, f"{script} {flags.split()[0]}"),
        "epochs": Setting(epochs, f"{script} {' '.join(flags.split()[1:])}"),
        "dsa": Setting(dsa, aug),
        "dsa_strategy": Setting(REF_DSA if dsa else None, aug),
        "dsa_mode": Setting("batch", "utils.DiffAugment(seed=-1): non-Siamese, one operation family per batch"),
        "schedule": Setting(
            "reference", "utils.evaluate_synset: Epoch + 1 epochs, a new SGD at lr x 0.1 after epoch Epoch // 2 + 1"
        ),  # fmt: skip
        "empty_cells": Setting("zero", "utils.evaluate_synset: an empty test cell counts as TPR 0 (1e-8 guard)"),
        "full_epochs": ours(50, "the full-training-set baseline (no reference script trains one)"),
    }


def _method(target: str, distance: str, embedder: str, why: str, **extra: Setting) -> dict[str, Setting]:
    return {
        "target": Setting(target, why),
        "distance": Setting(distance, why),
        "embedder": Setting(embedder, why),
        "sampling": Setting("class", "get_images(c, n): a uniform draw within the class (no group stratification)"),
        "settings": extra.pop("settings", Setting({}, why)),
    }


# ---- cobra-paper -----------------------------------------------------------------------------------------
def _cobra_dm() -> BackboneProfile:
    s = "COBRA train_dm.py"
    distill = {
        **_paper_common(s),
        "iterations": Setting(2600, f"{s} --Iteration 2600"),
        "lr_img": Setting(1.0, f"{s} --lr_img 1.0"),
        "batch_real": Setting(600, f"{s} --batch_real 600"),
        "dsa": Setting(True, f"{s} --dsa_strategy {REF_DSA}"),
        "dsa_strategy": Setting(REF_DSA, f"{s} --dsa_strategy {REF_DSA}"),
        "train_dsa_mode": Setting("batch", f"{s}: the warm start's epoch2(aug=True), non-Siamese DSA"),
        "warm_epochs": Setting(
            None,
            f"{s} --cobra_warmup_epochs -1: 50 at IPC 50, 100 at IPC 100, else 10",
            lambda c: {50: 50, 100: 100}.get(c.ipc, 10),
        ),  # fmt: skip
        "warm_momentum": Setting(0.0, f"{s}: SGD(net.parameters(), lr=args.lr_net), no momentum"),
        "warm_weight_decay": Setting(0.0, f"{s}: SGD(net.parameters(), lr=args.lr_net), no weight decay"),
    }
    methods = {
        "vanilla": _method("population", "l2sq", "random", f"{s} --mode vanilla: squared L2 to the batch mean"),
        "fairdd": _method(
            "group-sync", "l2sq", "random", f"{s} --mode fairdd: squared L2 to each present group, summed"
        ),
        "cobra": _method(
            "barycenter", "l1", "warm", f"{s} --mode cobra: L1 to the mean of the present groups, warm-started net"
        ),
    }
    return BackboneProfile(distill, _paper_eval(s, 5, 1500, True, "--num_eval 5 --epoch_eval_train 1500"), methods,
                           recipes=("vanilla", "fairdd", "cobra"))  # fmt: skip


def _cobra_gradient(script: str, *, idc: bool) -> BackboneProfile:
    s = f"COBRA {script}"
    distill: dict[str, Setting] = {
        **_paper_common(s),
        "iterations": Setting(1000, f"{s} --Iteration 1000"),
        "lr_img": Setting(0.1, f"{s} --lr_img 0.1"),
        "lr_net": Setting(0.01, f"{s} --lr_net 0.01"),
        "batch_real": Setting(256, f"{s} --batch_real 256"),
        **_dsa_off(f"{s} --dsa_strategy None"),
        **_loop_settings(_loops_cobra, s),
        **_real_gradient(s),
    }
    embedder, net_note = "random", "the net trained on the synthetic set between image updates (get_loops inner)"
    if idc:
        outer = Setting(None, f"{s}: get_loops(ipc) outer, forced to 30 at IPC 50 and 100",
                        lambda c: 30 if c.ipc in (50, 100) else _loops_cobra(c)[0])  # fmt: skip
        distill.update(
            outer_loop=outer,
            inner_loop=Setting(0, f"{s}: the random network is never trained"),
            factor=Setting(2, f"{s} --factor -1: 4 for BFFHQ / UTKFace (3 at IPC >= 100), else 2",
                           lambda c: (3 if c.ipc >= 100 else 4) if c.dataset in ("bffhq", "utkface") else 2),
            idc_init=Setting("single", f"{s}: each stored image starts as one real image of its class"),
            idc_align_corners=Setting(True, f"{s} decode_zoom: nn.Upsample(mode='bilinear', align_corners=True)"),
            clamp_pixels=Setting(False, f"{s}: no pixel clamping"),
        )  # fmt: skip
        embedder, net_note = "fixed", "a fresh random network per iteration, never trained"
    why = f"{s} --dis_metric ours (per-unit 1 - cos, 1-D parameters ignored); {net_note}"
    methods = {
        "vanilla": _method("population", "layer-cosine", embedder, f"{s} --mode vanilla; {why}"),
        "fairdd": _method(
            "group-sync-mean",
            "layer-cosine",
            embedder,
            f"{s} --mode fairdd: the per-group distances over the "
            f"number of groups present (a mean, where FairDD's own main_DC.py sums); {why}",
        ),  # fmt: skip
        "cobra": _method(
            "barycenter", "layer-cosine", embedder, f"{s} --mode cobra: to the mean of the group gradients; {why}"
        ),
    }
    models = (3, "--num_eval 3 --epoch_eval_train 1000") if idc else (5, "--num_eval 5 --epoch_eval_train 1000")
    evaluation = _paper_eval(s, models[0], 1000, False, models[1])
    return BackboneProfile(distill, evaluation, methods, recipes=("vanilla", "fairdd", "cobra"))


def _cobra_cafe() -> BackboneProfile:
    s = "COBRA train_cafe.py"
    distill = {
        **_paper_common(s),
        "iterations": Setting(2000, f"{s} --Iteration 2000"),
        "lr_img": Setting(0.1, f"{s} --lr_img 0.1, halved at 1200, 1600, 1800 (adjust_learning_rate)"),
        "lr_net": Setting(0.01, f"{s} --lr_net 0.01"),
        "batch_real": Setting(256, f"{s} --batch_real 256"),
        **_dsa_off(f"{s} --dsa_strategy None"),
        **_loop_settings(_loops_cobra, s),
        "inner_stop_acc": Setting(None, f"{s}: the inner loop always runs its get_loops epochs"),
        "inner_patience": Setting(None, f"{s}: acc_watcher is reset every outer step, so the early stop never fires"),
        "layer_weights": Setting(
            (1.0, 1.0, 1.0, 2.0),
            f"{s} vanilla: --first..--fourth_weight 1 on f1-f4, plus the embedding term (f4 "
            "pooled and f5 flattened hold the same features: weight 2 on the embedding)",
        ),  # fmt: skip
        "disc_weight": Setting(0.01, f"{s} vanilla: --inner_weight 0.01 on the summed CE"),
        "disc_temperature": Setting(1.0, f"{s}: no temperature"),
        "class_reduction": Setting("sum", f"{s} vanilla: feature_mse_class_mean sums over the classes"),
    }
    cobra_settings = Setting(
        {"layer_weights": (1.0, 1.0, 0.1, 1.1), "disc_weight": 0.0, "class_reduction": "mean"},
        f"{s} --mode cobra: weight 1 on the embedding, f1, f2 and 0.1 on f3 and f4 (pooled f3 = the embedding: "
        "1.1 on it), no discrimination or real CE term, each class's sum-reduced MSE divided by the classes",
    )
    methods = {
        "vanilla": _method("population", "l2sq", "random", f"{s} --mode vanilla: class-mean MSE per layer"),
        "cobra": _method(
            "barycenter",
            "l2sq",
            "random",
            f"{s} --mode cobra: to the mean of the present groups' means per layer",
            settings=cobra_settings,
        ),
    }
    evaluation = _paper_eval(s, 2, 1000, False, "--num_eval 2 --epoch_eval_train 1000")
    # the real CE term of the vanilla loss does not depend on the synthetic images: it moves none of them
    return BackboneProfile(distill, evaluation, methods, recipes=("vanilla", "cobra"))


# ---- fairdd-paper ----------------------------------------------------------------------------------------
_NO_COBRA = f"{OURS}: FairDD's scripts have no COBRA mode; COBRA's target on FairDD's schedule"


def _fairdd_dm() -> BackboneProfile:
    s = "FairDD main_DM.py"
    distill = {
        **_paper_common(s),
        "iterations": Setting(20000, f"{s} --Iteration 20000"),
        "lr_img": Setting(1.0, f"{s} --lr_img 1 (10 at IPC 100)", lambda c: 10.0 if c.ipc == 100 else 1.0),
        "batch_real": Setting(256, f"{s} --batch_real 256"),
        "dsa": Setting(True, f"{s} --dsa_strategy {REF_DSA}"),
        "dsa_strategy": Setting(REF_DSA, f"{s} --dsa_strategy {REF_DSA}"),
        "train_dsa_mode": Setting("batch", f"{_NO_COBRA} (COBRA train_dm.py's warm start: non-Siamese DSA)"),
        "warm_epochs": Setting(
            None,
            f"{_NO_COBRA} (COBRA train_dm.py: 50 at IPC 50, 100 at IPC 100, else 10)",
            lambda c: {50: 50, 100: 100}.get(c.ipc, 10),
        ),  # fmt: skip
        "warm_momentum": Setting(0.0, f"{_NO_COBRA} (COBRA train_dm.py: plain SGD)"),
        "warm_weight_decay": Setting(0.0, f"{_NO_COBRA} (COBRA train_dm.py: plain SGD)"),
    }
    methods = {
        "vanilla": _method("population", "l2sq", "random", f"{s} (vanilla DM): squared L2 to the batch mean"),
        "fairdd": _method("group-sync", "l2sq", "random", f"{s} FairDD: squared L2 to each present group, summed"),
        "cobra": _method("barycenter", "l1", "warm", f"{_NO_COBRA} (COBRA train_dm.py --mode cobra)"),
    }
    evaluation = _paper_eval(s, 10, 1000, True, "--num_eval 10 --epoch_eval_train 1000")
    return BackboneProfile(distill, evaluation, methods, recipes=("vanilla", "fairdd", "cobra"))


def _fairdd_dc() -> BackboneProfile:
    s = "FairDD main_DC.py"
    distill = {
        **_paper_common(s),
        "iterations": Setting(1000, f"{s} --Iteration 1000"),
        "lr_img": Setting(0.1, f"{s} --lr_img 0.1"),
        "lr_net": Setting(0.01, f"{s} --lr_net 0.01"),
        "batch_real": Setting(256, f"{s} --batch_real 256"),
        **_dsa_off(f"{s}: no DSA"),
        **_loop_settings(_loops_fairdd, s),
        **_real_gradient(s),
    }
    why = f"{s} --dis_metric ours (per-unit 1 - cos, 1-D parameters ignored)"
    methods = {
        "vanilla": _method("population", "layer-cosine", "random", f"{s} (vanilla DC); {why}"),
        "fairdd": _method(
            "group-sync", "layer-cosine", "random", f"{s} FairDD: one distance per present group, summed; {why}"
        ),  # fmt: skip
        "cobra": _method("barycenter", "layer-cosine", "random", f"{_NO_COBRA} (COBRA train_dc.py --mode cobra)"),
    }
    evaluation = _paper_eval(s, 10, 300, False, "--num_eval 10 --epoch_eval_train 300 (1000 only with augmentation)")
    return BackboneProfile(distill, evaluation, methods, recipes=("vanilla", "fairdd", "cobra"))


# ---- ours: cpu and gpu ----------------------------------------------------------------------------------
#: our profiles start every group target from the group-balanced real subset: a fair set starts at least
#: as fair as the random-balanced baseline (RESULTS section 13); the paper profiles keep real images
_GROUP_INIT = {"init": ours("balanced", "group targets start from the random-balanced subset of the seed")}


def _our_eval(models: int, epochs: int, full_epochs: int, net: dict, why: str) -> dict[str, Setting]:
    return {
        "model_kwargs": ours(dict(net), why),
        "num_models": ours(models, why),
        "epochs": ours(epochs, why),
        "full_epochs": ours(full_epochs, why),
        "dsa": ours(True, "DSA when training every evaluation network (the references: for DM sets only)"),
    }


def _gpu() -> dict[str, BackboneProfile]:
    why = "our GPU recipe"
    ev = _our_eval(5, 1000, 50, NET128, why)
    net = ours(dict(NET128), f"{why}: the references' ConvNet-128")
    dm = {
        "iterations": ours(20000, f"{why}: FairDD main_DM.py's schedule (COBRA's script: 2,600)"),
        "lr_img": ours(1.0, why),
        "batch_real": ours(256, f"{why}: FairDD main_DM.py's batch (COBRA's script: 600)"),
        "model_kwargs": net,
    }
    dc = {
        **dm,
        "iterations": ours(1000, f"{why}: DC's 1,000 iterations"),
        "lr_img": ours(0.1, why),
        "lr_net": ours(0.01, why),
        "dsa": ours(True, "DSA on gradient matching too (the references run DC without it)"),
    }
    cafe = {**dc, "iterations": ours(2000, f"{why}: CAFE's 2,000 iterations, lr halved at 60/80/90%")}
    idc = {
        **dm,
        "iterations": ours(2000, f"{why}: IDC's CIFAR-10 schedule"),
        "outer_loop": ours(100, "IDC (Kim et al.): 100 image updates per network"),
        "inner_loop": ours(1, "IDC (Kim et al.): one pass over real data between image updates"),
        "lr_img": Setting(None, f"{OURS}: IDC's 5e-3 x IPC / 10 on pixels, / std**2 in model space",
                          lambda c: idc_lr_img(c.ipc)),
        "lr_net": ours(0.01, why),
        "batch_real": ours(64, "IDC (Kim et al.): 64 real images per class"),
    }  # fmt: skip
    fair = _GROUP_INIT
    return {
        "dm": BackboneProfile(dm, ev, group_settings=fair),
        "dc": BackboneProfile(dc, ev, group_settings=fair),
        "cafe": BackboneProfile(cafe, ev, group_settings=fair),
        "idc": BackboneProfile(idc, ev, group_settings=fair),
        "mtt": BackboneProfile(_mtt_gpu(net), ev, group_settings=fair),
    }


_MTT = "MTT's recipe (Cazenavette et al., CIFAR-10 IPC 10; buffer.py, distill.py)"


def _mtt_gpu(net: Setting) -> dict[str, Setting]:
    """Our GPU profile for MTT is MTT's own CIFAR-10 IPC-10 recipe, each setting naming its flag. MTT
    whitens CIFAR with ZCA and then steps the images at 100; fairdistill has no ZCA, so the images step
    at MTT's rate without ZCA, 1000."""
    return {
        "iterations": ours(5000, f"{_MTT}: --Iteration 5000"),
        "syn_steps": ours(30, f"{_MTT}: --syn_steps 30"),
        "expert_epochs": ours(2, f"{_MTT}: --expert_epochs 2"),
        "max_start_epoch": ours(20, f"{_MTT}: --max_start_epoch 20 (start epochs 0-19)"),
        "lr_img": ours(1000.0, f"{_MTT}: --lr_img 1000 without ZCA (100 with ZCA; fairdistill applies no ZCA)"),
        "lr_lr": ours(1e-5, f"{_MTT}: --lr_lr 1e-05"),
        "lr_teacher": ours(0.01, f"{_MTT}: --lr_teacher 0.01 (the step size's start)"),
        "img_momentum": ours(0.5, f"{_MTT}: SGD momentum 0.5 on the images"),
        "batch_syn": ours(None, f"{_MTT}: --batch_syn = the whole set at IPC 10"),
        "num_experts": ours(100, f"{_MTT}: buffer.py --num_experts 100"),
        "expert_train_epochs": ours(50, f"{_MTT}: buffer.py --train_epochs 50"),
        "expert_lr": ours(0.01, f"{_MTT}: buffer.py --lr_teacher 0.01, no momentum, no weight decay"),
        "expert_batch": ours(256, f"{_MTT}: buffer.py --batch_train 256"),
        "expert_dsa": ours(True, f"{_MTT}: buffer.py trains the experts with DSA"),
        "model_kwargs": net,
    }


def _mtt_cpu() -> dict[str, Setting]:
    why = "compare --backbone mtt in 15 minutes on two CPU cores, experts included"
    return {
        "iterations": ours(100, why),
        "syn_steps": ours(8, f"{why} (MTT: 30)"),
        "batch_syn": ours(20, f"{why}: 20 of the 100 synthetic images per student step (MTT: all at IPC 10)"),
        "expert_epochs": ours(2, "MTT: --expert_epochs 2"),
        "max_start_epoch": ours(4, f"{why}: start epochs 0-3 (MTT: 0-19 of 50 expert epochs)"),
        "lr_img": ours(10.0, "the best of 10, 100 and 1000 at this scale (RESULTS 15.2; MTT without ZCA: 1000)"),
        "lr_lr": ours(1e-5, "MTT: --lr_lr 1e-05"),
        "lr_teacher": ours(0.01, "MTT: --lr_teacher 0.01"),
        "num_experts": ours(3, f"{why} (MTT: 100)"),
        "expert_train_epochs": ours(5, f"{why} (MTT: 50)"),
        "expert_lr": ours(0.01, "MTT: plain SGD at 0.01"),
        "expert_batch": ours(256, "MTT: --batch_train 256"),
        "model_kwargs": ours(dict(NET16), f"{why}: experts and student ConvNet width 16 (evaluated at width 32)"),
    }


def _cpu() -> dict[str, BackboneProfile]:
    # 150 (+ 1) evaluation epochs, 8 for the full set, 32 real images per class: the default compare within
    # 10 minutes on two cores at 32 px (RESULTS section 12.1)
    ev = _our_eval(2, 150, 8, NET32, "two CPU cores in minutes")
    net = ours(dict(NET32), "ConvNet width 32 on two CPU cores")
    dm = {
        "iterations": ours(300, "two CPU cores in minutes"),
        "lr_img": ours(1.0, "DM's image rate"),
        "batch_real": ours(32, "two CPU cores in minutes (stratified: 4 per colour for 10 colours)"),
        "model_kwargs": net,
        "warm_epochs": ours(3, "3 warm-start epochs instead of 10, on two CPU cores"),
    }
    # DC: the published 10 x 50 loops cost ~30 s per iteration per method on one core; 5 outer x 5 inner and
    # 100 image updates at rate 3.0 (0.1 barely moves the images in 100 updates; RESULTS section 6)
    dc = {
        "iterations": ours(None, "100 image updates in all", lambda c: 100 // min(_dc_loops(c.ipc)[0], 5)),
        "outer_loop": ours(None, "DC's schedule capped at 5 outer steps", lambda c: min(_dc_loops(c.ipc)[0], 5)),
        "inner_loop": ours(None, "DC's schedule capped at 5 inner epochs", lambda c: min(_dc_loops(c.ipc)[1], 5)),
        "lr_img": ours(3.0, "100 updates instead of 10,000: every method moves (RESULTS section 6)"),
        "lr_net": ours(0.01, "DC's network rate"),
        "batch_real": ours(32, "two CPU cores in minutes"),
        "model_kwargs": net,
        "dsa": ours(True, "DSA on gradient matching too (the references run DC without it)"),
    }
    cafe = {
        **dc,
        "iterations": ours(None, "150 image updates in all", lambda c: 150 // min(_dc_loops(c.ipc)[0], 5)),
        "inner_loop": ours(None, "DC's schedule capped at 10 inner epochs", lambda c: min(_dc_loops(c.ipc)[1], 10)),
        "lr_img": ours(1.0, "10x CAFE's 0.1 for 150 updates (RESULTS section 6)"),
    }
    idc = {
        "iterations": ours(8, "8 iterations x 10 image updates on two CPU cores"),
        "outer_loop": ours(10, "10 image updates per network"),
        "inner_loop": ours(1, "IDC (Kim et al.): one pass over real data between image updates"),
        "lr_img": ours(None, "50x IDC's rate for 80 updates instead of 200,000 (RESULTS section 6)",
                       lambda c: 50 * idc_lr_img(c.ipc)),
        "lr_net": ours(0.01, "IDC's network rate"),
        "batch_real": ours(32, "two CPU cores in minutes"),
        "model_kwargs": net,
        "dsa": ours(True, "DSA on gradient matching too"),
    }  # fmt: skip
    idc_ev = {**ev, "epochs": ours(75, "the decoded set has 4x the images: as many SGD steps as 150 epochs")}
    fair = _GROUP_INIT
    return {
        "dm": BackboneProfile(dm, ev, group_settings=fair),
        "dc": BackboneProfile(dc, ev, group_settings=fair),
        "cafe": BackboneProfile(cafe, ev, group_settings=fair),
        "idc": BackboneProfile(idc, idc_ev, group_settings=fair),
        "mtt": BackboneProfile(_mtt_cpu(), ev, group_settings=fair),
    }


def _dc_loops(ipc: int) -> tuple[int, int]:
    from .backbones.bilevel import published_loops

    return published_loops(ipc)


#: IDC's image learning rate at IPC 10, on [0, 1] pixels (it grows in proportion to the IPC)
IDC_LR_IMG_PIXELS = 5e-3
#: the per-channel std of the data IDC's pixel learning rate is converted for (every built-in dataset)
IDC_LR_STD = 0.5


def idc_lr_img(ipc: int, pixels_lr: float = IDC_LR_IMG_PIXELS, std: float = IDC_LR_STD) -> float:
    """IDC's image learning rate in model space: ``pixels_lr * ipc / 10 / std**2``.

    IDC steps on [0, 1] pixels and scales the rate with the IPC (its ``tune_lr_img``); fairdistill's
    images are normalised, ``(pixel - mean) / std``, and an SGD step of rate r on pixels is a step of
    rate ``r / std**2`` on normalised images.
    """
    return pixels_lr * (ipc / 10) / std**2


PROFILES: Registry[Profile] = Registry("profile")
PROFILES.add(
    "gpu",
    Profile(
        "gpu",
        "ours, our GPU recipe: ConvNet-128; DM 20k iterations x 256 real (FairDD's schedule), DC 1k, CAFE 2k, "
        "IDC 2k x 100 updates; group-stratified batches, DSA everywhere; 1000-epoch evaluation x 5",
        _gpu(),
    ),
)
PROFILES.add(
    "cpu",
    Profile(
        "cpu",
        "ours, two CPU cores in minutes: ConvNet-32; DM 300 iterations x 32 real, DC 100 and CAFE 150 image "
        "updates, IDC 8 x 10; group-stratified batches, DSA everywhere; 150-epoch evaluation x 2",
        _cpu(),
    ),
)
PROFILES.add(
    "cobra-paper",
    Profile(
        "cobra-paper",
        "COBRA's scripts (mhmoslemi/COBRA): DM 2,600 x 600 real, warm start; DC and IDC 1,000 without DSA; "
        "CAFE 2,000; uniform class batches; evaluation 5 x 1500 (DM), 5 / 3 / 2 x 1000",
        {
            "dm": _cobra_dm(),
            "dc": _cobra_gradient("train_dc.py", idc=False),
            "idc": _cobra_gradient("train_idc.py", idc=True),
            "cafe": _cobra_cafe(),
        },
        paper="COBRA",
    ),  # fmt: skip
)
PROFILES.add(
    "fairdd-paper",
    Profile(
        "fairdd-paper",
        "FairDD's scripts (zqhang/FairDD): DM 20,000 x 256 real with DSA, DC 1,000 without; uniform class "
        "batches; evaluation 10 x 1000 (DM) / 10 x 300 (DC); cobra on FairDD's schedule is labelled ours",
        {"dm": _fairdd_dm(), "dc": _fairdd_dc()},
        paper="FairDD",
    ),
)


# ---- the CPU scale of a paper profile -----------------------------------------------------------------------
#: per backbone, the cuts that bring a paper recipe to two CPU cores: setting -> (value, why)
CPU_SCALE: dict[str, dict[str, tuple[Any, str]]] = {
    "dm": {
        "iterations": (300, "image updates"),
        # the fair targets use only the groups present in a batch: a minority colour (about 67 of a
        # class's 6,000 C-FMNIST images) is missing from 49% of batches of 64 and 24% of 128
        "batch_real": (128, "real images per class per iteration"),
        "warm_epochs": (3, "warm-start epochs"),
        # the papers move the images over 20,000 (FairDD) / 2,600 (COBRA) updates at rate 1
        "lr_img": (5.0, "image rate, for 300 updates"),
    },
    "dc": {"iterations": (20, "iterations"), "outer_loop": (5, "outer steps"), "inner_loop": (5, "inner epochs"),
           "batch_real": (32, "real images per class"), "lr_img": (3.0, "image rate, for 100 updates, not 10,000")},
    "idc": {"iterations": (8, "iterations"), "outer_loop": (10, "image updates per network"),
            "batch_real": (32, "real images per class"), "lr_img": (1.0, "image rate, for 80 updates")},
    "cafe": {"iterations": (30, "iterations"), "outer_loop": (5, "outer steps"), "inner_loop": (10, "inner epochs"),
             "batch_real": (32, "real images per class"), "lr_img": (1.0, "image rate, for 150 updates")},
}  # fmt: skip
CPU_SCALE_NET = {"width": 32}
CPU_SCALE_EVAL = {"num_models": 2, "epochs": 200, "full_epochs": 10}


def cpu_scale(
    distill: DistillConfig, evaluation: EvalConfig, backbone: str
) -> tuple[DistillConfig, EvalConfig, list[str]]:
    """A paper recipe cut down to two CPU cores, with every cut listed (``"iterations 20000 -> 1000"``).

    Only sizes are cut (iterations, batches, loops, epochs, network width, evaluation models), and
    the image rates are raised to move the images in far fewer updates (DM: 5 instead of 1 for 300
    updates); the sampling, targets, distances, DSA and schedules stay the paper's.
    """
    cuts: list[str] = []
    values: dict[str, Any] = {}
    for name, (value, what) in CPU_SCALE.get(backbone, {}).items():
        old = getattr(distill, name)
        if name == "lr_img" or old is None or value < old:
            values[name] = value
            cuts.append(f"{name} {old} -> {value} ({what})")
    net = {**distill.model_kwargs, **CPU_SCALE_NET}
    if net != distill.model_kwargs:
        cuts.append(
            f"ConvNet width {distill.model_kwargs.get('width')} -> {net['width']} (distillation and evaluation)"
        )
    distill = replace(distill, model_kwargs=net, **values).validate()
    ev_values = {k: v for k, v in CPU_SCALE_EVAL.items() if v < getattr(evaluation, k)}
    for k, v in ev_values.items():
        cuts.append(f"evaluation {k} {getattr(evaluation, k)} -> {v}")
    evaluation = replace(evaluation, model_kwargs={**evaluation.model_kwargs, **CPU_SCALE_NET}, **ev_values).validate()
    return distill, evaluation, cuts
