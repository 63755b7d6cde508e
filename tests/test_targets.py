"""Targets: the identities of SPEC section 2 and the one-pass group statistics."""

import importlib.util

import pytest
import torch

from fairdistill.distances import get_distance, list_distances
from fairdistill.errors import FairDistillError
from fairdistill.targets import GroupStats, get_target, list_targets, resolve_sampling


def _batch(k=3, g=4, d=6, n=200, seed=0, balanced=False):
    gen = torch.Generator().manual_seed(seed)
    if balanced:
        per = n // (k * g)
        labels = torch.arange(k).repeat_interleave(g * per)
        groups = torch.arange(g).repeat_interleave(per).repeat(k)
    else:
        labels = torch.randint(0, k, (n,), generator=gen)
        # very unequal group sizes: group 0 dominates
        groups = torch.multinomial(torch.tensor([0.85, 0.1, 0.04, 0.01]), n, replacement=True, generator=gen)
    feats = torch.randn(len(labels), d, generator=gen, dtype=torch.float64)
    return feats, labels, groups


def test_group_stats_match_a_loop_over_cells():
    feats, y, a = _batch()
    stats = GroupStats.from_features(feats, y, a, 3, 4)
    for c in range(3):
        for g in range(4):
            m = (y == c) & (a == g)
            assert stats.counts[c, g] == m.sum()
            if m.any():
                torch.testing.assert_close(stats.means[c, g], feats[m].mean(0))
    # population weights of a class batch give the plain batch mean
    pop = get_target("population").statistic(stats)
    for c in range(3):
        torch.testing.assert_close(pop[c], feats[y == c].mean(0))


def test_group_stats_are_additive():
    feats, y, a = _batch(n=300)
    whole = GroupStats.from_features(feats, y, a, 3, 4)
    parts = GroupStats.from_features(feats[:120], y[:120], a[:120], 3, 4).merge(
        GroupStats.from_features(feats[120:], y[120:], a[120:], 3, 4)
    )
    torch.testing.assert_close(whole.sums, parts.sums)
    torch.testing.assert_close(whole.counts, parts.counts)


def test_barycenter_is_uniform_mean_of_present_groups():
    feats, y, a = _batch()
    stats = GroupStats.from_features(feats, y, a, 3, 4)
    bary = get_target("barycenter").statistic(stats)
    for c in range(3):
        present = [feats[(y == c) & (a == g)].mean(0) for g in range(4) if ((y == c) & (a == g)).any()]
        torch.testing.assert_close(bary[c], torch.stack(present).mean(0))


def test_dm_identity_group_sync_gradient_is_num_groups_times_barycenter_gradient():
    """Sum_a ||m_a - s||^2 has gradient |A| * grad ||mean_a m_a - s||^2 (SPEC fact 1)."""
    feats, y, a = _batch(seed=3, n=3000)
    stats = GroupStats.from_features(feats, y, a, 3, 4)
    assert stats.present.all(), "test needs every group present"
    l2 = get_distance("l2sq")
    s1 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    get_target("group-sync").loss(stats, s1, l2).backward()
    get_target("barycenter").loss(stats, s2, l2).backward()
    torch.testing.assert_close(s1.grad, 4 * s2.grad, rtol=1e-12, atol=1e-12)


def test_uniform_sampling_equals_barycenter_on_a_balanced_batch():
    """On equal counts per group the pooled mean is the barycenter (SPEC fact 5)."""
    feats, y, a = _batch(n=240, balanced=True)
    stats = GroupStats.from_features(feats, y, a, 3, 4)
    torch.testing.assert_close(
        get_target("uniform-sampling").statistic(stats), get_target("barycenter").statistic(stats)
    )


def test_stratified_population_target_reweights_to_dataset_shares():
    feats, y, a = _batch(n=240, balanced=True)
    shares = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 3)
    stats = GroupStats.from_features(feats, y, a, 3, 4, population_shares=shares)
    expected = (shares.double().unsqueeze(-1) * stats.means).sum(1)
    torch.testing.assert_close(get_target("population").statistic(stats), expected)


@pytest.mark.parametrize("target", list_targets())
def test_relabelling_groups_changes_nothing(target):
    feats, y, a = _batch(seed=5)
    perm = torch.tensor([2, 0, 3, 1])
    s = torch.randn(3, 6, dtype=torch.float64)
    t = get_target(target)
    if t.uses_samples:  # matched on per-sample features (bary-w2), not through a distance
        pytest.importorskip("ot")
        base = GroupStats.from_features(feats, y, a, 3, 4, keep_samples=True)
        relab = GroupStats.from_features(feats, y, perm[a], 3, 4, keep_samples=True)
        torch.testing.assert_close(t.statistic(base), t.statistic(relab))
        syn = torch.randn(3, 2, 6, dtype=torch.float64)
        torch.testing.assert_close(t.sample_loss(base, syn), t.sample_loss(relab, syn))
        return
    for dist in list_distances():
        d = get_distance(dist)
        base = GroupStats.from_features(feats, y, a, 3, 4)
        relab = GroupStats.from_features(feats, y, perm[a], 3, 4)
        torch.testing.assert_close(t.statistic(base), t.statistic(relab))
        torch.testing.assert_close(t.loss(base, s, d), t.loss(relab, s, d))


def test_absent_classes_do_not_contribute():
    feats, y, a = _batch()
    keep = y != 1
    stats = GroupStats.from_features(feats[keep], y[keep], a[keep], 3, 4, keep_samples=True)
    s = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    has_pot = importlib.util.find_spec("ot") is not None
    for t in list_targets():
        s.grad = None
        target = get_target(t)
        if target.uses_samples:  # one synthetic point per class, matched as a cloud (bary-w2; needs POT)
            if has_pot:
                target.sample_loss(stats, s.unsqueeze(1)).backward()
                assert torch.all(s.grad[1] == 0)
            continue
        target.loss(stats, s, get_distance("l2sq")).backward()
        assert torch.all(s.grad[1] == 0)


def test_sampling_resolution():
    assert resolve_sampling(get_target("population"), None) == "class"
    assert resolve_sampling(get_target("barycenter"), None) == "stratified"
    with pytest.raises(FairDistillError, match="uniform-sampling"):
        resolve_sampling(get_target("uniform-sampling"), "class")
    with pytest.raises(FairDistillError, match="allowed"):
        get_target("median")
