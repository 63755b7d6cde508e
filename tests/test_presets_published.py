"""The paper profiles hold exactly the recipes of ../shared/PUBLISHED.md section 2, and every setting has a source.

``PUBLISHED`` below is a transcription of that section, kept here on purpose: a change to a paper
profile that drifts from the reference scripts fails these tests.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fairdistill.augment import DSA
from fairdistill.backbones import check_method
from fairdistill.backbones.cafe import CAFERun, cafe_loss, image_lr
from fairdistill.backbones.engine import RealBatch
from fairdistill.backbones.layers import layer_features, resolve_layer_weights
from fairdistill.distances import get_distance
from fairdistill.embedders import warm_epochs_for
from fairdistill.models import create_model
from fairdistill.presets import (
    BACKBONE_RECIPES,
    PROFILES,
    describe_preset,
    get_method,
    list_presets,
    profile_configs,
    resolve_preset,
)
from fairdistill.profiles import BACKBONE_FIELDS, EVAL_FIELDS, FIELD_SOURCES, is_ours
from fairdistill.targets import GroupStats, get_target
from fairdistill.training import SGDConfig, init_weights, train

FLIP = "color_crop_cutout_flip_scale_rotate"

# PUBLISHED.md section 2, IPC 10: (iterations, lr_img, real batch per class, DSA, (outer, inner), eval models, eval
# epochs, eval augmentation)
PUBLISHED = {
    ("cobra-paper", "dm"): (2600, 1.0, 600, True, None, 5, 1500, True),
    ("cobra-paper", "dc"): (1000, 0.1, 256, False, (10, 50), 5, 1000, False),
    ("cobra-paper", "idc"): (1000, 0.1, 256, False, (10, 0), 3, 1000, False),
    ("cobra-paper", "cafe"): (2000, 0.1, 256, False, (10, 50), 2, 1000, False),
    ("fairdd-paper", "dm"): (20000, 1.0, 256, True, None, 10, 1000, True),
    ("fairdd-paper", "dc"): (1000, 0.1, 256, False, (10, 50), 10, 300, False),
}
# the loss per mode: recipe -> (target, distance, embedder)
LOSSES = {
    ("cobra-paper", "dm"): {
        "vanilla": ("population", "l2sq", "random"),
        "fairdd": ("group-sync", "l2sq", "random"),  # a sum over the present groups
        "cobra": ("barycenter", "l1", "warm"),
    },
    ("cobra-paper", "dc"): {
        "vanilla": ("population", "layer-cosine", "random"),
        "fairdd": ("group-sync-mean", "layer-cosine", "random"),  # COBRA's FairDD baseline divides by |A|
        "cobra": ("barycenter", "layer-cosine", "random"),
    },
    ("cobra-paper", "idc"): {
        "vanilla": ("population", "layer-cosine", "fixed"),
        "fairdd": ("group-sync-mean", "layer-cosine", "fixed"),
        "cobra": ("barycenter", "layer-cosine", "fixed"),
    },
    ("cobra-paper", "cafe"): {"vanilla": ("population", "l2sq", "random"), "cobra": ("barycenter", "l2sq", "random")},
    ("fairdd-paper", "dm"): {
        "vanilla": ("population", "l2sq", "random"),
        "fairdd": ("group-sync", "l2sq", "random"),
        "cobra": ("barycenter", "l1", "warm"),
    },
    ("fairdd-paper", "dc"): {
        "vanilla": ("population", "layer-cosine", "random"),
        "fairdd": ("group-sync", "layer-cosine", "random"),  # FairDD's own DC sums
        "cobra": ("barycenter", "layer-cosine", "random"),
    },
}
COBRA_LOOPS = {1: (5, 10), 5: (5, 10), 9: (5, 10), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15),
               50: (50, 10), 100: (100, 10)}  # fmt: skip
FAIRDD_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_paper_profiles_equal_the_transcription(key):
    profile, backbone = key
    iters, lr_img, batch, dsa, loops, models, epochs, eval_aug = PUBLISHED[key]
    d, e = profile_configs(profile, 10, backbone=backbone)
    assert (d.iterations, d.lr_img, d.batch_real, d.dsa) == (iters, lr_img, batch, dsa)
    assert d.model == "convnet" and d.model_kwargs == {"width": 128, "depth": 3, "norm": "instance"}
    assert d.init == "real" and d.img_momentum == 0.5
    if dsa:
        assert d.dsa_strategy == FLIP  # the references flip digits too
    if loops is not None:
        assert (d.outer_loop, d.inner_loop) == loops
    assert (e.num_models, e.epochs, e.dsa) == (models, epochs, eval_aug)
    assert e.model_kwargs == {"width": 128, "depth": 3, "norm": "instance"}
    assert (e.lr, e.momentum, e.weight_decay, e.batch_size) == (0.01, 0.9, 5e-4, 256)
    assert e.schedule == "reference" and e.empty_cells == "zero"
    if eval_aug:
        assert e.dsa_strategy == FLIP and e.dsa_mode == "batch"  # non-Siamese, one op family per batch
    for recipe, (target, distance, embedder) in LOSSES[key].items():
        m = get_method(recipe, backbone, profile)
        assert (m.target, m.distance, m.embedder) == (target, distance, embedder), recipe
        assert m.sampling == "class"  # uniform within the class: no group stratification
    assert set(PROFILES.get(profile).of(backbone).recipes) == set(LOSSES[key])


def test_cobra_dm_warm_start_is_plain_sgd_with_the_reference_epochs():
    d, _ = profile_configs("cobra-paper", 10, backbone="dm")
    assert (d.warm_momentum, d.warm_weight_decay, d.train_dsa_mode) == (0.0, 0.0, "batch")
    for ipc, k in {1: 10, 10: 10, 20: 10, 40: 10, 50: 50, 60: 10, 100: 100}.items():
        assert profile_configs("cobra-paper", ipc, backbone="dm")[0].warm_epochs == k
        assert warm_epochs_for(ipc) == k


def test_get_loops_of_each_paper():
    for ipc, loops in COBRA_LOOPS.items():
        d, _ = profile_configs("cobra-paper", ipc, backbone="dc")
        assert (d.outer_loop, d.inner_loop) == loops
    for ipc, loops in FAIRDD_LOOPS.items():
        d, _ = profile_configs("fairdd-paper", ipc, backbone="dc")
        assert (d.outer_loop, d.inner_loop) == loops
    for ipc in (2, 5, 9, 15):
        with pytest.raises(Exception, match="FairDD's get_loops defines no schedule"):
            profile_configs("fairdd-paper", ipc, backbone="dc")
    # COBRA's IDC forces 30 outer steps at IPC 50 and 100
    assert profile_configs("cobra-paper", 50, backbone="idc")[0].outer_loop == 30
    assert profile_configs("cobra-paper", 100, backbone="idc")[0].outer_loop == 30


def test_cobra_idc_specifics():
    d, _ = profile_configs("cobra-paper", 10, backbone="idc")
    assert (d.idc_init, d.idc_align_corners, d.clamp_pixels, d.factor) == ("single", True, False, 2)
    assert profile_configs("cobra-paper", 10, backbone="idc", dataset="utkface")[0].factor == 4
    assert profile_configs("cobra-paper", 100, backbone="idc", dataset="bffhq")[0].factor == 3
    assert profile_configs("cobra-paper", 10, backbone="idc", dataset="cifar10-s")[0].factor == 2


def test_cobra_cafe_specifics():
    d, _ = profile_configs("cobra-paper", 10, backbone="cafe")
    assert (d.inner_stop_acc, d.inner_patience) == (None, None)  # the early stop never fires in the script
    assert d.layer_weights == (1.0, 1.0, 1.0, 2.0) and d.disc_weight == 0.01 and d.class_reduction == "sum"
    cobra = get_method("cobra", "cafe", "cobra-paper")
    assert cobra.settings == {"layer_weights": (1.0, 1.0, 0.1, 1.1), "disc_weight": 0.0, "class_reduction": "mean"}
    # lr halved at 1200, 1600, 1800 of 2000
    lrs = [image_lr(d, it) for it in (0, 1199, 1200, 1599, 1600, 1800, 1999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125, 0.0125])
    with pytest.raises(Exception, match="no recipe 'fairdd'"):
        get_method("fairdd", "cafe", "cobra-paper")


def _all_profile_backbones():
    return [(p, b) for p in PROFILES.list() for b in PROFILES.get(p).backbones]


@pytest.mark.parametrize("profile,backbone", _all_profile_backbones())
def test_every_setting_of_every_preset_has_a_source(profile, backbone):
    prof = PROFILES.get(profile)
    recipes = prof.of(backbone).recipes or BACKBONE_RECIPES[backbone].list()
    for recipe in recipes:
        d = describe_preset(recipe, profile, backbone=backbone)
        assert set(d["distill"]) == set(BACKBONE_FIELDS[backbone])
        assert set(d["evaluation"]) == set(EVAL_FIELDS)
        for section in ("method", "distill", "evaluation"):
            for name, (_, source) in d[section].items():
                assert isinstance(source, str) and source.strip(), (recipe, section, name)
        if prof.paper is not None:
            # a paper profile names every setting its backbone reads, except what the command line gives
            own = prof.of(backbone)
            for name in BACKBONE_FIELDS[backbone]:
                assert name in own.distill or name in ("ipc", "seed"), (profile, backbone, name)
            for name in EVAL_FIELDS:
                assert name in own.evaluation or FIELD_SOURCES[name].startswith("both reference"), name
            knobs = own.methods[recipe]
            assert set(knobs) == {"target", "distance", "embedder", "sampling", "settings"}


def test_our_profiles_and_recipes_do_not_claim_to_be_published():
    for registry in BACKBONE_RECIPES.values():
        for name in registry.list():
            assert "as published" not in registry.describe(name)
            assert "paper ran" not in registry.describe(name)
    for profile in ("cpu", "gpu"):
        prof = PROFILES.get(profile)
        assert prof.paper is None
        for backbone, bp in prof.backbones.items():
            for name, setting in bp.distill.items():
                assert is_ours(setting.source), (profile, backbone, name)
    # our profiles keep our improvements: stratified batches for the fair targets, DSA on gradient matching
    assert resolve_preset("cobra-cpu").method.sampling is None  # the target's default: stratified
    assert profile_configs("cpu", 10, backbone="dc")[0].dsa


def test_describe_preset_refuses_a_bad_ipc_and_profile():
    with pytest.raises(Exception, match="ipc must be >= 1"):
        describe_preset("cobra", "cobra-paper", ipc=0)
    with pytest.raises(Exception, match="unknown profile 'tpu'"):
        describe_preset("cobra", "tpu")


def test_list_presets_only_names_what_a_profile_runs():
    names = set(list_presets())
    assert "cobra-cobra-paper" in names and "dc-fairdd-fairdd-paper" in names
    assert "cafe-fairdd-cobra-paper" not in names  # COBRA's CAFE script has no fairdd mode
    assert "idc-cobra-fairdd-paper" not in names  # FairDD has no IDC script
    assert "barycenter-l1-cobra-paper" not in names


# ---- the evaluation schedule ---------------------------------------------------------------------------
class _Recorder(torch.optim.SGD):
    made: list = []

    def __init__(self, params, lr, **kw):
        super().__init__(params, lr=lr, **kw)
        self.steps = 0
        _Recorder.made.append(self)

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


@pytest.mark.parametrize("e", [3, 4, 7, 10])
def test_reference_schedule_runs_e_plus_one_epochs_and_resets_momentum_at_the_drop(monkeypatch, e):
    monkeypatch.setattr(torch.optim, "SGD", _Recorder)
    _Recorder.made = []
    net = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    train(
        net,
        x,
        y,
        epochs=e,
        generator=torch.Generator().manual_seed(0),
        sgd=SGDConfig(batch_size=8, schedule="reference"),
    )
    first, second = _Recorder.made
    # one batch per epoch: E // 2 + 2 epochs (0 .. E // 2 + 1) at lr, then a NEW optimiser (no momentum) at lr / 10
    assert first.steps == e // 2 + 2 and second.steps == e + 1 - (e // 2 + 2)
    assert first.param_groups[0]["lr"] == 0.01 and second.param_groups[0]["lr"] == pytest.approx(0.001)
    assert second.param_groups[0]["momentum"] == 0.9


def test_single_schedule_runs_e_epochs_with_one_optimiser(monkeypatch):
    monkeypatch.setattr(torch.optim, "SGD", _Recorder)
    _Recorder.made = []
    net = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.tensor([0, 1] * 4)
    train(net, x, y, epochs=6, generator=torch.Generator().manual_seed(0), sgd=SGDConfig(batch_size=8))
    (only,) = _Recorder.made
    assert only.steps == 6 and only.param_groups[0]["lr"] == pytest.approx(0.001)


def test_dsa_batch_mode_picks_one_operation_for_the_whole_batch():
    dsa = DSA(strategy=FLIP, mode="batch")
    for seed in range(5):
        p = dsa.sample(64, generator=torch.Generator().manual_seed(seed))
        assert len(set(p.chosen.tolist())) == 1
    single = DSA(strategy=FLIP).sample(64, generator=torch.Generator().manual_seed(0))
    assert len(set(single.chosen.tolist())) > 1


# ---- COBRA-CAFE's loss ---------------------------------------------------------------------------------
def test_cobra_cafe_loss_equals_a_direct_computation():
    torch.manual_seed(0)
    k, g, ipc, n = 3, 2, 2, 12
    d, _ = profile_configs("cobra-paper", ipc, backbone="cafe")
    d = dataclasses.replace(d, model_kwargs={"width": 8, "depth": 3, "norm": "instance"})
    net = init_weights(create_model("convnet", channels=3, num_classes=k, image_size=(16, 16), width=8),
                       torch.Generator().manual_seed(1))  # fmt: skip
    spec = check_method(get_method("cobra", "cafe", "cobra-paper"))
    init = torch.randn(k * ipc, 3, 16, 16)
    own = spec.config_for(d)
    target = get_target(spec.target)
    images = init.clone().requires_grad_(True)
    run = CAFERun(spec, target, get_distance(spec.distance), "stratified", own, images, torch.optim.SGD([images], lr=1))
    run.weights = resolve_layer_weights(run.config, 4)
    x = torch.randn(n * k, 3, 16, 16)
    y = torch.arange(k).repeat_interleave(n)
    a = torch.tensor(([0] * 9 + [1] * 3) * k)  # groups 9 : 3 in every class
    syn_labels = torch.arange(k).repeat_interleave(ipc)
    batch = RealBatch(x, y, a, GroupStats.from_counts(y, a, k, g))
    feat, disc = (float(t.detach()) for t in cafe_loss(net, run, batch, images, syn_labels, g, None))
    # the reference: per class, layers (embedding, f1, f2) weight 1 and (f3, f4 = pooled f3) weight 0.1, each a
    # sum-reduced MSE between the mean of the group means and the synthetic mean, divided by the classes
    with torch.no_grad():
        real, syn = layer_features(net, x), layer_features(net, init)  # [block1, block2, block3, embedding]
        want = 0.0
        for c in range(k):
            terms = []
            for layer in range(4):
                rf = real[layer][y == c]
                groups = [rf[a[y == c] == gid].mean(0) for gid in (0, 1)]
                bary = torch.stack(groups).mean(0)
                terms.append(((bary - syn[layer][syn_labels == c].mean(0)) ** 2).sum())
            b1, b2, b3, emb = terms
            want += (1 * emb + 1 * b1 + 1 * b2 + 0.1 * b3 + 0.1 * emb) / k
    assert feat == pytest.approx(float(want), rel=1e-5)
    assert disc == 0.0  # no discrimination term in COBRA's CAFE loss
    assert get_distance("l2sq")(torch.ones(1, 3), torch.zeros(1, 3)).item() == 3.0  # sum-reduced, as the reference
