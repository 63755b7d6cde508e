"""CIFAR10-S: reading the CIFAR-10 python batches, the colour skew, grayscale pixels, errors, cache."""

import os

import numpy as np
import pytest
import torch
from files_cifar import dump, write_batch, write_cifar_batches, write_malicious_pickle
from PIL import Image

from fairdistill.data import cifar
from fairdistill.data.cifar import cifar10_s, luma_uint8
from fairdistill.data.files import MissingDataError
from fairdistill.errors import FairDistillError

N_TRAIN, N_TEST = 10, 3


def pil_gray(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3, H, W) uint8 gray through Pillow's convert("L") (the reference)."""
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)), "RGB").convert("L")) for im in images
    ]
    return np.repeat(np.stack(out)[:, None], 3, axis=1)


def pixels(ds, images: torch.Tensor) -> np.ndarray:
    """Model-space images back to uint8 pixels; asserts they sit on the 1/255 grid."""
    x = ds.to_pixels(images).double() * 255
    assert (x - x.round()).abs().max() < 1e-3
    return x.round().to(torch.uint8).numpy()


@pytest.fixture()
def written(tmp_path):
    return write_cifar_batches(tmp_path / "data", n_train_per_class=N_TRAIN, n_test_per_class=N_TEST, seed=1)


def load(root, tmp_path, **kw):
    kw.setdefault("cache_dir", tmp_path / "cache")
    return cifar10_s(data_root=root, **kw)


def test_labels_names_and_metadata(written, tmp_path):
    ds = load(tmp_path / "data", tmp_path)
    assert ds.name == "cifar10-s"
    assert torch.equal(ds.train.labels, torch.from_numpy(written["train_labels"]))
    assert torch.equal(ds.test.labels, torch.from_numpy(written["test_labels"]).repeat(2))
    assert ds.class_names == written["label_names"]
    assert ds.group_names == ("grayscale", "colour")
    assert ds.mean == (0.4891, 0.4845, 0.4671) and ds.std == (0.2428, 0.2408, 0.2510)  # CIFAR10-S's own
    assert ds.image_size == (32, 32) and ds.channels == 3
    assert ds.params == {"skew": 0.9, "seed": 0, "image_size": 32, "source": str(written["folder"])}
    assert ds.description and "\n" not in ds.description


@pytest.mark.parametrize("skew", [0.9, 0.75, 0.5, 1.0, 0.0])
def test_train_groups_follow_exact_quota(written, tmp_path, skew):
    ds = load(tmp_path / "data", tmp_path, skew=skew)
    major = round(skew * N_TRAIN)
    expected = torch.tensor([[major, N_TRAIN - major]] * 5 + [[N_TRAIN - major, major]] * 5)
    assert torch.equal(ds.counts("train"), expected)


def test_train_pixels_colour_exact_and_gray_is_pillow_luma(written, tmp_path):
    ds = load(tmp_path / "data", tmp_path)
    got = pixels(ds, ds.train.images)
    src = written["train_images"]
    colour = (ds.train.groups == 1).numpy()
    assert colour.any() and (~colour).any()
    np.testing.assert_array_equal(got[colour], src[colour])
    np.testing.assert_array_equal(got[~colour], pil_gray(src[~colour]))


def test_test_split_has_every_image_gray_and_colour(written, tmp_path):
    ds = load(tmp_path / "data", tmp_path)
    n = written["test_labels"].shape[0]
    assert len(ds.test) == 2 * n
    assert torch.equal(ds.test.groups, torch.tensor([0] * n + [1] * n))
    assert torch.equal(ds.counts("test"), torch.full((10, 2), N_TEST))
    got = pixels(ds, ds.test.images)
    np.testing.assert_array_equal(got[:n], pil_gray(written["test_images"]))
    np.testing.assert_array_equal(got[n:], written["test_images"])


def test_luma_matches_pillow_on_many_colours():
    # every (R, G) pair with B on a stride: 1.2M colours, including the ones where rounding the real-valued
    # BT.601 formula and Pillow's fixed-point version disagree
    r, g, b = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 13), indexing="ij")
    rgb = np.stack([r.ravel(), g.ravel(), b.ravel()]).astype(np.uint8).reshape(1, 3, -1, 1)
    ours = luma_uint8(rgb)
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[0].transpose(1, 2, 0)), "RGB").convert("L"))
    np.testing.assert_array_equal(ours[0, 0], ref)
    assert (ours[0, 0] == ours[0, 1]).all() and (ours[0, 0] == ours[0, 2]).all()
    real = np.floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5).ravel()
    assert 0 < (real != ours[0, 0, :, 0]).sum() < 0.001 * real.size  # off by one grey level, rarely


@pytest.mark.parametrize("style", ["py2", "py3", "protocol5"])
def test_reads_every_pickle_style(tmp_path, style):
    w = write_cifar_batches(tmp_path / "data", n_train_per_class=2, n_test_per_class=1, style=style)
    ds = load(tmp_path / "data", tmp_path, cache=False)
    assert torch.equal(ds.train.labels, torch.from_numpy(w["train_labels"]))
    np.testing.assert_array_equal(pixels(ds, ds.test.images)[len(w["test_labels"]) :], w["test_images"])


@pytest.mark.parametrize("where", ["cifar10/cifar-10-batches-py", "CIFAR10/cifar-10-batches-py"])
def test_alternative_folders(tmp_path, where):
    w = write_cifar_batches(tmp_path / "data", n_train_per_class=2, n_test_per_class=1, folder=where)
    ds = load(tmp_path / "data", tmp_path)
    assert ds.params["source"] == str(w["folder"])


def test_data_root_from_environment(written, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRDISTILL_DATA", str(tmp_path / "data"))
    ds = cifar10_s(cache_dir=tmp_path / "cache")
    assert len(ds.train) == 10 * N_TRAIN
    monkeypatch.delenv("FAIRDISTILL_DATA")
    with pytest.raises(MissingDataError, match="needs a data root"):
        cifar10_s(cache_dir=tmp_path / "cache")


def test_missing_folder_lists_the_expected_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError) as info:
        load(tmp_path / "empty", tmp_path)
    msg = str(info.value)
    for part in ("cifar-10-batches-py", "data_batch_1", "data_batch_5", "test_batch", "batches.meta", "no such folder"):
        assert part in msg


def test_missing_file_is_named(written, tmp_path):
    (written["folder"] / "test_batch").unlink()
    with pytest.raises(MissingDataError, match="missing test_batch"):
        load(tmp_path / "data", tmp_path)


def test_truncated_batch_is_a_clear_error(written, tmp_path):
    path = written["folder"] / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MissingDataError, match="data_batch_2.*truncated or corrupt"):
        load(tmp_path / "data", tmp_path)


def test_wrong_contents_are_rejected(written, tmp_path):
    folder = written["folder"]
    write_batch(folder / "data_batch_1", written["train_images"][:4], [0, 1, 2, 10])
    with pytest.raises(MissingDataError, match="data_batch_1: labels outside 0..9"):
        load(tmp_path / "data", tmp_path, cache=False)
    dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, folder / "data_batch_1")
    with pytest.raises(MissingDataError, match=r"\(N, 3072\) uint8"):
        load(tmp_path / "data", tmp_path, cache=False)
    write_batch(folder / "data_batch_1", written["train_images"][:4], [0, 1, 2])
    with pytest.raises(MissingDataError, match="'labels' must be 4 ints"):
        load(tmp_path / "data", tmp_path, cache=False)
    dump({b"num_vis": 3072}, folder / "batches.meta")
    with pytest.raises(MissingDataError, match="batches.meta.*label_names"):
        load(tmp_path / "data", tmp_path, cache=False)


@pytest.mark.parametrize("name", ["data_batch_3", "batches.meta"])
def test_malicious_pickle_is_refused(written, tmp_path, name):
    marker = tmp_path / "pwned"
    write_malicious_pickle(written["folder"] / name, marker)
    with pytest.raises(MissingDataError, match=f"{name}: unsafe pickle: refusing to load os.system"):
        load(tmp_path / "data", tmp_path)
    assert not marker.exists()


def test_decoded_arrays_are_cached_and_refreshed_when_a_file_changes(written, tmp_path, monkeypatch):
    first = load(tmp_path / "data", tmp_path)
    entries = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(entries) == 1 and entries[0].startswith("cifar10-s-")

    def fail(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(cifar, "read_batch", fail)
    second = load(tmp_path / "data", tmp_path)  # no decoding: from the cache
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.images, second.test.images)
    with pytest.raises(AssertionError, match="decoded"):
        load(tmp_path / "data", tmp_path, cache=False)
    monkeypatch.undo()

    # same size, new pixels, a different modification time: the entry is stale and rebuilt
    path = written["folder"] / "test_batch"
    before = path.stat()
    new = 255 - written["test_images"]
    write_batch(path, new, written["test_labels"], label="testing batch 1 of 1")
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    third = load(tmp_path / "data", tmp_path)
    np.testing.assert_array_equal(pixels(third, third.test.images)[len(new) :], new)


def test_seed_decides_the_groups_only(written, tmp_path):
    a = load(tmp_path / "data", tmp_path, seed=3)
    b = load(tmp_path / "data", tmp_path, seed=3)
    c = load(tmp_path / "data", tmp_path, seed=4)
    for s1, s2 in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(s1.images, s2.images)
        assert torch.equal(s1.labels, s2.labels) and torch.equal(s1.groups, s2.groups)
    assert not torch.equal(a.train.groups, c.train.groups)
    assert torch.equal(a.counts("train"), c.counts("train"))
    assert torch.equal(a.test.images, c.test.images)
    assert a.fingerprint() != c.fingerprint()


def test_resized_images(written, tmp_path):
    ds = load(tmp_path / "data", tmp_path, image_size=16)
    assert ds.image_size == (16, 16) and len(ds.test) == 2 * 10 * N_TEST
    px = pixels(ds, ds.train.images)
    gray = (ds.train.groups == 0).numpy()
    assert (px[gray][:, 0] == px[gray][:, 1]).all() and (px[gray][:, 0] == px[gray][:, 2]).all()
    # a uniform image stays uniform after resizing
    big = np.full((1, 3, 32, 32), 77, np.uint8)
    assert (cifar.resize_uint8(big, 16) == 77).all() and (cifar.resize_uint8(big, 48) == 77).all()


def test_bad_parameters(written, tmp_path):
    with pytest.raises(FairDistillError, match="skew"):
        load(tmp_path / "data", tmp_path, skew=1.5)
    with pytest.raises(FairDistillError, match="image_size"):
        load(tmp_path / "data", tmp_path, image_size=0)
