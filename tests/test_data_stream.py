"""Streamed real data: the uint8 image store, the ``npy`` folder format, streamed on-disk loaders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from files_cifar import write_cifar_batches
from files_faces import write_utkface
from files_mnist import write_mnist
from files_npy import MEAN, STD, write_npy

from fairdistill.backbones import get_backbone
from fairdistill.config import DistillConfig, MethodSpec
from fairdistill.data import Uint8Images, load_dataset
from fairdistill.data.cifar import cifar10_s
from fairdistill.data.faces import utkface
from fairdistill.data.mnist import coloured_idx
from fairdistill.data.pixels import normalise_uint8
from fairdistill.data.store import npy_header
from fairdistill.errors import FairDistillError


@pytest.fixture(scope="module")
def npy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("npy")
    write_npy(root)
    return root


# ---- the store -------------------------------------------------------------------------------------


@pytest.mark.parametrize("read", ["pread", "mmap"])
def test_take_equals_normalise_uint8_of_the_rows(tmp_path, read):
    x = np.random.default_rng(0).integers(0, 256, (50, 3, 5, 7), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    store = Uint8Images.from_npy(tmp_path / "x.npy", MEAN, STD, read=read)
    assert store.shape == (50, 3, 5, 7) and len(store) == 50
    # unsorted, repeated, negative and consecutive rows
    idx = torch.tensor([7, 3, 3, 49, 0, 1, 2, -1, 20, 21, 22])
    want = normalise_uint8(x[idx.numpy()], MEAN, STD)
    assert torch.equal(store[idx], want)
    assert torch.equal(store.materialise(), normalise_uint8(x, MEAN, STD))
    assert torch.equal(store.to("cpu"), normalise_uint8(x, MEAN, STD))
    sub = store.select(torch.tensor([9, 4, 30]))
    assert torch.equal(sub[torch.tensor([2, 0])], normalise_uint8(x[[30, 9]], MEAN, STD))


def test_store_reads_from_the_file_and_in_memory_alike(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    on_disk = Uint8Images.from_npy(tmp_path / "x.npy", MEAN, STD, channels_last=True)
    in_mem = Uint8Images(x, MEAN, STD, channels_last=True)
    assert "file" in repr(on_disk) and "memory" in repr(in_mem)
    idx = torch.randperm(30)
    assert torch.equal(on_disk[idx], in_mem[idx])
    assert torch.equal(on_disk[idx], normalise_uint8(x.transpose(0, 3, 1, 2)[idx.numpy()], MEAN, STD))


def test_npy_header_offset_points_at_the_data(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", x)
    shape, dtype, fortran, offset = npy_header(tmp_path / "x.npy")
    assert (shape, dtype, fortran) == ((2, 3, 4), np.uint8, False)
    assert (tmp_path / "x.npy").read_bytes()[offset:] == x.tobytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssFile from /proc")
def test_pread_does_not_keep_file_pages_resident(tmp_path):
    """Reading every row of a 24 MB file in random batches leaves the process's file-backed RSS flat."""

    def rss_file_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    n = 8192
    np.save(tmp_path / "x.npy", np.zeros((n, 3, 32, 32), dtype=np.uint8))  # 24 MiB
    store = Uint8Images.from_npy(tmp_path / "x.npy", MEAN, STD)
    before = rss_file_kb()
    for idx in torch.randperm(n).split(1024):
        store[idx]
    assert rss_file_kb() - before < 8 * 1024  # far below the 24 MiB a memory map would leave resident


# ---- a streamed split gives the same distillation --------------------------------------------------


def test_streamed_npy_split_validates_without_decoding(npy_root):
    ds = load_dataset("npy", data_root=npy_root)
    assert ds.streamed and ds.train.streamed and ds.test.streamed
    assert ds.channels == 3 and ds.image_size == (8, 8)
    assert ds.class_names == ("a", "b", "c", "d") and ds.group_names == ("g0", "g1")
    mem = load_dataset("npy", data_root=npy_root, stream=False)
    assert not mem.streamed
    assert torch.equal(ds.in_memory().train.images, mem.train.images)
    assert torch.equal(ds.test.images.to("cpu"), mem.test.images)
    assert torch.equal(ds.counts(), mem.counts())


@pytest.mark.parametrize("read", ["pread", "mmap"])
def test_dm_on_a_streamed_split_is_bit_identical_to_in_memory(npy_root, cpu, read):
    streamed = load_dataset("npy", data_root=npy_root, read=read)
    mem = streamed.in_memory()
    specs = [MethodSpec("vanilla"), MethodSpec("cobra", target="barycenter", distance="l1", embedder="warm")]
    cfg = DistillConfig(ipc=2, iterations=3, batch_real=16, model_kwargs={"width": 8}, warm_epochs=1)
    a = get_backbone("dm").distill(streamed, specs, cfg, device=cpu)
    b = get_backbone("dm").distill(mem, specs, cfg, device=cpu)
    for s in specs:
        assert torch.equal(a[s.name].images, b[s.name].images), s.name


@pytest.mark.parametrize("backbone", ["dc", "cafe"])
def test_dc_and_cafe_on_a_streamed_split_match_in_memory(npy_root, cpu, backbone):
    streamed = load_dataset("npy", data_root=npy_root)
    cfg = DistillConfig(
        ipc=1, iterations=1, batch_real=8, model_kwargs={"width": 8}, outer_loop=2, inner_loop=1, lr_img=0.1
    )
    specs = [MethodSpec("cobra", target="barycenter")]
    a = get_backbone(backbone).distill(streamed, specs, cfg, device=cpu)["cobra"]
    b = get_backbone(backbone).distill(streamed.in_memory(), specs, cfg, device=cpu)["cobra"]
    assert torch.isfinite(a.images).all()
    assert torch.equal(a.images, b.images)


# ---- streamed on-disk benchmarks ---------------------------------------------------------------------


def _same_images(a, b):
    assert a.train.streamed and not b.train.streamed
    assert torch.equal(a.train.in_memory().images, b.train.images)
    idx = torch.tensor([5, 0, 5, len(b.train) - 1])
    assert torch.equal(a.train.take(idx), b.train.take(idx))
    assert torch.equal(a.train.labels, b.train.labels) and torch.equal(a.train.groups, b.train.groups)
    assert torch.equal(a.test.images, b.test.images)


def test_streamed_cifar10_s_is_bit_identical(tmp_path):
    write_cifar_batches(tmp_path / "data", n_train_per_class=6, n_test_per_class=2)
    kw = dict(data_root=tmp_path / "data", cache_dir=tmp_path / "cache")
    _same_images(cifar10_s(stream=True, **kw), cifar10_s(**kw))


@pytest.mark.parametrize("variant", ["fg", "bg"])
def test_streamed_coloured_mnist_is_bit_identical(tmp_path, variant):
    write_mnist(tmp_path)
    kw = dict(data_root=tmp_path, cache_dir=tmp_path / "cache")
    _same_images(
        coloured_idx("cmnist", "mnist", variant, stream=True, **kw), coloured_idx("cmnist", "mnist", variant, **kw)
    )


def test_streamed_utkface_is_bit_identical(tmp_path):
    entries = [(age, k % 2, race) for age in (10, 30, 50) for race in range(4) for k in range(4)]
    write_utkface(tmp_path, entries, size=(20, 20))
    kw = dict(data_root=tmp_path, image_size=16, test_per_cell=1, cache_dir=tmp_path / "cache")
    _same_images(utkface(stream=True, **kw), utkface(**kw))


def test_stream_is_refused_for_embedded_datasets():
    with pytest.raises(FairDistillError, match="held in memory"):
        load_dataset("digits-fg", stream=True)


# ---- the npy folder format's errors -------------------------------------------------------------------


def _broken(tmp_path, **changes):
    root = tmp_path / "npy"
    arrays = write_npy(root)
    for name, value in changes.items():
        if value is None:
            (root / f"{name}.npy").unlink()
        elif isinstance(value, bytes):
            (root / f"{name}.npy").write_bytes(value)
        else:
            np.save(root / f"{name}.npy", value(arrays[name]) if callable(value) else value)
    return root


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"train_groups": None}, r"missing train_groups\.npy"),
        ({"test_images": b"not an array"}, r"test_images\.npy: not a readable \.npy"),
        ({"train_images": lambda x: x.astype(np.float32)}, r"train_images\.npy: expected uint8 pixels, got float32"),
        ({"train_images": lambda x: x[:, :, :, :2]}, r"train_images\.npy: .*channels from shape"),
        ({"train_images": lambda x: x[..., 0, 0]}, r"train_images\.npy: expected uint8 images \(N, C, H, W\)"),
        ({"train_labels": lambda y: y[:-1]}, r"train_labels\.npy: 239 labels for 240 images"),
        ({"train_labels": lambda y: y.astype(np.float64)}, r"train_labels\.npy: expected integer labels"),
        ({"train_labels": lambda y: np.where(y == 3, 4, y)}, r"train_labels\.npy: labels must lie in \[0, 4\)"),
        ({"test_groups": lambda a: a - 1}, r"test_groups\.npy: groups must lie in \[0, 2\)"),
        ({"test_images": lambda x: x[:, :6]}, r"train images are \(3, 8, 8\) .* but test images"),
    ],
)
def test_npy_format_errors_name_the_file_and_what_was_expected(tmp_path, changes, match):
    root = _broken(tmp_path, **changes)
    with pytest.raises(FairDistillError, match=match):
        load_dataset("npy", data_root=root)


def test_npy_format_meta_and_layout(tmp_path):
    root = tmp_path / "npy"
    write_npy(root, layout="NCHW")
    (root / "meta.json").write_text("{not json")
    with pytest.raises(FairDistillError, match=r"meta\.json: not valid JSON"):
        load_dataset("npy", data_root=root)
    (root / "meta.json").write_text(json.dumps({"colours": 3}))
    with pytest.raises(FairDistillError, match="unknown key"):
        load_dataset("npy", data_root=root)
    (root / "meta.json").unlink()  # defaults: names from the ids, mean = std = 0.5
    ds = load_dataset("npy", data_root=root)
    assert ds.class_names == ("0", "1", "2", "3") and ds.group_names == ("0", "1") and ds.mean == (0.5,) * 3
    x = np.load(root / "train_images.npy")
    assert torch.equal(ds.train.take(torch.arange(3)), normalise_uint8(x[:3], ds.mean, ds.std))
    with pytest.raises(FairDistillError, match="--data-root"):
        load_dataset("npy")


def test_npy_format_accepts_grayscale_without_a_channel_axis(tmp_path):
    root = tmp_path / "npy"
    arrays = write_npy(root)
    for split in ("train", "test"):
        np.save(root / f"{split}_images.npy", arrays[f"{split}_images"][..., 0])
    (root / "meta.json").write_text(json.dumps({"mean": [0.5], "std": [0.25]}))
    ds = load_dataset("npy", data_root=root)
    assert ds.channels == 1
    x = arrays["train_images"][..., 0][:, None]
    assert torch.equal(ds.train.take(torch.tensor([4, 1])), normalise_uint8(x[[4, 1]], (0.5,), (0.25,)))


# ---- the command line ----------------------------------------------------------------------------------


def test_cli_distills_an_npy_folder_and_refuses_stream_on_embedded_data(npy_root, tmp_path):
    from typer.testing import CliRunner

    from fairdistill.cli import app

    fast = ["--ipc", "1", "--iterations", "1", "--device", "cpu", "--quiet", "--preset", "vanilla"]
    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(app, ["distill", "--dataset", "npy", "--data-root", str(npy_root), *fast, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "synthetic.safetensors").is_file()
    res = runner.invoke(app, ["distill", "--dataset", "digits-fg", "--stream", *fast, "--out", str(out)])
    assert res.exit_code != 0 and "held in memory" in res.output
