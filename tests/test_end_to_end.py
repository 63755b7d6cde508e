"""End to end on real digits: distilling toward the barycenter makes the synthetic set fairer."""

import warnings

import pytest

import fairdistill.api as fd


@pytest.mark.slow
def test_cobra_lowers_deo_and_keeps_accuracy(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fd.compare(
            digits,
            methods=["vanilla", "cobra"],
            baselines=["random"],
            preset="cpu",
            ipc=2,
            iterations=60,
            num_models=1,
            epochs=100,
            device="cpu",
        )
    m = result.summary["methods"]
    vanilla, cobra, rand = m["vanilla"], m["cobra"], m["random"]
    # vanilla keeps the majority colour: its models learn colour, not shape
    assert vanilla["deo_a"]["mean"] > 50
    assert cobra["deo_a"]["mean"] <= vanilla["deo_a"]["mean"] / 2
    assert cobra["deo_m"]["mean"] < vanilla["deo_m"]["mean"]
    assert cobra["acc"]["mean"] >= vanilla["acc"]["mean"]
    assert cobra["acc"]["mean"] > rand["acc"]["mean"]
