"""The lockstep engine: every registered backbone x target runs through it; a new backbone is a small class.

This is the smoke test of every backbone: the whole design space of each registered backbone
(targets x its distances x its embedders) runs here, so a backbone registered later is covered
without a new test; the per-backbone files test what is particular to each.
"""

import itertools
from dataclasses import replace

import pytest
import torch

from fairdistill.backbones import BACKBONES, LockstepBackbone, get_backbone, list_backbones
from fairdistill.backbones.engine import Engine
from fairdistill.backbones.formation import decode, stored_images
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.embedders import list_embedders
from fairdistill.errors import FairDistillError
from fairdistill.targets import GroupStats, get_target, list_targets

#: each backbone's small settings (the per-backbone test files use the same)
SMALL = {
    "dm": dict(ipc=2, iterations=2, batch_real=16, model_kwargs={"width": 8}, warm_epochs=2),
    "dc": dict(ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=1, lr_img=0.1),
    "cafe": dict(ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=2, lr_img=0.1),
    "idc": dict(
        ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=1, lr_img=0.1, factor=2
    ),
    "mtt": dict(
        ipc=2, iterations=2, model_kwargs={"width": 8}, syn_steps=2, expert_epochs=1, max_start_epoch=1,
        num_experts=2, expert_train_epochs=2, lr_img=100.0,
    ),  # fmt: skip
}


def combinations() -> list[tuple[str, str, str, str]]:
    """Every registered backbone x target x (the backbone's) distance x (its) embedder."""
    out = []
    for backbone in list_backbones():
        cls = BACKBONES.get(backbone)
        embedders = cls.embedders or tuple(list_embedders())
        out += itertools.product([backbone], list_targets(), cls.distances.list(), embedders)
    return out


def check_dm(out, init, distance):
    assert out.images.shape == (20, 3, 8, 8)


def check_dc(out, init, distance):
    assert (out.meta["outer_loop"], out.meta["inner_loop"]) == (2, 1)
    assert out.meta["final_loss"] >= 0


def check_cafe(out, init, distance):
    meta = out.meta
    assert (meta["outer_loop"], meta["inner_loop"], meta["layer_weights"]) == (2, 2, [0.1, 0.1, 1.0, 2.0])
    assert meta["final_feature_loss"] > 0 and meta["final_discrimination_loss"] > 0
    assert meta["inner_loops"] == 2 and 2 <= meta["inner_epochs"] <= 4


def check_idc(out, init, distance):
    assert out.images.shape == (10 * 2 * 4, 3, 16, 16)  # decoded: ipc * factor**2 per class
    assert torch.equal(out.labels, torch.arange(10).repeat_interleave(8))
    stored = stored_images(out)
    assert stored.shape == stored_images(init).shape and not torch.equal(stored, stored_images(init))
    assert torch.equal(out.images, decode(stored, torch.arange(10).repeat_interleave(2), 2)[0])
    assert (out.meta["factor"], out.meta["ipc"], out.meta["images_per_class"]) == (2, 2, 8)
    check_dc(out, init, distance)


def check_mtt(out, init, distance):
    assert out.images.shape == (20, 3, 8, 8)
    assert out.meta["final_loss"] > 0 and 0 < out.meta["step_size"] != 0.01  # the step size is learnt
    assert (out.meta["syn_steps"], out.meta["expert_epochs"], out.meta["num_experts"]) == (2, 1, 2)


CHECKS = {"dm": check_dm, "dc": check_dc, "cafe": check_cafe, "idc": check_idc, "mtt": check_mtt}


@pytest.mark.parametrize("backbone,target,distance,embedder", combinations())
def test_every_backbone_target_distance_and_embedder_runs_two_iterations(
    digits, digits16, cpu, backbone, target, distance, embedder
):
    data = digits16 if backbone == "idc" else digits  # IDC: factor-2 tiles of 8 px
    spec = MethodSpec("m", backbone=backbone, target=target, distance=distance, embedder=embedder)
    bb, cfg = get_backbone(backbone), DistillConfig(**SMALL[backbone])
    if not BACKBONES.get(backbone).supports(get_target(target)):  # refused before any work
        with pytest.raises(FairDistillError, match="cannot use target"):
            bb.distill(data, [spec], cfg, device=cpu)
        return
    seen, snapshots = [], []

    def callback(state):
        seen.append(state)
        if state.done == 1 and distance == BACKBONES.get(backbone).default_distance:
            snapshots.append(state.snapshot())

    out = bb.distill(data, [spec], cfg, device=cpu, callback=callback)["m"]
    assert [s.done for s in seen] == [1, 2] and all(s.total == 2 for s in seen)
    init = bb.distill(data, [spec], replace(cfg, iterations=0), device=cpu)["m"]
    assert out.images.shape == init.images.shape and torch.isfinite(out.images).all()
    assert not torch.equal(out.images, init.images)  # the engine's image updates moved them
    assert torch.equal(out.labels, init.labels)
    assert out.meta["method"]["target"] == target and out.meta["method"]["distance"] == distance
    assert out.meta["method"]["embedder"] == embedder and out.meta["config"]["iterations"] == 2
    assert out.meta["final_loss"] == seen[-1].losses["m"]
    CHECKS[backbone](out, init, distance)
    for snapshot in snapshots:  # the state after the first iteration, resumed, continues bit for bit
        resumed = bb.distill(data, [spec], cfg, device=cpu, resume=snapshot)["m"]
        assert torch.equal(resumed.images, out.images)


class PixelMeans(LockstepBackbone):
    """A backbone in a few lines: match the targets' class means of the raw pixels."""

    name = "pixel-means"
    draws = "pixels"

    def prepare(self, engine, it):
        return None

    def match(self, engine, run, state, it, step):
        batch = engine.real_batch(run.sampling, it, step)
        shares = engine.stratified_shares(run.sampling)
        stats = engine.shared(
            ("stats", run.sampling),
            lambda: GroupStats.from_features(batch.x.flatten(1), batch.y, batch.a, engine.k, engine.g, shares),
        )
        syn = run.images.flatten(1).view(engine.k, engine.config.ipc, -1).mean(1)
        loss = run.target.loss(stats, syn, run.distance)
        loss.backward()
        return loss


def test_a_new_backbone_states_only_what_it_matches(digits, cpu):
    specs = [MethodSpec("vanilla"), MethodSpec("cobra", target="barycenter"), MethodSpec("fairdd", target="group-sync")]
    cfg = DistillConfig(ipc=2, iterations=3, batch_real=32, dsa=False, lr_img=0.1)
    together = PixelMeans().distill(digits, specs, cfg, device=cpu)
    for spec in specs:  # lockstep changes nothing: each method alone gives the same images
        alone = PixelMeans().distill(digits, [spec], cfg, device=cpu)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images)
    assert not torch.equal(together["vanilla"].images, together["cobra"].images)
    assert together["cobra"].meta["sampling"] == "stratified" and together["vanilla"].meta["sampling"] == "class"


def test_the_engine_shares_one_real_batch_per_sampling_and_step(digits, cpu):
    calls = []

    class Counting(PixelMeans):
        def match(self, engine, run, state, it, step):
            calls.append((it, id(engine.real_batch(run.sampling, it, step))))
            return super().match(engine, run, state, it, step)

    specs = [MethodSpec("a", target="barycenter"), MethodSpec("b", target="group-sync")]  # both stratified
    Counting().distill(digits, specs, DistillConfig(ipc=1, iterations=2, batch_real=16, dsa=False), device=cpu)
    assert [it for it, _ in calls] == [0, 0, 1, 1]
    assert calls[0][1] == calls[1][1] and calls[2][1] == calls[3][1]  # the same batch object within a step


def test_nan_images_stop_the_engine_with_the_method_and_step(digits, cpu):
    class Exploding(PixelMeans):
        def match(self, engine, run, state, it, step):
            loss = super().match(engine, run, state, it, step)
            run.images.grad.fill_(float("inf"))
            return loss

    cfg = DistillConfig(ipc=1, iterations=2, batch_real=16, dsa=False)
    with pytest.raises(FairDistillError, match="m: synthetic images became NaN/inf at iteration 0"):
        Exploding().distill(digits, [MethodSpec("m")], cfg, device=cpu)


def test_engine_refuses_bad_method_lists_before_any_work(digits, cpu):
    cfg = DistillConfig(ipc=1, iterations=1)
    with pytest.raises(FairDistillError, match="no method"):
        Engine(PixelMeans(), digits, [], cfg, cpu)
    with pytest.raises(FairDistillError, match="unique"):
        Engine(PixelMeans(), digits, [MethodSpec("a"), MethodSpec("a")], cfg, cpu)
