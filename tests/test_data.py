"""Datasets: the coloured-digit builder, the embedded defaults, the samplers."""

import pytest
import torch

from fairdistill.data import list_datasets, load_dataset
from fairdistill.data.colored import COLOURS, biased_groups, colourize
from fairdistill.data.embedded import read_mnist_5k, stratified_split
from fairdistill.data.sampling import RealSampler
from fairdistill.errors import FairDistillError


def test_colourize_fg_and_bg_pixels():
    gray = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    for idx, rgb in enumerate(COLOURS):
        c = torch.tensor(rgb, dtype=torch.float32) / 255
        # not binarised (FashionMNIST): fg is the ramp colour * g, bg the blend from the colour to white
        fg = colourize(gray, torch.tensor([idx]), "fg")[0]
        bg = colourize(gray, torch.tensor([idx]), "bg")[0]
        torch.testing.assert_close(fg, gray[0].unsqueeze(0) * c.view(3, 1, 1))
        torch.testing.assert_close(bg, gray[0] + (1 - gray[0]) * c.view(3, 1, 1))
        assert bg.min() >= 0 and bg.max() <= 1  # the blend never overflows (the reference's uint8 cast does)
        torch.testing.assert_close(bg[:, 1, 0], torch.ones(3))  # v = 255: white
        torch.testing.assert_close(bg[:, 0, 0], c)  # v = 0: the colour
        # binarised (MNIST; 0.5 and 0.25 are below 128/255): fg = mask * colour, bg = black stroke on the colour
        fg = colourize(gray, torch.tensor([idx]), "fg", binarize=True)[0]
        bg = colourize(gray, torch.tensor([idx]), "bg", binarize=True)[0]
        mask = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        torch.testing.assert_close(fg, mask * c.view(3, 1, 1), atol=0, rtol=0)
        torch.testing.assert_close(bg, (1 - mask) * c.view(3, 1, 1), atol=0, rtol=0)


def test_biased_groups_exact_ratio_and_equal_minorities():
    labels = torch.arange(10).repeat_interleave(400)
    groups = biased_groups(labels, 0.9, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(labels * 10 + groups, minlength=100).view(10, 10)
    assert torch.all(counts.diagonal() == 360)
    off = counts[~torch.eye(10, dtype=torch.bool)].view(10, 9)
    assert torch.all(off.sum(1) == 40)
    assert torch.all(off.max(1).values - off.min(1).values <= 1)


@pytest.mark.parametrize("name", ["cmnist-fg-mini", "cmnist-bg-mini"])
def test_embedded_default(name):
    d = load_dataset(name)
    assert d.train.images.shape == (4000, 3, 32, 32)  # padded 28 -> 32 like the full benchmark
    assert d.test.images.shape == (10000, 3, 32, 32)
    assert d.params["padding"] == "top-left" and d.params["binarize"] is True
    train = d.counts("train")
    assert torch.all(train.sum(1) == 400) and torch.all(train.diagonal() == 360)
    test = d.counts("test")
    assert torch.all(test == 100)  # every test digit in every colour
    # model space: (pixel - 0.5) / 0.5
    assert d.train.images.min() >= -1 and d.train.images.max() <= 1
    assert d.dsa_strategy.find("flip") == -1


def test_counterfactual_test_set_is_the_same_digit_in_every_colour():
    d = load_dataset("cmnist-fg-mini")
    gray, labels = read_mnist_5k()
    _, test_idx = stratified_split(labels, 0.2, seed=0)
    n = len(test_idx)
    pixels = d.to_pixels(d.test.images)
    # the digit binarised at 128 (on the 0..255 values), at offset (4, 4) of a 32x32 zero canvas
    mask = torch.zeros(n, 1, 32, 32)
    mask[:, 0, 4:, 4:] = ((gray[test_idx] * 255).round() >= 128).float()
    for g in (0, 6, 9):
        block = pixels[g * n : (g + 1) * n]
        colour = torch.tensor(COLOURS[g], dtype=torch.float32) / 255
        torch.testing.assert_close(block, mask * colour.view(1, 3, 1, 1), atol=1e-6, rtol=0)


def test_split_is_stratified_and_fixed():
    _, labels = read_mnist_5k()
    tr, te = stratified_split(labels, 0.2, seed=0)
    assert torch.all(torch.bincount(labels[te]) == 100)
    tr2, te2 = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(te, te2) and torch.equal(tr, tr2)
    assert len(set(tr.tolist()) & set(te.tolist())) == 0


def test_digits_fg_is_small_and_registered(digits):
    assert "digits-fg" in list_datasets()
    assert digits.image_size == (8, 8) and digits.num_groups == 10


def test_dataset_errors(tmp_path):
    with pytest.raises(FairDistillError, match="unknown dataset 'nope'; allowed: .*cmnist-fg-mini"):
        load_dataset("nope")
    with pytest.raises(FairDistillError, match="does not exist"):
        load_dataset("digits-fg", data_root=tmp_path / "missing")
    with pytest.raises(FairDistillError, match="image_size"):
        load_dataset("digits-fg", image_size=4)


def test_nan_images_are_rejected(digits):
    from dataclasses import replace

    from fairdistill.data.dataset import FairSplit

    bad = digits.train.images.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(FairDistillError, match="NaN"):
        replace(digits, train=FairSplit(bad, digits.train.labels, digits.train.groups))


def test_padding_to_32(digits):
    d = load_dataset("digits-fg", image_size=16)
    assert d.image_size == (16, 16)
    px = d.to_pixels(d.train.images)
    assert px[:, :, :8].abs().max() == 0 and px[:, :, :, :8].abs().max() == 0  # all the padding top and left
    assert digits.params["binarize"] is False and "our own" in digits.description


def test_stratified_batch_is_group_balanced(digits):
    s = RealSampler(digits.train, 10, 10)
    idx = s.stratified_batch(64, torch.Generator().manual_seed(1))
    counts = digits.train.subset(idx).counts(10, 10)
    present = digits.counts("train") > 0
    assert torch.all(counts[present] == 7) and torch.all(counts[~present] == 0)
    # no repeats where the cell is large enough
    big = digits.counts("train") >= 7
    sub = digits.train.subset(idx)
    for c, g in big.nonzero().tolist()[:5]:
        cell = idx[(sub.labels == c) & (sub.groups == g)]
        assert len(set(cell.tolist())) == 7


def test_class_batch_is_without_replacement(digits):
    s = RealSampler(digits.train, 10, 10)
    idx = s.class_batch(50, torch.Generator().manual_seed(2))
    assert len(set(idx.tolist())) == len(idx) == 500
    assert torch.all(torch.bincount(digits.train.labels[idx]) == 50)
