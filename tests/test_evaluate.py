"""Evaluation: baselines pick what they promise; training is seeded; metrics reach the record."""

import numpy as np
import pytest
import torch

from fairdistill.config import EvalConfig
from fairdistill.errors import FairDistillError
from fairdistill.evaluate import baseline_indices, evaluate_images, list_baselines


def test_baselines_are_registered():
    assert list_baselines() == ["full", "random", "random-balanced"]


def test_random_subset_is_ipc_per_class(digits):
    idx = baseline_indices("random", digits, 5, seed=0)
    assert torch.all(torch.bincount(digits.train.labels[idx]) == 5)
    assert len(set(idx.tolist())) == len(idx)


@pytest.mark.parametrize("ipc", [1, 10, 13, 30])
def test_balanced_subset_spreads_over_groups(digits, ipc):
    idx = baseline_indices("random-balanced", digits, ipc, seed=0)
    assert len(set(idx.tolist())) == len(idx)
    counts = digits.train.subset(idx).counts(10, 10)
    avail = digits.counts("train")
    assert torch.all(counts.sum(1) == ipc)
    assert torch.all(counts <= avail)
    for c in range(10):
        # water-filling: no group holds more than one image above a group that still had images to give
        open_cells = counts[c][avail[c] > counts[c]]
        if len(open_cells):
            assert counts[c].max() <= open_cells.min() + 1


def test_balanced_subset_is_group_uniform_when_possible(digits):
    idx = baseline_indices("random-balanced", digits, 10, seed=3)
    counts = digits.train.subset(idx).counts(10, 10)
    assert torch.all(counts == 1)  # every colour once per class (each cell has >= 1 image)


def test_full_is_everything(digits):
    assert torch.equal(baseline_indices("full", digits, 10, seed=0), torch.arange(len(digits.train)))


def test_evaluation_is_seeded_and_reports_in_percent(digits, cpu):
    idx = baseline_indices("random-balanced", digits, 5, seed=0)
    x, y = digits.train.images[idx], digits.train.labels[idx]
    cfg = EvalConfig(num_models=2, epochs=5, model_kwargs={"width": 8})
    a = evaluate_images(x, y, digits, cfg, device=cpu)
    b = evaluate_images(x, y, digits, cfg, device=cpu)
    assert [r.acc for r in a.reports] == [r.acc for r in b.reports]
    assert a.seeds[0] != a.seeds[1]
    agg = a.aggregate()
    for key in ("acc", "deo_m", "deo_a", "worst_group_acc", "suff_m", "suff_a"):
        assert 0 <= agg[key]["mean"] <= 100
    d = a.to_dict()
    assert len(d["models"]) == 2 and len(d["tpr_mean"]) == 10


def test_evaluation_rejects_bad_images(digits, cpu):
    cfg = EvalConfig(num_models=1, epochs=1)
    with pytest.raises(FairDistillError, match="do not match"):
        evaluate_images(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), digits, cfg, device=cpu)
    bad = torch.zeros(4, 3, 8, 8)
    bad[0] = float("nan")
    with pytest.raises(FairDistillError, match="NaN"):
        evaluate_images(bad, torch.zeros(4, dtype=torch.long), digits, cfg, device=cpu)
    with pytest.raises(FairDistillError, match="num_models"):
        evaluate_images(bad, torch.zeros(4, dtype=torch.long), digits, EvalConfig(num_models=0), device=cpu)


def test_cross_architecture_keeps_convnet_numbers(digits, cpu):
    from dataclasses import replace

    idx = baseline_indices("random-balanced", digits, 2, seed=0)
    x, y = digits.train.images[idx], digits.train.labels[idx]
    cfg = EvalConfig(num_models=2, epochs=2, model_kwargs={"width": 8}, dsa=False)
    alone = evaluate_images(x, y, digits, cfg, device=cpu)
    assert alone.model == "convnet" and alone.by_model == {}
    calls = []
    both_cfg = replace(cfg, eval_models=("convnet", "alexnet"), arch_kwargs={"alexnet": {"width": 8}})
    both = evaluate_images(x, y, digits, both_cfg, device=cpu, callback=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert list(both.by_model) == ["convnet", "alexnet"]
    conv = both.by_model["convnet"]
    assert conv.seeds == alone.seeds
    for a, b in zip(conv.reports, alone.reports, strict=True):
        assert a.acc == b.acc and a.deo_m == b.deo_m
    # the top level is the first architecture's
    assert both.model == "convnet"
    np.testing.assert_equal(both.aggregate(), alone.aggregate())  # NaN (an unpredicted class) equals NaN
    assert set(both.by_model["alexnet"].seeds).isdisjoint(alone.seeds)
    assert set(both.aggregates()) == {"convnet", "alexnet"}
    d = both.to_dict()
    assert set(d["by_model"]) == {"convnet", "alexnet"} and d["model"] == "convnet"
    assert len(d["by_model"]["alexnet"]["models"]) == 2
    # the headline is whichever architecture comes first
    first = evaluate_images(x, y, digits, replace(both_cfg, eval_models=("alexnet", "convnet")), device=cpu)
    assert first.model == "alexnet"
    np.testing.assert_equal(first.aggregate(), both.by_model["alexnet"].aggregate())


def test_eval_models_are_checked():
    with pytest.raises(FairDistillError, match="unknown model 'lenet'"):
        EvalConfig(eval_models=("convnet", "lenet")).validate()
    with pytest.raises(FairDistillError, match="unique"):
        EvalConfig(eval_models=("alexnet", "alexnet")).validate()
    cfg = EvalConfig(model_kwargs={"width": 32}, arch_kwargs={"vgg11": {"width": 16}})
    assert cfg.architectures() == ("convnet",)
    assert cfg.kwargs_for("convnet") == {"width": 32} and cfg.kwargs_for("vgg11") == {"width": 16}
    assert cfg.kwargs_for("resnet18") == {}
