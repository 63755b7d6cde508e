"""Tests for differentiable Siamese augmentation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fairdistill.augment import DEFAULT_STRATEGY, DSA, OPS, DSAConfig, no_flip, parse_strategy
from fairdistill.errors import FairDistillError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, c: int = 3, h: int = 16, w: int = 16, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed), dtype=dtype)


def manual_shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move content right by dx and down by dy, zero-filling, via roll + zeroing the wrapped band."""
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    h, w = x.shape[-2:]
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., h + dy :, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, w + dx :] = 0
    return out


# ---------------------------------------------------------------- Siamese property


@pytest.mark.parametrize("mode", ["single", "all"])
def test_same_image_same_transform_in_real_and_synthetic_batches(mode):
    dsa = DSA(mode=mode)
    n_classes = 3
    real = images(6 * n_classes, seed=2)
    syn = images(2 * n_classes, seed=3)
    real_labels = torch.arange(n_classes).repeat_interleave(6)
    syn_labels = torch.arange(n_classes).repeat_interleave(2)
    # The same picture sits in both batches, in every class.
    shared = images(1, seed=4)[0]
    for c in range(n_classes):
        real[6 * c + 3] = shared
        syn[2 * c + 1] = shared
    params = dsa.sample(n_classes, generator=gen(5))
    real_out = dsa.apply(real, params, real_labels)
    syn_out = dsa.apply(syn, params, syn_labels)
    for c in range(n_classes):
        torch.testing.assert_close(real_out[6 * c + 3], syn_out[2 * c + 1], rtol=0, atol=1e-6)
    # Different classes received different transforms of the same picture.
    assert not torch.allclose(syn_out[1], syn_out[3])
    assert not torch.allclose(syn_out[3], syn_out[5])


def test_transform_id_independent_of_batch_composition():
    dsa = DSA(mode="all")
    params = dsa.sample(4, generator=gen(6))
    a, b, c = images(3, seed=7)
    out1 = dsa.apply(torch.stack([a, b]), params, torch.tensor([2, 0]))
    out2 = dsa.apply(torch.stack([b, c, a, a]), params, torch.tensor([0, 3, 2, 1]))
    torch.testing.assert_close(out1[0], out2[2], rtol=0, atol=1e-6)
    torch.testing.assert_close(out1[1], out2[0], rtol=0, atol=1e-6)
    assert not torch.allclose(out2[2], out2[3])  # same image, transforms 2 and 1


def test_call_gives_every_image_its_own_transform():
    dsa = DSA(mode="all")
    x = images(1, seed=8).expand(5, -1, -1, -1).contiguous()
    out = dsa(x, generator=gen(9))
    assert out.shape == x.shape
    for i in range(1, 5):
        assert not torch.allclose(out[0], out[i])


def test_call_with_index_matches_sample_then_apply():
    dsa = DSA()
    x = images(6, seed=10)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = dsa(x, generator=gen(11), index=labels)
    expected = dsa.apply(x, dsa.sample(3, generator=gen(11)), labels)
    assert torch.equal(out, expected)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("op", OPS)
def test_gradient_flows_through_each_op(op):
    dsa = DSA(strategy=op, mode="all", flip_prob=1.0)
    syn = images(4, seed=12).requires_grad_(True)
    weights = torch.randn(4, 3, 16, 16, generator=gen(13))
    out = dsa(syn, generator=gen(14), index=torch.tensor([0, 1, 0, 1]))
    (out * weights).sum().backward()
    assert syn.grad is not None
    assert torch.isfinite(syn.grad).all()
    assert syn.grad.abs().sum() > 0
    for b in range(4):  # every image receives a gradient, not only some
        assert syn.grad[b].abs().sum() > 0


def test_gradient_flows_in_single_mode_full_strategy():
    dsa = DSA()
    syn = images(10, seed=15).requires_grad_(True)
    out = dsa(syn, generator=gen(16), index=torch.arange(10) % 5)
    out.square().mean().backward()
    assert torch.isfinite(syn.grad).all()
    assert (syn.grad.flatten(1).abs().sum(1) > 0).all()


def test_gradcheck_full_pipeline():
    # The output is affine in x, so finite differences must match autograd exactly.
    dsa = DSA(mode="all")
    params = dsa.sample(2, generator=gen(43))
    x = images(3, 3, 8, 8, seed=44, dtype=torch.float64).requires_grad_(True)
    index = torch.tensor([1, 0, 1])
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params, index), (x,))


# ---------------------------------------------------------------- determinism


def test_same_seed_bit_identical_and_different_seed_differs():
    dsa = DSA(mode="all")
    x = images(8, seed=17)
    assert torch.equal(dsa(x, generator=gen(3)), dsa(x, generator=gen(3)))
    assert not torch.equal(dsa(x, generator=gen(3)), dsa(x, generator=gen(4)))


def test_global_rng_is_not_used():
    dsa = DSA()
    x = images(4, seed=18)
    torch.manual_seed(0)
    a = dsa(x, generator=gen(5))
    torch.manual_seed(123)
    b = dsa(x, generator=gen(5))
    assert torch.equal(a, b)
    state = torch.get_rng_state()
    dsa(x, generator=gen(5))
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------- exactness of single ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(8, 8), (28, 28), (12, 20)])
def test_identity_geometry_reproduces_input(dtype, hw):
    dsa = DSA(
        strategy="crop_flip_scale_rotate",
        mode="all",
        crop_ratio=0.0,
        scale_ratio=1.0,
        rotate_deg=0.0,
        flip_prob=0.0,
    )
    x = images(5, 3, *hw, seed=19, dtype=dtype)
    params = dsa.sample(5, generator=gen(20))
    expected_theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype).expand(5, 2, 3)
    torch.testing.assert_close(dsa.theta(params, *hw, dtype), expected_theta, rtol=0, atol=1e-12)
    torch.testing.assert_close(dsa.apply(x, params, torch.arange(5)), x, rtol=0, atol=1e-6)


def test_single_mode_on_non_geometric_choice_is_identity_elsewhere():
    # In single mode a transform that picked "cutout" must leave pixels outside its square untouched.
    dsa = DSA(strategy="cutout_scale")
    params = dsa.sample(64, generator=gen(21))
    x = images(64, seed=22)
    out = dsa.apply(x, params, torch.arange(64))
    picked_cutout = params.chosen == 0
    assert picked_cutout.any() and (~picked_cutout).any()
    mask = dsa.cutout_mask(params, 16, 16)
    torch.testing.assert_close(out[picked_cutout], (x * mask)[picked_cutout], rtol=0, atol=1e-6)


# exact: the float64 warp; default: the warp in the images' dtype, within 5e-6 at float32 (24 x 40
# misses pixel centres by ~1e-6 pixel), sampled in float64 for float64 images either way
@pytest.mark.parametrize(
    "dtype,atol,exact",
    [
        (torch.float32, 1e-6, True),
        (torch.float32, 5e-6, False),
        (torch.float64, 1e-10, True),
        (torch.float64, 1e-10, False),
    ],
)
@pytest.mark.parametrize("hw", [(8, 8), (32, 32), (24, 40)])
def test_crop_is_an_exact_integer_shift(dtype, atol, exact, hw):
    dsa = DSA(strategy="crop", mode="all", exact=exact)
    n = 40
    params = dsa.sample(n, generator=gen(23))
    x = images(n, 2, *hw, seed=24, dtype=dtype)
    out = dsa.apply(x, params, torch.arange(n))
    shifts = dsa.crop_shifts(params, *hw)
    h, w = hw
    mx, my = math.floor(0.125 * w + 0.5), math.floor(0.125 * h + 0.5)
    assert shifts[:, 0].abs().max() <= mx and shifts[:, 1].abs().max() <= my
    assert shifts.abs().sum() > 0
    for i in range(n):
        dx, dy = (int(v) for v in shifts[i])
        torch.testing.assert_close(out[i], manual_shift(x[i], dx, dy), rtol=0, atol=atol)


def test_crop_shifts_cover_the_full_range():
    dsa = DSA(strategy="crop", mode="all")
    shifts = dsa.crop_shifts(dsa.sample(2000, generator=gen(25)), 32, 32)
    assert set(shifts[:, 0].tolist()) == set(range(-4, 5))
    assert set(shifts[:, 1].tolist()) == set(range(-4, 5))


def test_flip_matches_torch_flip():
    dsa = DSA(strategy="flip", mode="all", flip_prob=1.0, exact=True)
    x = images(3, 1, 28, 28, seed=26)
    out = dsa(x, generator=gen(27))
    torch.testing.assert_close(out, torch.flip(x, dims=[-1]), rtol=0, atol=1e-6)
    # the default warp in float32 is exact to ~3e-6 at 28 px (pixel centres missed by ~1e-6 pixel)
    fast = DSA(strategy="flip", mode="all", flip_prob=1.0)(x, generator=gen(27))
    torch.testing.assert_close(fast, torch.flip(x, dims=[-1]), rtol=0, atol=5e-6)


def test_flip_probability_half():
    params = DSA(strategy="flip", mode="all").sample(4000, generator=gen(28))
    frac = (params.flip < 0).float().mean().item()
    assert 0.45 < frac < 0.55


def test_rotation_by_quarter_turn_matches_rot90():
    # Quarter turns map pixel centres onto pixel centres, so bilinear sampling must be exact.
    dsa = DSA(strategy="rotate", mode="all", rotate_deg=90.0)
    params = dsa.sample(2, generator=gen(29))
    params = dataclasses.replace(params, angle=torch.tensor([math.pi / 2, -math.pi / 2], dtype=torch.float64))
    x = images(1, 3, 10, 10, seed=30, dtype=torch.float64).expand(2, -1, -1, -1)
    out = dsa.apply(x, params, torch.arange(2))
    left, right = torch.rot90(x[0], 1, dims=(-2, -1)), torch.rot90(x[0], -1, dims=(-2, -1))
    # Which sign turns which way is the sampling-grid convention; the two must be opposite.
    if torch.allclose(out[0], left, atol=1e-9):
        torch.testing.assert_close(out[1], right, rtol=0, atol=1e-9)
    else:
        torch.testing.assert_close(out[0], right, rtol=0, atol=1e-9)
        torch.testing.assert_close(out[1], left, rtol=0, atol=1e-9)


def test_rotation_keeps_aspect_on_non_square_images():
    # A half turn of a 12x20 image is an exact 180-degree flip only if rotation is done in pixel units.
    dsa = DSA(strategy="rotate", mode="all", rotate_deg=180.0)
    params = dataclasses.replace(dsa.sample(1, generator=gen(41)), angle=torch.tensor([math.pi], dtype=torch.float64))
    x = images(1, 3, 12, 20, seed=42, dtype=torch.float64)
    out = dsa.apply(x, params, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(out, torch.flip(x, dims=(-2, -1)), rtol=0, atol=1e-9)


def test_scale_and_rotate_ranges():
    dsa = DSA(strategy="scale_rotate", mode="all")
    params = dsa.sample(3000, generator=gen(31))
    assert params.scale.min() >= 1 / 1.2 - 1e-6 and params.scale.max() <= 1.2 + 1e-6
    assert params.scale.min() < 0.85 and params.scale.max() > 1.15
    assert not torch.equal(params.scale[:, 0], params.scale[:, 1])
    deg = torch.rad2deg(params.angle)
    assert deg.abs().max() <= 15 + 1e-4 and deg.min() < -14 and deg.max() > 14


def test_color_matches_formulas():
    dsa = DSA(strategy="color", mode="all")
    params = dsa.sample(3, generator=gen(32))
    x = images(3, seed=33, dtype=torch.float64)
    out = dsa.apply(x, params, torch.arange(3))
    assert (params.brightness.abs() <= 0.5).all()
    assert ((params.saturation >= 0) & (params.saturation <= 2)).all()
    assert ((params.contrast >= 0.5) & (params.contrast <= 1.5)).all()
    for i in range(3):
        y = x[i] + float(params.brightness[i])
        m = y.mean(dim=0, keepdim=True)
        y = (y - m) * float(params.saturation[i]) + m
        m = y.mean()
        y = (y - m) * float(params.contrast[i]) + m
        torch.testing.assert_close(out[i], y, rtol=0, atol=1e-6)


def test_cutout_zeroes_one_clipped_square():
    dsa = DSA(strategy="cutout", mode="all")
    n, size = 50, 20
    out = dsa(torch.ones(n, 1, size, size), generator=gen(34))
    side = 10
    full = 0
    for i in range(n):
        zero = out[i, 0] == 0
        rows = zero.any(dim=1).nonzero().flatten()
        cols = zero.any(dim=0).nonzero().flatten()
        assert len(rows) > 0
        # contiguous rectangle, no larger than the square
        assert rows.max() - rows.min() + 1 == len(rows) <= side
        assert cols.max() - cols.min() + 1 == len(cols) <= side
        assert zero.sum() == len(rows) * len(cols)
        # clipping only where the rectangle touches a border
        if len(rows) < side:
            assert rows.min() == 0 or rows.max() == size - 1
        full += int(zero.sum() == side * side)
    assert full > 0
    assert ((out == 0) | (out == 1)).all()


def test_single_mode_applies_exactly_one_op():
    dsa = DSA()
    params = dsa.sample(600, generator=gen(35))
    k = len(dsa.ops)
    assert set(params.chosen.tolist()) == set(range(k))
    chosen = {op: params.chosen == i for i, op in enumerate(dsa.ops)}
    assert (params.brightness[~chosen["color"]] == 0).all()
    assert (params.saturation[~chosen["color"]] == 1).all()
    assert (params.contrast[~chosen["color"]] == 1).all()
    assert torch.equal(params.crop_on, chosen["crop"])
    assert torch.equal(params.cutout_on, chosen["cutout"])
    assert (params.flip[~chosen["flip"]] == 1).all()
    assert (params.scale[~chosen["scale"]] == 1).all()
    assert (params.angle[~chosen["rotate"]] == 0).all()
    assert (params.angle[chosen["rotate"]] != 0).all()


# ---------------------------------------------------------------- strategy strings and validation


def test_no_flip():
    assert no_flip(DEFAULT_STRATEGY) == "color_crop_cutout_scale_rotate"
    assert "flip" not in parse_strategy(no_flip(DEFAULT_STRATEGY))
    assert no_flip("flip_crop") == "crop"
    assert DSA(strategy=no_flip(DEFAULT_STRATEGY)).ops == ("color", "crop", "cutout", "scale", "rotate")


@pytest.mark.parametrize("strategy", ["color_blur", "", "crop_crop", "Color"])
def test_bad_strategy_raises(strategy):
    with pytest.raises(FairDistillError):
        DSA(strategy=strategy)


def test_unknown_op_message_lists_allowed():
    with pytest.raises(FairDistillError, match="unknown augmentation 'blur'.*rotate"):
        DSA(strategy="crop_blur")


@pytest.mark.parametrize(
    "overrides",
    [{"mode": "some"}, {"crop_ratio": -0.1}, {"scale_ratio": 0.5}, {"flip_prob": 2.0}, {"nope": 1}],
)
def test_bad_settings_raise(overrides):
    with pytest.raises(FairDistillError):
        DSA(**overrides)


def test_config_and_overrides_combine():
    dsa = DSA(DSAConfig(mode="all"), strategy="crop")
    assert dsa.config.mode == "all" and dsa.ops == ("crop",)


def test_params_from_other_strategy_rejected():
    params = DSA(strategy="crop").sample(2, generator=gen(0))
    with pytest.raises(FairDistillError):
        DSA(strategy="scale").apply(images(2), params, torch.arange(2))


# ---------------------------------------------------------------- shapes, dtypes, devices


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["single", "all"])
def test_sizes_and_channels_run(size, channels, mode):
    dsa = DSA(mode=mode)
    x = images(4, channels, size, size, seed=36)
    out = dsa(x, generator=gen(37), index=torch.tensor([0, 1, 1, 0]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_float64_preserved():
    x = images(3, dtype=torch.float64)
    out = DSA(mode="all")(x, generator=gen(38))
    assert out.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_images():
    dsa = DSA(mode="all")
    x = images(4, seed=39)
    out_gpu = dsa(x.cuda(), generator=gen(40))
    out_cpu = dsa(x, generator=gen(40))
    assert out_gpu.device.type == "cuda"
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=0, atol=1e-5)


def test_identity_transforms_skip_the_warp_and_change_no_value_or_gradient():
    """Images whose drawn transform is the identity are passed through unsampled; every value and
    gradient equals that of warping the whole batch, identity rows included."""
    import torch.nn.functional as F

    from fairdistill.augment import _warp

    dsa = DSA()  # single mode: colour / cutout classes and zero crops or no-flips are identities
    for seed in range(8):
        params = dsa.sample(10, generator=torch.Generator().manual_seed(seed))
        theta = dsa.theta(params, 32, 32)
        x = torch.randn(40, 3, 32, 32, requires_grad=True)
        index = torch.arange(40) % 10
        moved = (theta != torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=theta.dtype)).flatten(1).any(1)
        assert 0 < int(moved.sum()) < 10  # both kinds in the batch: the skipped and the warped
        grid = F.affine_grid(theta[index], list(x.shape), align_corners=False)
        full = F.grid_sample(x.double(), grid, mode="bilinear", padding_mode="zeros", align_corners=False).float()
        fast = _warp(x, theta, index)
        assert torch.equal(fast, full)
        weights = torch.randn_like(full)
        (g_full,) = torch.autograd.grad((full * weights).sum(), x)
        (g_fast,) = torch.autograd.grad((fast * weights).sum(), x)
        assert torch.equal(g_fast, g_full)
    identity = dsa.theta(DSA(strategy="color").sample(3, generator=torch.Generator().manual_seed(0)), 8, 8)
    x = torch.randn(3, 3, 8, 8)
    assert _warp(x, identity, torch.arange(3)) is x  # nothing to warp: the very tensor comes back


def test_default_dsa_jitters_colour_only_where_drawn_and_stays_within_float32_rounding_of_the_exact_path():
    exact, fast = DSA(exact=True), DSA()
    seen = 0
    for seed in range(6):
        params = exact.sample(10, generator=gen(60 + seed))
        x = images(40, 3, 32, 32, seed=seed)
        index = torch.arange(40) % 10
        a, b = exact.apply(x, params, index), fast.apply(x, params, index)
        # the stated tolerance of the default path: float32 bilinear weights, ~1e-5 on unit-scale pixels
        torch.testing.assert_close(b, a, rtol=0, atol=5e-5)
        no_colour = (params.brightness == 0) & (params.saturation == 1) & (params.contrast == 1)
        keep = (no_colour & dsa_theta_is_identity(fast, params) & ~params.cutout_on)[index]
        seen += int(keep.any())
        assert torch.equal(b[keep], x[keep])  # no operation applied: the very pixels
    assert seen  # some draw had such images


def dsa_theta_is_identity(dsa: DSA, params) -> torch.Tensor:
    theta = dsa.theta(params, 32, 32)
    return ~(theta != torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=theta.dtype)).flatten(1).any(1)


# ---------------------------------------------------------------- dsa_exact: one switch for a whole run


def test_dsa_exact_reaches_every_augmentation_of_a_run():
    from fairdistill.backbones.base import distill_dsa, train_dsa
    from fairdistill.config import DistillConfig, EvalConfig
    from fairdistill.data import load_dataset
    from fairdistill.evaluate import eval_dsa
    from fairdistill.experts import ExpertConfig

    data = load_dataset("digits-fg")
    for exact in (False, True):
        dcfg = DistillConfig(dsa_exact=exact)
        assert distill_dsa(data, dcfg).config.exact is exact
        assert train_dsa(data, dcfg).config.exact is exact
        assert eval_dsa(EvalConfig(dsa_exact=exact), data.dsa_strategy).config.exact is exact
        assert ExpertConfig.from_distill(dcfg, "population").dsa_exact is exact
    # experts trained with the other arithmetic are other experts: another cache key
    keys = {ExpertConfig.from_distill(DistillConfig(dsa_exact=e), "population").key(data) for e in (False, True)}
    assert len(keys) == 2
    assert DSAConfig().exact is False  # the default: the images' dtype, as the reference codebases


def test_cli_dsa_exact_is_recorded_for_distillation_and_evaluation(tmp_path):
    import json

    from typer.testing import CliRunner

    from fairdistill.artifacts import load_synthetic
    from fairdistill.cli import app

    common = ["--dataset", "digits-fg", "--ipc", "1", "--iterations", "1", "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(app, ["distill", *common, "--dsa-exact", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert load_synthetic(tmp_path / "d").meta["config"]["dsa_exact"] is True
    cmp = ["compare", *common, "--methods", "cobra", "--baselines", "", "--models", "1", "--epochs", "1"]
    res = CliRunner().invoke(app, [*cmp, "--dsa-exact", "--no-report", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["distill_config"]["dsa_exact"] is True and summary["eval_config"]["dsa_exact"] is True
    res = CliRunner().invoke(app, [*cmp, "--no-report", "--out", str(tmp_path / "c2")])
    summary = json.loads((tmp_path / "c2" / "summary.json").read_text())
    assert summary["distill_config"]["dsa_exact"] is False and summary["eval_config"]["dsa_exact"] is False
    out = tmp_path / "e.json"
    ev = ["evaluate", str(tmp_path / "d"), "--models", "1", "--epochs", "1", "--device", "cpu", "--quiet"]
    res = CliRunner().invoke(app, [*ev, "--dsa-exact", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["eval_config"]["dsa_exact"] is True
