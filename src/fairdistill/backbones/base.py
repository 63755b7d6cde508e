"""The backbone interface and what every backbone shares: initial synthetic sets, networks, metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import rng
from ..artifacts import SyntheticSet
from ..augment import DSA
from ..checkpoint import DistillState, MethodState, capture, restore, restore_field
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler, balanced_subset
from ..distances import DISTANCES
from ..errors import FairDistillError
from ..models import create_model
from ..registry import Registry
from ..runtime import Runtime
from ..targets import GroupStats, Target
from ..training import init_weights

#: the settings of a method's own images, which every backbone lets a method set for itself
IMAGE_SETTINGS: tuple[str, ...] = ("init", "lr_img", "img_momentum", "img_optimizer")


@dataclass(frozen=True)
class IterationState:
    """What a backbone reports after each iteration (images are live views: copy what you keep).

    In a class-sharded run (several processes, :mod:`fairdistill.runtime`) ``images`` are this
    process's classes only (``classes``); ``snapshot()`` gathers the whole set and must then be called
    by every process at the same iterations.

    ``snapshot()``, called during the callback, returns a detached copy of everything the run
    carries into the next iteration (a :class:`~fairdistill.checkpoint.DistillState`): handing it
    back as ``distill(..., resume=state)`` continues bit for bit where this iteration ended.
    """

    done: int
    total: int
    losses: dict[str, float]
    images: dict[str, Tensor]
    snapshot: Callable[[], DistillState] | None = field(default=None, repr=False, compare=False)
    #: the real statistics each method matched in this iteration (every class's, after the all-reduce)
    stats: dict[str, GroupStats] | None = field(default=None, repr=False, compare=False)
    #: the classes whose images ``images`` holds (this process's share of a class-sharded run); None: all
    classes: range | None = None


#: called after every iteration
IterationCallback = Callable[[IterationState], None]


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
    #: :class:`DistillConfig` fields a method may set for itself (``MethodSpec.settings``): every backbone
    #: lets a method choose how its images start and move (:data:`IMAGE_SETTINGS`)
    method_settings: tuple[str, ...] = IMAGE_SETTINGS

    @classmethod
    def supports(cls, target: Target) -> bool:
        return (cls.feature_targets or not target.feature_only) and (cls.sample_targets or not target.uses_samples)

    @classmethod
    def check_target(cls, target: Target) -> None:
        """A clear error, at the start of a run, for a target this backbone cannot match."""
        if cls.supports(target):
            return
        from . import BACKBONES

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
        callback: IterationCallback | None = None,
        resume: DistillState | None = None,
    ) -> dict[str, SyntheticSet]:
        """Distil every method of ``methods`` in lockstep; ``resume`` continues from a saved state."""
        raise NotImplementedError


# ---- resuming ------------------------------------------------------------------------------------
#: the per-method attributes a backbone's run carries across iterations besides its images and
#: optimiser (each backbone's ``_Run`` may name more in ``RESUME_FIELDS``)
DEFAULT_RESUME_FIELDS = ("last_loss",)


def _resume_fields(run: Any) -> tuple[str, ...]:
    return getattr(type(run), "RESUME_FIELDS", DEFAULT_RESUME_FIELDS)


def snapshot_runs(runs: Sequence[Any], done: int, gather: Callable[[Tensor], Tensor] | None = None) -> DistillState:
    """The state of ``runs`` (objects with ``spec``, ``images``, ``optimizer``) after ``done`` iterations.

    ``gather`` (a class-sharded run: the runtime's ``gather_rows``) makes the images, and every
    optimiser tensor shaped like them (momentum), whole; it is collective, so every process calls this.
    """
    out = {}
    for run in runs:
        extra = {f: getattr(run, f) for f in _resume_fields(run)}
        # the checkpoint keeps these as JSON: tensors (counters) as nested lists
        ms = capture(
            run.images, run.optimizer, {f: v.tolist() if isinstance(v, Tensor) else v for f, v in extra.items()}
        )
        if gather is not None:
            local = tuple(ms.images.shape)
            for entries in ms.optimizer.get("state", {}).values():
                for key, value in entries.items():
                    if isinstance(value, Tensor) and tuple(value.shape) == local:
                        entries[key] = gather(value)
            ms.images = gather(ms.images)
        out[run.spec.name] = ms
    return DistillState(done, out)


def _rows(saved: MethodState, rows: slice) -> MethodState:
    """``saved`` cut down to synthetic images ``rows`` (and the optimiser tensors shaped like the images)."""
    full = tuple(saved.images.shape)
    opt = {**saved.optimizer, "state": {}}
    for pid, entries in saved.optimizer.get("state", {}).items():
        opt["state"][pid] = {
            key: value[rows] if isinstance(value, Tensor) and tuple(value.shape) == full else value
            for key, value in entries.items()
        }
    return MethodState(saved.images[rows], opt, saved.extra, source=saved.source)


def resume_runs(
    runs: Sequence[Any], state: DistillState | None, config: DistillConfig, rows: slice | None = None
) -> int:
    """Load ``state`` into ``runs``; returns the iteration to continue from (0 without a state).

    ``rows``: the runs hold only these synthetic images (a process of a class-sharded run); the
    saved state is always the whole set.
    """
    if state is None:
        return 0
    names = [run.spec.name for run in runs]
    if list(state.methods) != names:
        raise FairDistillError(f"the saved state holds methods {list(state.methods)}, this run distils {names}")
    if not 0 <= state.done <= config.iterations:
        raise FairDistillError(f"the saved state is at iteration {state.done}, past this run's {config.iterations}")
    for run in runs:
        saved = state.methods[run.spec.name]
        if rows is not None:
            saved = _rows(saved, rows)
        restore(saved, run.images, run.optimizer)
        for key in _resume_fields(run):
            if key in saved.extra:  # JSON gives lists back: the run's type and shape, checked
                value = restore_field(getattr(run, key), saved.extra[key], f"{saved.source}: {key}")
                setattr(run, key, value)
    return state.done


def check_methods(methods: Sequence[MethodSpec]) -> None:
    """At least one method, and unique names (they key the results)."""
    if not methods:
        raise FairDistillError("no method to distill")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise FairDistillError(f"method names must be unique, got {names}")


@dataclass(frozen=True)
class Shard:
    """This process's block of classes in a class-sharded run (every class in a single process).

    ``owned``: the class ids; ``classes``: the same as a slice of the class axis; ``rows``: their
    synthetic images in a class-ordered set of ``ipc`` per class.
    """

    owned: range
    num_classes: int
    ipc: int

    @property
    def classes(self) -> slice:
        return slice(self.owned.start, self.owned.stop)

    @property
    def rows(self) -> slice:
        return slice(self.owned.start * self.ipc, self.owned.stop * self.ipc)

    def keep(self, idx: Tensor, labels: Tensor) -> Tensor:
        """The indices ``idx`` (into a split with class ``labels``) whose class this process owns, in order."""
        lab = labels[idx]
        return idx[(lab >= self.owned.start) & (lab < self.owned.stop)]


def class_shard(rt: Runtime, num_classes: int, ipc: int) -> Shard:
    """This process's classes in a class-sharded run; every process needs at least one."""
    if rt.world_size > num_classes:
        raise FairDistillError(
            f"{rt.world_size} processes but only {num_classes} classes: classes are sharded across processes, "
            f"so start at most {num_classes} (torchrun --nproc_per_node)"
        )
    return Shard(rt.shard(num_classes), num_classes, ipc)


def total_and_check(rt: Runtime, name: str, loss: float | Tensor, images: Tensor, where: str) -> float:
    """``loss`` summed over the processes; raises if any process's synthetic images left the finite range.

    One all-reduce for both, so that every process stops together (a process raising alone would
    leave the others waiting in the next collective).
    """
    loss = loss.detach() if isinstance(loss, Tensor) else torch.tensor(loss)
    status = rt.all_reduce(torch.stack([loss.double().cpu(), (~torch.isfinite(images)).sum().double().cpu()]))
    if status[1] > 0:
        raise FairDistillError(f"{name}: synthetic images became NaN/inf at {where}; lower the image learning rate")
    return float(status[0])


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
    return DSA(strategy=config.dsa_strategy or dataset.dsa_strategy)


def train_dsa(dataset: FairDataset, config: DistillConfig) -> DSA | None:
    """The augmentation of networks trained on the synthetic set during distillation (warm start, inner loops)."""
    if not config.dsa:
        return None
    return DSA(strategy=config.dsa_strategy or dataset.dsa_strategy, mode=config.train_dsa_mode)


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
