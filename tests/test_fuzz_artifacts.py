"""Fuzz: checkpoints, saved sets, partial evaluations and the final files of a run (issue 14, classes 2, 5, 8).

Every bad input is made from one tiny real run (a session fixture: ``distill`` of digits-fg at
IPC 1 with a checkpoint at every iteration, and one ``evaluate`` of it), copied per case, then
damaged: bits flipped in tensor bytes and headers (``hypothesis``), header fields edited (with the
content hashes recomputed, as a tool that rewrote the file would, so that the schema itself is what
refuses them), saved sets with bad labels, metadata, dtypes or channels, partial evaluation files out
of range, and final writes interrupted at their worst moment. Each is driven through the command
line (``distill --resume``, ``evaluate``, ``export``, ``report``) and must be refused the way
:func:`fuzzing.assert_refused` says: exit code 2, one ``error:`` line naming the problem, no
traceback, no file left behind. The cases whose old behaviour allocated without bound run in a
memory-capped subprocess (:func:`fuzzing.cli`).

The helpers write files with plain safetensors / json, so the module also runs against the code
before these checks existed (to show which cases it catches).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzzing import Outcome, assert_refused, cli, cli_inprocess, files_under
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

try:  # the writer's hashes, where they exist (on the code before them, files are written without)
    from fairdistill.artifacts import content_hashes
except ImportError:  # pragma: no cover - only on the code before the hashes
    content_hashes = None

DISTILL = [
    "distill",
    "--dataset",
    "digits-fg",
    "--ipc",
    "1",
    "--iterations",
    "2",
    "--device",
    "cpu",
    "--quiet",
    "--checkpoint-every",
    "1",
]
EVAL = ["--device", "cpu", "--models", "1", "--epochs", "1", "--quiet"]
CKPT = Path("checkpoint") / "distill.safetensors"
CKPT_KEY = "fairdistill_checkpoint"
SET_KEY = "fairdistill"
FUZZ = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- the tiny real run every case starts from ---------------------------------------------------------
@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """``run/`` (a distillation with its checkpoint), ``eval.json`` and ``eval.partial.json`` of it."""
    root = tmp_path_factory.mktemp("pristine")
    res = cli_inprocess(*DISTILL, "--out", str(root / "run"))
    assert res.code == 0, res.stderr
    res = cli_inprocess("evaluate", str(root / "run"), *EVAL, "--out", str(root / "eval.json"))
    assert res.code == 0, res.stderr
    assert (root / "eval.partial.json").is_file()
    return root


@pytest.fixture(scope="session")
def compared(tmp_path_factory) -> Path:
    """A tiny ``compare`` run folder (one method, one baseline, one model of one epoch)."""
    out = tmp_path_factory.mktemp("compared") / "cmp"
    res = cli_inprocess(
        "compare",
        *("--dataset", "digits-fg", "--methods", "vanilla", "--baselines", "random", "--ipc", "1"),
        *("--iterations", "1", "--checkpoint-every", "0", *EVAL, "--out", str(out)),
    )
    assert res.code == 0, res.stderr
    return out


def copy_run(pristine: Path, dest: Path) -> Path:
    shutil.copytree(pristine / "run", dest / "run")
    for name in ("eval.json", "eval.partial.json"):
        shutil.copy2(pristine / name, dest / name)
    return dest / "run"


# ---- reading and writing safetensors files the way a careless tool would -----------------------------
def read_st(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return st_load(data), json.loads(data[8 : 8 + n]).get("__metadata__", {})


def write_st(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], key: str, rehash: bool = True) -> None:
    """Write ``tensors`` and ``meta``; with ``rehash``, record hashes that match (so the content is what is judged)."""
    meta = {k: v for k, v in meta.items() if not k.startswith("fairdistill_sha256")}
    if rehash and content_hashes is not None:
        meta.update(content_hashes(tensors, meta[key]))
    path.write_bytes(st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))


def flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def header_end(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def one_error(outcome: Outcome) -> str:
    return outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else ""


def deep(n: int) -> str:
    return "[" * n + "]" * n


# ---- checkpoints: bit flips ---------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_a_bit_flip_in_the_checkpoint_tensors_is_refused_on_resume(pristine, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(pristine, Path(tmp))
        path = run / CKPT
        offset = data.draw(st.integers(header_end(path), path.stat().st_size - 1), label="offset")
        flip(path, offset, data.draw(st.integers(0, 7), label="bit"))
        before = files_under(run)
        assert_refused(cli_inprocess(*DISTILL, "--out", str(run), "--resume"), "corrupt", root=run, before=before)


@FUZZ
@given(data=st.data())
def test_a_bit_flip_in_the_checkpoint_header_is_refused_on_resume(pristine, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(pristine, Path(tmp))
        path = run / CKPT
        offset = data.draw(st.integers(0, header_end(path) - 1), label="offset")
        flip(path, offset, data.draw(st.integers(0, 7), label="bit"))
        before = files_under(run)
        assert_refused(cli_inprocess(*DISTILL, "--out", str(run), "--resume"), "corrupt", root=run, before=before)


def test_a_flipped_exponent_bit_never_becomes_a_final_set(pristine, tmp_path):
    """The issue's case: one exponent bit of an image value was resumed and written out as a final set."""
    run = copy_run(pristine, tmp_path)
    path = run / CKPT
    data = path.read_bytes()
    header = json.loads(data[8 : header_end(path)])
    first = header_end(path) + header["0.images"]["data_offsets"][0]  # the first image value, float32 little endian
    flip(path, first + 3, 6)  # byte 3 holds the sign and the top exponent bits
    before = files_under(run)
    assert_refused(cli_inprocess(*DISTILL, "--out", str(run), "--resume"), "corrupt", root=run, before=before)
    assert not any(p.stat().st_mtime > path.stat().st_mtime for p in run.glob("synthetic.safetensors"))


# ---- checkpoints: edited header fields (hashes recomputed: the schema must refuse them) ---------------
def _group(doc: dict) -> dict:
    return doc["methods"][0]["param_groups"][0]


def _set(path: list, value: Any) -> Callable[[dict, dict], None]:
    def edit(doc: dict, tensors: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _drop(path: list) -> Callable[[dict, dict], None]:
    def edit(doc: dict, tensors: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _tensor(name: str, value: torch.Tensor | None) -> Callable[[dict, dict], None]:
    def edit(doc: dict, tensors: dict) -> None:
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value

    return edit


def _nan_images(doc: dict, tensors: dict) -> None:
    tensors["0.images"] = tensors["0.images"].clone()
    tensors["0.images"].view(-1)[5] = float("nan")


def _identity(key: str, value: Any) -> Callable[[dict, dict], None]:
    def edit(doc: dict, tensors: dict) -> None:
        from fairdistill.checkpoint import config_hash

        doc["identity"][key] = value
        doc["config_hash"] = config_hash(doc["identity"])

    return edit


MOMENTUM = "0.opt.0.momentum_buffer"
CHECKPOINT_EDITS: dict[str, tuple[Callable[[dict, dict], None], str]] = {
    "lr is text": (_set(["methods", 0, "param_groups", 0, "lr"], "abc"), "param_groups.0.lr"),
    "lr is negative": (_set(["methods", 0, "param_groups", 0, "lr"], -1), "param_groups.0.lr"),
    "momentum is null": (_set(["methods", 0, "param_groups", 0, "momentum"], None), "momentum"),
    "nesterov is missing": (_drop(["methods", 0, "param_groups", 0, "nesterov"]), "nesterov"),
    "two parameters": (_set(["methods", 0, "param_groups", 0, "params"], [0, 1]), "parameters"),
    "momentum of the wrong shape": (_tensor(MOMENTUM, torch.zeros(10, 3, 8, 7)), "momentum_buffer"),
    "momentum of integers": (_tensor(MOMENTUM, torch.zeros(10, 3, 8, 8, dtype=torch.int32)), "momentum_buffer"),
    "images missing": (_tensor("0.images", None), "no images"),
    "images NaN": (_nan_images, "NaN"),
    "an unknown tensor": (_tensor("7.weird", torch.zeros(2)), "unexpected tensor"),
    "done is text": (_set(["done"], "x"), "done"),
    "done past total": (_set(["done"], 5), "past total"),
    "no methods": (_set(["methods"], []), "methods"),
    "method name a number": (_set(["methods", 0, "name"], 5), "name"),
    "identity missing": (_drop(["identity"]), "identity"),
    "unknown format": (_set(["format"], 99), "unknown checkpoint format"),
    "the old format": (_set(["format"], 1), "older fairdistill"),
    "last loss is text": (_set(["methods", 0, "extra", "last_loss"], "abc"), "last_loss"),
    "matched of the wrong shape": (_set(["methods", 0, "extra", "matched"], [[1]]), "matched"),
    "other settings": (_identity("distill_config", {}), "other settings"),
    "other dataset contents": (_identity("dataset_fingerprint", "0" * 16), "other contents of dataset 'digits-fg'"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_an_edited_checkpoint_is_refused_on_resume(pristine, tmp_path, case):
    edit, match = CHECKPOINT_EDITS[case]
    run = copy_run(pristine, tmp_path)
    path = run / CKPT
    tensors, meta = read_st(path)
    doc = json.loads(meta[CKPT_KEY])
    edit(doc, tensors)
    meta[CKPT_KEY] = json.dumps(doc)
    write_st(path, tensors, meta, CKPT_KEY, rehash=case != "the old format")
    before = files_under(run)
    assert_refused(cli_inprocess(*DISTILL, "--out", str(run), "--resume"), match, root=run, before=before)


@pytest.mark.parametrize(
    ("case", "text", "match"),
    [
        ("an edit without new hashes", None, "metadata does not match the hash"),
        ("hashes removed", "strip", "no content hash"),
        ("JSON nested 100,000 deep", deep(100_000), "levels deep"),
        ("a document that is a list", "[1, 2]", "unknown checkpoint format"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_a_checkpoint_document_that_is_not_one_is_refused(pristine, tmp_path, case, text, match):
    run = copy_run(pristine, tmp_path)
    path = run / CKPT
    tensors, meta = read_st(path)
    if text is None:  # a hand edit: lr changed, hashes left as they were
        doc = json.loads(meta[CKPT_KEY])
        _group(doc)["lr"] = 0.5
        meta[CKPT_KEY] = json.dumps(doc)
        path.write_bytes(st_save(tensors, metadata=meta))
    elif text == "strip":
        write_st(path, tensors, meta, CKPT_KEY, rehash=False)
    else:
        meta[CKPT_KEY] = text
        write_st(path, tensors, meta, CKPT_KEY)
    before = files_under(run)
    assert_refused(cli_inprocess(*DISTILL, "--out", str(run), "--resume"), match, root=run, before=before)


# ---- saved sets -----------------------------------------------------------------------------------------
def _labels(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    return lambda images, labels, meta: (images, fn(labels.clone()), meta)


def _images(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    return lambda images, labels, meta: (fn(images.clone()), labels, meta)


def _meta(fn: Callable[[dict], Any]) -> Callable:
    def edit(images, labels, meta):
        doc = json.loads(meta)
        out = fn(doc)
        return images, labels, json.dumps(doc if out is None else out)

    return edit


def _raw_meta(text: str) -> Callable:
    return lambda images, labels, meta: (images, labels, text)


def _poke(t: torch.Tensor, index: int, value: Any) -> torch.Tensor:
    t.view(-1)[index] = value
    return t


def _channels(c: int, stats: int) -> Callable:
    def edit(images, labels, meta):
        doc = json.loads(meta)
        doc["mean"], doc["std"] = [0.5] * stats, [0.5] * stats
        return images[:, :1].repeat(1, c, 1, 1), labels, json.dumps(doc)

    return edit


SET_EDITS: dict[str, tuple[Callable, str]] = {
    "a negative label": (_labels(lambda y: _poke(y, 0, -1)), "label -1"),
    "a label = the class count": (_labels(lambda y: _poke(y, 3, 10)), "label 10"),
    "2-D labels": (_labels(lambda y: y.view(-1, 1)), "one label per image"),
    "fewer labels than images": (_labels(lambda y: y[:4]), "one label per image"),
    "bool labels": (_labels(lambda y: y.bool()), "labels must be integers"),
    "float labels": (_labels(lambda y: y.float()), "labels must be integers"),
    "an empty set": (lambda x, y, m: (x[:0], y[:0], m), "empty"),
    "3-D images": (_images(lambda x: x[:, 0]), "(N, C, H, W)"),
    "float16 images": (_images(lambda x: x.half()), "float16"),
    "float64 images": (_images(lambda x: x.double()), "float64"),
    "uint8 images": (_images(lambda x: x.to(torch.uint8)), "uint8"),
    "a NaN image": (_images(lambda x: _poke(x, 7, float("nan"))), "NaN"),
    "an infinite image": (_images(lambda x: _poke(x, 7, float("inf"))), "NaN or infinite"),
    "2 channels": (_channels(2, 2), "channels"),
    "4 channels, 3 means": (_channels(4, 3), "mean has 3 values"),
    "metadata null": (_raw_meta("null"), "JSON object"),
    "metadata a list": (_raw_meta("[1, 2, 3]"), "JSON object"),
    "metadata nested 100,000 deep": (_raw_meta(deep(100_000)), "levels deep"),
    "metadata not JSON": (_raw_meta("{'mean': 1"), "not valid JSON"),
    "std Infinity": (_raw_meta('{"mean": [0.5, 0.5, 0.5], "std": [Infinity, 1, 1]}'), "not valid JSON"),
    "method a string": (_meta(lambda d: d.update(method="dm")), "method"),
    "mean null": (_meta(lambda d: d.update(mean=None)), "mean"),
    "mean of two": (_meta(lambda d: d.update(mean=[0.5, 0.5])), "mean has 2 values"),
    "mean of text": (_meta(lambda d: d.update(mean=["a", "b", "c"])), "mean"),
    "std zero": (_meta(lambda d: d.update(std=[0.5, 0, 0.5])), "std"),
    "class names a string": (_meta(lambda d: d.update(class_names="0123456789")), "class_names"),
    "class names of numbers": (_meta(lambda d: d.update(class_names=list(range(10)))), "class_names"),
    "fewer class names than labels": (_meta(lambda d: d.update(class_names=["a", "b"])), "out of range"),
    "dataset a number": (_meta(lambda d: d.update(dataset=7)), "dataset"),
    "ipc zero": (_meta(lambda d: d.update(ipc=0)), "ipc"),
}


def bad_set(pristine: Path, dest: Path, case: str) -> Path:
    """The pristine set with ``case`` applied, written as ``dest/set/synthetic.safetensors`` with matching hashes."""
    tensors, meta = read_st(pristine / "run" / "synthetic.safetensors")
    images, labels, text = SET_EDITS[case][0](tensors["images"], tensors["labels"], meta[SET_KEY])
    folder = dest / "set"
    folder.mkdir()
    write_st(folder / "synthetic.safetensors", {"images": images, "labels": labels}, {SET_KEY: text}, SET_KEY)
    return folder


COMMANDS = {
    "evaluate": lambda s, tmp: ["evaluate", str(s), *EVAL],
    "export dc-pt": lambda s, tmp: ["export", str(s), "--format", "dc-pt", "--out", str(tmp / "out.pt")],
    "export tensor": lambda s, tmp: ["export", str(s), "--format", "tensor", "--out", str(tmp / "tensors")],
    "export png": lambda s, tmp: ["export", str(s), "--format", "png", "--out", str(tmp / "pngs")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(SET_EDITS))
def test_a_malformed_saved_set_is_refused(pristine, tmp_path, case, command):
    folder = bad_set(pristine, tmp_path, case)
    before = files_under(tmp_path)
    outcome = cli_inprocess(*COMMANDS[command](folder, tmp_path))
    assert_refused(outcome, SET_EDITS[case][1], root=tmp_path, before=before)


@FUZZ
@given(data=st.data())
def test_a_bit_flip_anywhere_in_a_saved_set_is_refused(pristine, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        folder.mkdir()
        path = folder / "synthetic.safetensors"
        shutil.copy2(pristine / "run" / "synthetic.safetensors", path)
        flip(path, data.draw(st.integers(0, path.stat().st_size - 1), label="offset"), data.draw(st.integers(0, 7)))
        command = data.draw(st.sampled_from(sorted(COMMANDS)), label="command")
        before = files_under(tmp)
        assert_refused(cli_inprocess(*COMMANDS[command](folder, Path(tmp))), "corrupt", root=tmp, before=before)


def _set_folder(tmp_path, images, labels, doc):
    """A folder ``tmp_path/set`` holding one hand-written set with these tensors and metadata."""
    folder = tmp_path / "set"
    folder.mkdir()
    write_st(
        folder / "synthetic.safetensors", {"images": images, "labels": labels}, {SET_KEY: json.dumps(doc)}, SET_KEY
    )
    return folder


@pytest.mark.parametrize("command", ["evaluate", "export png"])
def test_a_label_of_a_billion_is_refused_within_the_memory_cap(pristine, tmp_path, command):
    """One flipped bit made a label of 10^9 (no class names): refused before anything is sized by it."""
    tensors, meta = read_st(pristine / "run" / "synthetic.safetensors")
    labels = tensors["labels"].clone()
    labels[0] = 10**9
    doc = {k: v for k, v in json.loads(meta[SET_KEY]).items() if k != "class_names"}
    folder = _set_folder(tmp_path, tensors["images"], labels, doc)
    before = files_under(tmp_path)
    assert_refused(cli(*COMMANDS[command](folder, tmp_path)), "label 1000000000", root=tmp_path, before=before)


def test_a_label_beyond_the_dataset_is_refused_by_evaluate(pristine, tmp_path):
    """The set's own checks pass (12 class names), the dataset it is evaluated on has 10 classes."""
    tensors, meta = read_st(pristine / "run" / "synthetic.safetensors")
    labels = tensors["labels"].clone()
    labels[-1] = 11
    doc = json.loads(meta[SET_KEY])
    doc["class_names"] = [str(c) for c in range(12)]
    folder = _set_folder(tmp_path, tensors["images"], labels, doc)
    assert_refused(cli_inprocess("evaluate", str(folder), *EVAL), "label 11 is out of range")


def test_a_set_written_before_the_hashes_loads_with_a_warning(pristine, tmp_path, caplog):
    from fairdistill.artifacts import load_synthetic

    tensors, meta = read_st(pristine / "run" / "synthetic.safetensors")
    path = tmp_path / "old.safetensors"
    write_st(path, tensors, meta, SET_KEY, rehash=False)
    with caplog.at_level(logging.WARNING, logger="fairdistill"):
        back = load_synthetic(path)
    assert torch.equal(back.images, tensors["images"])
    assert any("without content hashes" in r.getMessage() for r in caplog.records)


def test_a_malformed_set_in_a_compare_run_does_not_crash_the_report(compared, tmp_path):
    """A report falls back to the run's own grid.png (or refuses in one line), within the memory cap."""
    run = tmp_path / "cmp"
    shutil.copytree(compared, run)
    path = run / "vanilla" / "synthetic.safetensors"
    tensors, meta = read_st(path)
    labels = tensors["labels"].clone()
    labels[0] = 10**9
    doc = {k: v for k, v in json.loads(meta[SET_KEY]).items() if k != "class_names"}
    write_st(path, {"images": tensors["images"], "labels": labels}, {SET_KEY: json.dumps(doc)}, SET_KEY)
    outcome = cli("report", str(run), "--quiet")
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    if outcome.code != 0:
        assert_refused(outcome)


# ---- partial evaluation files -------------------------------------------------------------------------
def _row(key: str, value: Any) -> Callable[[dict], None]:
    return lambda doc: doc["models"]["0"]["report"].__setitem__(key, value)


def _sweep_identity(doc: dict) -> None:
    from fairdistill.checkpoint import config_hash

    doc["identity"]["dataset_fingerprint"] = "f" * 16
    doc["config_hash"] = config_hash(doc["identity"])


PARTIAL_EDITS: dict[str, tuple[Callable[[dict], None] | str, str]] = {
    "an ACC of 1e6": (_row("acc", 1e6), "acc"),
    "a negative ACC": (_row("acc", -1), "acc"),
    "a DEO_M of 101": (_row("deo_m", 101), "deo_m"),
    "an ACC of text": (_row("acc", "high"), "acc"),
    "a TPR of 1e6": (lambda d: d["models"]["0"]["report"]["tpr"][0].__setitem__(0, 1e6), "tpr"),
    "ragged TPR rows": (lambda d: d["models"]["0"]["report"]["tpr"][0].pop(), "tpr"),
    "a negative empty cell": (_row("empty_cells", [[-1, 0]]), "empty_cells"),
    "a report field missing": (lambda d: d["models"]["0"]["report"].pop("deo_a"), "deo_a"),
    "a seed of text": (lambda d: d["models"]["0"].__setitem__("seed", "abc"), "seed"),
    "a model index of text": (lambda d: d["models"].__setitem__("x", d["models"]["0"]), "models"),
    "models a list": (lambda d: d.__setitem__("models", [1, 2]), "models"),
    "an unknown format": (lambda d: d.__setitem__("format", 7), "unknown format"),
    "other dataset contents": (_sweep_identity, "other contents of dataset 'digits-fg'"),
    "a NaN literal": ('{"format": 1, "models": {"0": {"seed": 1, "report": {"acc": NaN}}}}', "not valid JSON"),
    "nested 100,000 deep": (deep(100_000), "levels deep"),
    "truncated": ("truncate", "not valid JSON"),
    "a 65 MB file": ("huge", "bytes"),
}


@pytest.mark.parametrize("case", list(PARTIAL_EDITS))
def test_a_bad_partial_evaluation_is_refused_on_resume(pristine, tmp_path, case):
    edit, match = PARTIAL_EDITS[case]
    run = copy_run(pristine, tmp_path)
    partial = tmp_path / "eval.partial.json"
    if edit == "truncate":
        partial.write_bytes(partial.read_bytes()[:200])
    elif edit == "huge":
        with partial.open("r+b") as fh:  # sparse: large on paper, nothing written
            fh.truncate(65 * 2**20)
    elif isinstance(edit, str):
        partial.write_text(edit)
    else:
        doc = json.loads(partial.read_text())
        edit(doc)
        partial.write_text(json.dumps(doc))
    before = files_under(tmp_path)
    outcome = cli_inprocess("evaluate", str(run), *EVAL, "--out", str(tmp_path / "eval.json"), "--resume")
    assert_refused(outcome, match, root=tmp_path, before=before)


# ---- the final files of a run ---------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".final." in p.name
    )


def test_a_kill_while_the_record_is_written_keeps_the_earlier_run_whole(pristine, tmp_path, monkeypatch):
    """Interrupted while writing record.json over an earlier run: the earlier set AND record stay, nothing else."""
    import fairdistill.api as fd
    import fairdistill.artifacts as artifacts

    run = copy_run(pristine, tmp_path)
    old = {name: (run / name).read_bytes() for name in ("synthetic.safetensors", "record.json", "grid.png")}
    real = artifacts.atomic_write_bytes

    def killed_at_the_record(path, data):
        if Path(path).name == "record.json":
            real(path, data[: len(data) // 2])  # a partial write, then the interruption
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(artifacts, "atomic_write_bytes", killed_at_the_record)
    with pytest.raises(KeyboardInterrupt):
        fd.distill("digits-fg", preset="vanilla", ipc=1, iterations=1, seed=5, device="cpu", out=run)
    assert {name: (run / name).read_bytes() for name in old} == old
    assert _leftovers(run) == []


def test_a_kill_between_the_moves_is_finished_by_the_next_reader(pristine, tmp_path):
    """SIGKILL after the commit point, with record.json not yet moved: export (a reader) finishes the move."""
    run = copy_run(pristine, tmp_path)
    record = json.loads((run / "record.json").read_text())
    unit = run / ".final.k1ll3d.ready"  # what the killed writer left: its unit, the set already moved out
    unit.mkdir()
    (unit / "record.json").write_text(json.dumps({**record, "written_by": "the new run"}))
    outcome = cli_inprocess("export", str(run), "--format", "dc-pt", "--out", str(tmp_path / "x.pt"))
    assert outcome.code == 0, outcome.stderr
    assert json.loads((run / "record.json").read_text()).get("written_by") == "the new run"
    assert _leftovers(run) == []


def test_a_kill_between_the_moves_of_a_compare_is_finished_by_the_report(compared, tmp_path):
    run = tmp_path / "cmp"
    shutil.copytree(compared, run)
    summary = json.loads((run / "summary.json").read_text())
    unit = run / ".final.k1ll3d.ready"
    (unit / "vanilla").mkdir(parents=True)
    (unit / "summary.json").write_text(json.dumps({**summary, "written_by": "the new run"}))
    outcome = cli_inprocess("report", str(run), "--quiet")
    assert outcome.code == 0, outcome.stderr
    assert json.loads((run / "summary.json").read_text()).get("written_by") == "the new run"
    assert not unit.exists()


def test_temporaries_left_by_a_killed_run_are_removed_by_the_next(pristine, tmp_path):
    run = copy_run(pristine, tmp_path)
    stale = [
        run / ".final.abc123.tmp" / "record.json",
        run / ".record.json.x1y2.tmp",
        run / ".synthetic.safetensors.x3y4.tmp",
        run / "checkpoint" / ".distill.safetensors.x5y6.tmp",
    ]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    outcome = cli_inprocess(*DISTILL, "--out", str(run), "--resume")  # at the last iteration: writes the final files
    assert outcome.code == 0, outcome.stderr
    assert _leftovers(run) == []


def test_ctrl_c_during_the_final_write_leaves_the_folder_as_it_was(pristine, tmp_path, monkeypatch):
    import fairdistill.api as fd

    run = copy_run(pristine, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def interrupted(fd_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fd.distill("digits-fg", ipc=1, iterations=2, device="cpu", out=run, checkpoint_every=1, resume=True)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("umask", [0o027, 0o002])
def test_artifacts_follow_the_umask(pristine, tmp_path, umask):
    run = copy_run(pristine, tmp_path)
    old = os.umask(umask)
    try:
        outcome = cli_inprocess(*DISTILL, "--out", str(run), "--resume")
    finally:
        os.umask(old)
    assert outcome.code == 0, outcome.stderr
    for name in ("synthetic.safetensors", "record.json", "grid.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask, name


# ---- non-finite images ------------------------------------------------------------------------------
VANILLA = ["distill", "--dataset", "digits-fg", "--preset", "vanilla-cpu", "--ipc", "1", "--iterations", "3"]
VANILLA += ["--device", "cpu", "--quiet"]


def _poison(monkeypatch, *, check: bool) -> None:
    """Make the images NaN during iteration 1 (the checkpoint of iteration 1 is then the last good one).

    ``check=False`` also skips the backbone's own NaN check, as a backbone without one would.
    """
    import fairdistill.backbones.engine as engine

    real = engine.total_and_check

    def poisoned(rt, name, loss, images, where):
        if where == "iteration 1":
            images.data.view(-1)[0] = float("nan")
        if check:
            return real(rt, name, loss, images, where)
        return float(loss)

    monkeypatch.setattr(engine, "total_and_check", poisoned)


def _checkpoint_done(run: Path) -> int:
    _, meta = read_st(run / CKPT)
    return json.loads(meta[CKPT_KEY])["done"]


@pytest.mark.parametrize("backbone_checks", [True, False])
def test_nan_images_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, backbone_checks):
    _poison(monkeypatch, check=backbone_checks)
    run = tmp_path / "run"
    outcome = cli_inprocess(*VANILLA, "--checkpoint-every", "1", "--out", str(run))
    assert_refused(outcome, "NaN")
    line = one_error(outcome)
    assert "the last good checkpoint (iteration 1) is kept at" in line and str(run / CKPT) in line, line
    assert _checkpoint_done(run) == 1
    assert not (run / "synthetic.safetensors").exists()


def test_nan_final_images_are_never_written(tmp_path, monkeypatch):
    _poison(monkeypatch, check=False)
    run = tmp_path / "run"
    outcome = cli_inprocess(*VANILLA, "--checkpoint-every", "0", "--out", str(run))
    assert_refused(outcome, "no set is written")
    assert not (run / "synthetic.safetensors").exists()
    assert _leftovers(run) == [] if run.exists() else True
