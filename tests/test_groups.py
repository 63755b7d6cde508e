"""Partial, noisy and missing group labels: the transforms, what the statistics make of -1, the backbones, the CLI."""

import json
import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from fairdistill.backbones import get_backbone
from fairdistill.cli import app
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.data.dataset import FairDataset, FairSplit
from fairdistill.data.groups import (
    apply_group_options,
    infer_groups,
    parse_groups,
    with_noisy_groups,
    with_partial_groups,
)
from fairdistill.data.sampling import RealSampler
from fairdistill.distances import get_distance
from fairdistill.errors import FairDistillError
from fairdistill.evaluate import balanced_subset
from fairdistill.models import create_model
from fairdistill.targets import GroupStats, get_target, list_targets
from fairdistill.training import init_weights


@pytest.fixture(scope="module")
def partial(digits):
    return with_partial_groups(digits, 0.3, seed=0)


@pytest.fixture
def quick_infer(monkeypatch):
    """Where the API or the CLI infers groups: a tiny network and one epoch."""
    import fairdistill.data.groups as groups

    monkeypatch.setattr(groups, "INFER_EPOCHS", 1)
    monkeypatch.setattr(groups, "INFER_MODEL_KWARGS", {"width": 8})


def _same_test_split(a: FairDataset, b: FairDataset) -> bool:
    return (
        torch.equal(a.test.images, b.test.images)
        and torch.equal(a.test.labels, b.test.labels)
        and torch.equal(a.test.groups, b.test.groups)
        and a.group_names == b.group_names
        and a.num_groups == b.num_groups
    )


def _cobra_targets(data: FairDataset, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycenter statistic of a stratified batch and population statistic of a class batch, random ConvNet."""
    k, g = data.num_classes, data.num_train_groups
    net = init_weights(
        create_model("convnet", channels=3, num_classes=k, image_size=8, width=8), torch.Generator().manual_seed(seed)
    )
    sampler = RealSampler(data.train, k, g)
    out = []
    for sampling, target, shares in (("stratified", "barycenter", data.group_shares()), ("class", "population", None)):
        idx = sampler.draw(sampling, 16, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            feats = net.embed(data.train.images[idx])
        stats = GroupStats.from_features(feats, data.train.labels[idx], data.train.groups[idx], k, g, shares)
        out.append(get_target(target).statistic(stats))
    return out[0], out[1]


# ---- partial labels ------------------------------------------------------------------------------------
def test_fraction_one_reproduces_the_fully_labelled_dataset_and_target_exactly(digits):
    full = with_partial_groups(digits, 1.0, seed=5)
    assert torch.equal(full.train.groups, digits.train.groups)
    assert full.train.images is digits.train.images and full.train.labels is digits.train.labels
    assert torch.equal(full.counts(), digits.counts()) and torch.equal(full.group_shares(), digits.group_shares())
    assert int(full.unlabelled_counts().sum()) == 0 and not full.partially_labelled
    assert _same_test_split(full, digits)
    for ours, theirs in zip(_cobra_targets(full), _cobra_targets(digits), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.55, 0.9])
def test_partial_counts_are_exact(digits, fraction):
    part = with_partial_groups(digits, fraction, seed=1)
    n = digits.class_counts()
    kept = torch.tensor([max(1, math.floor(fraction * int(v) + 0.5)) for v in n])
    assert torch.equal(part.counts().sum(1), kept)
    assert torch.equal(part.unlabelled_counts(), n - kept)
    assert torch.equal(part.class_counts(), n)  # the unlabelled images still count for their class
    # every group that had images in a class keeps at least one label (each class keeps >= 10 here)
    assert torch.all(part.counts()[digits.counts() > 0] >= 1)
    assert torch.all(part.counts() <= digits.counts())
    # a kept label is the true one
    lab = part.train.groups >= 0
    assert torch.equal(part.train.groups[lab], digits.train.groups[lab])
    # pi(a|y) comes from the labelled part
    c = part.counts().double()
    torch.testing.assert_close(part.group_shares(), (c / c.sum(1, keepdim=True)).float())
    assert _same_test_split(part, digits)
    assert part.name == digits.name and part.fingerprint() != digits.fingerprint()
    assert part.params["group_labels"][-1]["transform"] == "partial"


def test_partial_selection_is_seeded(digits):
    a = with_partial_groups(digits, 0.3, seed=0)
    b = with_partial_groups(digits, 0.3, seed=0)
    c = with_partial_groups(digits, 0.3, seed=1)
    assert torch.equal(a.train.groups, b.train.groups)
    assert not torch.equal(a.train.groups, c.train.groups)


def test_tiny_fractions_warn_and_bad_fractions_fail(digits):
    with pytest.warns(UserWarning, match="fewer labels than they have groups"):
        part = with_partial_groups(digits, 0.02, seed=0)  # 3 labels per class, 10 groups
    assert torch.all(part.counts().sum(1) == 3) and torch.all(part.counts() <= 1)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(FairDistillError, match=r"fraction must lie in \(0, 1\]"):
            with_partial_groups(digits, bad, seed=0)


def test_validate_allows_unlabelled_in_train_only(digits, partial):
    bad_test = FairSplit(digits.test.images, digits.test.labels, digits.test.groups.clone())
    bad_test.groups[0] = -1
    with pytest.raises(FairDistillError, match="test: groups outside .*train split only"):
        replace(digits, test=bad_test)
    worse = partial.train.groups.clone()
    worse[0] = -2
    with pytest.raises(FairDistillError, match="train: groups outside"):
        replace(partial, train=FairSplit(partial.train.images, partial.train.labels, worse))
    none_of_0 = partial.train.groups.clone()
    none_of_0[partial.train.labels == 0] = -1
    with pytest.raises(FairDistillError, match="no group-labelled training image"):
        replace(partial, train=FairSplit(partial.train.images, partial.train.labels, none_of_0))


# ---- what the statistics make of -1 ---------------------------------------------------------------------
def _hand_batch():
    """Class 0: group 0 {1}, group 1 {3}, unlabelled {10, 20}; class 1: group 1 {4}, unlabelled {6}."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    groups = torch.tensor([0, 1, -1, -1, 1, -1])
    feats = torch.tensor([[1.0], [3.0], [10.0], [20.0], [4.0], [6.0]], dtype=torch.float64)
    return feats, labels, groups


def test_group_stats_by_hand():
    feats, y, a = _hand_batch()
    s = GroupStats.from_features(feats, y, a, 2, 2)
    # plain labels * G + groups would put class 1's unlabelled sample into (class 0, group 1)
    assert s.counts.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert s.sums[..., 0].tolist() == [[1.0, 3.0], [0.0, 4.0]]
    assert s.unlabelled_counts.tolist() == [2.0, 1.0] and s.unlabelled_sums[:, 0].tolist() == [30.0, 6.0]
    # population: the mean of ALL the class's samples; group targets: the labelled cells only
    assert get_target("population").statistic(s)[:, 0].tolist() == [8.5, 5.0]
    assert get_target("barycenter").statistic(s)[:, 0].tolist() == [2.0, 4.0]
    assert get_target("uniform-sampling").statistic(s)[:, 0].tolist() == [2.0, 4.0]
    syn = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
    l2 = get_distance("l2sq")
    assert float(get_target("group-sync").loss(s, syn, l2)) == 1 + 9 + 16
    assert float(get_target("barycenter").loss(s, syn, l2)) == 4 + 16
    assert float(get_target("population").loss(s, syn, l2)) == 8.5**2 + 25
    # counts alone (DC) agree with the features version
    c = GroupStats.from_counts(y, a, 2, 2, dtype=torch.float64)
    assert torch.equal(c.counts, s.counts) and torch.equal(c.unlabelled_counts, s.unlabelled_counts)
    # additive, unlabelled part included
    m = GroupStats.from_features(feats[:3], y[:3], a[:3], 2, 2).merge(
        GroupStats.from_features(feats[3:], y[3:], a[3:], 2, 2)
    )
    assert torch.equal(m.unlabelled_sums, s.unlabelled_sums) and torch.equal(m.counts, s.counts)


def test_sample_weights_by_hand_and_no_wrap():
    feats, y, a = _hand_batch()
    s = GroupStats.from_counts(y, a, 2, 2, dtype=torch.float64)
    bary = get_target("barycenter").sample_weights(s, y, a)
    assert bary.tolist() == [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]  # -1 never reads the last group's weight
    pop = get_target("population").sample_weights(s, y, a)
    assert pop.tolist() == [0.25, 0.25, 0.25, 0.25, 0.5, 0.5]
    assert get_target("group-sync").sample_weights(s, y, a) is None


@pytest.mark.parametrize("target", ["population", "barycenter", "uniform-sampling"])
def test_sample_weights_reproduce_the_statistic_with_unlabelled_samples(target):
    gen = torch.Generator().manual_seed(0)
    k, g, n = 3, 4, 300
    y = torch.randint(0, k, (n,), generator=gen)
    a = torch.randint(-1, g, (n,), generator=gen)  # about a fifth unlabelled
    feats = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    stats = GroupStats.from_features(feats, y, a, k, g)
    t = get_target(target)
    w = t.sample_weights(stats, y, a)
    weighted = torch.zeros(k, 5, dtype=torch.float64).index_add_(0, y, w.unsqueeze(1) * feats)
    torch.testing.assert_close(weighted, t.statistic(stats))
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, y, w)
    torch.testing.assert_close(sums, torch.ones(k, dtype=torch.float64))
    if target != "population":
        assert torch.all(w[a == -1] == 0)


def test_a_class_with_only_unlabelled_samples_is_matched_by_population_only():
    y = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([0, 1, -1, -1])
    feats = torch.tensor([[1.0], [2.0], [5.0], [7.0]])
    stats = GroupStats.from_features(feats, y, a, 2, 2)
    syn = torch.zeros(2, 1, requires_grad=True)
    for name in list_targets():
        if get_target(name).uses_samples:
            continue  # matched per sample, not through loss (its partial-label case: test_barycenters)
        syn.grad = None
        get_target(name).loss(stats, syn, get_distance("l2sq")).backward()
        assert (syn.grad[1] != 0).item() == (name == "population"), name
    assert get_target("population").statistic(stats)[1, 0] == 6.0


def test_stratified_batches_never_hold_unlabelled_images(partial):
    s = RealSampler(partial.train, partial.num_classes, partial.num_train_groups)
    assert torch.equal(s.cell_sizes.view(10, 10), partial.counts())
    for seed in range(5):
        idx = s.stratified_batch(32, torch.Generator().manual_seed(seed))
        assert torch.all(partial.train.groups[idx] >= 0)
        counts = partial.train.subset(idx).counts(10, 10)
        assert torch.all(counts[partial.counts() > 0] == 4)  # ceil(32 / 10) from every labelled group
    # class batches draw from the whole class, labelled or not
    idx = s.class_batch(100, torch.Generator().manual_seed(0))
    assert torch.all(torch.bincount(partial.train.labels[idx]) == 100)
    assert (partial.train.groups[idx] == -1).any()


def test_balanced_baseline_uses_labelled_groups_and_tops_up(digits):
    with pytest.warns(UserWarning):
        part = with_partial_groups(digits, 0.05, seed=0)  # 7 labels per class
    idx = balanced_subset(part, 10, 0)
    assert torch.all(torch.bincount(part.train.labels[idx]) == 10)
    assert torch.all(part.train.subset(idx).counts(10, 10).sum(1) == 7)  # every labelled image, then 3 unlabelled
    assert torch.equal(balanced_subset(digits, 10, 0), balanced_subset(with_partial_groups(digits, 1.0, seed=0), 10, 0))


# ---- noisy labels --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 1.0])
def test_noise_flips_exactly_round_rn_labels_each_to_another_group(digits, rate):
    noisy = with_noisy_groups(digits, rate, seed=3)
    changed = noisy.train.groups != digits.train.groups
    assert int(changed.sum()) == math.floor(rate * len(digits.train) + 0.5)
    assert torch.all((noisy.train.groups >= 0) & (noisy.train.groups < 10))
    assert torch.equal(noisy.train.labels, digits.train.labels) and _same_test_split(noisy, digits)
    again = with_noisy_groups(digits, rate, seed=3)
    assert torch.equal(again.train.groups, noisy.train.groups)
    if 0 < rate < 1:
        assert not torch.equal(with_noisy_groups(digits, rate, seed=4).train.groups, noisy.train.groups)


def test_noise_leaves_unlabelled_images_alone_and_spreads_over_the_other_groups(digits, partial):
    noisy = with_noisy_groups(partial, 0.5, seed=0)
    unl = partial.train.groups == -1
    assert torch.all(noisy.train.groups[unl] == -1)
    assert int((noisy.train.groups != partial.train.groups).sum()) == round(0.5 * int((~unl).sum()))
    everything = with_noisy_groups(digits, 1.0, seed=0)
    shift = (everything.train.groups - digits.train.groups) % 10
    assert set(shift.tolist()) == set(range(1, 10))  # every other group is reachable
    with pytest.raises(FairDistillError, match=r"noise must lie in \[0, 1\]"):
        with_noisy_groups(digits, 1.2, seed=0)


# ---- missing labels: pseudo-groups ----------------------------------------------------------------------
def _two_colour(seed: int = 0) -> FairDataset:
    """Two classes (horizontal / vertical stripes) x two groups (a red or a blue digit colour), 60 / 20 per class."""
    gen = torch.Generator().manual_seed(seed)

    def split(sizes):
        xs, ys, gs = [], [], []
        for c in range(2):
            for g, n in enumerate(sizes):
                base = torch.zeros(n, 8, 8)
                if c == 0:
                    base[:, ::2, :] = 1
                else:
                    base[:, :, ::2] = 1
                gray = (0.7 * base + 0.3 * torch.rand(n, 8, 8, generator=gen)).clamp(0, 1)
                colour = torch.tensor([1.0, 0.1, 0.1] if g == 0 else [0.1, 0.1, 1.0])
                xs.append(gray.unsqueeze(1) * colour.view(1, 3, 1, 1) * 2 - 1)
                ys.append(torch.full((n,), c))
                gs.append(torch.full((n,), g))
        return FairSplit(torch.cat(xs), torch.cat(ys), torch.cat(gs))

    return FairDataset(
        "two-colour", split((60, 20)), split((10, 10)), ("h", "v"), ("red", "blue"), (0.5,) * 3, (0.5,) * 3
    )


@pytest.mark.parametrize("method,k", [("kmeans", 2), ("kmeans", None), ("dbscan", None)])
def test_infer_groups_recovers_obvious_clusters(method, k):
    from sklearn.metrics import adjusted_rand_score

    data = _two_colour()
    inferred = infer_groups(data, method, k, seed=0, epochs=2, model_kwargs={"width": 16})
    for c in range(2):
        m = data.train.labels == c
        ari = adjusted_rand_score(data.train.groups[m].numpy(), inferred.train.groups[m].numpy())
        assert ari > 0.9, (method, k, c, ari)
    # the pseudo-groups name the train split; the test split keeps the true groups for the metrics
    assert inferred.train_group_names == ("cluster-0", "cluster-1") and inferred.num_train_groups == 2
    assert inferred.group_names == ("red", "blue") and _same_test_split(inferred, data)
    assert inferred.counts().tolist() == [[60, 20], [60, 20]]  # cluster-0 is each class's largest
    assert inferred.counts("test").shape == (2, 2)
    again = infer_groups(data, method, k, seed=0, epochs=2, model_kwargs={"width": 16})
    assert torch.equal(again.train.groups, inferred.train.groups)


def test_pseudo_group_count_may_differ_from_the_true_one(digits):
    more = infer_groups(digits, "kmeans", 12, seed=0, epochs=1, model_kwargs={"width": 8})
    assert more.num_train_groups == 12 and more.num_groups == 10
    assert more.counts().shape == (10, 12) and more.counts("test").shape == (10, 10)
    assert more.group_shares().shape == (10, 12)
    fewer = infer_groups(digits, "kmeans", 3, seed=0, epochs=1, model_kwargs={"width": 8})
    assert fewer.counts().shape == (10, 3) and torch.all(fewer.counts() > 0)
    stats = _cobra_targets(fewer)
    assert all(torch.isfinite(s).all() for s in stats)
    with pytest.raises(FairDistillError, match="leave k unset"):
        infer_groups(digits, "dbscan", 3)
    with pytest.raises(FairDistillError, match="unknown clustering method"):
        infer_groups(digits, "spectral")


def test_parse_groups():
    assert parse_groups(None).method is None and str(parse_groups("true")) == "true"
    assert (parse_groups("infer:kmeans:4").method, parse_groups("infer:kmeans:4").k) == ("kmeans", 4)
    assert parse_groups("infer:kmeans").k is None and parse_groups("infer:dbscan").method == "dbscan"
    for bad in ("kmeans", "infer:kmeans:1", "infer:dbscan:3", "infer:spectral", "infer:kmeans:x", "inferred"):
        with pytest.raises(FairDistillError, match="bad groups"):
            parse_groups(bad)


def test_options_apply_infer_then_noise_then_partial(digits, quick_infer):
    same, record = apply_group_options(digits)
    assert same is digits and record is None
    out, record = apply_group_options(digits, groups="infer:kmeans:2", noise=0.1, fraction=0.5, seed=0)
    assert [s["transform"] for s in out.params["group_labels"]] == ["infer", "noise", "partial"]
    assert record["groups"] == "infer:kmeans:2" and record["fraction"] == 0.5 and record["noise"] == 0.1
    assert record["train_group_names"] == ["cluster-0", "cluster-1"]
    assert record["labelled"] + record["unlabelled"] == len(digits.train)
    assert _same_test_split(out, digits)


# ---- every backbone runs on partial labels ------------------------------------------------------------------
SMALL = dict(ipc=2, iterations=2, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=1, lr_img=0.1)


@pytest.mark.parametrize("backbone", ["dm", "dc", "idc", "cafe"])
def test_backbones_distil_partially_labelled_data(partial, cpu, backbone):
    extra = {"factor": 2} if backbone == "idc" else {}
    specs = [MethodSpec("cobra", backbone, "barycenter"), MethodSpec("vanilla", backbone, "population")]
    if backbone in ("dm", "dc"):  # per-group matching, and each target on the other sampling
        specs.append(MethodSpec("fairdd", backbone, "group-sync"))
        specs.append(MethodSpec("bary-class", backbone, "barycenter", sampling="class"))
    if backbone == "dm":
        specs.append(MethodSpec("pop-strat", backbone, "population", sampling="stratified"))
    out = get_backbone(backbone).distill(partial, specs, DistillConfig(**SMALL, **extra), device=cpu)
    for spec in specs:
        s = out[spec.name]
        assert torch.isfinite(s.images).all(), spec.name
        assert s.meta["group_labels"]["unlabelled"] == int(partial.unlabelled_counts().sum())
        assert s.meta["group_names"] == list(partial.group_names)


def test_dc_skips_classes_whose_batch_holds_no_labelled_image(digits, cpu):
    """Barycenter on class batches: a class batch without a group-labelled image defines no target, so that
    class's synthetic images stay put (matching it to a zero gradient would pull them somewhere)."""
    from fairdistill import rng

    with pytest.warns(UserWarning):
        sparse = with_partial_groups(digits, 0.005, seed=0)  # one labelled image per class
    cfg = DistillConfig(**{**SMALL, "iterations": 1, "outer_loop": 1})
    spec = MethodSpec("b", "dc", "barycenter", distance="l2sq", sampling="class")
    out = get_backbone("dc").distill(sparse, [spec], cfg, device=cpu)["b"]
    init = get_backbone("dc").distill(sparse, [spec], replace(cfg, iterations=0), device=cpu)["b"]
    sampler = RealSampler(sparse.train, 10, 10)
    idx = sampler.draw("class", cfg.batch_real, rng.generator(cfg.seed, "dc-real", "class", 0, 0))
    has_label = torch.zeros(10, dtype=torch.bool)
    has_label[sparse.train.labels[idx][sparse.train.groups[idx] >= 0]] = True
    assert has_label.any() and not has_label.all()  # both kinds of class occur in this draw
    moved = (out.images - init.images).flatten(1).abs().amax(1).view(10, cfg.ipc).amax(1) > 0
    assert torch.equal(moved, has_label)


def test_backbone_on_pseudo_groups(digits, cpu):
    fewer = infer_groups(digits, "kmeans", 3, seed=0, epochs=1, model_kwargs={"width": 8})
    spec = MethodSpec("cobra", "dm", "barycenter")
    out = get_backbone("dm").distill(fewer, [spec], DistillConfig(**SMALL), device=cpu)["cobra"]
    assert torch.isfinite(out.images).all()
    assert out.meta["group_labels"]["train_group_names"] == ["cluster-0", "cluster-1", "cluster-2"]
    assert out.meta["group_names"] == list(digits.group_names)


# ---- API and command line -------------------------------------------------------------------------------
runner = CliRunner()
FAST = ["--dataset", "digits-fg", "--ipc", "2", "--iterations", "1", "--device", "cpu", "--quiet"]


def test_distill_records_group_labels(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        ["distill", *FAST, "--preset", "vanilla-cpu", "--out", str(out), "--group-label-fraction", "0.5"]
        + ["--group-label-noise", "0.1"],
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "record.json").read_text())["synthetic"]
    assert meta["group_labels"]["fraction"] == 0.5 and meta["group_labels"]["noise"] == 0.1
    assert [s["transform"] for s in meta["group_labels"]["steps"]] == ["noise", "partial"]


def test_compare_with_pseudo_groups_writes_the_record(tmp_path, digits, quick_infer):
    out = tmp_path / "cmp"
    args = ["compare", *FAST, "--methods", "cobra", "--baselines", "random-balanced", "--models", "1"]
    res = runner.invoke(app, [*args, "--epochs", "1", "--groups", "infer:kmeans:2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["group_labels"]["groups"] == "infer:kmeans:2"
    assert summary["group_labels"]["train_group_names"] == ["cluster-0", "cluster-1"]
    # the metrics use the true test groups: one TPR row per colour
    record = json.loads((out / "cobra" / "record.json").read_text())
    assert len(record["tpr_mean"]) == digits.num_groups


@pytest.mark.parametrize(
    "args,message",
    [
        (["--groups", "infer:spectral"], "bad groups 'infer:spectral'; allowed:"),
        (["--groups", "infer:kmeans:1"], "bad groups 'infer:kmeans:1'"),
        (["--group-label-fraction", "0"], "group_label_fraction must lie in (0, 1]"),
        (["--group-label-noise", "1.5"], "group_label_noise must lie in [0, 1]"),
    ],
)
@pytest.mark.parametrize("command", ["distill", "compare"])
def test_bad_group_options_are_one_line_errors(command, args, message):
    res = runner.invoke(app, [command, "--dataset", "digits-fg", "--device", "cpu", "--quiet", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
