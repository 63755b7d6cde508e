"""DM: distribution matching (Zhao & Bilen, 2023), with any target, distance and embedder.

Each iteration draws a fresh random network (shared by every method of the run) and one DSA
transform per class. The real batch of each sampling is embedded in ONE forward pass and its
features are summed per (class, group) cell (:class:`~fairdistill.targets.GroupStats`), once for
every (embedder network, sampling) pair in use. Each method embeds its synthetic images (the same
transform per class), takes the class means, and its target turns the real statistics into a
loss under its distance; one image update. A target that matches distributions (``uses_samples``:
``bary-w2``) gets the real per-sample features and the (K, ipc, D) synthetic features instead.

Methods that share the embedder network and the sampling share the real statistics: ``compare``
is a paired comparison that costs little more than one method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from .. import rng
from ..distances import DISTANCES
from ..embedders import Embedder, embedder_for
from ..models import forward_chunk, forward_in_chunks
from ..targets import GroupStats
from .base import BACKBONES, make_network
from .engine import Engine, LockstepBackbone, MethodRun


@dataclass
class DMRun(MethodRun):
    """A DM method's run: its embedder, and the real images it matched per (class, group) so far."""

    embedder: Embedder | None = None
    matched: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    RESUME_FIELDS: ClassVar[tuple[str, ...]] = ("last_loss", "matched")


@BACKBONES.register("dm", "distribution matching: mean embeddings of random (or warm-started) ConvNets")
class DM(LockstepBackbone):
    name = "dm"
    draws = "dm"
    keyed_by_step = False  # one image update per iteration
    orders_real = False
    run_type = DMRun
    distances = DISTANCES
    default_distance = "l2sq"
    sample_targets = True  # bary-w2: the Sinkhorn loss between synthetic and barycenter feature clouds
    shards_classes = True  # the losses separate by class: each process updates its own classes' images

    def start(self, engine: Engine, run: DMRun) -> None:
        run.embedder = embedder_for(run.spec.embedder, engine.config)
        run.matched = torch.zeros(engine.k, engine.g, dtype=torch.long)

    def prepare(self, engine: Engine, it: int) -> nn.Module:
        net = make_network(engine.dataset, engine.config, "dm-net", it, device=engine.device)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def match(self, engine: Engine, run: DMRun, net: nn.Module, it: int, step: int) -> Tensor:
        own = run.embedder.shares_network  # the iteration's network as is, or one trained on the whole set
        embed_net = run.embedder.prepare(
            net,
            run.images if own else engine.gather(run.images.detach()),
            engine.syn_labels if own else engine.all_labels,
            generator=rng.generator(engine.config.seed, "dm-warm", it),
            dsa=engine.train_dsa,
        )
        key = ("stats", "shared" if own else run.spec.name, run.sampling)
        stats = engine.shared(key, lambda: self.real_stats(engine, embed_net, run.sampling, it, step))
        engine.iteration_stats[run.spec.name] = stats
        run.matched += stats.counts.round().long().cpu()
        x = run.images
        if engine.dsa is not None and engine.dsa_params is not None:
            x = engine.dsa.apply(x, engine.dsa_params, engine.syn_labels)  # Siamese with the real batch
        syn = embed_net.embed(x).view(len(engine.shard.owned), engine.config.ipc, -1)
        if run.target.uses_samples:
            loss = run.target.sample_loss(stats, syn, engine.shard.classes)
        else:
            loss = run.target.loss(stats, syn.mean(1), run.distance, engine.shard.classes)
        loss.backward()
        return loss

    def real_stats(self, engine: Engine, net: nn.Module, sampling: str, it: int, step: int) -> GroupStats:
        """The step's real batch embedded once, summed per cell; every class's sums on every process."""
        batch = engine.real_batch(sampling, it, step)
        keep = any(r.target.uses_samples for r in engine.runs)  # distribution targets need per-sample features
        shares = engine.stratified_shares(sampling)
        chunk = forward_chunk(engine.device, engine.config.real_chunk)
        with torch.no_grad():
            feats = forward_in_chunks(net.embed, net, batch.x, chunk)
        local = GroupStats.from_features(
            feats, batch.y, batch.a, engine.k, engine.g, population_shares=shares, keep_samples=keep
        )
        return local.all_reduced(engine.rt.all_reduce, shares)

    def meta(self, engine: Engine, run: DMRun) -> dict:
        return {
            "final_loss": run.last_loss,
            "real_images_matched": run.matched.tolist(),  # per (class, group), summed over the iterations
            "processes": engine.rt.world_size,
        }
