"""Fuzz suite, the data boundary: bad ``npy`` folders and ``meta.json`` files (issue 14, classes 1 and 6),
and the dataset fingerprint that ``--resume`` checks.

Every bad folder goes through ``fairdistill datasets show npy --data-root FOLDER`` (and some through
``fairdistill distill``) and must be refused the one way :func:`fuzzing.assert_refused` describes:
exit code 2, one ``error:`` line naming the problem, no traceback. The cases that could exhaust
memory (a label of 10^9, a header declaring 10^15 rows, JSON 100,000 levels deep) run in a
memory-capped subprocess (:func:`fuzzing.cli`); the others in-process. A table covers each known
case; ``hypothesis`` adds random ``meta.json`` values and random label arrays.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from files_npy import write_npy
from fuzzing import assert_refused, cli, cli_inprocess, files_under
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

N, N_TEST = 48, 16
META = {"classes": ["a", "b", "c", "d"], "groups": ["g0", "g1"], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A valid folder (4 classes x 2 groups, 8x8 colour NHWC); each case edits a copy."""
    root = tmp_path_factory.mktemp("good") / "npy"
    write_npy(root, n=N, n_test=N_TEST)
    return root


def copy_of(good: Path, where: Path) -> Path:
    folder = where / "data"
    shutil.copytree(good, folder)
    return folder


def show(folder: Path):
    return cli_inprocess("datasets", "show", "npy", "--data-root", str(folder))


# ---- writing bad files ---------------------------------------------------------------------------
def arr(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy")


def save(folder: Path, name: str, value: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", value, allow_pickle=True)


def edit(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """A change: replace array ``name`` with ``fn(array)``."""
    return lambda folder: save(folder, name, fn(arr(folder, name)))


def set_at(name: str, index: int, value: int) -> Callable[[Path], None]:
    def fn(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[index] = value
        return a

    return edit(name, fn)


def header_claims(name: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    """A change: keep array ``name``'s bytes but make its header declare ``shape``."""

    def change(folder: Path) -> None:
        path = folder / f"{name}.npy"
        a = np.load(path)
        with open(path, "wb") as f:
            npy_format.write_array_header_1_0(
                f, {"descr": npy_format.dtype_to_descr(a.dtype), "fortran_order": False, "shape": shape}
            )
            f.write(a.tobytes())

    return change


def raw(name: str, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A change: rewrite the file ``name`` (with its extension) as ``fn(its bytes)``."""

    def change(folder: Path) -> None:
        path = folder / name
        path.write_bytes(fn(path.read_bytes()))

    return change


def meta(**fields) -> Callable[[Path], None]:
    """A change: ``meta.json`` = the good one updated with ``fields`` (a value ``...`` drops the key)."""

    def change(folder: Path) -> None:
        doc = {**META, **fields}
        (folder / "meta.json").write_text(json.dumps({k: v for k, v in doc.items() if v is not ...}))

    return change


def meta_text(text: str | bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / "meta.json"
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    return change


def no_meta(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    """A change: remove ``meta.json`` (names from the ids), then apply ``changes``."""

    def change(folder: Path) -> None:
        (folder / "meta.json").unlink()
        for c in changes:
            c(folder)

    return change


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for c in changes:
            c(folder)

    return change


def meta_folder(folder: Path) -> None:
    (folder / "meta.json").unlink()
    (folder / "meta.json").mkdir()


def pickled_labels(folder: Path) -> None:
    save(folder, "train_labels", np.array([{"x": 1}] * N, dtype=object))


def all_train_groups_unknown_for_class_0(folder: Path) -> None:
    y, a = arr(folder, "train_labels"), arr(folder, "train_groups")
    save(folder, "train_groups", np.where(y == 0, -1, a))


def class_3_only_in_test(folder: Path) -> None:
    y = arr(folder, "train_labels")
    save(folder, "train_labels", np.where(y == 3, 2, y))


# ---- the table -----------------------------------------------------------------------------------
# (id, change, text the one error line must contain)
SIZES = [
    ("label-1e9-named", set_at("train_labels", 5, 10**9), "labels must lie in [0, 4) (4 classes named in meta.json)"),
    ("label-1e9-unnamed", no_meta(set_at("train_labels", 5, 10**9)), "label 1000000000 would make 1000000001 classes"),
    ("label-1e6-unnamed", no_meta(set_at("test_labels", 0, 10**6)), "more than the 10000 allowed"),
    ("group-1e9-unnamed", no_meta(set_at("train_groups", 1, 10**9)), "group 1000000000 would make 1000000001 groups"),
    ("group-1e9-named", set_at("test_groups", 1, 10**9), "groups must lie in [0, 2) (2 groups named in meta.json)"),
    ("cells", no_meta(set_at("train_labels", 0, 5000), set_at("train_groups", 0, 5000)), "cells, more than"),
    ("label-int64-max", set_at("train_labels", 0, 2**63 - 1), "labels must lie in [0, 4)"),
    ("label-uint64-huge", edit("train_labels", lambda y: y.astype(np.uint64) + np.uint64(2**63)), "labels must lie"),
    (
        "label-negative",
        set_at("train_labels", 3, -2),
        "labels must lie in [0, 4) (4 classes named in meta.json), found -2",
    ),
    ("label-negative-unnamed", no_meta(set_at("train_labels", 3, -7)), "labels must lie in [0, 4)"),
    ("label-float", edit("train_labels", lambda y: y.astype(np.float32)), "expected integer labels of shape (48,)"),
    ("label-bool", edit("train_labels", lambda y: y > 1), "expected integer labels, got booleans"),
    ("label-2d", edit("train_labels", lambda y: np.stack([y, y], 1)), "expected integer labels of shape (48,)"),
    ("label-short", edit("test_labels", lambda y: y[:-1]), "15 labels for 16 images"),
    ("label-complex", edit("train_labels", lambda y: y.astype(np.complex64)), "expected integer labels"),
    ("label-string", edit("train_labels", lambda y: y.astype(str)), "expected integer labels"),
    ("label-pickle", pickled_labels, "holds Python objects"),
    ("group-test-unknown", set_at("test_groups", 2, -1), "allowed in train only"),
    ("group-train-minus-2", set_at("train_groups", 2, -2), "groups must lie in [-1, 2)"),
    ("group-bool", edit("train_groups", lambda a: a.astype(bool)), "expected integer groups, got booleans"),
    ("header-1e15-rows-labels", header_claims("train_labels", (10**15,)), "only 384 bytes follow it"),
    ("header-1e15-rows-images", header_claims("train_images", (10**15, 8, 8, 3)), "but only 9216 bytes follow it"),
    ("header-negative-dim", header_claims("test_groups", (-16,)), "test_groups.npy"),
    ("header-too-few-rows", header_claims("train_groups", (10,)), "bytes follow the 80 its header declares"),
    ("truncated-images", raw("train_images.npy", lambda b: b[:-100]), "but only 9116 bytes follow it"),
    ("truncated-header", raw("test_labels.npy", lambda b: b[:40]), "test_labels.npy: not a readable .npy array"),
    ("empty-file", raw("train_groups.npy", lambda b: b""), "train_groups.npy: not a readable .npy array"),
    ("garbage", raw("test_images.npy", lambda b: os.urandom(300)), "test_images.npy: not a readable .npy array"),
    ("bad-magic-version", raw("train_labels.npy", lambda b: b[:6] + b"\x09\x00" + b[8:]), "not a readable .npy"),
    ("header-dict-broken", raw("train_labels.npy", lambda b: b[:10] + b"{'descr': <i8" + b[23:]), "not a readable"),
    ("images-float", edit("train_images", lambda x: x.astype(np.float32)), "expected uint8 pixels, got float32"),
    ("images-int64", edit("test_images", lambda x: x.astype(np.int64)), "expected uint8 pixels, got int64"),
    ("images-fortran", edit("train_images", np.asfortranarray), "got Fortran order"),
    ("images-empty", edit("train_images", lambda x: x[:0]), "the split is empty"),
    ("images-2-channels", edit("train_images", lambda x: x[..., :2]), "cannot tell channels from shape"),
    ("images-5d", edit("train_images", lambda x: x[None]), "expected uint8 images (N, C, H, W)"),
    ("images-zero-width", edit("train_images", lambda x: x[:, :, :0]), "hold no pixel"),
    ("images-test-shape", edit("test_images", lambda x: x[:, :6]), "but test images"),
    ("empty-train-class", class_3_only_in_test, "no training images for class(es) d"),
    ("class-without-group-labels", all_train_groups_unknown_for_class_0, "have no group-labelled training image"),
]
META_CASES = [
    ("mean-strings", meta(mean=["a", "b", "c"]), "mean.0: Input should be a valid number"),
    ("mean-null", meta(mean=None), "mean: null is not allowed"),
    ("mean-bool", meta(mean=True), "mean: Input should be a valid list"),
    ("mean-short", meta(mean=[0.5, 0.5]), "mean has 2 entries but the images have 3 channel(s)"),
    ("mean-huge", meta(mean=[1e30, 0, 0]), "mean.0: Input should be less than or equal to 100"),
    ("std-infinity-literal", meta_text('{"std": [Infinity, 1, 1]}'), "Infinity is not a JSON number"),
    ("std-nan-literal", meta_text('{"mean": [NaN, 1, 1]}'), "NaN is not a JSON number"),
    ("std-1e999", meta_text('{"std": [1e999, 1, 1]}'), "std.0: Input should be a finite number"),
    ("std-zero", meta(std=[0.2, 0, 0.3]), "std.1: Input should be greater than or equal to 0.001"),
    ("std-negative", meta(std=[-1, 1, 1]), "std.0: Input should be greater than or equal to 0.001"),
    ("std-long", meta(std=[0.5] * 4), "std has 4 entries but the images have 3 channel(s)"),
    ("std-bools", meta(std=[True, True, True]), "std.0: Input should be a valid number"),
    ("std-empty", meta(std=[]), "std: List should have at least 1 item"),
    ("dsa-number", meta(dsa_strategy=42), "dsa_strategy: Input should be a valid string"),
    ("dsa-unknown", meta(dsa_strategy="crop_teleport"), "dsa_strategy: unknown augmentation 'teleport'"),
    ("dsa-empty", meta(dsa_strategy=""), "dsa_strategy: augmentation strategy is empty"),
    ("layout-bad", meta(layout="CHWN"), "layout: Input should be 'NCHW' or 'NHWC'"),
    ("name-number", meta(name=5), "name: Input should be a valid string"),
    ("name-newline", meta(name="a\nb"), "name: must not contain control characters"),
    ("name-empty", meta(name=""), "name: String should have at least 1 character"),
    ("description-list", meta(description=["x"]), "description: Input should be a valid string"),
    ("classes-string", meta(classes="abcd"), "classes: Input should be a valid list"),
    ("classes-ints", meta(classes=[0, 1, 2, 3]), "classes.0: Input should be a valid string"),
    ("classes-empty", meta(classes=[]), "classes: List should have at least 1 item"),
    ("classes-duplicate", meta(classes=["a", "b", "a", "c"]), "classes: duplicate name(s) 'a'"),
    ("classes-too-many", meta(classes=[f"c{i}" for i in range(20_001)]), "classes: List should have at most 10000"),
    ("classes-too-few", meta(classes=["a", "b"]), "labels must lie in [0, 2) (2 classes named in meta.json)"),
    ("groups-object", meta(groups={"g0": 0}), "groups: Input should be a valid list"),
    ("groups-nested", meta(groups=[["g0"], ["g1"]]), "groups.0: Input should be a valid string"),
    ("groups-escape", meta(groups=["g0", "\x1b[31mred"]), "groups.1: must not contain control characters"),
    ("unknown-key", meta(colours=3), "unknown key(s) colours; allowed: classes, description, dsa_strategy"),
    ("misspelt-key", meta(stdev=[1, 1, 1]), "unknown key(s) stdev"),
    ("document-null", meta_text("null"), "expected a JSON object, got null"),
    ("document-list", meta_text("[1, 2]"), "expected a JSON object, got an array"),
    ("document-string", meta_text('"meta"'), "expected a JSON object, got a string"),
    ("not-json", meta_text("{not json"), "meta.json: not valid JSON"),
    ("not-utf8", meta_text(b'{"name": "\xff\xfe"}'), "meta.json: not UTF-8 text"),
    ("empty-meta", meta_text(""), "meta.json: not valid JSON"),
    ("nested-1000", meta_text('{"name": ' + "[" * 1000 + "]" * 1000 + "}"), "JSON nested 1001 levels deep"),
    ("meta-folder", meta_folder, "meta.json: not a regular file"),
]
CASES = SIZES + META_CASES


@pytest.mark.parametrize("change,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_folder_is_refused_in_one_line(good, tmp_path, change, match):
    folder = copy_of(good, tmp_path)
    change(folder)
    before = files_under(tmp_path)
    assert_refused(show(folder), match, root=tmp_path, before=before)


def as_version_3(folder: Path, name: str) -> None:
    """Rewrite array ``name`` in .npy format version 3.0 (a UTF-8 header; numpy writes it for unicode field names)."""
    a = np.load(folder / f"{name}.npy")
    header = repr({"descr": npy_format.dtype_to_descr(a.dtype), "fortran_order": False, "shape": a.shape})
    head = header.encode() + b" " * (64 - (10 + 2 + len(header) + 1) % 64) + b"\n"
    magic = npy_format.magic(3, 0) + len(head).to_bytes(4, "little")
    (folder / f"{name}.npy").write_bytes(magic + head + a.tobytes())


def test_an_npy_file_in_format_3_is_read(good, tmp_path):
    folder = copy_of(good, tmp_path)
    for name in ("train_images", "train_labels"):
        expected = arr(folder, name)
        as_version_3(folder, name)
        assert np.array_equal(np.load(folder / f"{name}.npy"), expected)  # numpy reads it too
    res = show(folder)
    assert res.code == 0 and "Traceback" not in res.stderr, res.stderr


# ---- the memory cases: a capped subprocess ---------------------------------------------------------
MEMORY = [
    ("label-1e9-unnamed", no_meta(set_at("train_labels", 5, 10**9)), "label 1000000000 would make 1000000001 classes"),
    ("header-1e15-rows-labels", header_claims("train_labels", (10**15,)), "declares int64 (1000000000000000,)"),
    ("nested-100000", meta_text('{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"), "JSON nested 100001 levels"),
]


@pytest.mark.parametrize("change,match", [c[1:] for c in MEMORY], ids=[c[0] for c in MEMORY])
def test_a_memory_case_is_refused_under_a_memory_cap(good, tmp_path, change, match):
    folder = copy_of(good, tmp_path)
    change(folder)
    assert_refused(cli("datasets", "show", "npy", "--data-root", str(folder)), match)


def test_distill_refuses_a_huge_label_before_any_work_in_a_capped_process(good, tmp_path):
    folder = copy_of(good, tmp_path)
    no_meta(set_at("train_labels", 0, 10**9))(folder)
    before = files_under(folder)
    out = tmp_path / "run"
    res = cli(
        "distill", "--dataset", "npy", "--data-root", str(folder), "--ipc", "1", "--iterations", "1",
        "--device", "cpu", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert_refused(res, "would make 1000000001 classes", root=folder, before=before)
    assert not (out / "synthetic.safetensors").exists()


# ---- distill refuses the same folders as `datasets show` ---------------------------------------------
DISTILL = ["mean-strings", "std-zero", "dsa-number", "label-bool", "truncated-images", "mean-short"]


@pytest.mark.parametrize("case", DISTILL)
def test_distill_refuses_a_bad_folder(good, tmp_path, case):
    (change, match) = next(c[1:] for c in CASES if c[0] == case)
    folder = copy_of(good, tmp_path)
    change(folder)
    out = tmp_path / "run"
    res = cli_inprocess(
        "distill", "--dataset", "npy", "--data-root", str(folder), "--ipc", "1", "--iterations", "1",
        "--device", "cpu", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert_refused(res, match)
    assert not (out / "synthetic.safetensors").exists()


# ---- property-based: random meta.json values and label arrays ----------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
meta_docs = st.dictionaries(
    st.sampled_from(["name", "classes", "groups", "mean", "std", "layout", "description", "dsa_strategy", "extra"]),
    json_values,
    min_size=1,
    max_size=3,
)


def _accepted_or_refused(outcome, keys: list[str]) -> None:
    """Either the folder loads (exit 0) or it is refused in one line naming one of ``keys`` (or meta.json)."""
    if outcome.code == 0:
        assert "Traceback" not in outcome.stderr
        return
    assert_refused(outcome)
    line = outcome.stderr.strip()
    assert "meta.json" in line or any(k in line for k in keys), line


@settings(max_examples=30, deadline=None)
@given(doc=meta_docs)
def test_random_meta_is_accepted_or_refused_in_one_line(good, tmp_path_factory, doc):
    folder = copy_of(good, tmp_path_factory.mktemp("meta"))
    (folder / "meta.json").write_text(json.dumps({**META, **doc}))
    _accepted_or_refused(show(folder), list(doc))


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(["int8", "uint8", "int16", "int32", "int64", "uint64", "bool", "float32"]),
    where=st.lists(st.integers(0, N_TEST - 1), min_size=1, max_size=3),
    name=st.sampled_from(["train_labels", "train_groups", "test_labels", "test_groups"]),
    data=st.data(),
)
def test_random_ids_are_accepted_or_refused_in_one_line(good, tmp_path_factory, dtype, where, name, data):
    folder = copy_of(good, tmp_path_factory.mktemp("ids"))
    (folder / "meta.json").unlink()  # no names: every id count is inferred from the ids, and bounded
    ids = arr(folder, name)
    if dtype in ("bool", "float32"):
        ids = ids.astype(dtype)
    else:
        info = np.iinfo(dtype)
        ids = np.clip(ids, max(info.min, -1), info.max).astype(dtype)
        lo, hi = int(info.min), int(info.max)
        edges = [v for v in (lo, hi, -1, *(10**k for k in range(3, 19, 3))) if lo <= v <= hi]
        ids[where] = data.draw(st.sampled_from(edges) | st.integers(lo, hi), label="value")
    save(folder, name, ids)
    _accepted_or_refused(show(folder), [f"{name}.npy", "class", "group"])


# ---- the fingerprint: content, not path ---------------------------------------------------------------
def _fingerprint(folder: Path, **kw) -> str:
    from fairdistill.data import load_dataset

    return load_dataset("npy", data_root=folder, **kw).fingerprint()


def test_fingerprint_is_stable_across_loads_and_stream_modes(good, tmp_path):
    folder = copy_of(good, tmp_path)
    first = _fingerprint(folder)
    assert _fingerprint(folder) == first
    assert _fingerprint(folder, stream=False) == first  # the same content, in memory
    res = show(folder)
    assert res.code == 0 and f"fingerprint {first}" in res.stdout


def _keep_mtime(path: Path, write: Callable[[], None]) -> None:
    st_ = path.stat()
    write()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))


@pytest.mark.parametrize(
    "name", ["train_images", "train_labels", "train_groups", "test_images", "test_labels", "test_groups"]
)
def test_fingerprint_changes_when_any_array_is_replaced(good, tmp_path, name):
    folder = copy_of(good, tmp_path)
    first = _fingerprint(folder)
    a = arr(folder, name)
    flipped = a[::-1].copy()  # same shape, dtype and size, other content (first and last rows swapped)
    assert not np.array_equal(flipped, a)
    # even with the file's old mtime put back, the sampled rows (or the ids, hashed in full) differ
    _keep_mtime(folder / f"{name}.npy", lambda: save(folder, name, flipped))
    assert _fingerprint(folder) != first
    save(folder, name, a)  # the old content, a new mtime: a new identity too (cheap and conservative)
    assert _fingerprint(folder) != first


def test_fingerprint_changes_with_meta_json_and_mtime(good, tmp_path):
    folder = copy_of(good, tmp_path)
    first = _fingerprint(folder)
    meta(description="another description")(folder)
    second = _fingerprint(folder)
    assert second != first
    path = folder / "train_images.npy"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert _fingerprint(folder) != second  # a touched file is a new identity (cheap and conservative)


def test_fingerprint_of_in_memory_datasets(tmp_path):
    from files_mnist import write_mnist

    from fairdistill.data import load_dataset

    assert load_dataset("digits-fg").fingerprint() == load_dataset("digits-fg").fingerprint()
    write_mnist(tmp_path)
    a = load_dataset("cmnist-fg", data_root=tmp_path).fingerprint()
    assert load_dataset("cmnist-fg", data_root=tmp_path).fingerprint() == a
    assert load_dataset("cmnist-fg", data_root=tmp_path, stream=True).fingerprint() == a
    source = next(p for p in tmp_path.rglob("*") if p.is_file() and "labels" in p.name)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    assert load_dataset("cmnist-fg", data_root=tmp_path).fingerprint() != a


def test_resume_refuses_a_folder_whose_arrays_changed(good, tmp_path):
    folder = copy_of(good, tmp_path)
    out = tmp_path / "run"
    args = [
        "distill", "--dataset", "npy", "--data-root", str(folder), "--preset", "vanilla", "--ipc", "1",
        "--iterations", "2", "--checkpoint-every", "1", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip
    first = cli_inprocess(*args)
    assert first.code == 0, first.stderr
    again = cli_inprocess(*args, "--resume")  # the same folder, loaded again: the same identity
    assert again.code == 0, again.stderr
    for name in ("train_images", "train_labels", "train_groups", "test_images", "test_labels", "test_groups"):
        a = arr(folder, name)
        save(folder, name, np.roll(a, 1, axis=0))
    assert_refused(cli_inprocess(*args, "--resume"), "fingerprint")


def test_bounds_are_checked_by_fairdataset_itself():
    """The Python API checks the same bounds (a FairDataset built by hand)."""
    from fairdistill.data import FairDataset, FairSplit
    from fairdistill.errors import FairDistillError

    x, y, a = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    kw = dict(name="t", train=FairSplit(x, y, a), test=FairSplit(x, y, a), mean=(0.5,), std=(0.5,))
    FairDataset(class_names=("a", "b"), group_names=("g", "h"), **kw)
    for bad, match in [
        ({"class_names": tuple(map(str, range(10_001))), "group_names": ("g", "h")}, "10001 classes, more than"),
        ({"class_names": ("a", "a"), "group_names": ("g", "h")}, "duplicate class name"),
        ({"class_names": ("a", "b"), "group_names": ("g", "h"), "std": (0.0,)}, "std must be > 0"),
        ({"class_names": ("a", "b"), "group_names": ("g", "h"), "mean": (float("nan"),)}, "finite"),
        ({"class_names": ("a", "b"), "group_names": ("g", "h"), "dsa_strategy": "spin"}, "dsa_strategy"),
    ]:
        with pytest.raises(FairDistillError, match=match):
            FairDataset(**{**kw, **bad})
    double = FairSplit(x.double(), y, a)
    with pytest.raises(FairDistillError, match="float32"):
        FairDataset(**{**kw, "train": double, "class_names": ("a", "b"), "group_names": ("g", "h")})
