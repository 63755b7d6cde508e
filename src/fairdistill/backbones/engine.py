"""The lockstep engine: the one loop every backbone runs.

A run distils several methods at once ("lockstep"): every method sees the same networks, real
batches and augmentations, and what they share is computed once. The engine owns everything that
does not depend on what is matched:

* the methods' runs (:class:`MethodRun`: a resolved spec, its target, distance and sampling, its
  own settings, its images and their optimiser), started from each method's initial images;
* class sharding (each process of a torchrun launch holds the images of a block of classes);
* the per-step draws every backbone makes alike: one DSA transform per class and one real batch
  per sampling (drawn, ordered, cut to this process's classes and augmented once for all methods),
  and a cache for anything else the methods of a step share (:meth:`Engine.shared`, e.g. DM's real
  statistics keyed by embedder and sampling);
* the image update (zeroed gradients, the optimiser's step), the loss summed over the processes
  and the NaN check (one all-reduce), the callback with a resumable snapshot, resuming, and the
  final gathering into :class:`~fairdistill.artifacts.SyntheticSet`s with their metadata.

A backbone (:class:`LockstepBackbone`) says only what differs::

    for each iteration:
        state = backbone.prepare(engine, it)             # the iteration's network(s)
        for step in range(image updates per iteration):  # DM: 1; DC, CAFE: outer_loop; IDC: its schedule
            for each method:
                loss = backbone.match(engine, run, state, it, step)   # back-propagates into the images
                one step of the method's image optimiser
            if not the last step: backbone.between(engine, state, it, step)   # e.g. train the networks
        backbone.end_iteration(run) for each method      # the iteration's loss

Every draw comes from a generator derived from (seed, purpose, iteration[, step]), so a method
distilled alone gives the same images as in lockstep with others, and a resumed run continues bit
for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import rng, runtime
from ..artifacts import SyntheticSet
from ..augment import DSAParams
from ..checkpoint import DistillState, MethodState, capture, restore, restore_field
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler
from ..errors import FairDistillError
from ..runtime import Runtime
from ..targets import GroupStats, Target, get_target, resolve_sampling
from .base import (
    Backbone,
    check_method,
    distill_dsa,
    image_optimizer,
    initial_images,
    method_initial_images,
    synthetic_meta,
    train_dsa,
)


@dataclass(frozen=True)
class IterationState:
    """What the engine reports after each iteration (images are live views: copy what you keep).

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


@dataclass
class MethodRun:
    """One method's state during lockstep distillation.

    Only the images, the optimiser's state and the fields named in ``RESUME_FIELDS`` cross an
    iteration boundary (what a checkpoint saves); a backbone whose runs carry more subclasses this.
    """

    spec: MethodSpec
    target: Target
    distance: Any
    sampling: str
    #: the run's config with this method's own settings (``MethodSpec.settings``)
    config: DistillConfig
    images: Tensor
    optimizer: torch.optim.Optimizer
    #: the method's own copy of the iteration's network (backbones that train one in between)
    net: nn.Module | None = None
    #: this iteration's losses, one per image update (summed over the processes)
    losses: list[float] = field(default_factory=list)
    last_loss: float = float("nan")

    RESUME_FIELDS: ClassVar[tuple[str, ...]] = ("last_loss",)


@dataclass
class RealBatch:
    """One step's real batch for one sampling: this process's classes, augmented once for all methods.

    ``counts``: the (class, group) counts of the WHOLE batch (every process's classes), which a
    target's per-sample weights come from.
    """

    x: Tensor
    y: Tensor
    a: Tensor
    counts: GroupStats


class LockstepBackbone(Backbone):
    """A backbone run by the :class:`Engine`: it states what it matches, the engine does the rest.

    ``draws``: the prefix of every generator purpose (``"dm"`` -> ``"dm-net"``, ``"dm-real"``...);
    ``keyed_by_step``: draws are keyed by (iteration, step) (False: one image update per iteration,
    keyed by the iteration alone); ``orders_real``: real batches are sorted by class (so that the
    processes' parts concatenate to the batch and a class's samples are contiguous).
    """

    run_type: ClassVar[type[MethodRun]] = MethodRun
    draws: ClassVar[str] = ""
    keyed_by_step: ClassVar[bool] = True
    orders_real: ClassVar[bool] = True

    def distill(self, dataset, methods, config, *, device, callback=None, resume=None):
        """:meth:`Backbone.distill`: the engine's loop, with this backbone's hooks."""
        return Engine(self, dataset, methods, config, device).run(callback, resume)

    # ---- what a backbone states ---------------------------------------------------------------
    def schedule(self, config: DistillConfig) -> tuple[int, int]:
        """(image updates per iteration, the size of what happens between two of them)."""
        return 1, 0

    def initial_images(self, dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
        """The stored synthetic images a method starts from, and their labels (ordered by class)."""
        return initial_images(dataset, config)

    def start(self, engine: Engine, run: MethodRun) -> None:
        """Set up what a method's run carries besides what the engine gives it."""

    def prepare(self, engine: Engine, it: int) -> Any:
        """The iteration's network(s); what this returns is handed to :meth:`match` and :meth:`between`."""
        raise NotImplementedError

    def match(self, engine: Engine, run: MethodRun, state: Any, it: int, step: int) -> Tensor | float:
        """One method's matching loss at this step, back-propagated into ``run.images``; returns the loss."""
        raise NotImplementedError

    def between(self, engine: Engine, state: Any, it: int, step: int) -> None:
        """What happens between two image updates of an iteration (e.g. training the networks)."""

    def end_iteration(self, run: MethodRun) -> None:
        """The iteration's loss of a method: the mean over its image updates."""
        run.last_loss = sum(run.losses) / len(run.losses)

    def meta(self, engine: Engine, run: MethodRun) -> dict[str, Any]:
        """What the backbone records in a set's metadata besides :func:`~fairdistill.backbones.base.synthetic_meta`."""
        return {"final_loss": run.last_loss}

    def finish(self, engine: Engine, run: MethodRun, synset: SyntheticSet) -> SyntheticSet:
        """The set handed back, from the gathered stored images (IDC decodes them)."""
        return synset


class Engine:
    """One lockstep distillation of ``methods`` on ``dataset`` by ``backbone``."""

    def __init__(
        self,
        backbone: LockstepBackbone,
        dataset: FairDataset,
        methods: Sequence[MethodSpec],
        config: DistillConfig,
        device: torch.device,
    ) -> None:
        config.validate()
        check_methods(methods)
        self.backbone, self.dataset, self.config, self.device = backbone, dataset, config, device
        # the training split's groups (may be pseudo-groups)
        self.k, self.g = dataset.num_classes, dataset.num_train_groups
        self.updates, self.inner = backbone.schedule(config)
        self.rt: Runtime = runtime.current()
        if self.rt.world_size > 1 and not backbone.shards_classes:
            raise FairDistillError(
                f"backbone {backbone.name!r} {backbone.unsharded}; run it in one process (without torchrun)"
            )
        self.shard = class_shard(self.rt, self.k, config.ipc)  # this process's classes (all in one process)
        inits, labels = method_initial_images(methods, config, lambda c: backbone.initial_images(dataset, c))
        self.syn_labels = labels[self.shard.rows].to(device)  # this process's stored images' labels
        self.all_labels = labels.to(device)  # the whole stored set's
        self.sampler = RealSampler(dataset.train, self.k, self.g)
        self.shares = dataset.group_shares().to(device)
        self.real_y, self.real_a = dataset.train.labels.to(device), dataset.train.groups.to(device)
        self.dsa = distill_dsa(dataset, config)  # Siamese: one transform per class, real and synthetic alike
        self.train_dsa = train_dsa(dataset, config)  # for networks trained during distillation
        self.dsa_params: DSAParams | None = None  # this step's transforms
        self.iteration_stats: dict[str, GroupStats] = {}
        self._step: dict[Hashable, Any] = {}
        self._run_wide: dict[Hashable, Any] = {}
        self.runs = [self._start(m, inits[m.name][self.shard.rows].to(device)) for m in methods]

    # ---- what a backbone asks of the engine ----------------------------------------------------------
    def key(self, it: int, step: int) -> tuple[int, ...]:
        """The draw key of an image update: (iteration, step), or the iteration alone."""
        return (it, step) if self.backbone.keyed_by_step else (it,)

    def generator(self, purpose: str, *keys: object) -> torch.Generator:
        """The generator of ``purpose`` (prefixed by the backbone's ``draws``) at ``keys``."""
        return rng.generator(self.config.seed, f"{self.backbone.draws}-{purpose}", *keys)

    def shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per image update for all the methods that ask for ``key``."""
        if key not in self._step:
            self._step[key] = compute()
        return self._step[key]

    def once(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run."""
        if key not in self._run_wide:
            self._run_wide[key] = compute()
        return self._run_wide[key]

    def stratified_shares(self, sampling: str) -> Tensor | None:
        """The population's group shares where a batch is stratified (they re-weight its cells), else None."""
        return self.shares if sampling == "stratified" else None

    def real_batch(self, sampling: str, it: int, step: int) -> RealBatch:
        """This step's real batch of ``sampling`` (drawn once, shared by every method that samples so)."""
        return self.shared(("real", sampling), lambda: self._draw_real(sampling, it, step))

    def real_images(self, count_per_class: int, purpose: str, it: int, step: int) -> Tensor:
        """``count_per_class`` real images of every class (e.g. to set BatchNorm statistics), shared by the step."""

        def draw() -> Tensor:
            idx = self.sampler.class_batch(count_per_class, self.generator(purpose, *self.key(it, step)))
            return self.dataset.train.take(idx, self.device)

        return self.shared(("images", purpose), draw)

    def gather(self, rows: Tensor) -> Tensor:
        """This process's synthetic rows -> the whole set (collective in a class-sharded run)."""
        return self.rt.gather_rows(rows)

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self, callback: IterationCallback | None, resume: DistillState | None) -> dict[str, SyntheticSet]:
        start = resume_runs(self.runs, resume, self.config, self.shard.rows)
        for it in range(start, self.config.iterations):
            self._iteration(it)
            if callback is not None:
                callback(
                    IterationState(
                        it + 1,
                        self.config.iterations,
                        {r.spec.name: r.last_loss for r in self.runs},
                        {r.spec.name: r.images.detach() for r in self.runs},
                        snapshot=functools.partial(snapshot_runs, self.runs, it + 1, self.rt.gather_rows),
                        stats=self.iteration_stats or None,
                        classes=self.shard.owned,
                    )
                )
        for run in self.runs:
            run.net = None
        return {run.spec.name: self._result(run) for run in self.runs}

    def _iteration(self, it: int) -> None:
        self.iteration_stats = {}
        for run in self.runs:
            run.losses = []
        state = self.backbone.prepare(self, it)
        for step in range(self.updates):
            self._step = {}
            keys = self.key(it, step)
            self.dsa_params = (
                self.dsa.sample(self.k, generator=self.generator("dsa", *keys), device=self.device)
                if self.dsa is not None
                else None
            )
            where = f"iteration {it}" + (f", outer step {step}" if self.backbone.keyed_by_step else "")
            for run in self.runs:
                run.optimizer.zero_grad(set_to_none=True)
                loss = self.backbone.match(self, run, state, it, step)
                run.optimizer.step()
                run.losses.append(total_and_check(self.rt, run.spec.name, loss, run.images, where))
            if step < self.updates - 1:
                self.backbone.between(self, state, it, step)
        self._step = {}
        for run in self.runs:
            self.backbone.end_iteration(run)

    # ---- pieces --------------------------------------------------------------------------------------
    def _start(self, spec: MethodSpec, init: Tensor) -> MethodRun:
        spec = check_method(spec)
        target = get_target(spec.target)
        own = spec.config_for(self.config)
        images = init.clone().requires_grad_(True)
        run = self.backbone.run_type(
            spec=spec,
            target=target,
            distance=self.backbone.distances.get(spec.distance),
            sampling=resolve_sampling(target, spec.sampling),
            config=own,
            images=images,
            optimizer=image_optimizer(images, own),
        )
        self.backbone.start(self, run)
        return run

    def _draw_real(self, sampling: str, it: int, step: int) -> RealBatch:
        sampler, device = self.sampler, self.device
        idx = sampler.draw(sampling, self.config.batch_real, self.generator("real", sampling, *self.key(it, step)))
        if self.backbone.orders_real:
            idx = idx[torch.argsort(sampler.labels[idx], stable=True)]  # classes contiguous
        # the counts come from the whole batch (labels alone, the same in every process); the images,
        # from this process's classes only
        counts = GroupStats.from_counts(
            sampler.labels[idx].to(device),
            sampler.groups[idx].to(device),
            self.k,
            self.g,
            population_shares=self.stratified_shares(sampling),
        )
        idx = self.shard.keep(idx, sampler.labels).to(device)
        x, y = self.dataset.train.take(idx, device), self.real_y[idx]
        if self.dsa is not None and self.dsa_params is not None:
            with torch.no_grad():
                x = self.dsa.apply(x, self.dsa_params, y)  # the class's transform: Siamese with the synthetic images
        return RealBatch(x, y, self.real_a[idx], counts)

    def _result(self, run: MethodRun) -> SyntheticSet:
        meta = synthetic_meta(self.dataset, run.spec, self.config)
        meta["sampling"] = run.sampling
        meta.update(self.backbone.meta(self, run))
        images = self.gather(run.images.detach()).cpu().clone()  # the whole set, on every process (collective)
        return self.backbone.finish(self, run, SyntheticSet(images, self.all_labels.cpu().clone(), meta))


# ---- class sharding ----------------------------------------------------------------------------------
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


def check_methods(methods: Sequence[MethodSpec]) -> None:
    """At least one method, and unique names (they key the results)."""
    if not methods:
        raise FairDistillError("no method to distill")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise FairDistillError(f"method names must be unique, got {names}")


# ---- resuming ------------------------------------------------------------------------------------
def snapshot_runs(
    runs: Sequence[MethodRun], done: int, gather: Callable[[Tensor], Tensor] | None = None
) -> DistillState:
    """The state of ``runs`` after ``done`` iterations.

    ``gather`` (a class-sharded run: the runtime's ``gather_rows``) makes the images, and every
    optimiser tensor shaped like them (momentum), whole; it is collective, so every process calls this.
    """
    out = {}
    for run in runs:
        # the checkpoint keeps these as JSON: tensors (counters) and tuples as lists, copies of the live values
        extra = {f: _plain(getattr(run, f)) for f in run.RESUME_FIELDS}
        ms = capture(run.images, run.optimizer, extra)
        if gather is not None:
            local = tuple(ms.images.shape)
            for entries in ms.optimizer.get("state", {}).values():
                for key, value in entries.items():
                    if isinstance(value, Tensor) and tuple(value.shape) == local:
                        entries[key] = gather(value)
            ms.images = gather(ms.images)
        out[run.spec.name] = ms
    return DistillState(done, out)


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back: tensors and tuples as lists, containers copied."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


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
    runs: Sequence[MethodRun], state: DistillState | None, config: DistillConfig, rows: slice | None = None
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
        for key in run.RESUME_FIELDS:
            if key in saved.extra:  # JSON gives lists back: the run's type and shape, checked
                value = restore_field(getattr(run, key), saved.extra[key], f"{saved.source}: {key}")
                setattr(run, key, value)
    return state.done
