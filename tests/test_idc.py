"""The IDC backbone: multi-formation decoding, mixed initialisation, determinism,
the two network schedules, the artifact and the presets."""

import itertools
from dataclasses import replace

import pytest
import torch

from fairdistill.artifacts import load_synthetic, save_synthetic
from fairdistill.backbones import check_method, get_backbone, resolve_method
from fairdistill.backbones.formation import decode, mixed_initial_images, stored_images, tile_slices
from fairdistill.backbones.idc import NET_REAL_IMAGES, idc_loops
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.errors import FairDistillError
from fairdistill.presets import get_method, idc_lr_img, profile_configs, resolve_preset

SMALL = dict(
    ipc=2,
    iterations=2,
    batch_real=8,
    model_kwargs={"width": 8},
    outer_loop=2,
    inner_loop=1,
    lr_img=0.1,
    lr_net=0.01,
    factor=2,
)


def run(dataset, methods, device, **kw):
    cfg = DistillConfig(**{**SMALL, **kw})
    return get_backbone("idc").distill(dataset, methods, cfg, device=device)


# ---- decode ------------------------------------------------------------------------------------------
def test_decode_factor_one_is_identity():
    x, y = torch.randn(6, 3, 8, 8), torch.arange(3).repeat_interleave(2)
    dx, dy = decode(x, y, 1)
    assert torch.equal(dx, x) and torch.equal(dy, y)


def test_decode_factor_two_gives_each_constant_quadrant_as_a_full_image():
    values = [1.0, 2.0, -3.0, 0.5]  # top-left, top-right, bottom-left, bottom-right
    img = torch.empty(1, 3, 16, 16)
    for v, (r, c) in zip(values, itertools.product((slice(0, 8), slice(8, 16)), repeat=2), strict=True):
        img[:, :, r, c] = v
    out, labels = decode(img, torch.tensor([7]), 2)
    assert out.shape == (4, 3, 16, 16)
    for t, v in enumerate(values):  # bilinear upsampling of a constant tile is that constant, exactly
        assert torch.equal(out[t], torch.full((3, 16, 16), v)), t
    assert labels.tolist() == [7, 7, 7, 7]


def test_decode_counts_order_and_uneven_tiles():
    k, ipc = 3, 2
    labels = torch.arange(k).repeat_interleave(ipc)
    for factor in (2, 3, 4):
        out, y = decode(torch.randn(k * ipc, 3, 16, 16), labels, factor)
        assert out.shape == (k * ipc * factor**2, 3, 16, 16)
        assert torch.bincount(y).tolist() == [ipc * factor**2] * k
        assert torch.equal(y, torch.arange(k).repeat_interleave(ipc * factor**2))  # still ordered by class
    # sizes not divisible by the factor: the first size % factor tiles are one pixel longer
    assert tile_slices(16, 3) == [slice(0, 6), slice(6, 11), slice(11, 16)]
    assert tile_slices(28, 2) == [slice(0, 14), slice(14, 28)]
    with pytest.raises(FairDistillError, match="cannot cut 2 pixels into 3 tiles"):
        decode(torch.randn(1, 1, 2, 2), torch.tensor([0]), 3)


def test_decode_is_differentiable_and_every_pixel_contributes():
    stored = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out, _ = decode(stored, torch.zeros(4, dtype=torch.long), 2)
    out.sum().backward()
    # every decoded pixel is a convex combination of pixels of one tile: the gradients sum to the decoded size
    torch.testing.assert_close(stored.grad.sum(), torch.tensor(4 * 4 * 3 * 16 * 16, dtype=torch.float64))
    assert (stored.grad > 0).all()


# ---- initialisation ------------------------------------------------------------------------------------
def test_mixed_initialisation_puts_four_real_images_of_the_class_in_the_tiles(digits16):
    cfg = DistillConfig(**{**SMALL, "ipc": 3})
    images, labels = mixed_initial_images(digits16, cfg)
    assert images.shape == (30, 3, 16, 16)
    assert torch.equal(labels, torch.arange(10).repeat_interleave(3))
    real_x, real_y = digits16.train.images, digits16.train.labels
    small = real_x[:, :, ::2, ::2]  # nearest downsampling by 2 keeps the even pixels
    for i in (0, 4, 17, 29):
        sources = []
        for t, (r, c) in enumerate(itertools.product((slice(0, 8), slice(8, 16)), repeat=2)):
            match = (small == images[i, :, r, c]).flatten(1).all(1).nonzero().flatten()
            assert match.numel() >= 1, (i, t)
            assert (real_y[match] == labels[i]).all()
            sources.append(int(match[0]))
        assert len(set(sources)) == 4  # four different real images
    # factor 1: ipc real images of each class, as they are
    one, _ = mixed_initial_images(digits16, replace(cfg, factor=1))
    assert all((real_x == one[i]).flatten(1).all(1).any() for i in range(one.shape[0]))


def test_mixed_initialisation_needs_enough_real_images(digits16):
    with pytest.raises(FairDistillError, match=r"ipc \* factor\*\*2 = 200 real images per class"):
        mixed_initial_images(digits16, DistillConfig(ipc=50, factor=2))
    with pytest.raises(FairDistillError, match="factor must be >= 1"):
        DistillConfig(factor=0).validate()


# ---- the backbone --------------------------------------------------------------------------------------
def test_same_seed_is_bit_identical(digits16, cpu):
    spec = MethodSpec("cobra", backbone="idc", target="barycenter")
    a = run(digits16, [spec], cpu, seed=3)["cobra"]
    b = run(digits16, [spec], cpu, seed=3)["cobra"]
    c = run(digits16, [spec], cpu, seed=4)["cobra"]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_lockstep_equals_distilling_alone(digits16, cpu):
    specs = [get_method(name, "idc") for name in ("vanilla", "fairdd", "cobra", "fixed-cobra")]
    together = run(digits16, specs, cpu, seed=3)
    for spec in specs:
        alone = run(digits16, [spec], cpu, seed=3)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images), spec.name
    assert not torch.equal(together["vanilla"].images, together["cobra"].images)
    assert not torch.equal(together["cobra"].images, together["fixed-cobra"].images)


def test_fixed_network_is_never_trained_and_the_published_one_is(digits16, cpu):
    fixed = MethodSpec("f", backbone="idc", target="barycenter", embedder="fixed")
    trained = MethodSpec("t", backbone="idc", target="barycenter")
    a = run(digits16, [fixed, trained], cpu, outer_loop=3)
    b = run(digits16, [fixed, trained], cpu, outer_loop=3, lr_net=0.05)
    assert torch.equal(a["f"].images, b["f"].images)  # the network's learning rate cannot matter
    assert not torch.equal(a["t"].images, b["t"].images)
    # without network updates the published schedule is the fixed one
    c = run(digits16, [fixed, trained], cpu, outer_loop=3, inner_loop=0)
    assert torch.equal(c["t"].images, a["f"].images)


def test_stored_pixels_are_clamped_at_each_iteration(digits16, cpu):
    # noise starts far outside the pixel range [-1, 1] (mean = std = 0.5); a tiny step leaves the clamp visible
    out = run(digits16, [MethodSpec("m", backbone="idc")], cpu, init="noise", iterations=1, lr_img=1e-9)["m"]
    stored = stored_images(out)
    assert stored.abs().max() <= 1 + 1e-6 and (stored.abs() > 0.999).float().mean() > 0.2


def test_stored_images_survive_saving(digits16, cpu, tmp_path):
    out = run(digits16, [MethodSpec("m", backbone="idc")], cpu, iterations=1)["m"]
    back = load_synthetic(save_synthetic(out, tmp_path))
    assert torch.equal(back.images, out.images) and torch.equal(back.labels, out.labels)
    assert torch.equal(stored_images(back), stored_images(out))
    assert back.ipc == 8 and back.meta["ipc"] == 2  # decoded per class, stored per class
    with pytest.raises(FairDistillError, match="no stored IDC images"):
        stored_images(replace(back, meta={}))


def test_knobs(digits16, cpu):
    assert resolve_method(MethodSpec("m", backbone="idc")).distance == "l2sq"
    with pytest.raises(FairDistillError, match="cannot use embedder 'warm'; allowed: random, fixed"):
        check_method(MethodSpec("m", backbone="idc", embedder="warm"))
    with pytest.raises(FairDistillError, match="backbone 'dc' cannot use embedder 'fixed'"):
        check_method(MethodSpec("m", backbone="dc", embedder="fixed"))
    assert idc_loops(DistillConfig()) == (100, 1)
    assert idc_loops(DistillConfig(outer_loop=3, inner_loop=0)) == (3, 0)
    assert NET_REAL_IMAGES == 500


# ---- presets and the API ---------------------------------------------------------------------------------
def test_idc_recipes_and_profiles():
    for recipe, target in [("vanilla", "population"), ("fairdd", "group-sync"), ("cobra", "barycenter")]:
        spec = get_method(recipe, "idc")
        assert (spec.backbone, spec.target, spec.distance, spec.embedder) == ("idc", target, "l2sq", "random")
        fixed = get_method(f"fixed-{recipe}", "idc")
        assert (fixed.target, fixed.distance, fixed.embedder) == (target, "layer-cosine", "fixed")
    gpu, ev = profile_configs("gpu", 10, backbone="idc")
    assert (gpu.iterations, gpu.outer_loop, gpu.inner_loop, gpu.batch_real, gpu.factor) == (2000, 100, 1, 64, 2)
    assert gpu.lr_img == pytest.approx(0.02) and gpu.img_momentum == 0.5 and gpu.lr_net == 0.01
    assert gpu.model_kwargs == {"width": 128, "depth": 3, "norm": "instance"} and ev.epochs == 1000
    assert idc_lr_img(50) == pytest.approx(0.1)  # the published rate grows with the IPC
    assert profile_configs("cpu", 10, backbone="idc")[0].lr_img == pytest.approx(1.0)  # 50x: 80 updates, not 200k
    p = resolve_preset("idc-fixed-cobra-cpu")
    assert p.name == "idc-fixed-cobra-cpu" and p.method.embedder == "fixed" and p.distill.factor == 2
    assert resolve_preset("cobra-cpu", backbone="idc").method.distance == "l2sq"
    with pytest.raises(FairDistillError, match="unknown preset 'fixed-cobra'"):
        resolve_preset("fixed-cobra")  # a recipe of idc only


def test_api_compare_evaluates_the_decoded_set(digits16, monkeypatch):
    from fairdistill import api

    seen: dict[int, int] = {}
    real_evaluate = api.evaluate_sets

    def counting(jobs, *args, **kwargs):
        for job in jobs:
            seen[len(seen)] = job.images.shape[0]
            assert torch.equal(torch.bincount(job.labels, minlength=10), torch.full((10,), job.images.shape[0] // 10))
        return real_evaluate(jobs, *args, **kwargs)

    monkeypatch.setattr(api, "evaluate_sets", counting)
    res = api.compare(
        digits16,
        methods=("vanilla", "fixed-cobra"),
        baselines=("random",),
        backbone="idc",
        preset="cpu",
        ipc=1,
        iterations=2,
        num_models=1,
        epochs=2,
        device="cpu",
    )
    assert list(seen.values()) == [40, 40, 10]  # two decoded sets (1 x 2**2 per class), then the random subset
    assert res.synthetic["fixed-cobra"].meta["preset"] == "idc-fixed-cobra-cpu"
    assert res.summary["method_specs"]["fixed-cobra"]["embedder"] == "fixed"
    assert set(res.results) == {"vanilla", "fixed-cobra", "random"}
    for r in res.results.values():
        assert 0 <= r.aggregate()["acc"]["mean"] <= 100
