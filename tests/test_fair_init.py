"""The balanced initialisation, per-method image settings (init, optimiser, rate) and the ``fair`` recipe."""

import pytest
import torch
from typer.testing import CliRunner

import fairdistill.api as fd
from fairdistill.backbones import check_method, get_backbone
from fairdistill.backbones.formation import mixed_initial_images
from fairdistill.cli import app
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.errors import FairDistillError
from fairdistill.evaluate import baseline_indices
from fairdistill.presets import BACKBONE_RECIPES, describe_preset, get_method
from fairdistill.profiles import PROFILES

SMALL = dict(batch_real=16, model_kwargs={"width": 8}, warm_epochs=1, outer_loop=2, inner_loop=1)


def distill(backbone, dataset, methods, device, **kw):
    cfg = DistillConfig(**{**SMALL, "ipc": 2, "iterations": 2, **kw})
    return get_backbone(backbone).distill(dataset, methods, cfg, device=device)


# ---- init="balanced" is the random-balanced selection, image for image ------------------------------
@pytest.mark.parametrize("backbone", ["dm", "dc", "cafe"])
@pytest.mark.parametrize("ipc,seed", [(2, 0), (7, 3), (10, 11)])
def test_balanced_init_is_the_random_balanced_subset(digits, cpu, backbone, ipc, seed):
    spec = MethodSpec("m", backbone=backbone, target="barycenter", distance="l2sq")
    out = distill(backbone, digits, [spec], cpu, ipc=ipc, seed=seed, iterations=0, init="balanced")["m"]
    idx = baseline_indices("random-balanced", digits, ipc, seed)
    assert torch.equal(out.images, digits.train.images[idx])
    assert torch.equal(out.labels, digits.train.labels[idx])
    assert out.meta["config"]["init"] == "balanced"


def test_balanced_selection_water_fills_the_groups(digits):
    counts = digits.counts("train")
    for ipc in (7, 20):  # 7: not a multiple of the 10 colour groups; 20: some groups hold fewer than 2
        idx = baseline_indices("random-balanced", digits, ipc, 0)
        y, a = digits.train.labels[idx], digits.train.groups[idx]
        assert len(set(idx.tolist())) == len(idx) == 10 * ipc
        for c in range(10):
            quota = torch.bincount(a[y == c], minlength=10)
            assert int(quota.sum()) == ipc and bool((quota <= counts[c]).all())
            # a group with images to spare gives at most one fewer than the largest share
            spare = quota < counts[c]
            assert bool((quota[spare] >= int(quota.max()) - 1).all()), (ipc, c, quota.tolist())


def test_balanced_init_differs_from_real_and_is_deterministic(digits, cpu):
    spec = MethodSpec("m", target="barycenter")
    real = distill("dm", digits, [spec], cpu, iterations=0, init="real")["m"].images
    bal = distill("dm", digits, [spec], cpu, iterations=0, init="balanced")["m"].images
    again = distill("dm", digits, [spec], cpu, iterations=0, init="balanced")["m"].images
    assert torch.equal(bal, again) and not torch.equal(real, bal)


def test_idc_balanced_mix_draws_balanced_tiles(digits, cpu):
    cfg = DistillConfig(ipc=2, factor=2, init="balanced", seed=5)
    mixed, labels = mixed_initial_images(digits, cfg)
    assert mixed.shape == (20, 3, 8, 8) and torch.equal(labels, torch.arange(10).repeat_interleave(2))
    assert not torch.equal(mixed, mixed_initial_images(digits, DistillConfig(ipc=2, factor=2, seed=5))[0])
    # one real image per stored one, factor 1 (the training set is the stored set): the balanced subset itself
    spec = MethodSpec("m", backbone="idc", target="barycenter")
    out = distill("idc", digits, [spec], cpu, iterations=0, init="balanced", idc_init="single", factor=1, seed=5)["m"]
    idx = baseline_indices("random-balanced", digits, 2, 5)
    assert torch.equal(out.images, digits.train.images[idx])


def test_unknown_init_and_optimiser_are_refused():
    with pytest.raises(FairDistillError, match="unknown init 'fair'.*balanced, noise, real"):
        DistillConfig(init="fair").validate()
    with pytest.raises(FairDistillError, match="unknown img_optimizer 'lbfgs'"):
        DistillConfig(img_optimizer="lbfgs").validate()


# ---- per-method image settings in lockstep ---------------------------------------------------------
@pytest.mark.parametrize("backbone", ["dm", "dc", "idc", "cafe"])
def test_methods_with_their_own_image_settings_run_in_lockstep_as_alone(digits, cpu, backbone):
    own = {"init": "balanced", "img_optimizer": "adam", "lr_img": 0.05}
    specs = [
        MethodSpec("plain", backbone=backbone, target="population", distance="l2sq"),
        MethodSpec("own", backbone=backbone, target="barycenter", distance="l2sq", settings=own),
    ]
    together = distill(backbone, digits, specs, cpu, iterations=3)
    for spec in specs:
        alone = distill(backbone, digits, [spec], cpu, iterations=3)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images), spec.name
    assert together["own"].meta["config"]["img_optimizer"] == "adam"
    assert together["own"].meta["config"]["init"] == "balanced"
    assert together["plain"].meta["config"]["img_optimizer"] == "sgd"
    assert together["plain"].meta["config"]["init"] == "real"


def test_adam_moves_the_images_differently_from_sgd(digits, cpu):
    spec = MethodSpec("m", target="barycenter")
    sgd = distill("dm", digits, [spec], cpu, init="balanced")["m"].images
    adam = distill("dm", digits, [spec], cpu, init="balanced", img_optimizer="adam", lr_img=0.05)["m"].images
    start = distill("dm", digits, [spec], cpu, init="balanced", iterations=0)["m"].images
    assert not torch.equal(sgd, adam)
    # an Adam step is about lr per pixel whatever the loss scale: two steps of 0.05 stay near 0.1
    moved = float((adam - start).abs().max())
    assert 0.05 < moved < 0.12, moved


def test_adam_run_resumes_bit_identical(tmp_path):
    kw = dict(preset="fair", ipc=2, device="cpu", batch_real=16, model_kwargs={"width": 8}, iterations=4)
    seen = []

    def stop(phase, done, total):
        seen.append(done)
        if phase.startswith("distill") and done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fd.distill("digits-fg", out=tmp_path / "part", checkpoint_every=1, progress=stop, **kw)
    resumed = fd.distill("digits-fg", out=tmp_path / "part", checkpoint_every=1, resume=True, **kw)
    straight = fd.distill("digits-fg", **kw)
    assert torch.equal(resumed.images, straight.images)
    assert resumed.meta["config"]["img_optimizer"] == "adam"


# ---- profiles and recipes -----------------------------------------------------------------------------
def test_our_profiles_start_group_targets_balanced_and_paper_profiles_do_not():
    for profile in ("cpu", "gpu"):
        for backbone in ("dm", "dc", "idc", "cafe"):
            assert get_method("fairdd", backbone, profile).settings.get("init") == "balanced"
            assert get_method("cobra", backbone, profile).settings.get("init") == "balanced"
            assert get_method("uniform-sampling", backbone, profile).settings.get("init") == "balanced"
            assert "init" not in get_method("vanilla", backbone, profile).settings
    for profile in ("cobra-paper", "fairdd-paper"):
        for backbone in PROFILES.get(profile).backbones:
            for recipe in ("vanilla", "fairdd", "cobra"):
                if recipe in (PROFILES.get(profile).of(backbone).recipes or ()):
                    assert "init" not in get_method(recipe, backbone, profile).settings, (profile, backbone, recipe)
    shown = describe_preset("fairdd", "cpu")["method"]["settings"]
    assert shown[0] == {"init": "balanced"} and shown[1].startswith("fairdistill:")


def test_fair_recipe_on_every_backbone_is_ours_and_not_a_paper_recipe():
    # every backbone but MTT, whose fair start is cobra's (barycentric experts, balanced init under our profiles)
    assert sorted(b for b, r in BACKBONE_RECIPES.items() if "fair" not in r) == ["mtt"]
    for backbone, registry in BACKBONE_RECIPES.items():
        if "fair" not in registry:
            continue
        spec = registry.get("fair")
        assert spec.settings["init"] == "balanced" and spec.target != "population"
        assert registry.describe("fair").startswith("fairdistill's fair recipe")
        check_method(get_method("fair", backbone, "cpu"))
        for profile in ("cobra-paper", "fairdd-paper"):
            if backbone in PROFILES.get(profile).backbones:
                with pytest.raises(FairDistillError, match="has no recipe 'fair'"):
                    get_method("fair", backbone, profile)
    shown = describe_preset("fair", "cpu", backbone="dc")["method"]["settings"]
    assert "fairdistill's fair recipe" in shown[1]


def test_a_run_wide_setting_wins_over_the_recipes_own(cpu):
    kw = dict(ipc=2, iterations=0, device="cpu", model_kwargs={"width": 8})
    assert fd.distill("digits-fg", preset="fair-cpu", **kw).meta["config"]["init"] == "balanced"
    assert fd.distill("digits-fg", preset="fair-cpu", init="real", **kw).meta["config"]["init"] == "real"
    assert fd.distill("digits-fg", preset="fairdd-cpu", init="noise", **kw).meta["config"]["init"] == "noise"


def test_compare_defaults_to_vanilla_fairdd_cobra_fair():
    import inspect

    assert inspect.signature(fd.compare).parameters["methods"].default == ("vanilla", "fairdd", "cobra", "fair")
    from fairdistill import cli

    assert inspect.signature(cli.compare).parameters["methods"].default == "vanilla,fairdd,cobra,fair"


def test_cli_init_option(tmp_path):
    res = CliRunner().invoke(
        app,
        ["distill", "--dataset", "digits-fg", "--preset", "fairdd-cpu", "--ipc", "2", "--iterations", "0",
         "--init", "balanced", "--device", "cpu", "--out", str(tmp_path / "o"), "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    from fairdistill.artifacts import load_synthetic

    assert load_synthetic(tmp_path / "o").meta["config"]["init"] == "balanced"
    bad = CliRunner().invoke(app, ["distill", "--dataset", "digits-fg", "--init", "fair", "--quiet"])
    assert bad.exit_code == 2 and "unknown init 'fair'" in bad.output
