"""DC: dataset condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021), with any target.

The matched representation is the gradient of the cross-entropy w.r.t. the weights of a ConvNet:
the synthetic images of class c are moved so that the gradient they produce points where the
gradient of the real images of class c points. Each iteration:

1. draw a fresh network (the same initial weights for every method of the run); each method
   trains its own copy in the inner loop, since each copy is trained on a different synthetic set;
2. ``outer_loop`` times:

   a. BatchNorm nets only: forward 16 real images per class in train mode to update the running
      statistics, then put the BN layers in eval mode, so that a sample's output does not depend
      on the rest of its batch (the per-sample weighting below relies on that);
   b. per class c: the real gradient ``g_T(c)`` of the target's loss on a real batch of class c,
      the synthetic gradient ``g_S(c)`` of the mean CE on the synthetic images of c (kept
      differentiable w.r.t. the pixels), and the gradient distance ``D(g_T(c), g_S(c))``; then one
      SGD step (momentum ``img_momentum``, lr ``lr_img``) on the images;
   c. except after the last outer step: train the method's network on its current (detached)
      synthetic set for ``inner_loop`` epochs (plain SGD, lr ``lr_net``, batch 256, DSA if on).

Targets (SPEC section 2). A weighted target (population, barycenter, uniform-sampling) is ONE
backward pass of a per-sample-weighted CE: sample i of group a in class c gets weight
``w(c, a) / n(c, a)`` (:meth:`~fairdistill.targets.Target.sample_weights`). The gradient is
linear in the per-sample losses, so this is ``sum_a w(c, a)`` times the mean-CE gradient of group a;
with the barycenter's ``w = 1/|A_c|`` it is the mean of the group gradients (COBRA-DC) at the cost
of vanilla DC (fact 2). Real samples without a group label (partial labels, group -1) get weight 0
under group targets and their share of the class under ``population``. A per-group target
(group-sync, FairDD) matches every present group's own gradient: a forward and backward per group
(on that group's images), one distance term per group.
The generalised barycenters (``bary-*``, solved from feature vectors, no cell weights) have no such
form and are refused when the run starts (:meth:`~fairdistill.backbones.base.Backbone.check_target`).

Lockstep as in DM: real batches, BN batches, DSA transforms and inner-loop shuffles are drawn from
generators derived from (seed, purpose, iteration, outer step), so a method distilled alone gives
the same images as in lockstep with others. Methods with the same sampling share the real batch
and its augmentation; the networks (and so the gradients) are per method.

Subclasses change what the synthetic images are and how the network moves through a handful of
hooks (``_initial_images``, ``_class_images``, ``_loops``, ``_begin_iteration``,
``_update_networks``, ``_result``); IDC (``backbones/idc.py``) is DC with multi-formation and a
network trained on real data.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import rng, runtime
from ..artifacts import SyntheticSet
from ..augment import DSA, DSAParams
from ..checkpoint import DistillState
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler
from ..distances import GRADIENT_DISTANCES, GradientDistance, get_gradient_distance
from ..errors import FairDistillError
from ..targets import GroupStats, GroupSync, Target, get_target, resolve_sampling
from ..training import SGDConfig, train
from . import BACKBONES
from .base import (
    Backbone,
    IterationCallback,
    IterationState,
    check_methods,
    class_shard,
    distill_dsa,
    image_optimizer,
    initial_images,
    make_network,
    method_initial_images,
    resume_runs,
    snapshot_runs,
    synthetic_meta,
    total_and_check,
    train_dsa,
)

#: published (outer_loop, inner_loop) by IPC (Zhao et al. 2021); every IPC above 50 gets (100, 10)
PUBLISHED_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}
ABOVE_50_LOOPS = (100, 10)

#: real images per class forwarded to set the BatchNorm statistics before each outer step (published)
BN_IMAGES_PER_CLASS = 16
#: batch size of the inner training on the synthetic set (published ``batch_train``)
INNER_BATCH = 256


def published_loops(ipc: int) -> tuple[int, int]:
    """The (outer_loop, inner_loop) schedule of DC for ``ipc``.

    The published IPCs (1, 10, 20, 30, 40, 50) get their published pair and every IPC above 50 gets
    (100, 10). The published code refuses any other IPC; here an IPC between two published ones
    takes the pair of the nearest published IPC below it (2-9 -> (1, 1), 15 -> (10, 50), ...), i.e.
    no more outer steps than the published schedule would make for a larger set.
    """
    if ipc < 1:
        raise FairDistillError(f"ipc must be >= 1, got {ipc}")
    if ipc > 50:
        return ABOVE_50_LOOPS
    return PUBLISHED_LOOPS[max(k for k in PUBLISHED_LOOPS if k <= ipc)]


def dc_loops(config: DistillConfig) -> tuple[int, int]:
    """(outer_loop, inner_loop) of a run: the config's values where set, else the published schedule."""
    outer, inner = published_loops(config.ipc)
    return (
        config.outer_loop if config.outer_loop is not None else outer,
        config.inner_loop if config.inner_loop is not None else inner,
    )


# ---- gradients -----------------------------------------------------------------------------------
def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in net.modules())


def freeze_batchnorm(net: nn.Module, images: Tensor) -> None:
    """Update the BN running statistics with one train-mode forward of ``images``, then fix them.

    As published: the network stays in train mode except its BN layers, which switch to eval mode
    so that matching sees per-sample (batch-independent) outputs.
    """
    net.train()
    with torch.no_grad():
        net(images)
    for m in net.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


def weighted_gradient(net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, weights: Tensor) -> list[Tensor]:
    """Gradient of ``sum_i weights[i] * CE(net(x_i), y_i)`` w.r.t. ``params``: one forward, one backward.

    With ``weights = w(c, a_i) / n(c, a_i)`` this is ``sum_a w(c, a) * grad mean_{i in a} CE_i``.
    Needs per-sample outputs (instance norm, or BN in eval mode).
    """
    ce = F.cross_entropy(net(x), y, reduction="none")
    return list(torch.autograd.grad((weights * ce).sum(), params))


def group_gradients(
    net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor, groups: Tensor, which: Sequence[int]
) -> list[list[Tensor]]:
    """The mean-CE gradient of each group in ``which``, each from a forward and backward on that group alone.

    Outputs are per-sample, so this equals slicing one shared forward; but a backward from a
    shared forward runs over the whole batch every time (G full backwards), whereas per-group
    passes cost about one pass over the batch in total.
    """
    out = []
    for gid in which:
        m = groups == gid
        out.append(list(torch.autograd.grad(F.cross_entropy(net(x[m]), y[m]), params)))
    return out


# ---- the backbone --------------------------------------------------------------------------------
@dataclass
class _RealBatch:
    """One outer step's real batch for one sampling, ordered by class, augmented once for all methods."""

    x: Tensor
    y: Tensor
    a: Tensor
    stats: GroupStats
    sizes: list[int]  # images per class


@dataclass
class _Run:
    """One method's state during lockstep distillation.

    Only the images, the image optimiser (momentum) and ``last_loss`` cross an iteration boundary (what a
    checkpoint saves): the network is redrawn every iteration, and IDC's real-data optimiser with it.
    """

    spec: MethodSpec
    target: Target
    distance: GradientDistance
    sampling: str
    images: Tensor
    optimizer: torch.optim.Optimizer
    net: nn.Module | None = None
    losses: list[float] = field(default_factory=list)
    last_loss: float = float("nan")


@dataclass
class MatchContext:
    """What every step of one distillation sees: data, settings, real labels and groups on the device."""

    dataset: FairDataset
    config: DistillConfig
    device: torch.device
    outer: int
    inner: int
    syn_labels: Tensor  # labels of this process's stored synthetic images, ordered by class
    all_labels: Tensor  # labels of the whole stored set (the same in a single process)
    gather: Callable[[Tensor], Tensor]  # this process's rows -> the whole set (the runtime's gather_rows)
    first_class: int  # this process holds the images of classes first_class, first_class + 1, ...
    real_y: Tensor
    real_a: Tensor
    dsa: DSA | None  # Siamese: one transform per class, shared by real and synthetic images
    train_dsa: DSA | None  # when a network trains between image updates


@BACKBONES.register("dc", "gradient matching: CE gradients of a ConvNet trained on the synthetic set in between")
class DC(Backbone):
    name = "dc"
    shards_classes = True  # per-class matching; the inner loop trains on the gathered set
    distances = GRADIENT_DISTANCES
    default_distance = "layer-cosine"
    # DC draws a fresh network each iteration and trains it itself (inner loop): no other embedder applies
    embedders = ("random",)
    # the generalised barycenters have no per-sample weights: one weighted real gradient cannot express them
    feature_targets = False

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
        config.validate()
        check_methods(methods)
        k, g = dataset.num_classes, dataset.num_train_groups  # the training split's groups (may be pseudo-groups)
        outer, inner = self._loops(config)
        rt = runtime.current()
        shard = class_shard(rt, k, config.ipc)  # this process's classes (all of them in a single process)
        inits, all_labels = method_initial_images(methods, config, lambda c: self._initial_images(dataset, c))
        runs = [self._start(m, config, inits[m.name][shard.rows].to(device)) for m in methods]
        ctx = MatchContext(
            dataset=dataset,
            config=config,
            device=device,
            outer=outer,
            inner=inner,
            syn_labels=all_labels[shard.rows].to(device),
            all_labels=all_labels.to(device),
            gather=rt.gather_rows,
            first_class=shard.owned.start,
            real_y=dataset.train.labels.to(device),
            real_a=dataset.train.groups.to(device),
            dsa=distill_dsa(dataset, config),
            train_dsa=train_dsa(dataset, config),
        )
        sampler = RealSampler(dataset.train, k, g)
        shares = dataset.group_shares().to(device)
        dsa = ctx.dsa

        for it in range(resume_runs(runs, resume, config, shard.rows), config.iterations):
            net = make_network(dataset, config, "dc-net", it, device=device)
            bn = has_batchnorm(net)
            for run in runs:
                run.net = copy.deepcopy(net)
                run.losses = []
            state = self._begin_iteration(net, runs, ctx, it)
            for ol in range(outer):
                dsa_params = None
                if dsa is not None:  # one transform per class, shared by the real and synthetic images
                    dsa_params = dsa.sample(k, generator=rng.generator(config.seed, "dc-dsa", it, ol), device=device)
                bn_x = None
                if bn:
                    idx = sampler.class_batch(BN_IMAGES_PER_CLASS, rng.generator(config.seed, "dc-bn", it, ol))
                    bn_x = dataset.train.take(idx, device)
                batches: dict[str, _RealBatch] = {}
                for run in runs:
                    if run.sampling not in batches:
                        gen = rng.generator(config.seed, "dc-real", run.sampling, it, ol)
                        idx = sampler.draw(run.sampling, config.batch_real, gen)
                        idx = idx[torch.argsort(sampler.labels[idx], stable=True)]  # classes contiguous
                        # the weights come from the whole batch's counts (labels alone, the same in every
                        # process); the images, from this process's classes only
                        stats = GroupStats.from_counts(
                            sampler.labels[idx].to(device),
                            sampler.groups[idx].to(device),
                            k,
                            g,
                            population_shares=shares if run.sampling == "stratified" else None,
                        )
                        idx = shard.keep(idx, sampler.labels).to(device)
                        batches[run.sampling] = self._real_batch(
                            dataset.train.take(idx, device), ctx.real_y[idx], ctx.real_a[idx], dsa, dsa_params, stats
                        )
                    if bn_x is not None:
                        freeze_batchnorm(run.net, bn_x)
                    else:
                        run.net.train()
                    loss = self._outer_step(run, batches[run.sampling], ctx, dsa_params)
                    where = f"iteration {it}, outer step {ol}"
                    run.losses.append(total_and_check(rt, run.spec.name, loss, run.images, where))
                if ol < outer - 1 and inner > 0:
                    self._update_networks(runs, ctx, state, it, ol)
            for run in runs:
                run.last_loss = sum(run.losses) / len(run.losses)  # mean over the outer steps
            if callback is not None:
                callback(
                    IterationState(
                        it + 1,
                        config.iterations,
                        {r.spec.name: r.last_loss for r in runs},
                        {r.spec.name: r.images.detach() for r in runs},
                        snapshot=functools.partial(snapshot_runs, runs, it + 1, rt.gather_rows),
                        classes=shard.owned,
                    )
                )

        out = {}
        for run in runs:
            run.net = None
            out[run.spec.name] = self._result(run, ctx)
        return out

    # ---- what a subclass changes (IDC: multi-formation, networks trained on real data) ------------
    def _loops(self, config: DistillConfig) -> tuple[int, int]:
        """(outer_loop, inner_loop) of a run."""
        return dc_loops(config)

    def _initial_images(self, dataset: FairDataset, config: DistillConfig) -> tuple[Tensor, Tensor]:
        """The stored synthetic images a run starts from, and their labels (ordered by class)."""
        return initial_images(dataset, config)

    def _class_images(self, images: Tensor, labels: Tensor, ctx: MatchContext) -> tuple[Tensor, Tensor]:
        """The training images (kept differentiable) that one class's stored images stand for: DC stores them as is."""
        return images, labels

    def _begin_iteration(self, net: nn.Module, runs: Sequence[_Run], ctx: MatchContext, it: int) -> Any:
        """Called once the iteration's network is drawn; what it returns is handed to :meth:`_update_networks`."""
        return None

    def _update_networks(self, runs: Sequence[_Run], ctx: MatchContext, state: Any, it: int, ol: int) -> None:
        """Between image updates: DC trains each method's network on that method's (detached) synthetic set."""
        sgd = SGDConfig(lr=ctx.config.lr_net, momentum=0.0, weight_decay=0.0, batch_size=INNER_BATCH, decay_at=None)
        for run in runs:
            assert run.net is not None
            train(
                run.net,
                ctx.gather(run.images.detach()),  # the whole synthetic set, from every process
                ctx.all_labels,
                epochs=ctx.inner,
                generator=rng.generator(ctx.config.seed, "dc-inner", it, ol),
                sgd=sgd,
                dsa=ctx.train_dsa,
            )

    def _result(self, run: _Run, ctx: MatchContext) -> SyntheticSet:
        """The synthetic set a run hands back, with its metadata."""
        meta = synthetic_meta(ctx.dataset, run.spec, ctx.config)
        meta.update(sampling=run.sampling, outer_loop=ctx.outer, inner_loop=ctx.inner, final_loss=run.last_loss)
        # collective: every process gathers the whole set
        return SyntheticSet(ctx.gather(run.images.detach()).cpu().clone(), ctx.all_labels.cpu(), meta)

    # ---- pieces ------------------------------------------------------------------------------
    @staticmethod
    def _start(spec: MethodSpec, config: DistillConfig, init_x: Tensor) -> _Run:
        spec = spec.resolved().validate()
        target = get_target(spec.target)
        images = init_x.clone().requires_grad_(True)
        opt = image_optimizer(images, spec.config_for(config))
        sampling = resolve_sampling(target, spec.sampling)
        return _Run(spec, target, get_gradient_distance(spec.distance), sampling, images, opt)

    @staticmethod
    def _real_batch(
        x: Tensor, y: Tensor, a: Tensor, dsa: DSA | None, dsa_params: DSAParams | None, stats: GroupStats
    ) -> _RealBatch:
        """``stats``: the counts of the whole batch (every class), which the target's weights come from."""
        if dsa is not None and dsa_params is not None:
            with torch.no_grad():
                x = dsa.apply(x, dsa_params, y)  # the class's transform: Siamese with the synthetic batch
        sizes = torch.bincount(y, minlength=stats.counts.shape[0]).tolist()
        return _RealBatch(x, y, a, stats, sizes)

    def _outer_step(self, run: _Run, batch: _RealBatch, ctx: MatchContext, dsa_params: DSAParams | None) -> float:
        """Match every class's gradients and take one image step; returns the loss summed over classes."""
        net = run.net
        assert net is not None
        ipc, dsa = ctx.config.ipc, ctx.dsa
        params = list(net.parameters())
        weights = run.target.sample_weights(batch.stats, batch.y, batch.a)
        xs, ys, as_ = batch.x.split(batch.sizes), batch.y.split(batch.sizes), batch.a.split(batch.sizes)
        ws = weights.split(batch.sizes) if weights is not None else None
        # a class the batch defines no target for (e.g. only unlabelled samples under a group target) is skipped
        matched = run.target.matched_classes(batch.stats).tolist()
        run.optimizer.zero_grad(set_to_none=True)
        total = run.images.new_zeros(())
        first = ctx.first_class
        for c, n in enumerate(batch.sizes):
            if n == 0 or not matched[c]:  # (every class of another process has n == 0)
                continue
            sl = slice((c - first) * ipc, (c - first + 1) * ipc)
            x_syn, y_syn = self._class_images(run.images[sl], ctx.syn_labels[sl], ctx)
            if dsa is not None and dsa_params is not None:
                x_syn = dsa.apply(x_syn, dsa_params, y_syn)
            g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn), y_syn), params, create_graph=True)
            if ws is not None:
                loss = run.distance(weighted_gradient(net, params, xs[c], ys[c], ws[c]), g_syn)
            else:
                loss = _per_group_loss(run, net, params, xs[c], ys[c], as_[c], batch.stats.present[c], g_syn)
            # backward per class frees that class's double-backward graph before the next class
            loss.backward(inputs=[run.images])
            total = total + loss.detach()
        run.optimizer.step()
        return float(total)


def _per_group_loss(
    run: _Run,
    net: nn.Module,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    a: Tensor,
    present: Tensor,
    g_syn: Sequence[Tensor],
) -> Tensor:
    """A per-group target's loss for one class: one distance term per present group, reduced by the target."""
    if not isinstance(run.target, GroupSync):
        raise FairDistillError(
            f"target {run.target.name!r} gives no cell weights and is not a group-sync target; "
            "the dc backbone cannot match it"
        )
    which = present.nonzero().flatten()
    grads = group_gradients(net, params, x, y, a, which.tolist())
    per_group = torch.stack([run.distance(gr, g_syn) for gr in grads])
    per_cell = per_group.new_zeros(present.shape[0]).index_copy(0, which, per_group)
    return run.target.reduce_groups(per_cell.unsqueeze(0), present.unsqueeze(0))[0]
