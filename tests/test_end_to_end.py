"""End to end on real digits: distilling toward the barycenter makes the synthetic set fairer."""

import warnings

import pytest
import torch

from fairdistill.backbones import get_backbone
from fairdistill.config import DistillConfig, EvalConfig
from fairdistill.data import load_dataset
from fairdistill.evaluate import evaluate_images
from fairdistill.presets import get_method


@pytest.mark.slow
def test_cobra_lowers_deo_and_keeps_accuracy(cpu):
    """A small run on the embedded default (narrow nets, IPC 2): vanilla learns colour, COBRA shape."""
    data = load_dataset("cmnist-fg-mini")
    cfg = DistillConfig(ipc=2, iterations=100, batch_real=32, model_kwargs={"width": 16}, warm_epochs=3)
    sets = get_backbone("dm").distill(data, [get_method("vanilla"), get_method("cobra")], cfg, device=cpu)
    ecfg = EvalConfig(num_models=1, epochs=150, model_kwargs={"width": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = {k: evaluate_images(s.images, s.labels, data, ecfg, device=cpu).reports[0] for k, s in sets.items()}
    vanilla, cobra = res["vanilla"], res["cobra"]
    assert vanilla.deo_a > 90  # vanilla keeps each class's majority colour
    assert cobra.deo_a <= vanilla.deo_a - 25
    assert cobra.deo_m <= vanilla.deo_m
    assert cobra.acc >= vanilla.acc + 15
    assert torch.isfinite(sets["cobra"].images).all()
