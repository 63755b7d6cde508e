"""Artifacts: synthetic sets round-trip exactly; corrupt files give clear errors; writes are atomic."""

import json

import pytest
import torch

from fairdistill.artifacts import SyntheticSet, load_synthetic, save_grid, save_synthetic, write_json
from fairdistill.errors import FairDistillError


def _synset():
    g = torch.Generator().manual_seed(0)
    meta = {"dataset": "digits-fg", "mean": [0.5] * 3, "std": [0.5] * 3, "method": {"target": "barycenter"}}
    return SyntheticSet(torch.randn(6, 3, 8, 8, generator=g), torch.tensor([0, 0, 1, 1, 2, 2]), meta)


def test_round_trip(tmp_path):
    s = _synset()
    path = save_synthetic(s, tmp_path)
    back = load_synthetic(path)
    assert torch.equal(back.images, s.images) and torch.equal(back.labels, s.labels)
    assert back.meta == s.meta and back.ipc == 2
    assert load_synthetic(tmp_path).meta == s.meta  # the folder works too
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_truncated_and_corrupt_files(tmp_path):
    path = save_synthetic(_synset(), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FairDistillError, match="corrupt or truncated"):
        load_synthetic(path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(FairDistillError, match="corrupt or truncated"):
        load_synthetic(path)


def test_json_nan_becomes_null(tmp_path):
    write_json(tmp_path / "r.json", {"x": float("nan"), "t": torch.tensor([1.0, 2.0])})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": None, "t": [1.0, 2.0]}


def test_grid_png(tmp_path):
    from PIL import Image

    s = _synset()
    save_grid(s.to_pixels(), tmp_path / "grid.png", per_row=2, pad=2, scale=1)
    img = Image.open(tmp_path / "grid.png")
    assert img.size == (2 * 10 + 2, 3 * 10 + 2)
