"""The backbone interface, the registry, and the pieces every backbone uses: initial sets, networks, metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .. import rng
from ..artifacts import SyntheticSet
from ..augment import DSA
from ..checkpoint import DistillState
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler, balanced_subset
from ..distances import DISTANCES
from ..embedders import EMBEDDERS
from ..errors import FairDistillError
from ..models import create_model
from ..registry import Registry
from ..targets import Target, get_target, resolve_sampling
from ..training import init_weights

#: the settings of a method's own images, which every backbone lets a method set for itself
IMAGE_SETTINGS: tuple[str, ...] = ("init", "lr_img", "img_momentum", "img_optimizer")


class Backbone:
    """Distils synthetic sets for one or several methods in lockstep.

    Class attributes say which knobs of a :class:`MethodSpec` apply: ``distances`` is the registry
    the method's distance is looked up in (feature or gradient distances), ``default_distance``
    the one used when a spec names none, ``embedders`` the embedders it accepts (``None``: all).
    """

    name: str = ""
    distances: Registry = DISTANCES
    default_distance: str = "l2sq"
    embedders: tuple[str, ...] | None = None
    #: can match targets solved from feature vectors (``Target.feature_only``: the generalised barycenters),
    #: which have no per-sample weights; gradient matching cannot
    feature_targets: bool = True
    #: can match targets on per-sample features (``Target.uses_samples``: bary-w2)
    sample_targets: bool = False
    #: runs class-sharded across the processes of a torchrun launch (:mod:`fairdistill.runtime`)
    shards_classes: bool = False
    #: why a backbone that does not shard classes cannot run across processes (said when torchrun starts it)
    unsharded: str = "cannot yet be sharded across processes"
    #: :class:`DistillConfig` fields a method may set for itself (``MethodSpec.settings``): every backbone
    #: lets a method choose how its images start and move (:data:`IMAGE_SETTINGS`)
    method_settings: tuple[str, ...] = IMAGE_SETTINGS

    def prepare_run(
        self,
        dataset: FairDataset,
        methods: Sequence[MethodSpec],
        config: DistillConfig,
        *,
        device: torch.device,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """Before a run: make what it needs that outlives it (MTT: its expert trajectories), with progress."""

    @classmethod
    def supports(cls, target: Target) -> bool:
        return (cls.feature_targets or not target.feature_only) and (cls.sample_targets or not target.uses_samples)

    @classmethod
    def check_target(cls, target: Target) -> None:
        """A clear error, at the start of a run, for a target this backbone cannot match."""
        if cls.supports(target):
            return
        able = [b for b in BACKBONES.list() if BACKBONES.get(b).supports(target)]
        if target.uses_samples and not cls.sample_targets:
            why = "it matches per-sample feature distributions, not class statistics"
        else:
            why = (
                "it is solved from feature vectors, not a weighted mean of group statistics, so it has no "
                "per-sample weights to apply to one real gradient"
            )
        raise FairDistillError(
            f"backbone {cls.name!r} cannot use target {target.name!r}: {why}; backbones that can: {', '.join(able)}"
        )

    def distill(
        self,
        dataset: FairDataset,
        methods: Sequence[MethodSpec],
        config: DistillConfig,
        *,
        device: torch.device,
        callback: Callable[[Any], None] | None = None,
        resume: DistillState | None = None,
    ) -> dict[str, SyntheticSet]:
        """Distil every method of ``methods`` in lockstep; ``resume`` continues from a saved state.

        ``callback`` gets an :class:`~fairdistill.backbones.engine.IterationState` after every
        iteration. The backbones here run :class:`~fairdistill.backbones.engine.Engine`'s loop.
        """
        raise NotImplementedError


#: every backbone, by name (each backbone's module registers itself here)
BACKBONES: Registry[type[Backbone]] = Registry("backbone")


def resolve_method(spec: MethodSpec) -> MethodSpec:
    """``spec`` with its backbone's default distance filled in (what runs, and what is recorded)."""
    if spec.distance is not None:
        return spec
    return replace(spec, distance=BACKBONES.get(spec.backbone).default_distance)


def check_method(spec: MethodSpec) -> MethodSpec:
    """``spec`` resolved and checked against the registries: its backbone, distance, embedder, target,
    sampling and per-method settings all exist and fit together; a clear error otherwise."""
    spec = resolve_method(spec)
    backbone = BACKBONES.get(spec.backbone)
    # each backbone names the registry its distances come from (features vs gradients)
    backbone.distances.get(spec.distance)
    EMBEDDERS.get(spec.embedder)
    if backbone.embedders is not None and spec.embedder not in backbone.embedders:
        raise FairDistillError(
            f"backbone {spec.backbone!r} cannot use embedder {spec.embedder!r}; allowed: "
            f"{', '.join(backbone.embedders)}"
        )
    target = get_target(spec.target)
    resolve_sampling(target, spec.sampling)
    backbone.check_target(target)
    unknown = sorted(set(spec.settings) - set(backbone.method_settings))
    if unknown:
        allowed = ", ".join(backbone.method_settings) or "none"
        raise FairDistillError(
            f"method {spec.name!r} sets {', '.join(unknown)} per method, which backbone {spec.backbone!r} "
            f"cannot vary between methods of one run; per-method settings it allows: {allowed}"
        )
    return spec


def check_ipc(dataset: FairDataset, ipc: int) -> None:
    smallest = int(dataset.class_counts("train").min())  # every image of the class, group-labelled or not
    if ipc < 1 or ipc > smallest:
        raise FairDistillError(
            f"ipc must lie in [1, {smallest}] (the smallest class of {dataset.name} has {smallest} images), got {ipc}"
        )


def initial_images(dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
    """The starting synthetic set, ordered by class: real images of each class, or noise.

    ``real``: drawn as the data comes (so a biased class starts mostly in its majority group);
    ``balanced``: the group-balanced subset of the ``random-balanced`` baseline with the same seed,
    image for image; ``noise``: standard normal in model space.
    """
    check_ipc(dataset, config.ipc)
    k = dataset.num_classes
    labels = torch.arange(k).repeat_interleave(config.ipc)
    if config.init == "noise":
        g = rng.generator(config.seed, "init-noise")
        images = torch.randn((k * config.ipc, *dataset.train.images.shape[1:]), generator=g)
        return images, labels
    if config.init == "balanced":
        idx = balanced_subset(dataset.train, k, dataset.num_train_groups, config.ipc, balanced_generator(config.seed))
    else:
        sampler = RealSampler(dataset.train, k, dataset.num_train_groups)
        idx = sampler.class_batch(config.ipc, rng.generator(config.seed, "init-real"))
    idx = idx[torch.argsort(dataset.train.labels[idx], stable=True)]
    return dataset.train.take(idx).clone(), labels


def balanced_generator(seed: int) -> torch.Generator:
    """The generator of the group-balanced selection: the ``random-balanced`` baseline's, so both pick the same."""
    return rng.generator(seed, "baseline-balanced")


def method_initial_images(
    methods: Sequence[MethodSpec],
    config: DistillConfig,
    start: Callable[[DistillConfig], tuple[Tensor, Tensor]],
) -> tuple[dict[str, Tensor], Tensor]:
    """Each method's starting images (its own ``init`` when it sets one) and the labels, shared by all.

    ``start(config)`` builds one starting set; methods with the same initialisation share it.
    """
    built: dict[tuple, tuple[Tensor, Tensor]] = {}
    images = {}
    for spec in methods:
        own = spec.config_for(config)
        key = (own.init, own.idc_init)
        if key not in built:
            built[key] = start(own)
        images[spec.name] = built[key][0]
    labels = next(iter(built.values()))[1]
    return images, labels


def image_optimizer(images: Tensor, config: DistillConfig) -> torch.optim.Optimizer:
    """The optimiser of a method's synthetic images: SGD with momentum, or Adam (``img_optimizer``)."""
    if config.img_optimizer == "adam":
        return torch.optim.Adam([images], lr=config.lr_img)
    return torch.optim.SGD([images], lr=config.lr_img, momentum=config.img_momentum)


def distill_dsa(dataset: FairDataset, config: DistillConfig) -> DSA | None:
    """The Siamese augmentation of matching (one transform per class), or None when DSA is off."""
    if not config.dsa:
        return None
    return DSA(strategy=config.dsa_strategy or dataset.dsa_strategy, exact=config.dsa_exact)


def train_dsa(dataset: FairDataset, config: DistillConfig) -> DSA | None:
    """The augmentation of networks trained on the synthetic set during distillation (warm start, inner loops)."""
    if not config.dsa:
        return None
    return DSA(strategy=config.dsa_strategy or dataset.dsa_strategy, mode=config.train_dsa_mode, exact=config.dsa_exact)


def make_network(dataset: FairDataset, config: DistillConfig, *keys: object, device: torch.device) -> nn.Module:
    """A network for ``dataset`` initialised from ``derive_seed(config.seed, *keys)``."""
    net = create_model(
        config.model,
        channels=dataset.channels,
        num_classes=dataset.num_classes,
        image_size=dataset.image_size,
        **config.model_kwargs,
    )
    return init_weights(net, rng.generator(config.seed, *keys)).to(device)


def synthetic_meta(dataset: FairDataset, method: MethodSpec, config: DistillConfig) -> dict:
    from ..artifacts import environment
    from ..data.groups import group_labels_record

    return {
        "method": method.to_dict(),
        "config": method.config_for(config).to_dict(),  # with the method's own settings
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "class_names": list(dataset.class_names),
        "group_names": list(dataset.group_names),
        # training groups that are not the dataset's own (pseudo, noisy or partial labels): what they are
        **({"group_labels": group_labels_record(dataset)} if dataset.params.get("group_labels") else {}),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "dsa_strategy": (config.dsa_strategy or dataset.dsa_strategy) if config.dsa else None,
        "ipc": config.ipc,
        "seed": config.seed,
        "preset": None,  # the preset's name, filled in by the API when a preset made the set
        "environment": environment(),
    }
