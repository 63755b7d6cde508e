"""On-disk C-MNIST / C-FMNIST: IDX files, colouring, bias, the decoded cache and the error messages."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from files_mnist import write_mnist

from fairdistill.data import load_dataset
from fairdistill.data.cache import cached_arrays
from fairdistill.data.colored import COLOURS
from fairdistill.data.files import MissingDataError
from fairdistill.data.idx import read_idx, write_idx
from fairdistill.data.mnist import DEBIAN_FASHION_MNIST

PALETTE = np.array(COLOURS, dtype=np.float64) / 255


def expected_pixels(gray: np.ndarray, groups: torch.Tensor, variant: str, pad: int, binarize: bool) -> np.ndarray:
    """The coloured (N, 3, H, W) pixels in [0, 1], computed independently in float64 from uint8 ``gray``.

    ``pad`` zero pixels on the top and left only (the reference's offset (pad, pad)). Binarised
    (MNIST): fg = (v >= 128) * colour, bg = (v < 128) * colour (black digit; padding coloured).
    Not binarised (FashionMNIST): fg = colour * v / 255, bg = g + (1 - g) * colour.
    """
    v = np.pad(gray.astype(np.int64), ((0, 0), (pad, 0), (pad, 0)))[:, None]
    c = PALETTE[groups.numpy()][:, :, None, None]
    if binarize:
        stroke = (v >= 128).astype(np.float64)
        return stroke * c if variant == "fg" else (1 - stroke) * c
    g = v / 255
    return g * c if variant == "fg" else g + (1 - g) * c


# ---- IDX ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5) if dtype != np.uint8 else np.arange(30, dtype=dtype)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, arr)), arr)


def test_idx_header_matches_the_published_layout(tmp_path):
    path = write_idx(tmp_path / "l.idx", np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # magic 0x00000801, N=3, values


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda raw: raw[:-5], r"IDX header says \(4, 4\)"),
        (lambda raw: b"\x01" + raw[1:], "bad magic number"),
        (lambda raw: raw[:6], "header cut short"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown IDX type code 0x07"),
    ],
)
def test_corrupt_idx_names_the_file_and_the_problem(tmp_path, damage, match):
    raw = (write_idx(tmp_path / "x.idx", np.zeros((4, 4), np.uint8))).read_bytes()
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(damage(raw))
    with pytest.raises(MissingDataError, match=match) as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x.idx.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(MissingDataError, match=r"x\.idx\.gz: cannot read"):
        read_idx(path)


# ---- the coloured datasets ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["fg", "bg"])
def test_cmnist_from_idx_files_exact_labels_bias_and_pixels(tmp_path, variant):
    src = write_mnist(tmp_path, train_per_class=30, test_per_class=20)
    d = load_dataset(f"cmnist-{variant}", data_root=tmp_path)
    assert d.train.images.shape == (300, 3, 32, 32) and d.test.images.shape == (200, 3, 32, 32)
    assert torch.equal(d.train.labels, torch.from_numpy(src["train_labels"]).long())
    assert torch.equal(d.test.labels, torch.from_numpy(src["test_labels"]).long())
    train = d.counts("train")
    assert torch.all(train.diagonal() == 27)  # round(0.9 * 30): the class's own colour
    off = train[~torch.eye(10, dtype=torch.bool)].view(10, 9)
    assert torch.all(off.sum(1) == 3) and torch.all(off.max(1).values <= 1)
    assert torch.all(d.counts("test") == 2)  # one colour per test image, dealt evenly: group-balanced
    for split in ("train", "test"):
        s = d.split(split)
        want = expected_pixels(src[f"{split}_images"], s.groups, variant, pad=4, binarize=True)
        np.testing.assert_allclose(d.to_pixels(s.images).numpy(), want, atol=2e-7, rtol=0)
    assert d.params["image_size"] == 32 and d.params["rho"] == 0.9
    assert d.params["padding"] == "top-left" and d.params["binarize"] is True


def test_uncompressed_files_other_layout_size_and_env_root(tmp_path, monkeypatch):
    src = write_mnist(tmp_path, folder="mnist", gz=False, train_per_class=10, test_per_class=10)
    monkeypatch.setenv("FAIRDISTILL_DATA", str(tmp_path))
    d = load_dataset("cmnist-fg", image_size=28, rho=0.5)
    assert d.image_size == (28, 28)
    assert torch.all(d.counts("train").diagonal() == 5)
    want = expected_pixels(src["train_images"], d.train.groups, "fg", pad=0, binarize=True)
    np.testing.assert_allclose(d.to_pixels(d.train.images).numpy(), want, atol=2e-7, rtol=0)


def test_same_seed_same_dataset_other_seed_other_colours(tmp_path):
    write_mnist(tmp_path)
    a, b = load_dataset("cmnist-bg", data_root=tmp_path), load_dataset("cmnist-bg", data_root=tmp_path)
    c = load_dataset("cmnist-bg", data_root=tmp_path, seed=1)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.groups, b.test.groups)
    assert not torch.equal(a.train.groups, c.train.groups)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_fashion_layout_and_names(tmp_path):
    src = write_mnist(tmp_path, folder="FashionMNIST/raw")
    d = load_dataset("cfmnist-fg", data_root=tmp_path)
    assert d.class_names[0] == "t-shirt/top" and d.class_names[9] == "ankle boot"
    for variant in ("fg", "bg"):  # FashionMNIST is not binarised: the ramp / the blend to white
        d = load_dataset(f"cfmnist-{variant}", data_root=tmp_path)
        want = expected_pixels(src["test_images"], d.test.groups, variant, pad=4, binarize=False)
        np.testing.assert_allclose(d.to_pixels(d.test.images).numpy(), want, atol=2e-7, rtol=0)
        assert d.params["binarize"] is False
    with pytest.raises(MissingDataError):  # FashionMNIST files are not MNIST ones
        load_dataset("cmnist-fg", data_root=tmp_path)


def test_missing_files_list_the_expected_layout_and_what_was_found(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(MissingDataError) as err:
        load_dataset("cmnist-fg", data_root=tmp_path)
    msg = str(err.value)
    assert "expected <root>/MNIST/raw or <root>/mnist or <root>/MNIST" in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert f"{tmp_path / 'MNIST' / 'raw'}: missing train-labels-idx1-ubyte" in msg
    assert "found: train-images-idx3-ubyte.gz" in msg
    assert f"{tmp_path / 'mnist'}: no such folder" in msg
    assert "never downloads" in msg


def test_no_root_at_all_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("FAIRDISTILL_DATA", raising=False)
    with pytest.raises(MissingDataError, match="needs a data root: pass --data-root DIR or set \\$FAIRDISTILL_DATA"):
        load_dataset("cmnist-bg")


def test_inconsistent_files_are_reported(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST/raw/train-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(MissingDataError, match="7 labels for 200 images"):
        load_dataset("cmnist-fg", data_root=tmp_path)
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz", np.full(100, 12, np.uint8))
    with pytest.raises(MissingDataError, match="labels must lie in 0..9, found 12"):
        load_dataset("cmnist-fg", data_root=tmp_path)


# ---- the decoded cache ----------------------------------------------------------------------------------
def test_cache_is_used_then_invalidated_by_a_changed_source(tmp_path):
    cache = tmp_path / "cache"
    write_mnist(tmp_path / "data", seed=0)
    first = load_dataset("cmnist-fg", data_root=tmp_path / "data", cache_dir=cache)
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # nothing half-written left
    stamp = (entries[0] / "meta.json").stat().st_mtime_ns
    again = load_dataset("cmnist-fg", data_root=tmp_path / "data", cache_dir=cache)
    assert torch.equal(first.train.images, again.train.images)
    assert (entries[0] / "meta.json").stat().st_mtime_ns == stamp  # read, not rewritten
    # new content in one source file: the entry is rebuilt and the images follow the file
    src = write_mnist(tmp_path / "data", seed=1)
    changed = load_dataset("cmnist-fg", data_root=tmp_path / "data", cache_dir=cache)
    assert not torch.equal(first.train.images, changed.train.images)
    assert torch.equal(changed.train.labels, torch.from_numpy(src["train_labels"]).long())


def test_cache_serves_without_decoding_and_rebuilds_a_damaged_entry(tmp_path):
    calls = []
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")

    def build():
        calls.append(1)
        return {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.arange(3)}

    kw = {"cache_dir": tmp_path / "c"}
    a = cached_arrays("k", [src], {"p": 1}, build, **kw)
    b = cached_arrays("k", [src], {"p": 1}, build, **kw)
    assert len(calls) == 1 and isinstance(b["x"], np.memmap)
    np.testing.assert_array_equal(a["x"], b["x"])
    cached_arrays("k", [src], {"p": 2}, build, **kw)  # other parameters: another entry
    assert len(calls) == 2
    for entry in (tmp_path / "c").iterdir():  # damage every entry: each is rebuilt, not trusted
        for npy in entry.glob("*.npy"):
            npy.write_bytes(npy.read_bytes()[:20])
    c = cached_arrays("k", [src], {"p": 1}, build, **kw)
    assert len(calls) == 3
    np.testing.assert_array_equal(c["y"], np.arange(3))
    cached_arrays("k", [src], {"p": 1}, build, **kw)
    assert len(calls) == 3  # the rebuilt entry is good
    os.utime(src, ns=(0, 0))  # same size, other modification time: stale
    cached_arrays("k", [src], {"p": 1}, build, **kw)
    assert len(calls) == 4
    assert cached_arrays("k", [src], {"p": 1}, build, cache=False)["x"].shape == (3, 4)


def test_cache_off_by_environment(tmp_path, monkeypatch):
    from fairdistill.data.cache import default_cache_dir

    write_mnist(tmp_path / "a", seed=0)
    write_mnist(tmp_path / "b", seed=1)
    monkeypatch.setenv("FAIRDISTILL_CACHE", str(tmp_path / "c"))
    load_dataset("cmnist-fg", data_root=tmp_path / "a")
    entries = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(entries) == 1  # with the cache on, the load leaves an entry
    monkeypatch.setenv("FAIRDISTILL_CACHE", "off")
    assert default_cache_dir() is None
    load_dataset("cmnist-fg", data_root=tmp_path / "b")  # other sources: would make a second entry
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == entries


# ---- the full-size FashionMNIST of Debian's dataset-fashion-mnist package -------------------------------
@pytest.mark.skipif(
    not (Path(DEBIAN_FASHION_MNIST) / "train-images-idx3-ubyte.gz").is_file()
    and not os.environ.get("FAIRDISTILL_REQUIRE_FMNIST"),  # CI sets it: there, a missing package fails
    reason="needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)",
)
def test_full_size_cfmnist_fg_from_the_debian_package(monkeypatch):
    monkeypatch.delenv("FAIRDISTILL_DATA", raising=False)
    d = load_dataset("cfmnist-fg")  # no data root: the package's folder
    assert d.train.images.shape == (60000, 3, 32, 32) and d.test.images.shape == (10000, 3, 32, 32)
    train, test = d.counts("train"), d.counts("test")
    assert torch.all(train.sum(1) == 6000) and torch.all(test.sum(1) == 1000)
    assert torch.all(train.diagonal() == 5400)  # exactly 0.9 of each class in its own colour
    assert float(train.diagonal().sum() / train.sum()) == pytest.approx(0.9)
    assert torch.all(test == 100)
    with gzip.open(Path(DEBIAN_FASHION_MNIST) / "t10k-labels-idx1-ubyte.gz") as fh:
        assert torch.equal(d.test.labels, torch.from_numpy(np.frombuffer(fh.read()[8:], np.uint8).astype(np.int64)))
