"""Generalised barycenters: closed forms, the L-BFGS solves against independent solutions, bary-w2, backbones."""

import sys

import numpy as np
import pytest
import torch

from fairdistill.backbones import BACKBONES, check_method, get_backbone
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.distances import get_distance
from fairdistill.errors import FairDistillError
from fairdistill.presets import get_method
from fairdistill.targets import GroupStats, get_target, list_targets
from fairdistill.targets.barycenters import (
    barycenter_objective,
    list_discrepancies,
    sinkhorn_cost,
    solve_barycenter,
    w2_barycenter,
)

BARY_TARGETS = list_targets("bary-*")
SOLVED = [t for t in BARY_TARGETS if not get_target(t).uses_samples]


def _points(k=4, g=5, d=7, seed=0, p_absent=0.3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k, g, d, generator=gen, dtype=dtype) * 2 + torch.randn(k, 1, d, generator=gen, dtype=dtype)
    present = torch.rand(k, g, generator=gen) > p_absent
    present[:, 0] = True
    return x, present


def test_l1_is_the_coordinate_wise_median_odd_and_even_counts():
    x, _ = _points(k=4, g=6)
    present = torch.tensor(
        [
            [True, True, True, True, True, False],  # 5: odd
            [True, False, True, True, False, True],  # 4: even
            [False, False, False, False, False, True],  # 1
            [False] * 6,  # none: zeros
        ]
    )
    b = solve_barycenter(x, present, "l1")
    torch.testing.assert_close(b[0], x[0, :5].median(0).values)
    mid = x[1, present[1]].sort(0).values
    torch.testing.assert_close(b[1], 0.5 * (mid[1] + mid[2]))  # midpoint of the two middle values
    torch.testing.assert_close(b[2], x[2, 5])
    assert torch.equal(b[3], torch.zeros(7, dtype=x.dtype))


def test_l2sq_is_the_mean_of_the_present_groups():
    x, present = _points()
    b = solve_barycenter(x, present, "l2sq")
    for c in range(x.shape[0]):
        torch.testing.assert_close(b[c], x[c, present[c]].mean(0))


def _weiszfeld(points: torch.Tensor, iters: int = 2000) -> torch.Tensor:
    m = points.mean(0)
    for _ in range(iters):
        w = 1 / (points - m).norm(dim=-1).clamp_min(1e-14)
        m = (w.unsqueeze(-1) * points).sum(0) / w.sum()
    return m


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l2_is_the_geometric_median(seed):
    x, present = _points(k=3, g=6, d=5, seed=seed)
    x = x * 10**seed  # the scaling inside the solver makes the feature scale irrelevant
    b = solve_barycenter(x, present, "l2")
    for c in range(3):
        ref = _weiszfeld(x[c, present[c]])
        scale = (x[c, present[c]] - ref).norm(dim=-1).max()
        assert (b[c] - ref).norm() <= 1e-4 * scale, (c, (b[c] - ref).norm() / scale)


def _linf_lp(points: np.ndarray) -> float:
    """min_m (1/G) sum_g max_d |x_gd - m_d| as a linear programme (variables m, t_g)."""
    from scipy.optimize import linprog

    g, d = points.shape
    rows, rhs = [], []
    for a in range(g):
        for j in range(d):
            for sign in (1.0, -1.0):  # sign * (x_aj - m_j) <= t_a
                row = np.zeros(d + g)
                row[j], row[d + a] = -sign, -1.0
                rows.append(row)
                rhs.append(-sign * points[a, j])
    c = np.concatenate([np.zeros(d), np.full(g, 1.0 / g)])
    res = linprog(c, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=[(None, None)] * (d + g), method="highs")
    assert res.success
    return float(res.fun)


@pytest.mark.parametrize("seed", [0, 1])
def test_linf_reaches_the_linear_programme_optimum(seed):
    x, present = _points(k=3, g=4, d=6, seed=seed, p_absent=0.0)
    b = solve_barycenter(x, present, "linf")
    got = barycenter_objective(x, present, b, "linf")
    for c in range(3):
        best = _linf_lp(x[c].numpy())
        assert best <= got[c] + 1e-9 and got[c] <= best * (1 + 1e-4), (c, got[c], best)


def test_huber_is_exact_and_spans_mean_to_median():
    x, present = _points(k=5, g=7, d=9, seed=3)
    for delta in (0.3, 1.0, 3.0):
        b = solve_barycenter(x, present, "huber", delta=delta)
        # first-order condition per coordinate: sum over present groups of clamp(b - x, -delta, delta) = 0
        slope = ((b.unsqueeze(1) - x).clamp(-delta, delta) * present.unsqueeze(-1)).sum(1)
        assert slope.abs().max() < 1e-10
    torch.testing.assert_close(solve_barycenter(x, present, "huber", delta=1e3), solve_barycenter(x, present, "l2sq"))
    torch.testing.assert_close(solve_barycenter(x, present, "huber", delta=1e-9), solve_barycenter(x, present, "l1"))


def test_cosine_is_the_mean_direction_at_the_mean_length():
    x, present = _points(seed=4)
    b = solve_barycenter(x, present, "cosine")
    for c in range(x.shape[0]):
        xs = x[c, present[c]]
        units = xs / xs.norm(dim=-1, keepdim=True)
        direction = units.sum(0) / units.sum(0).norm()
        torch.testing.assert_close(b[c], direction * xs.norm(dim=-1).mean())


@pytest.mark.parametrize("discrepancy", list_discrepancies())
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_objective_is_never_above_the_means(discrepancy, seed):
    x, present = _points(k=5, g=6, d=12, seed=seed)
    x = x.float()  # the public dtype: solved in float64 inside, returned as float32
    b = solve_barycenter(x, present, discrepancy)
    assert b.dtype == torch.float32 and b.shape == (5, 12)
    mean = solve_barycenter(x, present, "l2sq")
    x64, b64, m64 = x.double(), b.double(), mean.double()
    got = barycenter_objective(x64, present, b64, discrepancy)
    ref = barycenter_objective(x64, present, m64, discrepancy)
    assert torch.all(got <= ref * (1 + 1e-6) + 1e-6), (got, ref)
    if discrepancy not in ("l2sq", "cosine"):  # cosine ignores the length; l2sq is the mean
        # and it is a minimum: random small moves do not improve it (beyond rounding)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(5):
            moved = b64 + 1e-3 * torch.randn(b64.shape, generator=gen, dtype=torch.float64)
            assert torch.all(barycenter_objective(x64, present, moved, discrepancy) >= got - 1e-5)


@pytest.mark.parametrize("discrepancy", list_discrepancies())
def test_absent_groups_are_ignored(discrepancy):
    x, present = _points(seed=5)
    junk = torch.where(present.unsqueeze(-1), x, torch.full_like(x, 1e6))
    torch.testing.assert_close(solve_barycenter(junk, present, discrepancy), solve_barycenter(x, present, discrepancy))


def _stats(seed=0, keep_samples=False, n=240, k=3, g=4, d=6, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(n // k)
    groups = torch.randint(0, g, (n,), generator=gen)
    feats = torch.randn(n, d, generator=gen, dtype=torch.float64) + groups.unsqueeze(-1).double()
    feats.requires_grad_(requires_grad)
    return feats, GroupStats.from_features(feats, labels, groups, k, g, keep_samples=keep_samples)


@pytest.mark.parametrize("target", SOLVED)
def test_solved_targets_are_detached_and_give_syn_a_gradient(target):
    feats, stats = _stats(requires_grad=True)
    t = get_target(target)
    assert t.cell_weights(stats) is None and t.feature_only
    s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    t.loss(stats, s, get_distance("l1")).backward()
    assert feats.grad is None  # nothing flows back through the solver into the real features
    assert s.grad is not None and s.grad.abs().sum() > 0
    discrepancy = target.removeprefix("bary-")
    torch.testing.assert_close(t.statistic(stats), solve_barycenter(stats.means, stats.present, discrepancy))


def test_group_stats_keep_samples_on_request_and_merge_them():
    feats, stats = _stats(keep_samples=True)
    assert stats.features is feats and stats.labels is not None and stats.groups is not None
    _, plain = _stats()
    assert plain.features is None and plain.labels is None
    both = stats.merge(stats)
    assert both.features.shape == (480, 6) and torch.equal(both.counts, 2 * stats.counts)
    assert stats.merge(plain).features is None


# ---- bary-w2 ------------------------------------------------------------------------------------------
def test_w2_barycenter_of_single_points_and_two_diracs():
    pytest.importorskip("ot")
    # class 0: one group, one point; class 1: two groups of one point each (two Dirac masses)
    feats = torch.tensor([[1.0, -2.0], [0.0, 0.0], [2.0, 4.0]])
    labels, groups = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 2])
    bary = w2_barycenter(feats, labels, groups, 3, 4, support=3)
    assert bary.shape == (3, 3, 2)
    torch.testing.assert_close(bary[0], torch.tensor([[1.0, -2.0]] * 3))
    torch.testing.assert_close(bary[1], torch.tensor([[1.0, 2.0]] * 3))  # the midpoint
    assert torch.equal(bary[2], torch.zeros(3, 2))  # no sample of class 2


def test_w2_barycenter_lies_between_two_shifted_clouds_and_keeps_the_mean_of_means():
    pytest.importorskip("ot")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    shift = torch.tensor([6.0, 0.0, 0.0], dtype=torch.float64)
    # group 1 is group 0 translated: the W2 barycenter is group 0 translated by half the shift
    feats = torch.cat([base, base + shift])
    labels, groups = torch.zeros(16, dtype=torch.long), torch.arange(2).repeat_interleave(8)
    bary = w2_barycenter(feats, labels, groups, 1, 2, support=8)[0]
    expected = base + shift / 2
    assert torch.allclose(bary.sort(0).values, expected.sort(0).values, atol=1e-8)
    # the mean of the barycenter is the uniform mean of the group means (what statistic() returns)
    stats = GroupStats.from_features(feats, labels, groups, 1, 2, keep_samples=True)
    torch.testing.assert_close(bary.mean(0), get_target("bary-w2").statistic(stats)[0])


def test_sinkhorn_loss_decreases_toward_the_barycenter_and_only_syn_gets_gradients():
    pytest.importorskip("ot")
    feats, stats = _stats(seed=1, keep_samples=True, requires_grad=True)
    bary = w2_barycenter(feats, stats.labels, stats.groups, 3, 4, support=5)
    gen = torch.Generator().manual_seed(2)
    start = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64) * 3
    costs = [float(sinkhorn_cost(start + t * (bary - start), bary).sum()) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(costs, costs[1:], strict=False)), costs
    syn = start.clone().requires_grad_(True)
    loss = get_target("bary-w2").sample_loss(stats, syn)
    loss.backward()
    assert feats.grad is None and syn.grad is not None and syn.grad.abs().sum() > 0
    with pytest.raises(FairDistillError, match="keep_samples"):
        get_target("bary-w2").sample_loss(_stats()[1], syn)
    with pytest.raises(FairDistillError, match="sample_loss"):
        get_target("bary-w2").loss(stats, syn[:, 0], get_distance("l2sq"))


def test_missing_pot_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)  # makes `import ot` raise ImportError
    _, stats = _stats(keep_samples=True)
    with pytest.raises(FairDistillError, match=r"POT: pip install 'fairdistill\[ot\]'"):
        get_target("bary-w2").sample_loss(stats, torch.zeros(3, 2, 6, dtype=torch.float64))


# ---- backbones and recipes ---------------------------------------------------------------------------------
SMALL = dict(ipc=2, iterations=2, batch_real=16, model_kwargs={"width": 8}, warm_epochs=1)


@pytest.mark.parametrize("target", BARY_TARGETS)
def test_dm_recipe_runs_two_iterations(digits, cpu, target):
    if get_target(target).uses_samples:
        pytest.importorskip("ot")
    spec = get_method(f"cobra-{target}")
    assert (spec.target, spec.embedder) == (target, "warm")
    assert spec.distance == ("l2sq" if target == "bary-w2" else "l1")
    cfg = DistillConfig(**SMALL)
    init = get_backbone("dm").distill(digits, [spec], DistillConfig(**{**SMALL, "iterations": 0}), device=cpu)
    out = get_backbone("dm").distill(digits, [spec], cfg, device=cpu)[spec.name]
    assert torch.isfinite(out.images).all() and out.images.shape == (20, 3, 8, 8)
    assert not torch.equal(out.images, init[spec.name].images)
    assert out.meta["final_loss"] >= 0


@pytest.mark.parametrize("backbone", ["dc", "idc"])
@pytest.mark.parametrize("target", BARY_TARGETS)
def test_gradient_matching_refuses_bary_targets_at_the_start(digits, cpu, backbone, target):
    assert not BACKBONES.get(backbone).supports(get_target(target))
    with pytest.raises(FairDistillError, match=f"backbone '{backbone}' cannot use target '{target}'.*dm"):
        check_method(MethodSpec("m", backbone=backbone, target=target))
    with pytest.raises(FairDistillError, match="cannot use target"):
        get_backbone(backbone).distill(
            digits, [MethodSpec("m", backbone=backbone, target=target)], DistillConfig(**SMALL), device=cpu
        )


def test_cafe_takes_the_solved_barycenters_but_refuses_w2():
    cafe = BACKBONES.get("cafe")
    assert all(cafe.supports(get_target(t)) for t in SOLVED)
    refusal = "per-sample feature distributions, not class statistics; backbones that can: dm$"
    with pytest.raises(FairDistillError, match=refusal):
        check_method(MethodSpec("m", backbone="cafe", target="bary-w2"))
