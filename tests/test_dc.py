"""The DC backbone: the one-backward barycenter identity, determinism, the schedule (its smoke test: test_engine.py)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fairdistill.backbones import check_method, get_backbone, resolve_method
from fairdistill.backbones.base import initial_images
from fairdistill.backbones.bilevel import PUBLISHED_LOOPS, dc_loops, freeze_batchnorm, published_loops
from fairdistill.backbones.dc import group_gradients, weighted_gradient
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.distances import get_gradient_distance
from fairdistill.errors import FairDistillError
from fairdistill.models import create_model
from fairdistill.presets import get_method, profile_configs, resolve_preset
from fairdistill.targets import GroupStats, get_target
from fairdistill.training import init_weights

SMALL = dict(
    ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=1, lr_img=0.1, lr_net=0.01
)


def run(dataset, methods, device, **kw):
    cfg = DistillConfig(**{**SMALL, **kw})
    return get_backbone("dc").distill(dataset, methods, cfg, device=device)


def _net(model: str, seed: int = 0) -> torch.nn.Module:
    net = create_model(model, channels=3, num_classes=10, image_size=8, width=8)
    return init_weights(net, torch.Generator().manual_seed(seed)).double()


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


# ---- SPEC fact 2: the barycenter of group gradients in one backward pass ---------------------------
@pytest.mark.parametrize("model", ["convnet", "convnet-bn"])
def test_one_backward_barycenter_equals_mean_of_group_gradients(digits, model):
    """Groups of 40, 3 and 1 images of one class: weights 1/(|A| n_a) give the mean of the group gradients."""
    c, sizes, group_ids = 3, (40, 3, 1), (0, 5, 7)
    x = digits.train.images[:44].double()
    y = torch.full((44,), c)
    a = torch.tensor(group_ids).repeat_interleave(torch.tensor(sizes))
    net = _net(model)
    if model == "convnet-bn":  # as DC does: set the statistics on a real batch, then BN in eval mode
        freeze_batchnorm(net, digits.train.images[100:260].double())
        assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert torch.count_nonzero(net.features[1].running_mean) > 0
    params = list(net.parameters())

    stats = GroupStats.from_counts(y, a, 10, 10, dtype=torch.float64)
    w = get_target("barycenter").sample_weights(stats, y, a)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(w[a == 7], torch.tensor([1 / 3], dtype=torch.float64))  # 1 / (|A| * n_a)
    one_pass = _flat(weighted_gradient(net, params, x, y, w))

    per_group = [
        _flat(torch.autograd.grad(F.cross_entropy(net(x[a == gid]), y[a == gid]), params)) for gid in group_ids
    ]
    reference = torch.stack(per_group).mean(0)
    rel = (one_pass - reference).norm() / reference.norm()
    assert rel < 1e-5, float(rel)
    # and the population weights of a class batch give the plain mean-CE gradient
    w_pop = get_target("population").sample_weights(stats, y, a)
    torch.testing.assert_close(w_pop, torch.full((44,), 1 / 44, dtype=torch.float64))
    plain = _flat(torch.autograd.grad(F.cross_entropy(net(x), y), params))
    pop = _flat(weighted_gradient(net, params, x, y, w_pop))
    assert (pop - plain).norm() / plain.norm() < 1e-10
    # the barycenter really differs from the population gradient here (the majority group dominates the latter)
    assert (pop - one_pass).norm() / one_pass.norm() > 1e-3
    # group_gradients gives the per-group gradients themselves (what group-sync matches)
    for got, ref in zip(group_gradients(net, params, x, y, a, group_ids), per_group, strict=True):
        torch.testing.assert_close(_flat(got), ref)


# ---- the real gradient in pieces (real_grad_chunk): the same gradient up to rounding -----------------
#: float32: the pieces' sum differs from one backward pass only in the order of the sum over images;
#: benchmarks/pieces.py measured 1.3e-6 relative on ConvNet-128 and 256 images (RESULTS 17.7); here at most 1e-4
PIECE_RTOL = 1e-4


def _f32_net(model: str = "convnet") -> torch.nn.Module:
    net = create_model(model, channels=3, num_classes=10, image_size=8, width=8)
    return init_weights(net, torch.Generator().manual_seed(1))


def _rel(got, ref) -> float:
    """Relative error of the whole gradient (a conv bias before instance norm has a true gradient of 0,
    so on its own it is nothing but rounding)."""
    return float((_flat(got) - _flat(ref)).norm() / _flat(ref).norm())


def test_real_gradient_in_pieces_equals_one_backward_up_to_rounding(digits):
    x, y = digits.train.images[:70], digits.train.labels[:70]
    a = torch.arange(70) % 3
    net = _f32_net()
    params = list(net.parameters())
    w = torch.rand(70, generator=torch.Generator().manual_seed(2))
    whole = weighted_gradient(net, params, x, y, w)
    pieces = weighted_gradient(net, params, x, y, w, chunk=16)  # 16, 16, 16, 16, 6
    assert _rel(pieces, whole) < PIECE_RTOL
    # the conv weights' gradients really were summed from pieces (not one pass): rounding shows
    assert any(not torch.equal(p, q) for p, q in zip(pieces, whole, strict=True))
    # a batch that fits in one piece takes the one-pass path: bit for bit
    same = weighted_gradient(net, params, x[:16], y[:16], w[:16], chunk=16)
    one = weighted_gradient(net, params, x[:16], y[:16], w[:16])
    assert all(torch.equal(p, q) for p, q in zip(same, one, strict=True))
    # per-group gradients: each group's mean CE, in pieces of 10 (groups of 24, 23 and 23 images)
    for got, ref in zip(
        group_gradients(net, params, x, y, a, [0, 1, 2], chunk=10),
        group_gradients(net, params, x, y, a, [0, 1, 2]),
        strict=True,
    ):
        assert _rel(got, ref) < PIECE_RTOL


def test_real_gradient_of_a_training_batch_norm_is_never_split(digits):
    x, y = digits.train.images[:40], digits.train.labels[:40]
    net = _f32_net("convnet-bn").train()  # batch statistics: pieces would change the gradient itself
    params = list(net.parameters())
    w = torch.full((40,), 1 / 40)
    split, one = weighted_gradient(net, params, x, y, w, chunk=8), weighted_gradient(net, params, x, y, w)
    assert all(torch.equal(p, q) for p, q in zip(split, one, strict=True))


def test_dc_real_grad_chunk_zero_is_one_backward_and_pieces_move_only_rounding(digits, cpu):
    cfg = dict(batch_real=24, iterations=2)
    methods = [
        MethodSpec("cobra", backbone="dc", target="barycenter"),
        MethodSpec("fairdd", backbone="dc", target="group-sync"),
    ]
    whole = run(digits, methods, cpu, real_grad_chunk=0, **cfg)
    pieces = run(digits, methods, cpu, real_grad_chunk=8, **cfg)
    # fits in one piece (24 <= the CPU default of 32): the one-pass arithmetic, bit for bit
    default = run(digits, methods, cpu, **cfg)
    for name in ("cobra", "fairdd"):
        assert torch.equal(default[name].images, whole[name].images)
        torch.testing.assert_close(pieces[name].images, whole[name].images, rtol=0, atol=1e-4)
    assert not torch.equal(pieces["cobra"].images, whole["cobra"].images)  # the pieces did run
    with pytest.raises(FairDistillError, match="real_grad_chunk"):
        DistillConfig(real_grad_chunk=-1).validate()


def test_stratified_population_weights_restore_dataset_shares():
    y = torch.zeros(6, dtype=torch.long)
    a = torch.tensor([0, 0, 0, 1, 1, 1])
    shares = torch.tensor([[0.9, 0.1]])
    stats = GroupStats.from_counts(y, a, 1, 2, population_shares=shares, dtype=torch.float64)
    w = get_target("population").sample_weights(stats, y, a)
    torch.testing.assert_close(w, torch.tensor([0.3, 0.3, 0.3, 1 / 30, 1 / 30, 1 / 30], dtype=torch.float64))
    assert get_target("group-sync").sample_weights(stats, y, a) is None


def test_from_counts_agrees_with_from_features():
    gen = torch.Generator().manual_seed(0)
    y, a = torch.randint(0, 3, (50,), generator=gen), torch.randint(0, 4, (50,), generator=gen)
    feats = torch.randn(50, 5, generator=gen)
    full, counts = GroupStats.from_features(feats, y, a, 3, 4), GroupStats.from_counts(y, a, 3, 4)
    assert torch.equal(full.counts, counts.counts)
    assert torch.equal(full.population_weights, counts.population_weights)
    assert counts.sums.shape == (3, 4, 0)


# ---- gradient distances ----------------------------------------------------------------------------
def test_gradient_distances_against_hand_computed_values():
    conv = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    real = [conv, bias]
    flipped = [-conv, bias]  # every output unit points the other way; the bias agrees
    other_bias = [conv, -bias]  # layer-cosine ignores 1-D parameters
    d = get_gradient_distance("layer-cosine")
    assert abs(float(d(real, real))) < 1e-5
    torch.testing.assert_close(d(real, flipped), torch.tensor(8.0, dtype=torch.float64), atol=1e-5, rtol=0)
    assert abs(float(d(real, other_bias))) < 1e-5
    # per output unit: a unit orthogonal to its counterpart contributes exactly 1
    u = torch.zeros(2, 2, dtype=torch.float64)
    u[0, 0], u[1, 1] = 1.0, 1.0
    v = torch.tensor([[0.0, 1.0], [0.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(d([u], [v]), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)

    l2 = get_gradient_distance("l2sq")
    torch.testing.assert_close(l2(real, flipped), 4 * conv.pow(2).sum())
    torch.testing.assert_close(l2(real, other_bias), 4 * bias.pow(2).sum())

    cos = get_gradient_distance("cosine")
    vec = torch.cat([conv.flatten(), bias])
    expected = 1 - torch.dot(vec, torch.cat([-conv.flatten(), bias])) / vec.norm() ** 2
    torch.testing.assert_close(cos(real, flipped), expected, atol=1e-6, rtol=0)


# ---- the backbone ------------------------------------------------------------------------------------
def test_batchnorm_net_without_dsa_runs(digits, cpu):
    out = run(digits, [MethodSpec("m", backbone="dc", target="barycenter")], cpu, model="convnet-bn", dsa=False)["m"]
    init, _ = initial_images(digits, DistillConfig(**SMALL))
    assert torch.isfinite(out.images).all() and not torch.equal(out.images, init)


def test_same_seed_is_bit_identical(digits, cpu):
    spec = MethodSpec("cobra", backbone="dc", target="barycenter")
    a = run(digits, [spec], cpu, seed=3)["cobra"]
    b = run(digits, [spec], cpu, seed=3)["cobra"]
    c = run(digits, [spec], cpu, seed=4)["cobra"]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_lockstep_equals_distilling_alone(digits, cpu):
    specs = [
        MethodSpec("vanilla", backbone="dc"),
        MethodSpec("fairdd", backbone="dc", target="group-sync"),
        MethodSpec("cobra", backbone="dc", target="barycenter"),
    ]
    together = run(digits, specs, cpu, seed=3)
    for spec in specs:
        alone = run(digits, [spec], cpu, seed=3)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images), spec.name
    # the methods really differ (and their networks diverge in the inner loop)
    assert not torch.equal(together["vanilla"].images, together["cobra"].images)
    assert not torch.equal(together["fairdd"].images, together["cobra"].images)


def test_uniform_sampling_equals_barycenter_on_balanced_batches(digits, cpu):
    """SPEC fact 5 for gradients: every group of digits-fg has data, so a stratified batch is balanced."""
    specs = [
        MethodSpec("u", backbone="dc", target="uniform-sampling"),
        MethodSpec("b", backbone="dc", target="barycenter"),
    ]
    out = run(digits, specs, cpu, iterations=1, batch_real=10)
    torch.testing.assert_close(out["u"].images, out["b"].images, rtol=0, atol=1e-6)


def test_default_distance_and_bad_knobs(digits, cpu):
    assert resolve_method(MethodSpec("m", backbone="dc")).distance == "layer-cosine"
    assert resolve_method(MethodSpec("m")).distance == "l2sq"
    out = run(digits, [MethodSpec("m", backbone="dc")], cpu, iterations=1)["m"]
    assert out.meta["method"]["distance"] == "layer-cosine"
    with pytest.raises(FairDistillError, match="unknown gradient distance 'l1'; allowed: cosine, l2sq, layer-cosine"):
        check_method(MethodSpec("m", backbone="dc", distance="l1"))
    with pytest.raises(FairDistillError, match="cannot use embedder 'warm'"):
        check_method(MethodSpec("m", backbone="dc", embedder="warm"))
    with pytest.raises(FairDistillError, match="unknown distance 'layer-cosine'"):
        check_method(MethodSpec("m", distance="layer-cosine"))
    with pytest.raises(FairDistillError, match="outer_loop must be >= 1"):
        run(digits, [MethodSpec("m", backbone="dc")], cpu, outer_loop=0)


# ---- schedule and presets ------------------------------------------------------------------------------
def test_published_schedule_and_other_ipcs():
    assert PUBLISHED_LOOPS == {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    for ipc, loops in PUBLISHED_LOOPS.items():
        assert published_loops(ipc) == loops
    assert published_loops(100) == published_loops(51) == published_loops(1000) == (100, 10)
    # in between: the nearest published IPC below
    assert published_loops(2) == published_loops(9) == (1, 1)
    assert published_loops(15) == (10, 50) and published_loops(49) == (40, 15)
    with pytest.raises(FairDistillError, match="ipc must be >= 1"):
        published_loops(0)
    # overrides: each loop on its own
    assert dc_loops(DistillConfig(ipc=10)) == (10, 50)
    assert dc_loops(DistillConfig(ipc=10, outer_loop=3)) == (3, 50)
    assert dc_loops(DistillConfig(ipc=10, inner_loop=0)) == (10, 0)


def test_dc_recipes_and_profiles():
    for recipe, target in [("vanilla", "population"), ("fairdd", "group-sync"), ("cobra", "barycenter")]:
        spec = get_method(recipe, "dc")
        assert (spec.backbone, spec.target, spec.distance) == ("dc", target, "layer-cosine")
    assert get_method("cobra").distance == "l1"  # DM's cobra is unchanged
    gpu, _ = profile_configs("gpu", 10, backbone="dc")
    assert (gpu.iterations, gpu.lr_img, gpu.lr_net, gpu.batch_real) == (1000, 0.1, 0.01, 256)
    assert gpu.model_kwargs == {"width": 128, "depth": 3, "norm": "instance"}
    assert dc_loops(gpu) == (10, 50)
    p = resolve_preset("dc-cobra-cpu")
    assert p.name == "dc-cobra-cpu" and p.method.backbone == "dc" and p.distill.lr_img == 3.0
    assert resolve_preset("cobra-cpu", backbone="dc") == p
    assert resolve_preset("cobra-cpu").method.backbone == "dm"
    with pytest.raises(FairDistillError, match="is for backbone 'dc'"):
        resolve_preset("dc-cobra", backbone="dm")
    with pytest.raises(FairDistillError, match="unknown preset 'barycenter-l1'"):
        resolve_preset("barycenter-l1", backbone="dc")


def test_api_compare_resolves_dc_recipes(digits):
    from fairdistill import api

    res = api.compare(
        digits,
        methods=("vanilla", "cobra"),
        baselines=(),
        backbone="dc",
        preset="cpu",
        ipc=1,
        iterations=1,
        num_models=1,
        epochs=1,
        device="cpu",
    )
    specs = res.summary["method_specs"]
    assert specs["cobra"]["distance"] == "layer-cosine" and specs["cobra"]["backbone"] == "dc"
    assert res.synthetic["cobra"].meta["preset"] == "dc-cobra-cpu"
    cfg = replace(profile_configs("cpu", 1, backbone="dc")[0], iterations=1)
    assert res.summary["distill_config"] == cfg.to_dict()
