"""The benchmarks built as PUBLISHED.md section 1 says the reference builds them.

Pixel values of the coloured-digit builders against hand-computed ones on a tiny synthetic grey
image whose stroke straddles the 127 / 128 threshold; the 4-px top-left padding; the 32 px mini
sets; the normalisation constants of every on-disk loader (from fixture files in the real
formats); BFFHQ's bicubic resize; CelebA's CenterCrop(178) + Resize(64); UTKFace's equal test cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from files_cifar import write_cifar_batches
from files_faces import write_bffhq, write_celeba, write_utkface
from PIL import Image

from fairdistill.data import load_dataset
from fairdistill.data.cifar import cifar10_s
from fairdistill.data.colored import COLOURS
from fairdistill.data.embedded import resize_digits
from fairdistill.data.faces import bffhq, celeba, decode_face, utkface
from fairdistill.data.idx import write_idx
from fairdistill.data.mnist import coloured_idx
from fairdistill.errors import FairDistillError

# ---- a tiny synthetic digit -----------------------------------------------------------------------
#: grey values of the stroke, left to right in row 10 of the 28x28 image (128 is the first stroke value)
RAMP = (1, 126, 127, 128, 129, 200, 255)
STROKE_COLS = range(8, 8 + len(RAMP))


def synthetic_digit() -> np.ndarray:
    """(28, 28) uint8: zero except RAMP in row 10 and corner markers of 255 at (0, 0) and (27, 27)."""
    img = np.zeros((28, 28), dtype=np.uint8)
    img[10, STROKE_COLS.start : STROKE_COLS.stop] = RAMP
    img[0, 0] = img[27, 27] = 255
    return img


def write_idx_root(root: Path, folder: str) -> None:
    """The same synthetic digit once per class 0..9, in train and test, as real IDX files."""
    target = root / folder
    target.mkdir(parents=True, exist_ok=True)
    images = np.stack([synthetic_digit()] * 10)
    labels = np.arange(10, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(target / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(target / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture()
def idx_root(tmp_path):
    write_idx_root(tmp_path, "MNIST/raw")
    write_idx_root(tmp_path, "FashionMNIST/raw")
    return tmp_path


def train_pixels(key: str, root: Path, **kw) -> np.ndarray:
    """(10, 3, 32, 32) float64 pixels in [0, 1] of the training split; image i has class i and, with
    one image per class and rho = 0.9, its class's own colour i."""
    d = load_dataset(key, data_root=root, cache_dir=root / "cache", **kw)
    assert d.train.labels.tolist() == list(range(10)) and d.train.groups.tolist() == list(range(10))
    return d.to_pixels(d.train.images).double().numpy()


def colour(i: int) -> np.ndarray:
    return np.array(COLOURS[i], dtype=np.float64) / 255


def at(px: np.ndarray, i: int, row: int, col: int) -> np.ndarray:
    """The RGB pixel of image ``i`` at (row, col) of the 28x28 source, i.e. (row + 4, col + 4) of the canvas."""
    return px[i, :, row + 4, col + 4]


def test_mnist_background_black_digit_on_coloured_background_and_padding(idx_root):
    px = train_pixels("cmnist-bg", idx_root)
    for i in range(10):
        c = colour(i)
        for v, col in zip(RAMP, STROKE_COLS, strict=True):
            want = np.zeros(3) if v >= 128 else c  # the threshold: 127 -> background, 128 -> black stroke
            np.testing.assert_allclose(at(px, i, 10, col), want, atol=1e-6, rtol=0, err_msg=f"v={v}")
        # the padding (rows 0-3, columns 0-3) and the image's own background take the colour
        np.testing.assert_allclose(px[i, :, :4, :], np.broadcast_to(c[:, None, None], (3, 4, 32)), atol=1e-6)
        np.testing.assert_allclose(px[i, :, :, :4], np.broadcast_to(c[:, None, None], (3, 32, 4)), atol=1e-6)
        np.testing.assert_allclose(at(px, i, 20, 20), c, atol=1e-6)
        # the markers: the image sits at rows / columns 4..31
        np.testing.assert_allclose(px[i, :, 4, 4], 0, atol=1e-6)
        np.testing.assert_allclose(px[i, :, 31, 31], 0, atol=1e-6)
    # colour 9 (white): a black digit on white, exactly 0 / 1
    white = px[9]
    assert set(np.unique(white.round(6))) == {0.0, 1.0}
    assert (white == 0).all(0).sum() == 2 + sum(v >= 128 for v in RAMP)  # the stroke and the two markers


def test_mnist_foreground_mask_times_colour_on_black(idx_root):
    px = train_pixels("cmnist-fg", idx_root)
    for i in range(10):
        c = colour(i)
        for v, col in zip(RAMP, STROKE_COLS, strict=True):
            want = c if v >= 128 else np.zeros(3)  # binarised: v = 128 and v = 255 give the same full colour
            np.testing.assert_allclose(at(px, i, 10, col), want, atol=1e-6, rtol=0, err_msg=f"v={v}")
        assert px[i, :, :4, :].max() == 0 and px[i, :, :, :4].max() == 0  # black padding
        np.testing.assert_allclose(px[i, :, 4, 4], c, atol=1e-6)
        np.testing.assert_allclose(px[i, :, 31, 31], c, atol=1e-6)
        assert np.count_nonzero(px[i].max(0)) == 2 + sum(v >= 128 for v in RAMP)  # the stroke and the markers


def test_fashion_foreground_ramp_not_binarised(idx_root):
    px = train_pixels("cfmnist-fg", idx_root)
    for i in range(10):
        c = colour(i)
        for v, col in zip(RAMP, STROKE_COLS, strict=True):
            np.testing.assert_allclose(at(px, i, 10, col), c * v / 255, atol=1e-6, rtol=0, err_msg=f"v={v}")
        assert px[i, :, :4, :].max() == 0 and px[i, :, :, :4].max() == 0


def test_fashion_background_blend_from_colour_to_white(idx_root):
    px = train_pixels("cfmnist-bg", idx_root)
    for i in range(10):
        c = colour(i)
        for v, col in zip(RAMP, STROKE_COLS, strict=True):
            g = v / 255
            np.testing.assert_allclose(at(px, i, 10, col), g + (1 - g) * c, atol=1e-6, rtol=0, err_msg=f"v={v}")
        np.testing.assert_allclose(px[i, :, 4, 4], 1, atol=1e-6)  # v = 255: white
        np.testing.assert_allclose(px[i, :, 0, 0], c, atol=1e-6)  # padding (v = 0): the colour
        np.testing.assert_allclose(at(px, i, 20, 20), c, atol=1e-6)
    assert px.min() >= 0 and px.max() <= 1  # no overflow, unlike the reference's uint8 cast


def reference_cast_wraps() -> bool:
    """Whether this CPU's float-to-uint8 cast wraps modulo 256 (x86 does; the reference ran there)."""
    return torch.tensor([300.0, 65025.0]).byte().tolist() == [44, 1]


def test_fashion_background_reference_pixels(idx_root):
    """fmnist_bg="reference": the reference code's arithmetic, hand-computed at the anchors."""
    px = train_pixels("cfmnist-bg", idx_root, fmnist_bg="reference")
    for i in range(10):
        c = colour(i)
        np.testing.assert_allclose(px[i, :, 0, 0], c, atol=1e-6)  # v = 0 (padding): 255 c, the colour
        np.testing.assert_allclose(at(px, i, 20, 20), c, atol=1e-6)  # v = 0 in the image
        # v = 255: 255 * 255 = 65025 = 254 * 256 + 1, whatever the colour
        np.testing.assert_allclose(px[i, :, 4, 4], 1 / 255, atol=1e-6)
    # on white (colour 9) x = 255 * (255 - 254 (255 - v) / 255) = 65025 - 254 (255 - v):
    # v = 128: 32767 -> 255; v = 129: 33021 -> 253; v = 126: 32259 exactly, but float32 (the
    # reference's arithmetic) gives 32258.998 and the cast truncates: 32258 -> 2, not 3
    for v, expected in ((128, 255), (129, 253), (126, 2)):
        white = at(px, 9, 10, STROKE_COLS[RAMP.index(v)])
        np.testing.assert_allclose(white, expected / 255, atol=1e-6, err_msg=f"v={v}")
    assert not np.allclose(px[9, :, 4:, 4:], 1)  # the white group is not blank


@pytest.mark.skipif(not reference_cast_wraps(), reason="this CPU's uint8 cast does not wrap as the reference's did")
def test_fashion_background_reference_equals_the_uint8_cast_for_every_grey_and_colour():
    from fairdistill.data.colored import colourize

    v = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).repeat(10, 1, 1)
    ours = colourize(v.float() / 255, torch.arange(10), "bg", fmnist_bg="reference")
    # the reference's expression, in its order and in float32, ending in its uint8 cast
    d = ((255.0 - v.float()) / 255.0).unsqueeze(3)
    end = torch.tensor(COLOURS, dtype=torch.float32).view(10, 1, 1, 3) / 255.0
    cast = ((255.0 + d * (end - 255.0)) * 255).byte().permute(0, 3, 1, 2)
    assert torch.equal((ours * 255).round().to(torch.uint8), cast)


def test_intended_background_blend_blanks_the_white_group(idx_root):
    """Why reproduce builds the reference's pixels: in the blend, colour 9 erases every garment."""
    blend = train_pixels("cfmnist-bg", idx_root)
    np.testing.assert_allclose(blend[9], 1, atol=1e-6)
    kw = dict(data_root=idx_root, cache_dir=idx_root / "cache")
    ref = load_dataset("cfmnist-bg", fmnist_bg="reference", **kw)
    assert ref.params["fmnist_bg"] == "reference" and "wrapped modulo 256" in ref.description
    assert "fmnist_bg" not in load_dataset("cfmnist-bg", **kw).params  # the default keeps its identity
    with pytest.raises(FairDistillError, match="unknown fmnist_bg 'wrap'; allowed: blend, reference"):
        load_dataset("cfmnist-bg", fmnist_bg="wrap", **kw)
    for key in ("cfmnist-fg", "cmnist-bg"):
        with pytest.raises(FairDistillError, match="applies to the unbinarised background colouring"):
            load_dataset(key, fmnist_bg="reference", **kw)


def test_descriptions_and_params_name_the_choices(idx_root):
    kw = dict(data_root=idx_root, cache_dir=idx_root / "cache")
    mnist_bg, fmnist_bg = load_dataset("cmnist-bg", **kw), load_dataset("cfmnist-bg", **kw)
    assert mnist_bg.params["binarize"] is True and fmnist_bg.params["binarize"] is False
    assert mnist_bg.params["padding"] == fmnist_bg.params["padding"] == "top-left"
    assert "black digit" in mnist_bg.description and "overflow" not in mnist_bg.description
    assert "overflow" in fmnist_bg.description and "deliberately" in fmnist_bg.description
    ramp = load_dataset("cmnist-fg", binarize=False, **kw)  # our grey-ramp option on MNIST
    assert ramp.params["binarize"] is False and "our own" in ramp.description
    centred = load_dataset("cmnist-fg", padding="centre", **kw)
    assert centred.params["padding"] == "centre" and "our option" in centred.description
    with pytest.raises(FairDistillError, match="unknown padding 'middle'; allowed: top-left, centre"):
        load_dataset("cmnist-fg", padding="middle", **kw)


def test_centre_padding_is_an_option_and_the_cache_holds_raw_pixels(idx_root):
    cache = idx_root / "cache"
    top_left = train_pixels("cmnist-fg", idx_root)
    centre = train_pixels("cmnist-fg", idx_root, padding="centre")
    np.testing.assert_array_equal(centre[:, :, 2:30, 2:30], top_left[:, :, 4:, 4:])
    assert centre[:, :, :2].max() == 0 and centre[:, :, 30:].max() == 0
    ramp = train_pixels("cmnist-fg", idx_root, binarize=False)
    np.testing.assert_allclose(at(ramp, 3, 10, STROKE_COLS[3]), colour(3) * 128 / 255, atol=1e-6)
    # every colouring and padding option came from one decoded-IDX entry: nothing stale to reuse
    assert len([p for p in cache.iterdir() if p.name.startswith("mnist-")]) == 1


@pytest.mark.parametrize(
    "source,variant,options",
    [
        ("mnist", "bg", {}),
        ("fashion-mnist", "bg", {"padding": "centre"}),
        ("fashion-mnist", "bg", {"fmnist_bg": "reference"}),
        ("mnist", "fg", {"binarize": False}),
    ],
)
def test_streamed_colouring_is_bit_identical(idx_root, source, variant, options):
    kw = dict(data_root=idx_root, cache_dir=idx_root / "cache", **options)
    streamed = coloured_idx("k", source, variant, stream=True, **kw)
    held = coloured_idx("k", source, variant, **kw)
    assert streamed.streamed and not held.streamed
    assert torch.equal(streamed.train.images.materialise(), held.train.images)


def test_resize_digits_top_left_offset():
    x = torch.ones(1, 28, 28)
    y = resize_digits(x, 32)
    assert y.shape == (1, 32, 32)
    assert y[0, :4].sum() == 0 and y[0, :, :4].sum() == 0 and bool((y[0, 4:, 4:] == 1).all())
    z = resize_digits(x, 32, "centre")
    assert z[0, :2].sum() == 0 and z[0, 30:].sum() == 0 and bool((z[0, 2:30, 2:30] == 1).all())


# ---- the embedded mini sets ------------------------------------------------------------------------
def test_mini_sets_are_32px_top_left_and_binarised():
    fg, bg = load_dataset("cmnist-fg-mini"), load_dataset("cmnist-bg-mini")
    for d in (fg, bg):
        assert d.image_size == (32, 32) and d.params["padding"] == "top-left" and d.params["binarize"] is True
    fg_px = fg.to_pixels(fg.train.images)
    assert fg_px[:, :, :4].max() == 0 and fg_px[:, :, :, :4].max() == 0  # black padding
    bg_px = bg.to_pixels(bg.train.images)
    palette = torch.tensor(COLOURS, dtype=torch.float32) / 255
    want = palette[bg.train.groups].view(-1, 3, 1, 1)
    torch.testing.assert_close(bg_px[:, :, :4], want.expand(-1, -1, 4, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(bg_px[:, :, :, :4], want.expand(-1, -1, 32, 4), atol=1e-6, rtol=0)
    # group 9: a black digit on white, only 0 and 1, a real stroke in every image
    white = bg_px[bg.train.groups == 9]
    assert len(white) > 0
    assert set(torch.unique(white.round(decimals=5)).tolist()) == {0.0, 1.0}
    assert bool(((white == 0).all(1).flatten(1).sum(1) > 20).all())
    assert bool((white.mean((1, 2, 3)) > 0.7).all())  # mostly white


# ---- normalisation constants of the on-disk loaders -------------------------------------------------
def assert_normalised(ds, mean, std, pixel_uint8: np.ndarray, image: torch.Tensor) -> None:
    assert ds.mean == mean and ds.std == std
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    want = (torch.from_numpy(np.array(pixel_uint8)).float() / 255 - m) / s
    torch.testing.assert_close(image, want, atol=1e-6, rtol=0)


def test_cifar10_s_normalisation(tmp_path):
    written = write_cifar_batches(tmp_path / "data", n_train_per_class=4, n_test_per_class=1)
    ds = cifar10_s(data_root=tmp_path / "data", cache_dir=tmp_path / "cache")
    colour_rows = (ds.test.groups == 1).nonzero().flatten()
    assert_normalised(
        ds,
        (0.4891, 0.4845, 0.4671),
        (0.2428, 0.2408, 0.2510),
        written["test_images"][0],
        ds.test.images[colour_rows[0]],
    )


def test_utkface_normalisation(tmp_path):
    written = write_utkface(tmp_path, [(age, 0, race) for age in (10, 30, 50) for race in range(4) for _ in range(2)])
    ds = utkface(data_root=tmp_path, image_size=8, test_per_cell=1, cache_dir=tmp_path / "cache")
    first = decode_face(written.images[0][0], 8)  # the exact decoded pixels of one (JPEG) image
    all_images = torch.cat([ds.train.images, ds.test.images])
    m, s = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    target = (torch.from_numpy(np.array(first)).float() / 255 - m) / s
    match = [i for i in range(len(all_images)) if torch.allclose(all_images[i], target, atol=1e-6)]
    assert match, "the first image is not in the dataset with the UTKFace normalisation"
    assert_normalised(ds, (0.6136, 0.4723, 0.4070), (0.2549, 0.2305, 0.2283), first, all_images[match[0]])


def test_bffhq_normalisation_is_cifar10s_and_resize_is_bicubic(tmp_path):
    written = write_bffhq(
        tmp_path, align={(0, 0): 2, (1, 1): 2}, conflict={(0, 1): 1, (1, 0): 1}, test={(0, 0): 1, (1, 1): 1}
    )
    # one noisy image, so the resize filter shows
    path = written.images["test"][0][0]
    noise = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(path, format="PNG")
    cache = tmp_path / "cache"
    ds = bffhq(data_root=tmp_path, image_size=8, cache_dir=cache)
    bicubic = np.asarray(Image.fromarray(noise, "RGB").resize((8, 8), Image.BICUBIC)).transpose(2, 0, 1)
    assert_normalised(ds, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), bicubic, ds.test.images[0])
    assert ds.params["transform"] == "rgb-centre-square-bicubic"
    # bilinear is our option: another cache entry (the filter is in its parameters), other pixels
    lin = bffhq(data_root=tmp_path, image_size=8, cache_dir=cache, resample="bilinear")
    bilinear = np.asarray(Image.fromarray(noise, "RGB").resize((8, 8), Image.BILINEAR)).transpose(2, 0, 1)
    assert_normalised(lin, ds.mean, ds.std, bilinear, lin.test.images[0])
    assert not torch.equal(lin.test.images[0], ds.test.images[0])
    assert len([p for p in cache.iterdir() if p.name.startswith("bffhq-")]) == 2
    with pytest.raises(FairDistillError, match="unknown resample"):
        bffhq(data_root=tmp_path, image_size=8, cache_dir=cache, resample="nearest")


def test_celeba_normalisation_and_centre_crop_178_then_resize(tmp_path):
    written = write_celeba(
        tmp_path, [0, 0, 2, 2, 2, 2], {"Attractive": [1, -1, 1, -1, 1, -1], "Male": [1, -1, 1, 1, -1, -1]}
    )
    # the first training image: noise at the released size, 178x218
    path = written.image_folder / written.names[0]
    noise = np.random.default_rng(1).integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(path, format="PNG")  # lossless, under the .jpg name (Pillow reads content)
    ds = celeba(data_root=tmp_path, image_size=64, cache_dir=tmp_path / "cache")
    # torchvision's CenterCrop(178): top = round((218 - 178) / 2) = 20; Resize(64) on PIL = bilinear
    ref = Image.fromarray(noise, "RGB").crop((0, 20, 178, 198)).resize((64, 64), Image.BILINEAR)
    want = np.asarray(ref).transpose(2, 0, 1)
    assert_normalised(ds, (0.5063, 0.4258, 0.3832), (0.2676, 0.2453, 0.2410), want, ds.train.images[0])


# ---- UTKFace: min(cap, smallest cell) from every cell -------------------------------------------------
@pytest.mark.parametrize("cap,per_cell", [(2, 2), (5, 3)])
def test_utkface_test_takes_the_same_number_from_every_cell(tmp_path, cap, per_cell):
    sizes = {(y, a): 3 + y + a for y in range(3) for a in range(4)}  # smallest cell: 3
    entries = [((10, 30, 50)[y], k % 2, a) for (y, a), n in sorted(sizes.items()) for k in range(n)]
    write_utkface(tmp_path, entries)
    ds = utkface(data_root=tmp_path, image_size=8, test_per_cell=cap, cache_dir=tmp_path / "cache")
    assert ds.counts("test").tolist() == [[per_cell] * 4] * 3
    assert ds.counts("train").tolist() == [[sizes[(y, a)] - per_cell for a in range(4)] for y in range(3)]
    assert ds.params["test_cells"] == "equal"
