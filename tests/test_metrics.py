"""Tests for fairdistill.metrics, checked against fairlearn's MetricFrame and hand computations."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, precision_score, recall_score

from fairdistill.errors import FairDistillError
from fairdistill.metrics import FairnessReport, count_table, fairness_report, report_from_counts

# --------------------------------------------------------------------------------------------------
# Helpers: random data and independent reference computations
# --------------------------------------------------------------------------------------------------


def _random_data(seed: int, n: int, k: int, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Imbalanced groups; each group has its own chance of a correct prediction."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(g, 0.7))  # deliberately uneven group sizes
    a = rng.choice(g, size=n, p=weights)
    y = rng.integers(0, k, size=n)
    skill = rng.uniform(0.2, 0.95, size=g)
    correct = rng.random(n) < skill[a]
    y_pred = np.where(correct, y, rng.integers(0, k, size=n))
    return y, y_pred, a


def _mf_class_gaps(y: np.ndarray, p: np.ndarray, a: np.ndarray, k: int, which: str) -> np.ndarray:
    """Per-class max-min over groups of recall (TPR) or precision (PPV), in percent, via MetricFrame.

    Groups where the rate is undefined (no true / no predicted samples of the class) are dropped
    before building the frame; a class with fewer than two such groups gets gap 0.
    """
    metric = recall_score if which == "recall" else precision_score
    gaps = []
    for c in range(k):
        yt, yp = y == c, p == c
        defined_in = np.unique(a[yt if which == "recall" else yp])
        if len(defined_in) < 2:
            gaps.append(0.0)
            continue
        keep = np.isin(a, defined_in)
        mf = MetricFrame(metrics=metric, y_true=yt[keep], y_pred=yp[keep], sensitive_features=a[keep])
        gaps.append(100.0 * mf.difference(method="between_groups"))
    return np.array(gaps)


def _hand_zero_gaps(y: np.ndarray, p: np.ndarray, a: np.ndarray, k: int, g: int, which: str) -> np.ndarray:
    """The reference code's rule, by explicit loops: an undefined rate counts as 0."""
    gaps = []
    for c in range(k):
        rates = []
        for grp in range(g):
            in_g = a == grp
            den = np.sum(in_g & (y == c)) if which == "recall" else np.sum(in_g & (p == c))
            num = np.sum(in_g & (y == c) & (p == c))
            rates.append(100.0 * num / den if den > 0 else 0.0)
        gaps.append(max(rates) - min(rates))
    return np.array(gaps)


CASES = [
    # (seed, n, K, G)
    (0, 300, 2, 2),
    (1, 600, 3, 4),
    (2, 1500, 10, 3),
    (3, 80, 5, 2),  # one group has a single sample: most of its cells are empty
    (6, 150, 6, 3),  # a few empty TPR and PPV cells
    (4, 400, 4, 5),
]


# --------------------------------------------------------------------------------------------------
# Against fairlearn
# --------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("seed", "n", "k", "g"), CASES)
def test_matches_fairlearn_metricframe(seed: int, n: int, k: int, g: int) -> None:
    y, p, a = _random_data(seed, n, k, g)
    r = fairness_report(y, p, sensitive_features=a, n_classes=k, n_groups=g)

    tpr_gaps = _mf_class_gaps(y, p, a, k, "recall")
    np.testing.assert_allclose(r.class_gaps, tpr_gaps, atol=1e-9)
    np.testing.assert_allclose(r.deo_m, tpr_gaps.max(), atol=1e-9)
    np.testing.assert_allclose(r.deo_a, tpr_gaps.mean(), atol=1e-9)

    ppv_gaps = _mf_class_gaps(y, p, a, k, "precision")
    np.testing.assert_allclose(r.suff_m, ppv_gaps.max(), atol=1e-9)
    np.testing.assert_allclose(r.suff_a, ppv_gaps.mean(), atol=1e-9)

    acc_frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=a)
    np.testing.assert_allclose(r.acc, 100.0 * acc_frame.overall, atol=1e-9)
    np.testing.assert_allclose(r.worst_group_acc, 100.0 * acc_frame.group_min(), atol=1e-9)
    present = np.unique(a)
    np.testing.assert_allclose(r.group_acc[present], 100.0 * acc_frame.by_group.loc[present].to_numpy())


@pytest.mark.parametrize(("seed", "n", "k", "g"), CASES[:3])
def test_tpr_table_matches_per_class_recall(seed: int, n: int, k: int, g: int) -> None:
    y, p, a = _random_data(seed, n, k, g)
    r = fairness_report(y, p, sensitive_features=a, n_classes=k, n_groups=g)
    for c in range(k):
        sel = y == c  # recall of class c is accuracy on its true members
        mf = MetricFrame(metrics=recall_score, y_true=sel[sel], y_pred=(p == c)[sel], sensitive_features=a[sel])
        groups = mf.by_group.index.to_numpy()
        np.testing.assert_allclose(r.tpr[groups, c], 100.0 * mf.by_group.to_numpy(), atol=1e-9)


@pytest.mark.parametrize(("seed", "n", "k", "g"), CASES)
def test_zero_mode_matches_hand_computation(seed: int, n: int, k: int, g: int) -> None:
    y, p, a = _random_data(seed, n, k, g)
    r = fairness_report(y, p, sensitive_features=a, n_classes=k, n_groups=g, empty_cells="zero")
    tpr_gaps = _hand_zero_gaps(y, p, a, k, g, "recall")
    ppv_gaps = _hand_zero_gaps(y, p, a, k, g, "precision")
    np.testing.assert_allclose(r.class_gaps, tpr_gaps, atol=1e-9)
    np.testing.assert_allclose([r.deo_m, r.deo_a], [tpr_gaps.max(), tpr_gaps.mean()], atol=1e-9)
    np.testing.assert_allclose([r.suff_m, r.suff_a], [ppv_gaps.max(), ppv_gaps.mean()], atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Empty cells
# --------------------------------------------------------------------------------------------------


def _data_with_empty_cell() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 classes, 2 groups; group 1 has no test samples of class 2."""
    y, p, a = _random_data(7, 400, 3, 2)
    drop = (a == 1) & (y == 2)
    return y[~drop], p[~drop], a[~drop]


def test_ignore_warns_naming_cell_and_matches_present_groups() -> None:
    y, p, a = _data_with_empty_cell()
    with pytest.warns(UserWarning, match=r"empty test cells ignored in TPR: \(group 'blue', class 'bird'\)"):
        r = fairness_report(
            y,
            p,
            sensitive_features=a,
            class_names=["cat", "dog", "bird"],
            group_names=["red", "blue"],
        )
    assert r.empty_cells == [(1, 2)]
    assert np.isnan(r.tpr[1, 2]) and np.isnan(r.tpr).sum() == 1
    # Class 2 is only observed in group 0, so under "ignore" it has no pair to compare: gap 0.
    assert r.class_gaps[2] == 0.0
    expected = _mf_class_gaps(y, p, a, 3, "recall")
    np.testing.assert_allclose(r.class_gaps, expected, atol=1e-9)
    np.testing.assert_allclose([r.deo_m, r.deo_a], [expected.max(), expected.mean()], atol=1e-9)


def test_ignore_with_three_groups_uses_remaining_pair() -> None:
    # Group 2 lacks class 1; the class-1 gap must come from groups 0 and 1 only.
    y = np.array([0, 1, 1, 0, 1, 1, 0, 0])
    p = np.array([0, 1, 1, 0, 1, 0, 1, 0])
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    with pytest.warns(UserWarning, match=r"\(group '2', class '1'\)"):
        r = fairness_report(y, p, sensitive_features=a)
    np.testing.assert_allclose(r.tpr, [[100, 100], [100, 50], [50, np.nan]])
    np.testing.assert_allclose(r.class_gaps, [50.0, 50.0])
    np.testing.assert_allclose(r.class_gaps, _mf_class_gaps(y, p, a, 2, "recall"))


def test_zero_counts_empty_cell_as_zero_without_warning() -> None:
    y, p, a = _data_with_empty_cell()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = fairness_report(y, p, sensitive_features=a, empty_cells="zero")
    tpr_g0_c2 = 100.0 * np.mean(p[(a == 0) & (y == 2)] == 2)
    assert r.class_gaps[2] == pytest.approx(tpr_g0_c2)  # best group's TPR minus the imputed 0
    assert r.empty_cells == [(1, 2)]
    assert np.isnan(r.tpr[1, 2])  # the table still says "undefined"; only the gap imputes 0
    np.testing.assert_allclose(r.class_gaps, _hand_zero_gaps(y, p, a, 3, 2, "recall"), atol=1e-9)


def test_absent_group_slot() -> None:
    # n_groups larger than the data: the extra group is all empty cells.
    y = np.array([0, 1, 0, 1])
    a = np.zeros(4, dtype=int)
    with pytest.warns(UserWarning, match="group '1', class '0'"):
        r = fairness_report(y, y, sensitive_features=a, n_groups=2)
    assert np.isnan(r.group_acc[1])
    assert r.worst_group_acc == 100.0 and r.deo_m == 0.0
    r0 = fairness_report(y, y, sensitive_features=a, n_groups=2, empty_cells="zero")
    assert r0.deo_m == 100.0  # the reference rule treats the absent group as always wrong


def test_long_empty_list_is_truncated() -> None:
    y = np.arange(30)
    a = np.zeros(30, dtype=int)
    with pytest.warns(UserWarning, match=r"and 10 more") as rec:
        fairness_report(y, y, sensitive_features=a, n_groups=2)
    assert len(rec) == 1


# --------------------------------------------------------------------------------------------------
# Hand-made examples with known answers
# --------------------------------------------------------------------------------------------------


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 2, 1])
    a = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    r = fairness_report(y, y, sensitive_features=a)
    assert r.acc == 100.0 and r.worst_group_acc == 100.0
    assert r.deo_m == 0.0 and r.deo_a == 0.0 and r.suff_m == 0.0 and r.suff_a == 0.0
    np.testing.assert_array_equal(r.tpr, np.full((2, 3), 100.0))
    assert r.empty_cells == []


def test_perfect_on_one_group_wrong_on_other() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.where(a == 0, y, 1 - y)
    r = fairness_report(y, p, sensitive_features=a)
    assert r.acc == 50.0
    assert r.deo_m == 100.0 and r.deo_a == 100.0
    assert r.worst_group_acc == 0.0
    np.testing.assert_array_equal(r.group_acc, [100.0, 0.0])
    np.testing.assert_array_equal(r.tpr, [[100.0, 100.0], [0.0, 0.0]])
    assert r.suff_m == 100.0 and r.suff_a == 100.0


def test_small_example_by_hand() -> None:
    # group 0: class 0 -> 2 of 2 right; class 1 -> 1 of 2 right (one predicted 0)
    # group 1: class 0 -> 1 of 3 right (two predicted 1); class 1 -> 1 of 1 right
    y = np.array([0, 0, 1, 1, 0, 0, 0, 1])
    p = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = fairness_report(y, p, sensitive_features=a)
    np.testing.assert_allclose(r.tpr, [[100.0, 50.0], [100.0 / 3, 100.0]])
    np.testing.assert_allclose(r.class_gaps, [200.0 / 3, 50.0])
    assert r.deo_m == pytest.approx(200.0 / 3)
    assert r.deo_a == pytest.approx((200.0 / 3 + 50.0) / 2)
    assert r.acc == pytest.approx(62.5)
    np.testing.assert_allclose(r.group_acc, [75.0, 50.0])
    assert r.worst_group_acc == 50.0
    # PPV: g0 class0 2/3, class1 1/1; g1 class0 1/1, class1 1/3
    # PPV gaps: class 0 |200/3 - 100| = 100/3; class 1 |100 - 100/3| = 200/3
    assert r.suff_m == pytest.approx(200.0 / 3)
    assert r.suff_a == pytest.approx(50.0)


def test_count_table_values() -> None:
    y = np.array([0, 1, 1, 2])
    p = np.array([0, 2, 1, 2])
    a = np.array([1, 0, 0, 1])
    t = count_table(y, p, sensitive_features=a, n_classes=4)
    assert t.shape == (2, 4, 4) and t.dtype == np.int64
    expected = np.zeros((2, 4, 4), dtype=np.int64)
    expected[1, 0, 0] = expected[0, 1, 2] = expected[0, 1, 1] = expected[1, 2, 2] = 1
    np.testing.assert_array_equal(t, expected)


def test_count_tables_add_across_batches() -> None:
    y, p, a = _random_data(11, 500, 4, 3)
    whole = count_table(y, p, sensitive_features=a, n_classes=4, n_groups=3)
    parts = sum(
        count_table(y[s], p[s], sensitive_features=a[s], n_classes=4, n_groups=3)
        for s in (slice(0, 123), slice(123, 500))
    )
    np.testing.assert_array_equal(whole, parts)
    r1 = report_from_counts(parts)
    r2 = fairness_report(y, p, sensitive_features=a, n_classes=4, n_groups=3)
    assert r1.to_dict() == r2.to_dict()


# --------------------------------------------------------------------------------------------------
# Invariance, input types, report object
# --------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("mode", ["ignore", "zero"])
@pytest.mark.parametrize(("seed", "n", "k", "g"), CASES)
def test_group_permutation_invariance(seed: int, n: int, k: int, g: int, mode: str) -> None:
    y, p, a = _random_data(seed, n, k, g)
    perm = np.random.default_rng(seed + 100).permutation(g)
    r = fairness_report(y, p, sensitive_features=a, n_classes=k, n_groups=g, empty_cells=mode)
    rp = fairness_report(y, p, sensitive_features=perm[a], n_classes=k, n_groups=g, empty_cells=mode)
    for name in ("acc", "deo_m", "deo_a", "worst_group_acc", "suff_m", "suff_a"):
        assert getattr(rp, name) == pytest.approx(getattr(r, name), abs=1e-12), name
    np.testing.assert_allclose(rp.class_gaps, r.class_gaps, atol=1e-12)
    np.testing.assert_allclose(rp.tpr[perm], r.tpr)  # rows move with their group


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_torch_inputs_match_numpy() -> None:
    y, p, a = _random_data(5, 300, 4, 3)
    r_np = fairness_report(y, p, sensitive_features=a)
    r_t = fairness_report(torch.from_numpy(y), torch.from_numpy(p), sensitive_features=torch.from_numpy(a))
    assert r_t.to_dict() == r_np.to_dict()
    # float tensors holding whole numbers are accepted too
    r_f = fairness_report(torch.tensor(y).float(), torch.tensor(p), sensitive_features=a.tolist())
    assert r_f.to_dict() == r_np.to_dict()
    counts = count_table(y, p, sensitive_features=a)
    assert report_from_counts(torch.from_numpy(counts)).to_dict() == r_np.to_dict()


def test_to_dict_is_json_with_none_for_nan() -> None:
    y = np.array([0, 1, 0])
    a = np.array([0, 0, 1])
    with pytest.warns(UserWarning):
        r = fairness_report(y, y, sensitive_features=a)
    d = r.to_dict()
    assert set(d) == {
        "acc",
        "deo_m",
        "deo_a",
        "worst_group_acc",
        "suff_m",
        "suff_a",
        "tpr",
        "group_acc",
        "class_gaps",
        "empty_cells",
    }
    assert d["tpr"] == [[100.0, 100.0], [100.0, None]]
    assert d["empty_cells"] == [[1, 1]]
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert all(type(d[k]) is float for k in ("acc", "deo_m", "deo_a", "worst_group_acc", "suff_m", "suff_a"))


def test_report_is_immutable() -> None:
    y = np.array([0, 1, 0, 1])
    r = fairness_report(y, y, sensitive_features=np.array([0, 0, 1, 1]))
    assert isinstance(r, FairnessReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.acc = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.tpr[0, 0] = 0.0


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

Y = np.array([0, 1, 2, 1])
A = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y_pred": np.array([0, 1, 2])}, "length mismatch"),
        ({"sensitive_features": np.array([0, 1])}, "length mismatch"),
        ({"y_pred": np.array([0, 1, 3, 1]), "n_classes": 3}, "out of range for n_classes=3"),
        ({"sensitive_features": np.array([0, 0, 2, 1]), "n_groups": 2}, "out of range for n_groups=2"),
        ({"y_true": np.array([0, -1, 2, 1])}, "negative label -1"),
        ({"y_true": np.array([0.0, 1.5, 2.0, 1.0])}, "integer valued"),
        ({"y_true": np.array([0.0, np.nan, 2.0, 1.0])}, "NaN"),
        ({"y_true": np.array(["a", "b", "c", "d"])}, "integer labels"),
        ({"y_true": Y.reshape(2, 2), "y_pred": Y.reshape(2, 2)}, "must be 1-D"),
        ({"y_true": np.array([], dtype=int)}, "y_true is empty"),
        ({"n_classes": 0}, "positive integer"),
        ({"empty_cells": "drop"}, r"unknown empty_cells mode 'drop'; allowed: ignore, zero"),
        ({"class_names": ["a", "b"]}, "class_names has 2 entries"),
    ],
)
def test_bad_input_raises(kwargs: dict, match: str) -> None:
    args = {"y_true": Y, "y_pred": Y, "sensitive_features": A, **kwargs}
    y_true, y_pred = args.pop("y_true"), args.pop("y_pred")
    with pytest.raises(FairDistillError, match=match):
        fairness_report(y_true, y_pred, **args)


def test_bad_counts_raise() -> None:
    good = count_table(Y, Y, sensitive_features=A)
    with pytest.raises(FairDistillError, match="allowed: ignore, zero"):
        report_from_counts(good, empty_cells="Zero")  # type: ignore[arg-type]
    with pytest.raises(FairDistillError, match="shape"):
        report_from_counts(good[:, :, :2])
    with pytest.raises(FairDistillError, match="no samples"):
        report_from_counts(np.zeros((2, 3, 3), dtype=int))
    with pytest.raises(FairDistillError, match="non-negative"):
        report_from_counts(-good)
    assert issubclass(FairDistillError, ValueError)
