"""Users' own data as practitioners keep it: an image folder + metadata.csv (``folder``), Waterbirds, and
Hugging Face datasets saved to disk (``hf``); the dataset options from the CLI; every bad input one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from files_faces import colour_of, truncate, write_image
from files_folder import WATERBIRDS, WATERBIRDS_CELLS, write_folder, write_waterbirds
from PIL import Image
from typer.testing import CliRunner

from fairdistill import api
from fairdistill.cli import app
from fairdistill.data import load_dataset, table
from fairdistill.data.table import parse_pairs
from fairdistill.errors import FairDistillError

runner = CliRunner()

TINY = ["--ipc", "1", "--iterations", "2", "--models", "1", "--epochs", "1", "--device", "cpu", "--quiet"]

#: a biased 2-class x 2-group folder: train mostly aligned, test balanced, three rows of a split left out
CELLS = {
    ("train", 0, 0): 5, ("train", 0, 1): 1, ("train", 1, 0): 1, ("train", 1, 1): 5,
    ("test", 0, 0): 2, ("test", 0, 1): 2, ("test", 1, 0): 2, ("test", 1, 1): 2,
    ("val", 0, 0): 3,
}  # fmt: skip


def pixels(ds, images: torch.Tensor) -> np.ndarray:
    """Model-space images back to uint8 pixels (asserting they sit on the 1/255 grid)."""
    x = ds.to_pixels(images).double() * 255
    assert (x - x.round()).abs().max() < 1e-3
    return x.round().to(torch.uint8).numpy()


def expected(rows, split: str, size: int | None = None) -> np.ndarray:
    """The rows' images decoded independently with Pillow: RGB, bilinear to size x size when given."""
    out = []
    for r in rows:
        if r["split"] != split:
            continue
        img = Image.open(r["file"]).convert("RGB")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img).transpose(2, 0, 1))
    return np.stack(out)


def with_files(written):
    for r in written.rows:
        r["file"] = written.root / r["path"]
    return written


def table_rows(output: str, name: str) -> list[list[int]]:
    """The numbers of each count-table row of ``datasets show`` whose class is ``name`` (train first, then test)."""
    rows = [line for line in output.splitlines() if line.startswith(f"│ {name} ")]
    return [[int(v) for v in r.strip("│ ").replace("│", " ").split()[1:]] for r in rows]


# ---- the folder format -------------------------------------------------------------------------
def test_folder_reads_rows_names_and_pixels_and_streams(tmp_path):
    w = with_files(write_folder(tmp_path, CELLS, sizes=[(12, 10)]))
    ds = load_dataset("folder", data_root=tmp_path)
    assert ds.name == "folder" and ds.streamed and ds.test.streamed
    assert ds.class_names == ("0", "1") and ds.group_names == ("0", "1")
    assert ds.counts("train").tolist() == [[5, 1], [1, 5]] and ds.counts("test").tolist() == [[2, 2], [2, 2]]
    assert ds.image_size == (10, 12) and ds.mean == (0.5,) * 3 and ds.std == (0.5,) * 3  # height x width kept
    for split in ("train", "test"):
        got = pixels(ds, ds.split(split).images.materialise())
        assert np.array_equal(got, expected(w.rows, split))
        labels = [r["label"] for r in w.rows if r["split"] == split]
        assert ds.split(split).labels.tolist() == labels  # the table's row order
    assert ds.params["ignored_rows"] == 3 and ds.params["ignored_split_values"] == {"val": 3}
    assert "3 row(s) of other splits ignored" in ds.description


def test_folder_string_labels_take_the_declared_order_or_sorted_names(tmp_path):
    cells = {(s, y, a): n for (s, y, a), n in CELLS.items()}
    names = {0: "dog", 1: "cat"}
    renamed = {(s, names[y], ("indoor", "outdoor")[a]): n for (s, y, a), n in cells.items()}
    write_folder(tmp_path / "a", renamed)
    ds = load_dataset("folder", data_root=tmp_path / "a")
    assert ds.class_names == ("cat", "dog") and ds.group_names == ("indoor", "outdoor")  # sorted
    assert ds.counts("train").tolist() == [[1, 5], [5, 1]]
    write_folder(tmp_path / "b", renamed, meta={"classes": ["dog", "cat"], "groups": ["outdoor", "indoor"]})
    ds = load_dataset("folder", data_root=tmp_path / "b")
    assert ds.class_names == ("dog", "cat") and ds.counts("train").tolist() == [[1, 5], [5, 1]]


def test_folder_name_columns_and_meta_json(tmp_path):
    names = {"class_name": {0: "landbird", 1: "waterbird"}, "group_name": {0: "land", 1: "water"}}
    meta = {"name": "birds", "description": "my birds", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
    write_folder(tmp_path, CELLS, names=names, meta=meta, extra={"note": "ignored"})
    ds = load_dataset("folder", data_root=tmp_path)
    assert ds.class_names == ("landbird", "waterbird") and ds.group_names == ("land", "water")
    assert ds.name == "birds" and ds.description == "my birds"
    assert ds.mean == (0.4, 0.5, 0.6) and ds.std == (0.2, 0.25, 0.3)
    assert ds.params["columns"]["class_name"] == "class_name"


def test_folder_reads_metadata_parquet_when_there_is_no_csv(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    w = write_folder(tmp_path, CELLS)
    columns = {"path": [r["path"] for r in w.rows], "label": [r["label"] for r in w.rows],
               "group": [r["group"] for r in w.rows], "split": [r["split"] for r in w.rows]}  # fmt: skip
    pq.write_table(pa.table(columns), tmp_path / "metadata.parquet")
    from_csv = load_dataset("folder", data_root=tmp_path)
    w.table.unlink()
    ds = load_dataset("folder", data_root=tmp_path)
    assert ds.params["metadata"] == "metadata.parquet" and ds.counts("train").tolist() == [[5, 1], [1, 5]]
    assert torch.equal(ds.train.images.materialise(), from_csv.train.images.materialise())


def test_columns_and_splits_map_the_table_from_the_cli(tmp_path):
    cells = {({"train": "0", "test": "2", "val": "1"}[s], y, a): n for (s, y, a), n in CELLS.items()}
    columns = {"path": "img_filename", "label": "y", "group": "place", "split": "fold"}
    write_folder(tmp_path, cells, columns=columns)
    args = ["datasets", "show", "folder", "--data-root", str(tmp_path)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "no column 'path'" in res.output
    mapping = ["--columns", "path=img_filename,label=y,group=place,split=fold", "--splits", "train=0,test=2"]
    res = runner.invoke(app, [*args, *mapping], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "train: 12 images" in res.output and "test: 8 images" in res.output
    assert table_rows(res.output, "0") == [[5, 1, 6], [2, 2, 4]] and "row(s) of other splits ignored" in res.output
    ds = load_dataset("folder", data_root=tmp_path, columns=columns, splits={"train": 0, "test": 2})  # mappings too
    assert ds.counts("train").tolist() == [[5, 1], [1, 5]]


@pytest.mark.parametrize(
    "given,message",
    [
        ("path", "expected key=value pairs"),
        ("lable=y", "unknown key 'lable'; allowed: path, label"),
        ("label=y,label=z", "label is given twice"),
        ("label=", "label= needs a value"),
    ],
)
def test_pairs_are_parsed_strictly(given, message):
    with pytest.raises(FairDistillError, match=message):
        parse_pairs(given, "--columns", ["path", "label"])


def test_mixed_sizes_need_image_size_and_resize_bilinear(tmp_path):
    w = with_files(write_folder(tmp_path, CELLS, sizes=[(12, 10), (12, 10), (9, 14)], suffixes=[".png", ".jpg"]))
    with pytest.raises(FairDistillError) as err:
        load_dataset("folder", data_root=tmp_path)
    text = str(err.value)
    assert "the images have 2 sizes (14 of 12x10, 6 of 9x14; e.g. " in text and "--image-size" in text
    assert "\n" not in text
    ds = load_dataset("folder", data_root=tmp_path, image_size=8)
    assert ds.image_size == (8, 8) and ds.params["image_size"] == 8
    assert np.array_equal(pixels(ds, ds.train.images.materialise()), expected(w.rows, "train", 8))
    with pytest.raises(FairDistillError, match=r"image_size must be in \[8, 512\]"):
        load_dataset("folder", data_root=tmp_path, image_size=4)


def test_second_load_comes_from_the_decoded_cache_bit_identical(tmp_path, monkeypatch):
    write_folder(tmp_path / "data", CELLS, sizes=[(12, 10), (9, 14)])
    cache = tmp_path / "cache"
    first = load_dataset("folder", data_root=tmp_path / "data", image_size=8, cache_dir=cache)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["folder"]

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache should have been used")

    monkeypatch.setattr(table, "decode_rgb", refuse)
    monkeypatch.setattr(table, "probe_size", refuse)
    second = load_dataset("folder", data_root=tmp_path / "data", image_size=8, cache_dir=cache)
    uncached = None
    monkeypatch.undo()
    uncached = load_dataset("folder", data_root=tmp_path / "data", image_size=8, cache=False)
    for split in ("train", "test"):
        a, b = first.split(split).images.materialise(), second.split(split).images.materialise()
        assert torch.equal(a, b) and torch.equal(a, uncached.split(split).images.materialise())
    assert first.fingerprint() == second.fingerprint()


# ---- bad inputs: one line, exit code 2 ---------------------------------------------------------
def _set_row(written, index: int, **values) -> None:
    """Rewrite ``metadata.csv`` with row ``index`` changed (path, label, group, split)."""
    rows = written.table.read_text().splitlines()
    cells = rows[index + 1].split(",")
    for key, value in values.items():
        cells[["path", "label", "group", "split"].index(key)] = value
    rows[index + 1] = ",".join(cells)
    written.table.write_text("\n".join(rows) + "\n")


def _bad_column(w, tmp):
    return ["--columns", "label=y"]


def _label_outside_names(w, tmp):
    (w.root / "meta.json").write_text(json.dumps({"classes": ["a", "b"]}))
    _set_row(w, 3, label="2")
    return []


def _label_not_a_name(w, tmp):
    (w.root / "meta.json").write_text(json.dumps({"classes": ["a", "b"]}))
    text = w.table.read_text().replace(",0,", ",a,").replace(",1,", ",b,")
    w.table.write_text(text.replace(",a,", ",c,", 1))
    return []


def _group_outside_names(w, tmp):
    (w.root / "meta.json").write_text(json.dumps({"groups": ["g", "h"]}))
    _set_row(w, 0, group="5")
    return []


def _parent_path(w, tmp):
    write_image(tmp / "x.png", (1, 2, 3), (12, 10))
    _set_row(w, 1, path="../x.png")
    return []


def _absolute_path(w, tmp):
    _set_row(w, 1, path=str(w.root / w.rows[1]["path"]))
    return []


def _escaping_link(w, tmp):
    write_image(tmp / "outside.png", (1, 2, 3), (12, 10))
    os.symlink(tmp / "outside.png", w.root / "images" / "link.png")
    _set_row(w, 2, path="images/link.png")
    return []


def _corrupt_image(w, tmp):
    truncate(w.root / w.rows[4]["path"], keep=40)  # inside the image data
    return []


def _missing_image(w, tmp):
    (w.root / w.rows[4]["path"]).unlink()
    return []


def _mixed_sizes(w, tmp):
    write_image(w.root / w.rows[5]["path"], (9, 9, 9), (20, 20))
    return []


def _empty_split(w, tmp):
    return ["--splits", "test=holdout"]


def _class_without_training_image(w, tmp):
    (w.root / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    _set_row(w, len(w.rows) - 1, label="2", split="test")
    return []


def _ragged_row(w, tmp):
    rows = w.table.read_text().splitlines()
    rows[3] = rows[3] + ",extra"
    w.table.write_text("\n".join(rows) + "\n")
    return []


def _conflicting_class_names(w, tmp):
    text = w.table.read_text().splitlines()
    text[0] += ",class_name"
    text[1:] = [line + ("," + ("cat" if i else "dog") if line.split(",")[1] == "0" else ",bird") for i, line in
                enumerate(text[1:])]  # fmt: skip
    w.table.write_text("\n".join(text) + "\n")
    return []


def _option_not_taken(w, tmp):
    return ["--label-column", "y"]


def _bad_image_size(w, tmp):
    return ["--image-size", "2"]


def _bad_columns_text(w, tmp):
    return ["--columns", "label:y"]


BAD = {
    "missing column": (_bad_column, "no column 'y' (the label column)"),
    "label outside the declared names": (_label_outside_names, "label 2 is outside the 2 declared classes"),
    "label not a declared name": (_label_not_a_name, "label 'c' is not one of the declared classes (a, b)"),
    "group outside the declared names": (_group_outside_names, "group 5 is outside the 2 declared groups"),
    "path outside the root": (_parent_path, "image path '../x.png' leads outside the data root"),
    "absolute path": (_absolute_path, "is absolute; give it relative to"),
    "symlink escaping": (_escaping_link, "image 'images/link.png' is a link that leads outside the data root"),
    "corrupt image": (_corrupt_image, "Pillow cannot decode this image"),
    "missing image": (_missing_image, "does not exist"),
    "mixed sizes": (_mixed_sizes, "the images have 2 sizes"),
    "empty split": (_empty_split, "the test split is empty: no row has split = 'holdout'"),
    "class without training image": (_class_without_training_image, "no training image for class(es) c"),
    "ragged row": (_ragged_row, "line 4 has 5 fields, the header 4"),
    "conflicting class names": (_conflicting_class_names, "class name 'cat' for label 0, but line 2 names it 'dog'"),
    "option not taken": (_option_not_taken, "dataset 'folder' does not take the option 'label_column'"),
    "image size out of range": (_bad_image_size, "image_size must be in [8, 512]"),
    "malformed --columns": (_bad_columns_text, "--columns: expected key=value pairs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_input_is_one_line_and_exit_code_2(tmp_path, case):
    make, message = BAD[case]
    w = write_folder(tmp_path / "data", CELLS)
    extra = make(w, tmp_path)
    res = runner.invoke(app, ["datasets", "show", "folder", "--data-root", str(tmp_path / "data"), *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    if case in ("corrupt image", "missing image"):
        assert w.rows[4]["path"] in res.output  # the file is named


def test_a_hub_name_is_refused_without_downloading(tmp_path):
    res = runner.invoke(app, ["datasets", "show", "hf", "--data-root", "someone/birds", "--group-column", "g"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "never downloads" in res.output and "save_to_disk" in res.output


def test_a_dataset_option_the_dataset_does_not_take_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(api, "load_dataset", lambda *a, **k: pytest.fail("loaded before the plan was checked"))
    with pytest.raises(FairDistillError, match="dataset 'digits-fg' does not take the option 'columns'"):
        api.compare("digits-fg", dataset_options={"columns": "label=y"}, iterations=1)
    with pytest.raises(FairDistillError, match="stream is an argument of its own"):
        api.distill("digits-fg", dataset_options={"stream": True}, iterations=1)


# ---- Waterbirds ----------------------------------------------------------------------------------
def test_waterbirds_official_layout_classes_places_splits_and_normalisation(tmp_path):
    w = with_files(write_waterbirds(tmp_path))
    for root in (tmp_path, tmp_path / WATERBIRDS):  # the release folder or its parent
        ds = load_dataset("waterbirds", data_root=root, image_size=16)
        assert ds.class_names == ("landbird", "waterbird") and ds.group_names == ("land", "water")
        train = [[WATERBIRDS_CELLS[(0, y, a)] for a in (0, 1)] for y in (0, 1)]
        assert ds.counts("train").tolist() == train and ds.counts("test").tolist() == [[3, 3], [3, 3]]
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    assert ds.params["ignored_rows"] == 8 and "validation split 1 (8 images) not used" in ds.description
    by_split = [dict(r, split={0: "train", 2: "test"}.get(r["split"], "val")) for r in w.rows]
    assert np.array_equal(pixels(ds, ds.test.images), expected(by_split, "test", 16))
    assert load_dataset("waterbirds", data_root=tmp_path).image_size == (64, 64)  # the default


def test_datasets_show_waterbirds_prints_the_class_by_group_tables(tmp_path):
    write_waterbirds(tmp_path)
    res = runner.invoke(app, ["datasets", "show", "waterbirds", "--data-root", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "train: 12 images" in res.output and "test: 12 images" in res.output
    assert table_rows(res.output, "landbird") == [[6, 1, 7], [3, 3, 6]]
    assert table_rows(res.output, "waterbird") == [[1, 4, 5], [3, 3, 6]]
    assert "validation split 1" in res.output


@pytest.mark.slow
def test_compare_end_to_end_on_a_waterbirds_fixture(tmp_path):
    write_waterbirds(tmp_path / "data")
    out = tmp_path / "run"
    args = ["compare", "--dataset", "waterbirds", "--data-root", str(tmp_path / "data"), "--image-size", "16"]
    args += ["--methods", "cobra", "--baselines", "random", *TINY, "--no-report", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "waterbirds" and summary["dataset_options"] == {"image_size": 16}
    assert summary["data"]["test_counts"] == [[3, 3], [3, 3]] and set(summary["methods"]) == {"cobra", "random"}
    assert 0 <= summary["methods"]["cobra"]["acc"]["mean"] <= 100


@pytest.mark.slow
def test_compare_and_distill_end_to_end_on_a_folder_fixture(tmp_path):
    cells = {({"train": "0", "test": "2", "val": "1"}[s], y, a): n for (s, y, a), n in CELLS.items()}
    write_folder(tmp_path / "data", cells, columns={"path": "img_filename", "label": "y", "group": "place"},
                 sizes=[(12, 10), (10, 12)])  # fmt: skip
    data = ["--dataset", "folder", "--data-root", str(tmp_path / "data"), "--image-size", "8",
            "--columns", "path=img_filename,label=y,group=place", "--splits", "train=0,test=2"]  # fmt: skip
    out = tmp_path / "run"
    res = runner.invoke(app, ["compare", *data, "--methods", "cobra", "--baselines", "random,full", *TINY,
                              "--no-report", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    options = {"columns": "path=img_filename,label=y,group=place", "splits": "train=0,test=2", "image_size": 8}
    assert summary["dataset"] == "folder" and summary["dataset_options"] == options
    assert summary["data"]["train_counts"] == [[5, 1], [1, 5]]
    assert set(summary["methods"]) == {"cobra", "random", "full"}
    res = runner.invoke(app, ["distill", *data, "--preset", "cobra", *TINY[:4], "--device", "cpu", "--quiet",
                              "--out", str(tmp_path / "one")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "one" / "record.json").read_text())["dataset_options"] == options


# ---- Hugging Face datasets saved to disk ---------------------------------------------------------
def _hf_dict(datasets, n: dict[str, int]):
    """A DatasetDict of solid-colour 10x10 images: a ClassLabel bird column and a string place column."""
    features = datasets.Features(
        {"img": datasets.Image(), "bird": datasets.ClassLabel(names=["landbird", "waterbird"]),
         "place": datasets.Value("string")}
    )  # fmt: skip
    parts, i = {}, 0
    for split, count in n.items():
        rows = {"img": [], "bird": [], "place": []}
        for j in range(count):
            rows["img"].append(Image.new("RGB", (10, 10), colour_of(i)))
            rows["bird"].append(j % 2)
            rows["place"].append("water" if (j // 2) % 3 == 0 else "land")
            i += 1
        parts[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(parts)


def _hf_expect(dd, split: str) -> tuple[list[int], list[int], np.ndarray]:
    rows = dd[split]
    places = {"land": 0, "water": 1}
    px = np.stack([np.asarray(im.convert("RGB")).transpose(2, 0, 1) for im in rows["img"]])
    return list(rows["bird"]), [places[p] for p in rows["place"]], px


def test_hf_save_to_disk_round_trip_names_splits_and_pixels(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = _hf_dict(datasets, {"train": 12, "validation": 6, "test": 8})
    dd.save_to_disk(str(tmp_path / "saved"))
    kw = dict(data_root=tmp_path / "saved", label_column="bird", group_column="place", image_column="img")
    ds = load_dataset("hf", **kw)
    assert ds.class_names == ("landbird", "waterbird") and ds.group_names == ("land", "water")  # ClassLabel; sorted
    assert ds.streamed and ds.image_size == (10, 10) and ds.params["ignored_splits"] == {"validation": 6}
    assert "splits not used: validation (6)" in ds.description
    for split in ("train", "test"):
        y, a, px = _hf_expect(dd, split)
        got = ds.split(split)
        assert got.labels.tolist() == y and got.groups.tolist() == a
        assert np.array_equal(pixels(ds, got.images.materialise()), px)
    other = load_dataset("hf", splits="test=validation", **kw)
    assert len(other.test) == 6 and other.params["ignored_splits"] == {"test": 8}


def test_hf_parquet_folder_and_the_cli_options(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = _hf_dict(datasets, {"train": 12, "test": 8})
    for split in ("train", "test"):
        dd[split].to_parquet(str(tmp_path / "pq" / "data" / f"{split}-00000-of-00001.parquet"))
    ds = load_dataset("hf", data_root=tmp_path / "pq", label_column="bird", group_column="place", image_column="img")
    assert ds.params["format"] == "parquet" and ds.class_names == ("landbird", "waterbird")
    y, a, px = _hf_expect(dd, "train")
    assert ds.train.labels.tolist() == y and np.array_equal(pixels(ds, ds.train.images.materialise()), px)
    args = ["datasets", "show", "hf", "--data-root", str(tmp_path / "pq"), "--label-column", "bird"]
    res = runner.invoke(app, [*args, "--group-column", "place", "--image-column", "img", "--image-size", "8"])
    assert res.exit_code == 0, res.output
    assert "3x8x8" in res.output and "train: 12 images" in res.output
    res = runner.invoke(app, [*args, "--group-column", "site", "--image-column", "img"])
    assert res.exit_code == 2 and "no column 'site' (the group column)" in res.output
    res = runner.invoke(app, [*args, "--image-column", "img"])
    assert res.exit_code == 2 and "needs --group-column" in res.output
