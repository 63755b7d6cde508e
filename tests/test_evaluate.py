"""Evaluation: baselines pick what they promise; training is seeded; metrics reach the record."""

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
