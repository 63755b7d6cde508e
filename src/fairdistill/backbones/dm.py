"""DM: distribution matching (Zhao & Bilen, 2023), with any target, distance and embedder.

Each iteration:

1. draw a fresh random network (shared by every method of the run) and one DSA transform per class;
2. for each (embedder network, real sampling) pair in use, draw a real batch, embed it in ONE
   forward pass and sum the features per (class, group) cell (:class:`GroupStats`);
3. for each method: embed its synthetic images (same DSA transform per class), take the class
   means, and let the target turn the real statistics into a loss under the distance; one image
   update. A target that matches distributions (``uses_samples``: ``bary-w2``) gets the real
   per-sample features and the (K, ipc, D) synthetic features instead of the means.

Methods that share the random embedder and the sampling share step 2, which is what makes
``compare`` a paired comparison that costs little more than one method. Every draw comes from a
generator derived from (seed, purpose, iteration), so a method distilled alone gives the same
images as in lockstep with others.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import rng, runtime
from ..artifacts import SyntheticSet
from ..augment import DSA, DSAParams
from ..checkpoint import DistillState
from ..config import DistillConfig, MethodSpec
from ..data.dataset import FairDataset
from ..data.sampling import RealSampler
from ..distances import DISTANCES, Distance, get_distance
from ..embedders import WARM_BATCH, WARM_LR, Embedder, WarmEmbedder, create_embedder, warm_epochs_for
from ..targets import GroupStats, Target, get_target, resolve_sampling
from ..training import SGDConfig
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


@dataclass
class _Run:
    """One method's state during lockstep distillation.

    Only the images, the optimiser (momentum) and ``last_loss`` cross an iteration boundary (what a
    checkpoint saves): the warm embedder starts from the iteration's fresh network every time.
    """

    spec: MethodSpec
    target: Target
    distance: Distance
    embedder: Embedder
    sampling: str
    images: Tensor
    optimizer: torch.optim.Optimizer
    last_loss: float = float("nan")
    #: real images matched so far per (class, group) (K x G int64, every process's classes)
    matched: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    RESUME_FIELDS = ("last_loss", "matched")


@BACKBONES.register("dm", "distribution matching: mean embeddings of random (or warm-started) ConvNets")
class DM(Backbone):
    name = "dm"
    distances = DISTANCES
    default_distance = "l2sq"
    sample_targets = True  # bary-w2: the Sinkhorn loss between synthetic and barycenter feature clouds
    shards_classes = True  # the losses separate by class: each process updates its own classes' images

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
        rt = runtime.current()
        shard = class_shard(rt, k, config.ipc)  # this process's classes (all of them in a single process)
        inits, all_labels = method_initial_images(methods, config, lambda c: initial_images(dataset, c))
        syn_labels = all_labels[shard.rows].to(device)
        runs = [self._start(m, config, inits[m.name][shard.rows].to(device)) for m in methods]
        for run in runs:
            run.matched = torch.zeros(k, g, dtype=torch.long)

        real_y, real_a = dataset.train.labels.to(device), dataset.train.groups.to(device)
        sampler = RealSampler(dataset.train, k, g)
        shares = dataset.group_shares().to(device)
        dsa = distill_dsa(dataset, config)
        warm_dsa = train_dsa(dataset, config)  # a warm embedder trains non-Siamese
        # distribution targets (bary-w2) match per-sample features: keep them with the real statistics
        keep_samples = any(run.target.uses_samples for run in runs)

        for it in range(resume_runs(runs, resume, config, shard.rows), config.iterations):
            net = make_network(dataset, config, "dm-net", it, device=device)
            for p in net.parameters():
                p.requires_grad_(False)
            params = dsa.sample(k, generator=rng.generator(config.seed, "dm-dsa", it)) if dsa else None
            real_stats: dict[tuple[str, str], GroupStats] = {}
            stats_now: dict[str, GroupStats] = {}
            for run in runs:
                embed_net = run.embedder.prepare(
                    net,
                    # an embedder trained on the synthetic set sees all of it, gathered from every process
                    run.images if run.embedder.shares_network else rt.gather_rows(run.images.detach()),
                    syn_labels if run.embedder.shares_network else all_labels.to(device),
                    generator=rng.generator(config.seed, "dm-warm", it),
                    dsa=warm_dsa,
                )
                key = ("shared" if run.embedder.shares_network else run.spec.name, run.sampling)
                if key not in real_stats:
                    idx = sampler.draw(
                        run.sampling, config.batch_real, rng.generator(config.seed, "dm-real", run.sampling, it)
                    )
                    idx = shard.keep(idx, sampler.labels).to(device)  # this process embeds its classes' images
                    local = self._real_stats(
                        embed_net,
                        dataset.train.take(idx, device),
                        real_y[idx],
                        real_a[idx],
                        dsa,
                        params,
                        k,
                        g,
                        shares if run.sampling == "stratified" else None,
                        keep_samples,
                    )
                    # every class's sums and counts on every process: a target may solve over all of them
                    real_stats[key] = local.all_reduced(rt.all_reduce, shares if run.sampling == "stratified" else None)
                stats_now[run.spec.name] = real_stats[key]
                run.matched += real_stats[key].counts.round().long().cpu()
                syn_feat = self._embed(embed_net, run.images, syn_labels, dsa, params).view(
                    len(shard.owned), config.ipc, -1
                )
                if run.target.uses_samples:
                    loss = run.target.sample_loss(real_stats[key], syn_feat, shard.classes)
                else:
                    loss = run.target.loss(real_stats[key], syn_feat.mean(1), run.distance, shard.classes)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                run.optimizer.step()
                run.last_loss = total_and_check(rt, run.spec.name, loss, run.images, f"iteration {it}")
            if callback is not None:
                callback(
                    IterationState(
                        it + 1,
                        config.iterations,
                        {r.spec.name: r.last_loss for r in runs},
                        {r.spec.name: r.images.detach() for r in runs},
                        snapshot=functools.partial(snapshot_runs, runs, it + 1, rt.gather_rows),
                        stats=stats_now,
                        classes=shard.owned,
                    )
                )

        out = {}
        for run in runs:
            meta = synthetic_meta(dataset, run.spec, config)
            meta["sampling"] = run.sampling
            meta["final_loss"] = run.last_loss
            meta["real_images_matched"] = run.matched.tolist()  # per (class, group), summed over the iterations
            meta["processes"] = rt.world_size
            images = rt.gather_rows(run.images.detach()).cpu().clone()  # the whole set, on every process
            out[run.spec.name] = SyntheticSet(images, all_labels.clone(), meta)
        return out

    # ---- pieces ------------------------------------------------------------------------------
    @staticmethod
    def _start(spec: MethodSpec, config: DistillConfig, init_x: Tensor) -> _Run:
        spec = spec.resolved().validate()
        target = get_target(spec.target)
        if spec.embedder == "warm":
            epochs = config.warm_epochs if config.warm_epochs is not None else warm_epochs_for(config.ipc)
            sgd = SGDConfig(
                lr=WARM_LR,
                momentum=config.warm_momentum,
                weight_decay=config.warm_weight_decay,
                batch_size=WARM_BATCH,
                decay_at=None,
            )
            embedder: Embedder = WarmEmbedder(epochs=epochs, sgd=sgd)
        else:
            embedder = create_embedder(spec.embedder)
        images = init_x.clone().requires_grad_(True)
        opt = image_optimizer(images, spec.config_for(config))
        return _Run(
            spec, target, get_distance(spec.distance), embedder, resolve_sampling(target, spec.sampling), images, opt
        )

    @staticmethod
    def _embed(net: nn.Module, x: Tensor, labels: Tensor, dsa: DSA | None, params: DSAParams | None) -> Tensor:
        if dsa is not None and params is not None:
            x = dsa.apply(x, params, labels)  # the class's transform: Siamese with the real batch
        return net.embed(x)

    def _real_stats(
        self,
        net: nn.Module,
        x: Tensor,
        y: Tensor,
        a: Tensor,
        dsa: DSA | None,
        params: DSAParams | None,
        k: int,
        g: int,
        shares: Tensor | None,
        keep_samples: bool = False,
    ) -> GroupStats:
        with torch.no_grad():
            feats = self._embed(net, x, y, dsa, params)
        return GroupStats.from_features(feats, y, a, k, g, population_shares=shares, keep_samples=keep_samples)
