"""Exports: DC .pt, DD-Ranking tensors and PNG folders load back with plain torch / PIL; metadata is complete."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fairdistill.artifacts import SyntheticSet, load_synthetic, save_synthetic
from fairdistill.cli import app
from fairdistill.errors import FairDistillError
from fairdistill.export import class_folders, export_synthetic

CLASSES = ["T-shirt/top", "not Attractive", "..", "0"]


def _synset(channels=3, ipc=(2, 3, 1, 2)):
    g = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(ipc)])
    images = torch.randn(len(labels), channels, 6, 5, generator=g)
    meta = {
        "dataset": "digits-fg",
        "mean": [0.4] * channels,
        "std": [0.3] * channels,
        "class_names": CLASSES,
        "group_names": ["a", "b"],
    }
    return SyntheticSet(images, labels, meta)


def test_dc_pt_loads_with_weights_only(tmp_path):
    s = _synset()
    (path,) = export_synthetic(s, tmp_path / "res.pt", "dc-pt")
    assert path == tmp_path / "res.pt"
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"data"} and len(obj["data"]) == 1
    images, labels = obj["data"][0]
    assert torch.equal(images, s.images) and torch.equal(labels, s.labels)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    # a folder receives synthetic_dc.pt
    (path,) = export_synthetic(s, tmp_path / "dc", "dc-pt")
    assert path.name == "synthetic_dc.pt" and path.is_file()
    assert not list(tmp_path.rglob(".*tmp"))


def test_tensor_export_is_what_dd_ranking_loads(tmp_path):
    s = _synset()
    export_synthetic(s, tmp_path / "t", "tensor")
    images = torch.load(tmp_path / "t" / "images.pt", weights_only=True)
    labels = torch.load(tmp_path / "t" / "labels.pt", weights_only=True)
    assert isinstance(images, torch.Tensor) and images.shape == (8, 3, 6, 5)
    assert torch.equal(images, s.images) and torch.equal(labels, s.labels)
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert meta["format"] == "tensor" and meta["synthetic"]["class_names"] == CLASSES
    with pytest.raises(FairDistillError, match="folder"):
        export_synthetic(s, tmp_path / "x.pt", "tensor")


@pytest.mark.parametrize("channels", [1, 3])
def test_png_folders_hold_the_pixels(tmp_path, channels):
    from PIL import Image

    s = _synset(channels)
    export_synthetic(s, tmp_path, "png")
    folders = class_folders(CLASSES)
    assert folders == ["T-shirt_top", "not_Attractive", "class_2", "0"]
    expected = (s.to_pixels() * 255).round().to(torch.uint8).numpy()
    i = 0
    for c, n in enumerate((2, 3, 1, 2)):
        files = sorted((tmp_path / folders[c]).glob("*.png"))
        assert [f.name for f in files] == [f"{j}.png" for j in range(n)]
        for f in files:
            arr = np.asarray(Image.open(f))
            want = expected[i, 0] if channels == 1 else expected[i].transpose(1, 2, 0)
            assert arr.shape == want.shape and np.array_equal(arr, want)
            i += 1
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert [c["folder"] for c in meta["classes"]] == folders
    assert [c["images"] for c in meta["classes"]] == [2, 3, 1, 2]


def test_class_folders_are_unique_and_safe():
    assert class_folders(["a b", "a/b", "", "x"]) == ["a_b", "a_b_2", "class_2", "x"]
    assert class_folders(["x", "x_2", "x", "X"]) == ["x", "x_2", "x_3", "X_4"]  # by first appearance, no case clash


def test_unknown_format(tmp_path):
    with pytest.raises(FairDistillError, match="unknown export format 'hdf5'; allowed: dc-pt, png, tensor"):
        export_synthetic(_synset(), tmp_path, "hdf5")


def test_metadata_round_trip(tmp_path, digits):
    from fairdistill import __version__, api

    synset = api.distill(digits, preset="cobra-cpu", ipc=1, iterations=1, seed=3, device="cpu")
    back = load_synthetic(save_synthetic(synset, tmp_path))
    meta = back.meta
    assert meta["mean"] == list(digits.mean) and meta["std"] == list(digits.std)
    assert meta["class_names"] == list(digits.class_names) and meta["group_names"] == list(digits.group_names)
    assert meta["ipc"] == 1 and meta["seed"] == 3 and meta["preset"] == "cobra-cpu"
    assert {k: meta["method"][k] for k in ("backbone", "target", "distance", "embedder")} == {
        "backbone": "dm",
        "target": "barycenter",
        "distance": "l1",
        "embedder": "warm",
    }
    assert meta["dataset"] == "digits-fg" and meta["dataset_fingerprint"] == digits.fingerprint()
    assert meta["environment"]["fairdistill"] == __version__
    assert meta["environment"]["torch"] == torch.__version__
    assert meta == synset.meta


def test_cli_export(tmp_path):
    s = _synset()
    save_synthetic(s, tmp_path / "set")
    runner = CliRunner()
    for fmt, out in (("dc-pt", "dc.pt"), ("tensor", "tensors"), ("png", "pngs")):
        res = runner.invoke(app, ["export", str(tmp_path / "set"), "--format", fmt, "--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        assert "exported 8 images" in res.output
    assert (tmp_path / "dc.pt").is_file() and (tmp_path / "tensors" / "images.pt").is_file()
    assert len(list((tmp_path / "pngs").rglob("*.png"))) == 8
    res = runner.invoke(app, ["export", str(tmp_path / "set"), "--format", "gif", "--out", str(tmp_path / "g")])
    assert res.exit_code == 2 and "unknown export format 'gif'" in res.output
