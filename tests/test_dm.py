"""The DM backbone: same seed gives the same images, lockstep changes nothing (its smoke test: test_engine.py)."""

import pytest
import torch

from fairdistill.backbones import get_backbone
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.errors import FairDistillError

SMALL = dict(ipc=2, iterations=2, batch_real=16, model_kwargs={"width": 8}, warm_epochs=2)


def run(dataset, methods, device, **kw):
    cfg = DistillConfig(**{**SMALL, **kw})
    return get_backbone("dm").distill(dataset, methods, cfg, device=device)


def test_images_move_and_same_seed_is_bit_identical(digits, cpu):
    spec = MethodSpec("cobra", target="barycenter", distance="l1", embedder="warm")
    a = run(digits, [spec], cpu, seed=7)["cobra"]
    b = run(digits, [spec], cpu, seed=7)["cobra"]
    c = run(digits, [spec], cpu, seed=8)["cobra"]
    init = run(digits, [spec], cpu, seed=7, iterations=0)["cobra"]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, init.images)


def test_lockstep_equals_distilling_alone(digits, cpu):
    specs = [
        MethodSpec("vanilla"),
        MethodSpec("fairdd", target="group-sync"),
        MethodSpec("cobra", target="barycenter", distance="l1", embedder="warm"),
    ]
    together = run(digits, specs, cpu, iterations=3)
    for spec in specs:
        alone = run(digits, [spec], cpu, iterations=3)[spec.name]
        assert torch.equal(alone.images, together[spec.name].images), spec.name


def test_init_from_real_is_shared_and_noise_differs(digits, cpu):
    out = run(digits, [MethodSpec("a"), MethodSpec("b", target="barycenter")], cpu, iterations=0)
    assert torch.equal(out["a"].images, out["b"].images)
    # the initial images are real training images of the right class
    flat = digits.train.images.flatten(1)
    for img, y in zip(out["a"].images, out["a"].labels, strict=True):
        match = (flat == img.flatten()).all(1).nonzero().flatten()
        assert len(match) >= 1 and digits.train.labels[match[0]] == y
    noise = run(digits, [MethodSpec("a")], cpu, iterations=0, init="noise")["a"]
    assert not torch.equal(noise.images, out["a"].images)


def test_bad_configuration(digits, cpu):
    with pytest.raises(FairDistillError, match="ipc must lie in"):
        run(digits, [MethodSpec("a")], cpu, ipc=10_000)
    with pytest.raises(FairDistillError, match="ipc must be >= 1"):
        run(digits, [MethodSpec("a")], cpu, ipc=0)
    with pytest.raises(FairDistillError, match="unknown target"):
        run(digits, [MethodSpec("a", target="nope")], cpu)
    with pytest.raises(FairDistillError, match="unique"):
        run(digits, [MethodSpec("a"), MethodSpec("a")], cpu)


def test_fairdd_equals_barycenter_l2sq_with_num_groups_times_the_learning_rate(digits, cpu):
    """Under squared L2 the group-sync gradient is |A| times the barycenter's (SPEC fact 1), so with
    SGD the two methods trace the same images when the barycenter's learning rate is |A| times larger."""
    assert torch.all(digits.counts("train") > 0)  # every class has every group: |A| = 10 everywhere
    fairdd = run(digits, [MethodSpec("f", target="group-sync", distance="l2sq")], cpu, iterations=3, lr_img=0.1)
    bary = run(digits, [MethodSpec("b", target="barycenter", distance="l2sq")], cpu, iterations=3, lr_img=1.0)
    torch.testing.assert_close(fairdd["f"].images, bary["b"].images, rtol=1e-4, atol=1e-4)
    slow = run(digits, [MethodSpec("b", target="barycenter", distance="l2sq")], cpu, iterations=3, lr_img=0.1)
    assert (slow["b"].images - fairdd["f"].images).abs().max() > 1e-3  # the learning rate is what differs
