"""CAFE: condensing a dataset by aligning features (Wang et al., CVPR 2022), with any target and distance.

CAFE matches the class-mean features of the synthetic images to those of real images at several
depths of a ConvNet that is trained on the synthetic set in between (a bi-level loop, like DC), and
adds a discrimination term. Each iteration:

1. draw a fresh network (the same initial weights for every method of the run); each method trains
   its own copy in the inner loop, since each copy is trained on a different synthetic set;
2. ``outer_loop`` times:

   a. BatchNorm nets only: as in DC (:func:`~fairdistill.backbones.dc.freeze_batchnorm`), so that a
      sample's features do not depend on the rest of its batch;
   b. one real batch per sampling, augmented once (DSA, the class's transform, shared with the
      synthetic images), goes through the method's network ONCE; the features of every matched
      layer are summed per (class, group) cell (one :class:`~fairdistill.targets.GroupStats` per
      layer, :func:`layer_group_stats`);
   c. the synthetic images go through the network; the loss is

          sum_l w_l * target.loss(stats_l, mean_S(l), d)  +  disc_weight * sum_i CE(e_i . P^T / tau, y_i)

      where ``mean_S(l)`` is the (K, D_l) class mean of layer ``l`` over the synthetic images, ``e_i``
      the embedding of real image i and ``P`` the (K, D) class means of the synthetic embeddings:
      the real images must be classified by their similarity to the synthetic class centres (the
      discrimination term, vanilla for every target: real labels only, no group aggregation); one SGD
      step (momentum ``img_momentum``) on the images;
   d. except after the last outer step: train the network on the (detached) synthetic set, one
      epoch at a time (:func:`fairdistill.training.train`, plain SGD at ``lr_net``, as DC) for at most
      ``inner_loop`` epochs, stopping early by :class:`InnerStop`.

Matched layers (:func:`layer_features`): the output of every conv block before its pooling, then
the embedding (the last block's pooled output, flattened), as in CAFE's code (Wang et al.). CAFE's
weights (the code's ``fourth/third/second/first_weight`` = 0.1 / 0.1 / 1 / 1 on the three block
outputs and the pooled last block, plus an unweighted term on its flattened copy, i.e. the same
features again): 0.1 on every block but the last, 1 on the last block, 2 on the embedding
(:func:`published_layer_weights`). The discrimination term is published with weight 0.01 on the CE
*summed* over the real batch (``inner_weight``) and no temperature (tau = 1); both are settings.
The image learning rate halves at 60%, 80% and 90% of the iterations (published: 1200, 1600 and
1800 of 2000).

Targets act per layer (SPEC section 2): population, barycenter and uniform-sampling are weighted
means of each layer's group means; group-sync sums one distance per present group per layer, so
under squared L2 its gradient is |A| times the barycenter's, layer by layer. The generalised
barycenters (``bary-l1`` ... ``bary-huber``, :mod:`fairdistill.barycenters`) are solved per layer from
that layer's group means; ``bary-w2`` needs per-sample features and is refused (DM only).

COBRA's CAFE script (the ``cobra-paper`` profile) runs vanilla CAFE with all four layer weights 1
(1, 1, 1 and 2 on the embedding), and its cobra mode with weights 1, 1, 0.1 and 1.1, no
discrimination term and each class's loss divided by the number of classes (``class_reduction``),
given per method through ``MethodSpec.settings`` so both run in lockstep; its inner loop always runs
its full get_loops epochs (the early stop below is off there: ``inner_stop_acc`` and
``inner_patience`` None). Its vanilla loss also adds the network's CE on the real batch, which does
not depend on the synthetic images and so moves none of them; it is left out.

Differences from CAFE's own schedule, on purpose (our profiles): the number of outer steps is DC's schedule for
the IPC (the published outer loop runs until the network's accuracy on a real query batch ranges
less than 0.04 over 10 outer steps, which cannot fire before the 10th step, DC's cap at IPC 10);
the inner loop (published: until that query accuracy moved more than 0.03 within 10 epochs, with no
cap) is capped at DC's ``inner_loop`` epochs and ends early when the network has learnt what the
synthetic set can teach it (:class:`InnerStop`: its accuracy on the synthetic set reaches a
threshold or stops improving), measured on the synthetic set, so no extra real data is forwarded.

Lockstep as in DC: real batches, BN batches, DSA transforms and inner-loop shuffles come from
generators derived from (seed, purpose, iteration, outer step), so a method distilled alone gives
the same images as in lockstep with others. Methods with the same sampling share the real batch and
its augmentation; the networks (and so the features) are per method.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import rng, runtime
from ..artifacts import SyntheticSet
from ..augment import DSA, DSAParams
from ..checkpoint import DistillState
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler
from ..distances import DISTANCES, Distance, get_distance
from ..errors import FairDistillError
from ..targets import ALL, GroupStats, Target, get_target, resolve_sampling
from ..training import SGDConfig, train
from . import BACKBONES
from .base import (
    IMAGE_SETTINGS,
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
from .dc import BN_IMAGES_PER_CLASS, INNER_BATCH, dc_loops, freeze_batchnorm, has_batchnorm

#: fractions of the iterations at which the image learning rate halves (published: 1200/1600/1800 of 2000)
LR_HALVINGS = (0.6, 0.8, 0.9)
_POOLS = (nn.AvgPool2d, nn.MaxPool2d)


def image_lr(config: DistillConfig, iteration: int) -> float:
    """The image learning rate at ``iteration``: ``lr_img`` halved at each of :data:`LR_HALVINGS` passed."""
    return config.lr_img * 0.5 ** sum(iteration >= f * config.iterations for f in LR_HALVINGS)


# ---- the matched layers ----------------------------------------------------------------------------
def _check_convnet(net: nn.Module) -> None:
    if not (isinstance(getattr(net, "features", None), nn.Sequential) and hasattr(net, "classifier")):
        raise FairDistillError(
            f"the cafe backbone matches the blocks of a ConvNet-family model (features + classifier); "
            f"got {type(net).__name__}"
        )


def num_layers(net: nn.Module) -> int:
    """How many layers CAFE matches in ``net``: one per conv block, plus the embedding."""
    _check_convnet(net)
    return sum(isinstance(m, nn.Conv2d) for m in net.features) + 1


def layer_features(net: nn.Module, x: Tensor) -> list[Tensor]:
    """The features CAFE matches, each flattened to (B, D_l): every conv block's output before its
    pooling (a block ends before a pooling layer or the next conv), then the embedding ``net.embed(x)``.
    """
    _check_convnet(net)
    mods = list(net.features)
    out = []
    h = x
    for i, m in enumerate(mods):
        h = m(h)
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if not isinstance(m, _POOLS) and (nxt is None or isinstance(nxt, (nn.Conv2d, *_POOLS))):
            out.append(h.flatten(1))
    out.append(h.flatten(1))  # the embedding (what the classifier sees)
    return out


def published_layer_weights(layers: int) -> tuple[float, ...]:
    """CAFE's published weights for ``layers`` matched layers (blocks, then the embedding).

    The published ConvNet-3 weights are 0.1, 0.1, 1 on the three block outputs and 2 on the
    embedding (matched once as the pooled map and once flattened, weight 1 each); for other depths
    every block but the last keeps 0.1.
    """
    if layers < 2:
        raise FairDistillError(f"CAFE needs at least one block and the embedding, got {layers} layers")
    return (0.1,) * (layers - 2) + (1.0, 2.0)


def resolve_layer_weights(config: DistillConfig, layers: int) -> tuple[float, ...]:
    """The config's ``layer_weights`` (checked against the net's ``layers``) or the published ones."""
    if config.layer_weights is None:
        return published_layer_weights(layers)
    weights = tuple(float(w) for w in config.layer_weights)
    if len(weights) != layers:
        raise FairDistillError(
            f"layer_weights has {len(weights)} entries but the network has {layers} matched layers "
            f"({layers - 1} blocks and the embedding)"
        )
    return weights


def layer_group_stats(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    a: Tensor,
    num_classes: int,
    num_groups: int,
    population_shares: Tensor | None = None,
) -> tuple[list[GroupStats], Tensor]:
    """Per-(class, group) sums of every matched layer's features from ONE forward pass of the real batch.

    Returns one :class:`GroupStats` per layer (same counts, the layer's sums) and the (N, D)
    embeddings of the batch (the discrimination term needs them per sample).
    """
    with torch.no_grad():
        feats = layer_features(net, x)
    stats = [GroupStats.from_features(f, y, a, num_classes, num_groups, population_shares) for f in feats]
    return stats, feats[-1]


# ---- the loss ----------------------------------------------------------------------------------------
def feature_loss(
    target: Target,
    stats: Sequence[GroupStats],
    syn_means: Sequence[Tensor],
    distance: Distance,
    weights: Sequence[float],
    classes: slice = ALL,
) -> Tensor:
    """``sum_l w_l * target.loss(stats_l, syn_means_l, d)``: the target's aggregation, layer by layer.

    ``classes``: the synthetic means are of these classes only (one process of a class-sharded run).
    """
    terms = [
        w * target.loss(s, m, distance, classes) for s, m, w in zip(stats, syn_means, weights, strict=True) if w != 0
    ]
    return torch.stack(terms).sum() if terms else syn_means[-1].new_zeros(())


def discrimination_loss(
    real_embed: Tensor, real_labels: Tensor, syn_centres: Tensor, temperature: float = 1.0
) -> Tensor:
    """CAFE's discrimination term: ``sum_i CE(softmax_k(<e_i, P_k> / tau), y_i)``, summed over the real batch.

    ``real_embed`` (N, D) and ``real_labels`` (N,): the real batch; ``syn_centres`` (K, D): the class
    means of the synthetic embeddings. Low when every real image is most similar to the centre of its
    own class. Summed, not averaged, as published.
    """
    logits = real_embed @ syn_centres.T / temperature
    return F.cross_entropy(logits, real_labels, reduction="sum")


# ---- the inner loop's early stop -----------------------------------------------------------------------
@dataclass(frozen=True)
class InnerStop:
    """When the inner loop (training the network on the synthetic set) ends before its epoch cap.

    The monitored value is the network's accuracy on the (un-augmented) synthetic set: ``history[0]``
    before the loop's first epoch, ``history[e]`` after epoch e. After each epoch the loop stops when

    * ``accuracy``: the network classifies at least this share of the synthetic set correctly, or
    * ``patience``: the accuracy has not risen above its best before the last ``patience`` epochs
      (the net has stopped learning from this synthetic set; further epochs only over-fit it).

    ``None`` turns a criterion off; with both off the loop always runs its full cap.
    """

    accuracy: float | None = 1.0
    patience: int | None = 5

    @classmethod
    def from_config(cls, config: DistillConfig) -> InnerStop:
        return cls(config.inner_stop_acc, config.inner_patience)

    @property
    def enabled(self) -> bool:
        return self.accuracy is not None or self.patience is not None

    def check(self, history: Sequence[float]) -> str | None:
        """``"accuracy"`` or ``"plateau"`` if the loop should stop now, else ``None`` (at least one epoch runs)."""
        epochs = len(history) - 1
        if epochs < 1:
            return None
        if self.accuracy is not None and history[-1] >= self.accuracy:
            return "accuracy"
        p = self.patience
        if p is not None and epochs >= p and max(history[-p:]) <= max(history[:-p]):
            return "plateau"
        return None


@torch.no_grad()
def synthetic_accuracy(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of the synthetic images that ``net`` (in eval mode) puts in their own class."""
    net.eval()
    return float((net(images).argmax(1) == labels).float().mean())


def train_inner(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    max_epochs: int,
    stop: InnerStop,
    generator: torch.Generator,
    sgd: SGDConfig,
    dsa: DSA | None,
) -> tuple[int, str | None]:
    """Train ``net`` on the synthetic set one epoch at a time (DC's :func:`train`), stopping by ``stop``.

    Returns (epochs trained, the reason it stopped early or ``None``). The SGD has no momentum or
    weight decay, so epoch-by-epoch calls with one generator equal a single ``max_epochs`` call.
    """
    images = images.detach()
    history = [synthetic_accuracy(net, images, labels)] if stop.enabled else []
    for epoch in range(1, max_epochs + 1):
        train(net, images, labels, epochs=1, generator=generator, sgd=sgd, dsa=dsa)
        if stop.enabled:
            history.append(synthetic_accuracy(net, images, labels))
            reason = stop.check(history)
            if reason is not None:
                return epoch, reason
    return max_epochs, None


# ---- the backbone ------------------------------------------------------------------------------------
@dataclass
class _RealBatch:
    """One outer step's real batch for one sampling, augmented once for all methods."""

    x: Tensor
    y: Tensor
    a: Tensor


@dataclass
class _Run:
    """One method's state during lockstep distillation."""

    spec: MethodSpec
    target: Target
    distance: Distance
    sampling: str
    images: Tensor
    optimizer: torch.optim.Optimizer
    #: the run's config with this method's own settings (layer weights, discrimination term, reduction)
    config: DistillConfig
    #: the weight of each matched layer, resolved against the network
    weights: tuple[float, ...] = ()
    net: nn.Module | None = None
    losses: list[tuple[float, float]] = field(default_factory=list)  # (feature, discrimination) per outer step
    last_loss: float = float("nan")
    last_parts: tuple[float, float] = (float("nan"), float("nan"))
    inner_loops: int = 0
    inner_epochs: int = 0
    stops: dict[str, int] = field(default_factory=lambda: {"accuracy": 0, "plateau": 0})

    #: what carries over an iteration boundary besides the images and the optimiser (for resuming);
    #: the learning rate is re-derived from the iteration (``image_lr``), the network is redrawn
    RESUME_FIELDS: ClassVar[tuple[str, ...]] = ("last_loss", "last_parts", "inner_loops", "inner_epochs", "stops")


@BACKBONES.register("cafe", "layer-wise feature alignment + discrimination, network trained on the synthetic set")
class CAFE(Backbone):
    name = "cafe"
    distances = DISTANCES
    default_distance = "l2sq"
    # CAFE draws a fresh network each iteration and trains it itself (inner loop): no other embedder applies
    embedders = ("random",)
    # per-class feature matching; the discrimination term sees every class's centre (gathered) and
    # the inner loop trains on the gathered set
    shards_classes = True
    # COBRA's CAFE script weights the layers otherwise, drops the discrimination term and averages over the
    # classes in the cobra mode only: these may differ between the methods of one run
    method_settings = (*IMAGE_SETTINGS, "layer_weights", "disc_weight", "disc_temperature", "class_reduction")

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
        outer, inner = dc_loops(config)
        stop = InnerStop.from_config(config)
        rt = runtime.current()
        shard = class_shard(rt, k, config.ipc)  # this process's classes (all of them in a single process)
        inits, all_labels = method_initial_images(methods, config, lambda c: initial_images(dataset, c))
        syn_labels, all_labels = all_labels[shard.rows].to(device), all_labels.to(device)
        runs = [self._start(m, config, inits[m.name][shard.rows].to(device)) for m in methods]

        real_y, real_a = dataset.train.labels.to(device), dataset.train.groups.to(device)
        sampler = RealSampler(dataset.train, k, g)
        shares = dataset.group_shares().to(device)
        dsa = distill_dsa(dataset, config)
        inner_dsa = train_dsa(dataset, config)
        inner_sgd = SGDConfig(lr=config.lr_net, momentum=0.0, weight_decay=0.0, batch_size=INNER_BATCH, decay_at=None)
        # the architecture is the same every iteration: check the layer weights against it up front
        layers = num_layers(make_network(dataset, config, "cafe-net", 0, device=device))
        for run in runs:
            run.weights = resolve_layer_weights(run.config, layers)

        for it in range(resume_runs(runs, resume, config, shard.rows), config.iterations):
            net = make_network(dataset, config, "cafe-net", it, device=device)
            bn = has_batchnorm(net)
            lr = image_lr(config, it)
            for run in runs:
                run.net = copy.deepcopy(net)
                run.losses = []
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
            for ol in range(outer):
                dsa_params = None
                if dsa is not None:  # one transform per class, shared by the real and synthetic images
                    dsa_params = dsa.sample(k, generator=rng.generator(config.seed, "cafe-dsa", it, ol), device=device)
                bn_x = None
                if bn:
                    idx = sampler.class_batch(BN_IMAGES_PER_CLASS, rng.generator(config.seed, "cafe-bn", it, ol))
                    bn_x = dataset.train.take(idx, device)
                batches: dict[str, _RealBatch] = {}
                for run in runs:
                    if run.sampling not in batches:
                        gen = rng.generator(config.seed, "cafe-real", run.sampling, it, ol)
                        idx = sampler.draw(run.sampling, config.batch_real, gen)
                        # classes in order (draws already are), so the processes' parts concatenate to the batch
                        idx = idx[torch.argsort(sampler.labels[idx], stable=True)]
                        idx = shard.keep(idx, sampler.labels).to(device)  # this process's classes
                        x, y = dataset.train.take(idx, device), real_y[idx]
                        if dsa is not None and dsa_params is not None:
                            with torch.no_grad():
                                x = dsa.apply(x, dsa_params, y)
                        batches[run.sampling] = _RealBatch(x, y, real_a[idx])
                    if bn_x is not None:
                        freeze_batchnorm(run.net, bn_x)
                    else:
                        run.net.train()
                    step_shares = shares if run.sampling == "stratified" else None
                    feat, disc = self._outer_step(
                        run,
                        batches[run.sampling],
                        syn_labels,
                        k,
                        g,
                        step_shares,
                        dsa,
                        dsa_params,
                        shard.classes,
                    )
                    # the feature loss summed over the processes (each matches its own classes); the
                    # discrimination term as it is (every process computes it whole)
                    feat = total_and_check(rt, run.spec.name, feat, run.images, f"iteration {it}, outer step {ol}")
                    run.losses.append((feat, disc))
                    if ol < outer - 1 and inner > 0:
                        epochs, reason = train_inner(
                            run.net,
                            rt.gather_rows(run.images.detach()),  # the whole synthetic set
                            all_labels,
                            max_epochs=inner,
                            stop=stop,
                            generator=rng.generator(config.seed, "cafe-inner", it, ol),
                            sgd=inner_sgd,
                            dsa=inner_dsa,
                        )
                        run.inner_loops += 1
                        run.inner_epochs += epochs
                        if reason is not None:
                            run.stops[reason] += 1
            for run in runs:  # mean over the outer steps
                feat = sum(f for f, _ in run.losses) / len(run.losses)
                disc = sum(d for _, d in run.losses) / len(run.losses)
                run.last_parts, run.last_loss = (feat, disc), feat + disc
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
            meta = synthetic_meta(dataset, run.spec, config)
            meta.update(
                sampling=run.sampling,
                outer_loop=outer,
                inner_loop=inner,
                layer_weights=list(run.weights),
                disc_weight=run.config.disc_weight,
                class_reduction=run.config.class_reduction,
                final_loss=run.last_loss,
                final_feature_loss=run.last_parts[0],
                final_discrimination_loss=run.last_parts[1],
                # how often the dynamic inner loop ended before its cap, and why
                inner_loops=run.inner_loops,
                inner_epochs=run.inner_epochs,
                inner_early_stops=sum(run.stops.values()),
                inner_stop_reasons=dict(run.stops),
            )
            images = rt.gather_rows(run.images.detach()).cpu().clone()  # the whole set, on every process
            out[run.spec.name] = SyntheticSet(images, all_labels.cpu(), meta)
        return out

    # ---- pieces ------------------------------------------------------------------------------
    @staticmethod
    def _start(spec: MethodSpec, config: DistillConfig, init_x: Tensor) -> _Run:
        spec = spec.resolved().validate()
        target = get_target(spec.target)
        images = init_x.clone().requires_grad_(True)
        opt = image_optimizer(images, spec.config_for(config))
        sampling = resolve_sampling(target, spec.sampling)
        return _Run(spec, target, get_distance(spec.distance), sampling, images, opt, spec.config_for(config))

    @staticmethod
    def _outer_step(
        run: _Run,
        batch: _RealBatch,
        syn_labels: Tensor,
        k: int,
        g: int,
        shares: Tensor | None,
        dsa: DSA | None,
        dsa_params: DSAParams | None,
        classes: slice = ALL,
    ) -> tuple[float, float]:
        """Layer-wise matching + discrimination, one image step; returns the two losses.

        ``classes``: the classes whose synthetic images ``run`` holds (one process's share of a sharded run).
        """
        net, config = run.net, run.config
        assert net is not None
        rt = runtime.current()
        # this process's real images (its classes), then every class's statistics from all processes
        local, real_embed = layer_group_stats(net, batch.x, batch.y, batch.a, k, g, shares)
        stats = [s.all_reduced(rt.all_reduce, shares) for s in local]
        x_syn = run.images
        if dsa is not None and dsa_params is not None:
            x_syn = dsa.apply(x_syn, dsa_params, syn_labels)  # the class's transform: Siamese with the real batch
        own = len(syn_labels) // config.ipc
        syn_means = [f.view(own, config.ipc, -1).mean(1) for f in layer_features(net, x_syn)]
        feat = feature_loss(run.target, stats, syn_means, run.distance, run.weights, classes)
        if config.class_reduction == "mean":
            feat = feat / k
        disc = feat.new_zeros(())
        if config.disc_weight > 0:
            # the term couples all classes: the whole real batch against every class's centre, of which
            # this process's stay differentiable (so its images get exactly their share of the gradient)
            disc = config.disc_weight * discrimination_loss(
                rt.gather_rows(real_embed),
                rt.gather_rows(batch.y),
                rt.gather_rows_keeping_grad(syn_means[-1]),
                config.disc_temperature,
            )
        run.optimizer.zero_grad(set_to_none=True)
        (feat + disc).backward(inputs=[run.images])
        run.optimizer.step()
        return float(feat.detach()), float(disc.detach())
