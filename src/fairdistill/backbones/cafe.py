"""CAFE: condensing a dataset by aligning features (Wang et al., CVPR 2022), with any target and distance.

CAFE matches the class-mean features of the synthetic images to those of real images at several
depths of a ConvNet that is trained on the synthetic set in between (bi-level, like DC:
:mod:`~fairdistill.backbones.bilevel`), and adds a discrimination term. Each iteration draws a
fresh network, of which every method trains its own copy; then ``outer_loop`` times:

1. the step's real batch (one per sampling, augmented once) goes through the method's network
   ONCE and the features of every matched layer are summed per (class, group) cell
   (:func:`~fairdistill.backbones.layers.layer_group_stats`); the synthetic images go through it
   too, and the loss is

       sum_l w_l * target.loss(stats_l, mean_S(l), d)  +  disc_weight * sum_i CE(e_i . P^T / tau, y_i)

   with ``mean_S(l)`` the (K, D_l) class means of layer ``l`` over the synthetic images, ``e_i`` the
   embedding of real image i and ``P`` the class means of the synthetic embeddings (the
   discrimination term, vanilla for every target); one step of the image optimiser;
2. except after the last outer step: train the network on the (detached) synthetic set one epoch at
   a time for at most ``inner_loop`` epochs, stopping early by
   :class:`~fairdistill.backbones.bilevel.InnerStop`.

CAFE's published weights (the code's ``fourth/third/second/first_weight`` 0.1 / 0.1 / 1 / 1, plus an
unweighted term on the flattened embedding): 0.1 on every block but the last, 1 on the last block, 2
on the embedding. The discrimination term has weight 0.01 on the CE *summed* over the real batch,
tau = 1. The image learning rate halves at 60%, 80% and 90% of the iterations (1200, 1600, 1800 of
2000). Targets act per layer (SPEC section 2); the generalised barycenters are solved per layer;
``bary-w2`` needs per-sample features and is refused (DM only).

COBRA's CAFE script (the ``cobra-paper`` profile) runs vanilla CAFE with layer weights 1, 1, 1, 2
and its cobra mode with 1, 1, 0.1, 1.1, no discrimination term and each class's loss divided by the
number of classes (``class_reduction``), set per method so both run in lockstep; its inner loop
always runs its full epochs (no early stop). Its vanilla loss also adds the network's CE on the
real batch, which moves no synthetic image; it is left out.

Differences from CAFE's own schedule, on purpose (our profiles): DC's number of outer steps for the
IPC (the published outer loop stops when a real query batch's accuracy ranges less than 0.04 over
10 outer steps, which cannot fire before DC's cap at IPC 10), and an inner loop capped at DC's
``inner_loop`` epochs that ends early on the synthetic set's accuracy, so no extra real data is
forwarded (published: until the query accuracy moved more than 0.03 within 10 epochs, no cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from .. import runtime
from ..config import DistillConfig
from ..distances import DISTANCES
from ..models import forward_chunk
from ..runtime import Runtime
from ..targets import ALL
from .base import BACKBONES, IMAGE_SETTINGS, make_network
from .bilevel import Bilevel, InnerStop, Iteration, inner_sgd, train_inner
from .engine import Engine, MethodRun, RealBatch
from .layers import (
    discrimination_loss,
    feature_loss,
    layer_features,
    layer_group_stats,
    num_layers,
    resolve_layer_weights,
)

#: fractions of the iterations at which the image learning rate halves (published: 1200/1600/1800 of 2000)
LR_HALVINGS = (0.6, 0.8, 0.9)


def image_lr(config: DistillConfig, iteration: int) -> float:
    """The image learning rate at ``iteration``: ``lr_img`` halved at each of :data:`LR_HALVINGS` passed."""
    return config.lr_img * 0.5 ** sum(iteration >= f * config.iterations for f in LR_HALVINGS)


@dataclass
class CAFERun(MethodRun):
    """A CAFE method's run: its layer weights, its discrimination losses, and how its inner loops ended."""

    #: the weight of each matched layer, resolved against the network
    weights: tuple[float, ...] = ()
    discs: list[float] = field(default_factory=list)  # this iteration's discrimination terms
    last_parts: tuple[float, float] = (float("nan"), float("nan"))  # (feature, discrimination)
    inner_loops: int = 0
    inner_epochs: int = 0
    stops: dict[str, int] = field(default_factory=lambda: {"accuracy": 0, "plateau": 0})

    #: the learning rate is re-derived from the iteration (``image_lr``), the network is redrawn
    RESUME_FIELDS: ClassVar[tuple[str, ...]] = ("last_loss", "last_parts", "inner_loops", "inner_epochs", "stops")


@BACKBONES.register("cafe", "layer-wise feature alignment + discrimination, network trained on the synthetic set")
class CAFE(Bilevel):
    name = "cafe"
    draws = "cafe"
    run_type = CAFERun
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

    def start(self, engine: Engine, run: CAFERun) -> None:
        # the architecture is the same every iteration: the layer weights are checked against it up front
        net = engine.once(
            "net", lambda: make_network(engine.dataset, engine.config, "cafe-net", 0, device=engine.device)
        )
        run.weights = resolve_layer_weights(run.config, num_layers(net))

    def prepare(self, engine: Engine, it: int) -> Iteration:
        state = super().prepare(engine, it)
        for run in engine.runs:
            run.discs = []
            for group in run.optimizer.param_groups:  # the method's own rate, on the run's schedule
                group["lr"] = image_lr(run.config, it)
        return state

    def match(self, engine: Engine, run: CAFERun, state: Iteration, it: int, step: int) -> float:
        """Layer-wise matching plus discrimination, back-propagated into the method's images."""
        net = self.ready(engine, run, state, it, step)
        x_syn = run.images
        if engine.dsa is not None and engine.dsa_params is not None:
            x_syn = engine.dsa.apply(x_syn, engine.dsa_params, engine.syn_labels)  # Siamese with the real batch
        batch = engine.real_batch(run.sampling, it, step)
        shares, classes = engine.stratified_shares(run.sampling), engine.shard.classes
        feat, disc = cafe_loss(net, run, batch, x_syn, engine.syn_labels, engine.g, shares, classes, engine.rt)
        (feat + disc).backward(inputs=[run.images])
        run.discs.append(float(disc.detach()))  # as it is: every process computes it whole
        return float(feat.detach())  # summed over the processes by the engine (each matches its classes)

    def between(self, engine: Engine, state: Iteration, it: int, step: int) -> None:
        if engine.inner <= 0:
            return
        for run in engine.runs:
            assert run.net is not None
            epochs, reason = train_inner(
                run.net,
                engine.gather(run.images.detach()),  # the whole synthetic set
                engine.all_labels,
                max_epochs=engine.inner,
                stop=InnerStop.from_config(engine.config),
                generator=engine.generator("inner", it, step),
                sgd=inner_sgd(engine.config),
                dsa=engine.train_dsa,
            )
            run.inner_loops += 1
            run.inner_epochs += epochs
            if reason is not None:
                run.stops[reason] += 1

    def end_iteration(self, run: CAFERun) -> None:  # means over the outer steps
        feat, disc = sum(run.losses) / len(run.losses), sum(run.discs) / len(run.discs)
        run.last_parts, run.last_loss = (feat, disc), feat + disc

    def meta(self, engine: Engine, run: CAFERun) -> dict:
        return {
            "outer_loop": engine.updates,
            "inner_loop": engine.inner,
            "layer_weights": list(run.weights),
            "disc_weight": run.config.disc_weight,
            "class_reduction": run.config.class_reduction,
            "final_loss": run.last_loss,
            "final_feature_loss": run.last_parts[0],
            "final_discrimination_loss": run.last_parts[1],
            # how often the dynamic inner loop ended before its cap, and why
            "inner_loops": run.inner_loops,
            "inner_epochs": run.inner_epochs,
            "inner_early_stops": sum(run.stops.values()),
            "inner_stop_reasons": dict(run.stops),
        }


def cafe_loss(
    net: nn.Module,
    run: CAFERun,
    batch: RealBatch,
    x_syn: Tensor,
    syn_labels: Tensor,
    num_groups: int,
    shares: Tensor | None,
    classes: slice = ALL,
    rt: Runtime | None = None,
) -> tuple[Tensor, Tensor]:
    """A method's (feature, discrimination) losses at one step, differentiable w.r.t. ``x_syn``.

    ``batch``: this process's real images (its ``classes``); ``x_syn``: its synthetic images (augmented),
    ordered by class. The real statistics are all-reduced over the processes (``rt``) first.
    """
    config, rt = run.config, rt or runtime.current()
    k = batch.counts.counts.shape[0]  # classes
    chunk = forward_chunk(batch.x.device, config.real_chunk)
    local, real_embed = layer_group_stats(net, batch.x, batch.y, batch.a, k, num_groups, shares, chunk)
    stats = [s.all_reduced(rt.all_reduce, shares) for s in local]
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
    return feat, disc
