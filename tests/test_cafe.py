"""The CAFE backbone: per-layer group statistics, targets per layer, the discrimination term, the early stop."""

import math
from dataclasses import replace

import pytest
import torch

from fairdistill.backbones import check_method, get_backbone, resolve_method
from fairdistill.backbones.base import initial_images
from fairdistill.backbones.bilevel import InnerStop, synthetic_accuracy, train_inner
from fairdistill.backbones.cafe import image_lr
from fairdistill.backbones.layers import (
    discrimination_loss,
    feature_loss,
    layer_features,
    layer_group_stats,
    num_layers,
    published_layer_weights,
)
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.data.sampling import RealSampler
from fairdistill.distances import get_distance
from fairdistill.errors import FairDistillError
from fairdistill.models import create_model
from fairdistill.presets import get_method, list_presets, profile_configs, resolve_preset
from fairdistill.targets import get_target
from fairdistill.training import SGDConfig, init_weights, train

SMALL = dict(
    ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=2, lr_img=0.1, lr_net=0.01
)


def run(dataset, methods, device, **kw):
    cfg = DistillConfig(**{**SMALL, **kw})
    return get_backbone("cafe").distill(dataset, methods, cfg, device=device)


def _net(model: str = "convnet", seed: int = 0) -> torch.nn.Module:
    net = create_model(model, channels=3, num_classes=10, image_size=8, width=8)
    return init_weights(net, torch.Generator().manual_seed(seed)).double()


def _stratified(digits, per_class: int = 20, seed: int = 0):
    """A stratified real batch of digits-fg: every (class, group) cell has data, so every group is present."""
    sampler = RealSampler(digits.train, digits.num_classes, digits.num_groups)
    idx = sampler.stratified_batch(per_class, torch.Generator().manual_seed(seed))
    return digits.train.images[idx].double(), digits.train.labels[idx], digits.train.groups[idx]


# ---- the matched layers and their group statistics ---------------------------------------------------
def test_layer_features_are_the_blocks_before_pooling_then_the_embedding(digits):
    net = _net()
    x = digits.train.images[:5].double()
    feats = layer_features(net, x)
    assert num_layers(net) == 4 and [f.shape[1] for f in feats] == [8 * 8 * 8, 8 * 4 * 4, 8 * 2 * 2, 8]
    blocks = net.features  # [conv, norm, relu, pool] x 3
    torch.testing.assert_close(feats[0], blocks[:3](x).flatten(1))
    torch.testing.assert_close(feats[1], blocks[:7](x).flatten(1))
    torch.testing.assert_close(feats[2], blocks[:11](x).flatten(1))
    torch.testing.assert_close(feats[3], net.embed(x))
    assert num_layers(create_model("convnet-d4", channels=3, num_classes=10, image_size=32, width=4)) == 5
    assert published_layer_weights(4) == (0.1, 0.1, 1.0, 2.0)
    assert published_layer_weights(5) == (0.1, 0.1, 0.1, 1.0, 2.0)


def test_per_layer_group_stats_from_one_forward_equal_a_loop_over_cells(digits):
    x, y, a = _stratified(digits)
    net = _net()
    stats, embed = layer_group_stats(net, x, y, a, 10, 10)
    assert len(stats) == 4
    torch.testing.assert_close(embed, net.embed(x))
    for c in range(10):
        for g in range(10):
            m = (y == c) & (a == g)
            per_cell = layer_features(net, x[m])  # a separate forward of the cell alone
            for layer, s in enumerate(stats):
                assert s.counts[c, g] == m.sum()
                torch.testing.assert_close(s.means[c, g], per_cell[layer].mean(0))
    # every layer shares the counts; the population target of a class batch is the plain class mean
    for s in stats[1:]:
        assert torch.equal(s.counts, stats[0].counts)
    pop = get_target("population").statistic(stats[1])
    torch.testing.assert_close(pop[4], layer_features(net, x[y == 4])[1].mean(0))


def test_barycenter_per_layer_is_the_mean_of_the_group_means(digits):
    x, y, a = _stratified(digits, per_class=12)
    keep = ~((y == 2) & (a == 5))  # one absent group: the barycenter averages the present ones
    x, y, a = x[keep], y[keep], a[keep]
    net = _net()
    stats, _ = layer_group_stats(net, x, y, a, 10, 10)
    for layer, s in enumerate(stats):
        bary = get_target("barycenter").statistic(s)
        for c in (0, 2, 7):
            groups = [g for g in range(10) if ((y == c) & (a == g)).any()]
            means = [layer_features(net, x[(y == c) & (a == g)])[layer].mean(0) for g in groups]
            torch.testing.assert_close(bary[c], torch.stack(means).mean(0))
        assert not s.present[2, 5] and s.present[2].sum() == 9


def test_group_sync_is_num_groups_times_the_barycenter_gradient_per_layer(digits):
    """Under squared L2, sum_a ||m_a - s||^2 has |A| times the gradient of ||mean_a m_a - s||^2, at every layer."""
    x, y, a = _stratified(digits)
    net = _net()
    stats, _ = layer_group_stats(net, x, y, a, 10, 10)
    assert all(s.present.all() for s in stats), "test needs every group present"
    l2 = get_distance("l2sq")
    gen = torch.Generator().manual_seed(1)
    for s in stats:
        s1 = torch.randn(10, s.sums.shape[-1], generator=gen, dtype=torch.float64).requires_grad_(True)
        s2 = s1.detach().clone().requires_grad_(True)
        get_target("group-sync").loss(s, s1, l2).backward()
        get_target("barycenter").loss(s, s2, l2).backward()
        torch.testing.assert_close(s1.grad, 10 * s2.grad, rtol=1e-10, atol=1e-10)
    # and so through the network, for the layer-weighted loss w.r.t. the synthetic pixels
    weights = published_layer_weights(len(stats))
    grads = []
    for target in ("group-sync", "barycenter"):
        syn = digits.train.images[:20].double().clone().requires_grad_(True)
        means = [f.view(10, 2, -1).mean(1) for f in layer_features(net, syn)]
        feature_loss(get_target(target), stats, means, l2, weights).backward()
        grads.append(syn.grad)
    torch.testing.assert_close(grads[0], 10 * grads[1], rtol=1e-8, atol=1e-10)


# ---- the discrimination term -------------------------------------------------------------------------
def test_discrimination_term_against_hand_computed_values():
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    # logits <e_i, P_k>: [1, 0], [0, 2], [1, 1] -> CE: log(1 + e^-1), log(1 + e^-2), log 2
    expected = math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2)) + math.log(2)
    torch.testing.assert_close(discrimination_loss(real, labels, centres), torch.tensor(expected, dtype=torch.float64))
    # temperature 0.5 doubles the logits
    expected_t = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-4)) + math.log(2)
    got = discrimination_loss(real, labels, centres, temperature=0.5)
    torch.testing.assert_close(got, torch.tensor(expected_t, dtype=torch.float64))
    # gradient w.r.t. the centres, by hand for one sample: d/dP CE = sum_k (p_k - [k = y]) e^T
    one = centres.clone().requires_grad_(True)
    discrimination_loss(real[:1], labels[:1], one).backward()
    p0 = 1 / (1 + math.exp(-1))
    hand = torch.tensor([[(p0 - 1) * 1.0, 0.0], [(1 - p0) * 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(one.grad, hand)


def test_discrimination_weight_zero_switches_the_term_off(digits, cpu):
    spec = MethodSpec("m", backbone="cafe", target="barycenter")
    on = run(digits, [spec], cpu, iterations=1)["m"]
    off = run(digits, [spec], cpu, iterations=1, disc_weight=0.0)["m"]
    assert on.meta["final_discrimination_loss"] > 0 and off.meta["final_discrimination_loss"] == 0
    assert on.meta["final_feature_loss"] > 0
    assert not torch.equal(on.images, off.images)


# ---- the inner loop's early stop ----------------------------------------------------------------------
def test_inner_stop_criterion_on_accuracy_sequences():
    by_acc = InnerStop(accuracy=0.9, patience=None)
    assert by_acc.check([0.95]) is None  # at least one epoch runs
    assert by_acc.check([0.1, 0.5]) is None
    assert by_acc.check([0.1, 0.5, 0.9]) == "accuracy"
    plateau = InnerStop(accuracy=None, patience=3)
    assert plateau.check([0.1, 0.2, 0.3, 0.4, 0.5]) is None  # still rising
    assert plateau.check([0.2, 0.3, 0.3, 0.3]) is None  # 0.3 beat the best before the last 3 epochs (0.2)
    assert plateau.check([0.2, 0.3, 0.3, 0.3, 0.3]) == "plateau"  # no rise above 0.3 for 3 epochs
    assert plateau.check([0.5, 0.4, 0.45, 0.5]) == "plateau"  # fell and came back: not above the earlier best
    off = InnerStop(accuracy=None, patience=None)
    assert not off.enabled and off.check([1.0, 1.0, 1.0, 1.0]) is None
    cfg = InnerStop.from_config(DistillConfig())
    assert (cfg.accuracy, cfg.patience) == (1.0, 5)


def _fit_inputs(digits, lr: float):
    net = _net().float()
    x, y = initial_images(digits, DistillConfig(ipc=5))
    sgd = SGDConfig(lr=lr, momentum=0.0, weight_decay=0.0, batch_size=256, decay_at=None)
    return net, x, y, sgd


def test_inner_stop_triggers_on_constructed_cases_and_not_when_disabled(digits):
    # a network that cannot learn (lr 1e-30): its accuracy never rises, so the plateau fires after `patience` epochs
    net, x, y, sgd = _fit_inputs(digits, lr=1e-30)
    acc = synthetic_accuracy(net, x, y)
    g = torch.Generator().manual_seed(0)
    assert train_inner(net, x, y, max_epochs=20, stop=InnerStop(None, 3), generator=g, sgd=sgd, dsa=None) == (
        3,
        "plateau",
    )
    assert synthetic_accuracy(net, x, y) == acc
    # any accuracy reaches a threshold of 0: one epoch
    stop = InnerStop(accuracy=0.0, patience=None)
    assert train_inner(net, x, y, max_epochs=20, stop=stop, generator=g, sgd=sgd, dsa=None) == (1, "accuracy")
    # disabled: the full cap, and epoch-by-epoch training equals one call of DC's train() with the same generator
    net, x, y, sgd = _fit_inputs(digits, lr=0.01)
    twin = init_weights(_net().float(), torch.Generator().manual_seed(0))
    off = InnerStop(None, None)
    got = train_inner(net, x, y, max_epochs=7, stop=off, generator=torch.Generator().manual_seed(5), sgd=sgd, dsa=None)
    assert got == (7, None)
    train(twin, x, y, epochs=7, generator=torch.Generator().manual_seed(5), sgd=sgd)
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_early_stops_are_counted_in_the_metadata(digits, cpu):
    spec = MethodSpec("m", backbone="cafe", target="barycenter")
    # a frozen network (lr_net 1e-30) plateaus after one epoch of every inner loop
    fired = run(digits, [spec], cpu, inner_loop=4, lr_net=1e-30, inner_patience=1, inner_stop_acc=None)["m"].meta
    assert fired["inner_loops"] == 2  # (outer_loop - 1) x iterations
    assert fired["inner_epochs"] == 2 and fired["inner_early_stops"] == 2
    assert fired["inner_stop_reasons"] == {"accuracy": 0, "plateau": 2}
    off = run(digits, [spec], cpu, inner_loop=4, lr_net=1e-30, inner_patience=None, inner_stop_acc=None)["m"].meta
    assert off["inner_loops"] == 2 and off["inner_epochs"] == 8 and off["inner_early_stops"] == 0


# ---- the backbone ------------------------------------------------------------------------------------
def test_batchnorm_net_without_dsa_runs(digits, cpu):
    spec = MethodSpec("m", backbone="cafe", target="group-sync")
    out = run(digits, [spec], cpu, model="convnet-bn", dsa=False)["m"]
    init, _ = initial_images(digits, DistillConfig(**SMALL))
    assert torch.isfinite(out.images).all() and not torch.equal(out.images, init)


def test_same_seed_is_bit_identical(digits, cpu):
    spec = MethodSpec("cobra", backbone="cafe", target="barycenter")
    a = run(digits, [spec], cpu, seed=3)["cobra"]
    b = run(digits, [spec], cpu, seed=3)["cobra"]
    c = run(digits, [spec], cpu, seed=4)["cobra"]
    assert torch.equal(a.images, b.images)
    assert a.meta["inner_epochs"] == b.meta["inner_epochs"]
    assert not torch.equal(a.images, c.images)


def test_lockstep_equals_distilling_alone(digits, cpu):
    specs = [get_method(r, "cafe") for r in ("vanilla", "fairdd", "cobra")]
    together = run(digits, specs, cpu, seed=3)
    for spec in specs:
        alone = run(digits, [spec], cpu, seed=3)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images), spec.name
        assert alone.meta["inner_epochs"] == together[spec.name].meta["inner_epochs"]
    assert not torch.equal(together["vanilla"].images, together["cobra"].images)
    assert not torch.equal(together["fairdd"].images, together["cobra"].images)


def test_layer_weights_setting_and_bad_knobs(digits, cpu):
    spec = MethodSpec("m", backbone="cafe")
    assert resolve_method(spec).distance == "l2sq"
    only_embedding = run(digits, [spec], cpu, iterations=1, layer_weights=(0.0, 0.0, 0.0, 1.0))["m"]
    assert only_embedding.meta["layer_weights"] == [0.0, 0.0, 0.0, 1.0]
    default = run(digits, [spec], cpu, iterations=1)["m"]
    assert not torch.equal(only_embedding.images, default.images)
    with pytest.raises(FairDistillError, match="layer_weights has 2 entries but the network has 4 matched layers"):
        run(digits, [spec], cpu, layer_weights=(1.0, 1.0))
    with pytest.raises(FairDistillError, match=r"disc_temperature must lie in \(0, inf\)"):
        run(digits, [spec], cpu, disc_temperature=0.0)
    with pytest.raises(FairDistillError, match="inner_stop_acc must lie in"):
        run(digits, [spec], cpu, inner_stop_acc=1.5)
    with pytest.raises(FairDistillError, match="cannot use embedder 'warm'"):
        check_method(MethodSpec("m", backbone="cafe", embedder="warm"))
    with pytest.raises(FairDistillError, match="unknown distance 'layer-cosine'"):
        check_method(MethodSpec("m", backbone="cafe", distance="layer-cosine"))


def test_image_learning_rate_halves_as_published():
    cfg = DistillConfig(iterations=2000, lr_img=0.1)
    assert [image_lr(cfg, it) for it in (0, 1199, 1200, 1599, 1600, 1800, 1999)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125, 0.0125]
    )


# ---- presets and the API ------------------------------------------------------------------------------
def test_cafe_recipes_and_profiles():
    for recipe, target in [("vanilla", "population"), ("fairdd", "group-sync"), ("cobra", "barycenter")]:
        spec = get_method(recipe, "cafe")
        assert (spec.backbone, spec.target, spec.distance, spec.embedder) == ("cafe", target, "l2sq", "random")
    gpu, gpu_eval = profile_configs("gpu", 10, backbone="cafe")
    assert (gpu.iterations, gpu.lr_img, gpu.lr_net, gpu.batch_real) == (2000, 0.1, 0.01, 256)
    assert gpu.model_kwargs == {"width": 128, "depth": 3, "norm": "instance"} and gpu_eval.epochs == 1000
    assert (gpu.disc_weight, gpu.disc_temperature, gpu.layer_weights) == (0.01, 1.0, None)
    cpu, _ = profile_configs("cpu", 10, backbone="cafe")
    assert (cpu.outer_loop, cpu.inner_loop, cpu.iterations, cpu.batch_real) == (5, 10, 30, 32)
    assert profile_configs("cpu", 1, backbone="cafe")[0].iterations == 150
    p = resolve_preset("cafe-cobra-cpu")
    assert p.name == "cafe-cobra-cpu" and p.method.backbone == "cafe" and p.distill.lr_img == 1.0
    assert resolve_preset("cobra-cpu", backbone="cafe") == p
    assert {"cafe-vanilla-gpu", "cafe-fairdd-cpu", "cafe-cobra"} <= set(list_presets("cafe"))


def test_api_compare_runs_cafe_end_to_end(digits):
    from fairdistill import api

    res = api.compare(digits, backbone="cafe", iterations=2, num_models=1, epochs=2, device="cpu", preset="cpu")
    assert set(res.results) == {"vanilla", "fairdd", "cobra", "fair", "random", "random-balanced", "full"}
    specs = res.summary["method_specs"]
    assert specs["cobra"] == {**get_method("cobra", "cafe", "cpu").to_dict(), "name": "cobra"}
    assert res.summary["backbone"] == "cafe"
    for name in ("vanilla", "fairdd", "cobra"):
        s = res.synthetic[name]
        assert s.meta["preset"] == f"cafe-{name}-cpu" and torch.isfinite(s.images).all()
        assert s.meta["inner_loops"] == 2 * 4  # 2 iterations x (5 outer steps - 1)
        assert 0 <= res.results[name].aggregate()["acc"]["mean"] <= 100
    cfg = replace(profile_configs("cpu", 10, backbone="cafe")[0], iterations=2)
    assert res.summary["distill_config"] == cfg.to_dict()


def test_a_methods_own_image_rate_is_the_base_of_its_schedule(digits, cpu):
    """A method's ``lr_img`` (its settings) is what CAFE's halving schedule starts from, not the run's."""
    own = MethodSpec("own", backbone="cafe", target="barycenter", settings={"lr_img": 0.01, "img_optimizer": "adam"})
    plain = MethodSpec("own", backbone="cafe", target="barycenter", settings={"img_optimizer": "adam"})
    together = run(digits, [MethodSpec("vanilla", backbone="cafe"), own], cpu, lr_img=0.1)["own"]
    alone = run(digits, [plain], cpu, lr_img=0.01)["own"]
    assert torch.equal(together.images, alone.images)
    at_run_rate = run(digits, [plain], cpu, lr_img=0.1)["own"]
    assert not torch.equal(together.images, at_run_rate.images)
