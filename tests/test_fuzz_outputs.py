"""Fuzz suite, the output side: output paths, PNG export names, report labels and summaries, and the
numbers a command is given (issue 14, classes 3, 4, 7 and 9).

Every bad input must be refused the one way :func:`fuzzing.assert_refused` describes (exit code 2,
one ``error:`` line naming the problem, no traceback), leave no file behind, and be refused *before
any work*: the cases run with the loaders replaced by a tripwire (:func:`no_work`), so a refusal that
comes only after a dataset or a set was loaded fails as a traceback. Tables cover the known cases;
``hypothesis`` adds random huge or negative counts, random over-long names, random class names and
random bad summary values. The cases whose failure would exhaust memory (a label of 10^6) run in a
memory-capped subprocess (:func:`fuzzing.cli`); the rest in-process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from fuzzing import assert_refused, cli, cli_inprocess, files_under
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairdistill.artifacts import SyntheticSet, save_synthetic
from fairdistill.config import DistillConfig, EvalConfig
from fairdistill.errors import FairDistillError
from fairdistill.export import class_folders, export_synthetic

FAST = ["--dataset", "digits-fg", "--ipc", "1", "--iterations", "1", "--device", "cpu", "--quiet"]
TINY_EVAL = ["--models", "1", "--epochs", "1"]
BIG = str(10**30)
#: the documented bound of every count (fairdistill.config.MAX_COUNT)
MAX_COUNT = 10**9
#: the hypothesis settings of this module: few examples, no deadline, the same examples every run
FEW = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def saved_set(tmp_path_factory) -> Path:
    """A real distilled set (digits-fg, one image per class), made once."""
    out = tmp_path_factory.mktemp("fuzz-outputs") / "set"
    res = cli_inprocess("distill", *FAST, "--preset", "vanilla", "--checkpoint-every", "0", "--out", str(out))
    assert res.code == 0, res.stderr + res.stdout
    return out


@pytest.fixture(scope="session")
def compare_run(tmp_path_factory) -> Path:
    """A real compare run folder (one method, one baseline, no report), made once; cases copy it."""
    out = tmp_path_factory.mktemp("fuzz-outputs") / "cmp"
    args = ("--methods", "vanilla", "--baselines", "random", "--checkpoint-every", "0", "--no-report")
    res = cli_inprocess("compare", *FAST, *TINY_EVAL, *args, "--out", str(out))
    assert res.code == 0, res.stderr + res.stdout
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Path:
    """The current folder of a case: a regular file, a folder, a folder named like a file, a broken link."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    return tmp_path


class Loaded(AssertionError):
    """Raised by the tripwire: something was loaded before the input was refused."""


@pytest.fixture
def no_work(monkeypatch):
    """Replace every loader with a tripwire: a refusal must come before any data or set is read."""
    import fairdistill.api
    import fairdistill.artifacts
    import fairdistill.data
    import fairdistill.report

    def tripwire(*args, **kwargs):
        raise Loaded("data or a saved set was loaded before the bad input was refused")

    for module, name in (
        (fairdistill.api, "_dataset"),
        (fairdistill.api, "find_set"),  # evaluate reads a set (any layout) through it
        (fairdistill.artifacts, "load_synthetic"),
        (fairdistill.data, "load_dataset"),
        (fairdistill.report, "load_run"),
    ):
        monkeypatch.setattr(module, name, tripwire)


def _fill(args: list[str], root: Path, saved: Path | None = None) -> list[str]:
    return [a.format(tmp=root, set=saved) for a in args]


def _legacy_warning_dropped(outcome):
    """``outcome`` without the one warning a hand-written set (no content hashes) earns when it is read."""
    lines = [line for line in outcome.stderr.splitlines() if "without content hashes" not in line]
    return type(outcome)(outcome.code, outcome.stdout, "\n".join(lines) + "\n")


def _readonly_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: a chmod-ed one, or (as root, which chmod does not stop)
    a read-only mount; skipped when there is none."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro
    for candidate in ("/proc/sys", "/sys"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return Path(candidate)
    pytest.skip("running as root with no read-only folder to write into")


# ---- class 3: output paths, checked before any work ---------------------------------------------
LONG = "a" * 300
LONG_UTF8 = "é" * 150  # 300 bytes in UTF-8
DEEP = "/".join(["d" * 200] * 20)  # 4019 bytes: beyond what is allowed for an output path

OUT_CASES = [
    ("distill-empty", ["distill", *FAST, "--out", ""], "the path is empty"),
    ("distill-existing-file", ["distill", *FAST, "--out", "file.txt"], "file.txt: is a file, not a folder"),
    ("distill-under-a-file", ["distill", *FAST, "--out", "file.txt/run"], "file.txt is a file, not a folder"),
    ("distill-300-char-name", ["distill", *FAST, "--out", LONG], "300 bytes long"),
    ("distill-300-byte-name-inside", ["distill", *FAST, "--out", f"folder/{LONG_UTF8}/run"], "300 bytes long"),
    ("distill-path-too-long", ["distill", *FAST, "--out", DEEP], "bytes long, more than the"),
    ("distill-safetensors-name", ["distill", *FAST, "--out", "run.safetensors"], "ends in .safetensors"),
    ("distill-broken-link", ["distill", *FAST, "--out", "dangling"], "broken symbolic link"),
    ("compare-empty", ["compare", *FAST, *TINY_EVAL, "--out", ""], "the path is empty"),
    ("compare-existing-file", ["compare", *FAST, *TINY_EVAL, "--out", "file.txt"], "is a file, not a folder"),
    ("compare-json-name", ["compare", *FAST, *TINY_EVAL, "--out", "summary.json"], "ends in .json"),
    ("compare-300-char-name", ["compare", *FAST, *TINY_EVAL, "--out", LONG], "300 bytes long"),
    ("evaluate-existing-folder", ["evaluate", "{set}", "--device", "cpu", "--out", "folder"], "folder: is a folder"),
    ("evaluate-empty", ["evaluate", "{set}", "--device", "cpu", "--out", ""], "the path is empty"),
    ("evaluate-current-folder", ["evaluate", "{set}", "--device", "cpu", "--out", "."], ".: is a folder"),
    ("evaluate-under-a-file", ["evaluate", "{set}", "--out", "file.txt/eval.json"], "file.txt is a file, not a"),
    ("evaluate-name-too-long", ["evaluate", "{set}", "--out", "e" * 245 + ".json"], "is too long"),
    ("export-png-into-file", ["export", "{set}", "--format", "png", "--out", "file.txt"], "is a file, not a folder"),
    ("export-tensor-into-file", ["export", "{set}", "--format", "tensor", "--out", "file.txt"], "is a file"),
    ("export-dcpt-onto-folder", ["export", "{set}", "--format", "dc-pt", "--out", "folder.pt"], "is a folder"),
    ("export-empty", ["export", "{set}", "--format", "png", "--out", ""], "the path is empty"),
    ("export-png-file-name", ["export", "{set}", "--format", "png", "--out", "images.png"], "ends in .png"),
    ("export-under-a-file", ["export", "{set}", "--format", "png", "--out", "file.txt/png"], "is a file, not a"),
    ("export-300-char-name", ["export", "{set}", "--format", "tensor", "--out", LONG], "300 bytes long"),
    ("report-into-file", ["report", "{tmp}/run", "--out", "file.txt"], "is a file, not a folder"),
    ("report-empty", ["report", "{tmp}/run", "--out", ""], "the path is empty"),
    ("report-under-a-file", ["report", "{tmp}/run", "--out", "file.txt/rep"], "is a file, not a folder"),
    ("reproduce-into-file", ["reproduce", "--paper", "fairdd", "--device", "cpu", "--out", "file.txt"], "is a file"),
    ("reproduce-empty", ["reproduce", "--paper", "fairdd", "--device", "cpu", "--out", ""], "the path is empty"),
]


@pytest.mark.parametrize("args,match", [c[1:] for c in OUT_CASES], ids=[c[0] for c in OUT_CASES])
def test_bad_output_paths_are_refused_before_work(args, match, sandbox, saved_set, no_work):
    before = files_under(sandbox)
    start = time.perf_counter()
    outcome = cli_inprocess(*_fill(args, sandbox, saved_set))
    assert_refused(outcome, match, root=sandbox, before=before)
    assert time.perf_counter() - start < 10  # immediate (the tripwire is the real check)


@pytest.mark.parametrize(
    "args",
    [
        ["distill", *FAST, "--out", "{ro}/run"],
        ["compare", *FAST, *TINY_EVAL, "--out", "{ro}/cmp"],
        ["evaluate", "{set}", "--device", "cpu", "--out", "{ro}/eval.json"],
        ["export", "{set}", "--format", "png", "--out", "{ro}/png"],
        ["report", "{tmp}/run", "--out", "{ro}/rep"],
    ],
    ids=["distill", "compare", "evaluate", "export", "report"],
)
def test_a_read_only_parent_is_refused_before_work(args, sandbox, saved_set, no_work):
    ro = _readonly_folder(sandbox)
    try:
        before = files_under(sandbox)
        outcome = cli_inprocess(*[a.format(ro=ro, tmp=sandbox, set=saved_set) for a in args])
        assert_refused(outcome, "is not writable", root=sandbox, before=before)
    finally:
        if ro.is_relative_to(sandbox):
            ro.chmod(0o700)


@FEW
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=256))
def test_any_over_long_name_is_refused(name, sandbox, no_work):
    before = files_under(sandbox)
    outcome = cli_inprocess("distill", *FAST, f"--out={name}")
    assert_refused(outcome, "bytes long", root=sandbox, before=before)


def test_library_checks_outputs_too(sandbox, saved_set, no_work):
    """Python users get the same checks: the API functions check their output path first."""
    from fairdistill import api
    from fairdistill.report import report

    cases = [
        (lambda: api.distill("digits-fg", out="", device="cpu"), "the path is empty"),
        (lambda: api.distill("digits-fg", out="a\x00b", device="cpu"), "NUL byte"),
        (lambda: api.distill("digits-fg", out="file.txt", device="cpu"), "is a file, not a folder"),
        (lambda: api.compare("digits-fg", out=sandbox / "file.txt" / "x", device="cpu"), "is a file, not a"),
        (lambda: api.evaluate(saved_set, out=sandbox / "folder", device="cpu"), "is a folder"),
        (lambda: export_synthetic(_set(["a"]), sandbox / "file.txt", "png"), "is a file, not a folder"),
        (lambda: report(sandbox / "run", sandbox / "file.txt"), "is a file, not a folder"),
    ]
    before = files_under(sandbox)
    for call, match in cases:
        with pytest.raises(FairDistillError, match=re.escape(match)) as info:
            call()
        assert "\n" not in str(info.value)
    assert files_under(sandbox) == before


def test_a_refusal_in_a_real_process_is_one_line(tmp_path):
    """The same contract in a fresh, memory-capped process (no logging noise, no traceback)."""
    (tmp_path / "file.txt").write_text("x")
    outcome = cli("compare", *FAST, "--iterations", BIG, "--out", str(tmp_path / "file.txt"), cwd=tmp_path)
    assert_refused(outcome, "iterations must be at most", root=tmp_path, before={Path("file.txt")})


# ---- class 9: values -----------------------------------------------------------------------------
VALUE_CASES = [
    ("distill-iterations-huge", ["distill", *FAST, "--iterations", BIG], "iterations must be at most 1000000000"),
    ("distill-iterations-negative", ["distill", *FAST, "--iterations=-1"], "iterations must be >= 0"),
    ("distill-iterations-float", ["distill", *FAST, "--iterations", "1e30"], "Invalid value for '--iterations'"),
    ("distill-ipc-huge", ["distill", *FAST, "--ipc", BIG], "ipc must be at most"),
    ("distill-seed-negative", ["distill", *FAST, "--seed=-1"], "seed must lie in [0, 2^63 - 1]"),
    ("distill-seed-huge", ["distill", *FAST, "--seed", BIG], "seed must lie in [0, 2^63 - 1]"),
    ("distill-checkpoint-huge", ["distill", *FAST, "--checkpoint-every", BIG], "checkpoint_every must be at most"),
    ("distill-fraction-nan", ["distill", *FAST, "--group-label-fraction", "nan"], "must be a finite number"),
    ("distill-fraction-zero", ["distill", *FAST, "--group-label-fraction", "0"], "fraction must lie in (0, 1]"),
    ("distill-fraction-above-one", ["distill", *FAST, "--group-label-fraction", "1.5"], "must lie in (0, 1]"),
    ("distill-noise-inf", ["distill", *FAST, "--group-label-noise", "inf"], "noise must be a finite number"),
    ("distill-noise-negative", ["distill", *FAST, "--group-label-noise=-0.1"], "noise must lie in [0, 1]"),
    ("distill-unknown-option", ["distill", *FAST, "--nope"], "No such option: --nope"),
    ("compare-nothing-to-run", ["compare", *FAST, "--methods", "", "--baselines", ""], "nothing to run"),
    ("compare-models-huge", ["compare", *FAST, "--models", BIG], "num_models must be at most"),
    ("compare-models-zero", ["compare", *FAST, "--models", "0"], "num_models must be >= 1"),
    ("compare-epochs-huge", ["compare", *FAST, "--epochs", BIG], "epochs must be at most"),
    ("compare-iterations-huge", ["compare", *FAST, "--iterations", BIG], "iterations must be at most"),
    ("compare-workers-huge", ["compare", *FAST, "--eval-workers", BIG], "eval_workers must lie in [1, "),
    ("compare-fraction-nan", ["compare", *FAST, "--group-label-fraction", "nan"], "must be a finite number"),
    ("evaluate-epochs-huge", ["evaluate", "{set}", "--device", "cpu", "--epochs", BIG], "epochs must be at most"),
    ("evaluate-models-huge", ["evaluate", "{set}", "--device", "cpu", "--models", BIG], "num_models must be at"),
    ("evaluate-models-zero", ["evaluate", "{set}", "--device", "cpu", "--models", "0"], "num_models must be >= 1"),
    ("evaluate-seed-huge", ["evaluate", "{set}", "--device", "cpu", "--seed", BIG], "seed must lie in"),
    ("evaluate-workers-huge", ["evaluate", "{set}", "--eval-workers", BIG], "eval_workers must lie in"),
    ("reproduce-iterations-huge", ["reproduce", "--paper", "fairdd", "--iterations", BIG], "iterations must be at"),
    ("reproduce-epochs-huge", ["reproduce", "--paper", "fairdd", "--epochs", BIG], "epochs must be at most"),
    ("reproduce-ipc-huge", ["reproduce", "--paper", "fairdd", "--ipc", BIG], "ipc must be at most"),
    ("presets-ipc-huge", ["presets", "show", "cobra", "--ipc", BIG], "ipc must be at most"),
]


@pytest.mark.parametrize("args,match", [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES])
def test_bad_values_are_refused_before_work(args, match, sandbox, saved_set, no_work):
    before = files_under(sandbox)
    outcome = cli_inprocess(*_fill(args, sandbox, saved_set), *([] if args[0] == "presets" else ["--out", "o"]))
    assert_refused(outcome, match, root=sandbox, before=before)


@FEW
@given(n=st.integers(min_value=MAX_COUNT + 1, max_value=10**40) | st.integers(min_value=-(10**40), max_value=-1))
def test_any_unrepresentable_count_is_refused(n, sandbox, no_work):
    for option, name in (("--iterations", "iterations"), ("--epochs", "epochs"), ("--models", "num_models")):
        outcome = cli_inprocess("compare", *FAST, f"{option}={n}", "--out", "o")
        if name != "iterations" and n < 1:
            assert_refused(outcome, f"{name} must be >= 1")
        else:
            assert_refused(outcome, f"{name} must be")


PY_VALUE_CASES = [
    ({"lr_img": -1.0}, "lr_img must lie in (0, inf)"),
    ({"lr_img": 0.0}, "lr_img must lie in (0, inf)"),
    ({"lr_img": float("nan")}, "lr_img must be a finite number"),
    ({"lr_img": float("inf")}, "lr_img must be a finite number"),
    ({"lr_img": "1.0"}, "lr_img must be a number"),
    ({"img_momentum": 5.0}, "img_momentum must lie in [0, 1)"),
    ({"img_momentum": 1.0}, "img_momentum must lie in [0, 1)"),
    ({"img_momentum": -0.1}, "img_momentum must lie in [0, 1)"),
    ({"lr_net": -0.01}, "lr_net must lie in (0, inf)"),
    ({"warm_momentum": 2.0}, "warm_momentum must lie in [0, 1)"),
    ({"warm_weight_decay": float("nan")}, "warm_weight_decay must be a finite number"),
    ({"disc_temperature": 0.0}, "disc_temperature must lie in (0, inf)"),
    ({"disc_weight": float("-inf")}, "disc_weight must be a finite number"),
    ({"layer_weights": (1.0, float("nan"))}, "layer_weights[1] must be a finite number"),
    ({"batch_real": 10**30}, "batch_real must be at most"),
    ({"batch_real": 0}, "batch_real must be >= 1"),
    ({"iterations": 2.5}, "iterations must be an integer"),
    ({"iterations": True}, "iterations must be an integer"),
    ({"outer_loop": 10**30}, "outer_loop must be at most"),
]


@pytest.mark.parametrize("values,match", PY_VALUE_CASES, ids=[f"{k}={v[k]!r}" for v, _ in PY_VALUE_CASES for k in v])
def test_python_values_are_fairdistill_errors_before_work(values, match, no_work):
    """From Python the same values are FairDistillErrors from one place (the config's validation)."""
    from fairdistill import api

    with pytest.raises(FairDistillError, match=re.escape(match)) as info:
        api.distill("digits-fg", preset="vanilla", ipc=1, device="cpu", **values)
    assert "\n" not in str(info.value)
    with pytest.raises(FairDistillError, match=re.escape(match)):
        DistillConfig(**values).validate()


@pytest.mark.parametrize(
    "values,match",
    [
        ({"lr": -1.0}, "lr must lie in (0, inf)"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"momentum": 1.0}, "momentum must lie in [0, 1)"),
        ({"weight_decay": -1.0}, "weight_decay must lie in [0, inf)"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"epochs": 10**30}, "epochs must be at most"),
        ({"full_epochs": 0}, "full_epochs must be >= 1"),
        ({"num_models": 1.5}, "num_models must be an integer"),
        ({"seed": -1}, "seed must lie in [0, 2^63 - 1]"),
    ],
)
def test_evaluation_values_are_checked(values, match):
    with pytest.raises(FairDistillError, match=re.escape(match)):
        EvalConfig(**values).validate()


@FEW
@given(
    lr=st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not (math.isfinite(v) and v > 0)),
    momentum=st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v < 1),
)
def test_any_bad_rate_is_refused(lr, momentum):
    with pytest.raises(FairDistillError, match="lr_img must"):
        DistillConfig(lr_img=lr).validate()
    with pytest.raises(FairDistillError, match="img_momentum must"):
        DistillConfig(img_momentum=momentum).validate()
    with pytest.raises(FairDistillError, match="momentum must"):
        EvalConfig(momentum=momentum).validate()


def test_python_compare_and_evaluate_check_first(saved_set, no_work):
    from fairdistill import api

    with pytest.raises(FairDistillError, match="nothing to run"):
        api.compare("digits-fg", methods=[], baselines=[], device="cpu")
    with pytest.raises(FairDistillError, match="epochs must be at most"):
        api.evaluate(saved_set, epochs=10**30, device="cpu")
    with pytest.raises(FairDistillError, match="eval_workers must lie in"):
        api.evaluate(saved_set, eval_workers=10**6, device="cpu")


def test_huge_but_representable_counts_warn_once_in_one_line(caplog):
    """Valid but odd: accepted, with one warning line (said once, however often a config is validated)."""
    with caplog.at_level("WARNING", logger="fairdistill"):
        config = DistillConfig(iterations=3_000_017)
        config.validate()
        config.validate()
        EvalConfig(epochs=500_003, num_models=2_003).validate()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "iterations 3000017" in m]) == 1, messages
    assert any("epochs 500003" in m for m in messages) and any("num_models 2003" in m for m in messages)
    assert all("\n" not in m and "far beyond the usual" in m for m in messages)


# ---- class 4: PNG export names -------------------------------------------------------------------
def _set(names: list[str] | None, labels: list[int] | None = None, channels: int = 1) -> SyntheticSet:
    labels = list(range(len(names or [0]))) if labels is None else labels
    images = torch.rand(len(labels), channels, 4, 4)
    meta = {"dataset": "digits-fg", "mean": [0.5] * channels, "std": [0.25] * channels}
    if names is not None:
        meta["class_names"] = names
    return SyntheticSet(images, torch.tensor(labels), meta)


def _export(tmp_path: Path, synset: SyntheticSet, out: Path, fmt: str = "png"):
    saved = tmp_path / "saved"
    save_synthetic(synset, saved)
    return cli_inprocess("export", str(saved), "--format", fmt, "--out", str(out))


def test_colliding_class_names_get_suffixes_and_nothing_is_lost(tmp_path):
    out = tmp_path / "png"
    res = _export(tmp_path, _set(["x", "x_2", "x", "X", "x/"]), out)
    assert res.code == 0, res.stderr + res.stdout
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs == ["X_4/0.png", "x/0.png", "x_2/0.png", "x_3/0.png", "x_5/0.png"]
    meta = json.loads((out / "meta.json").read_text())
    assert [c["folder"] for c in meta["classes"]] == ["x", "x_2", "x_3", "X_4", "x_5"]
    assert sum(c["images"] for c in meta["classes"]) == len(pngs) == meta["num_images"]
    assert [c.get("renamed", False) for c in meta["classes"]] == [False, False, True, True, True]


def test_over_long_class_names_are_cut_and_stay_unique(tmp_path):
    out = tmp_path / "png"
    names = ["a" * 300, "a" * 300 + "b", "é" * 200]
    res = _export(tmp_path, _set(names), out)
    assert res.code == 0, res.stderr + res.stdout
    folders = [c["folder"] for c in json.loads((out / "meta.json").read_text())["classes"]]
    assert len(set(folders)) == 3 and all(len(f.encode()) <= 120 for f in folders)
    assert all((out / f / "0.png").is_file() for f in folders)


def test_class_folders_is_linear_in_the_class_count():
    start = time.perf_counter()
    folders = class_folders(["x"] * 40_000)
    assert time.perf_counter() - start < 3
    assert len(set(folders)) == 40_000 and folders[:3] == ["x", "x_2", "x_3"]


@FEW
@given(st.lists(st.text(max_size=300), max_size=40))
def test_any_class_names_give_unique_bounded_safe_folders(names):
    folders = class_folders(names)
    assert len(folders) == len(names)
    assert len({f.casefold() for f in folders}) == len(folders)
    for f in folders:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", f) and not f.startswith(".") and len(f.encode()) <= 120


def test_a_symlinked_folder_inside_out_is_refused(tmp_path):
    out, outside = tmp_path / "png", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "x").symlink_to(outside, target_is_directory=True)
    saved = tmp_path / "saved"
    save_synthetic(_set(["x", "y"]), saved)
    before = files_under(tmp_path)
    res = cli_inprocess("export", str(saved), "--format", "png", "--out", str(out))
    assert_refused(res, "is a symbolic link", root=tmp_path, before=before)
    assert not list(outside.iterdir())


def test_a_symlinked_file_inside_out_is_refused(tmp_path):
    out, secret = tmp_path / "t", tmp_path / "secret.txt"
    out.mkdir()
    secret.write_text("keep me")
    (out / "meta.json").symlink_to(secret)
    saved = tmp_path / "saved"
    save_synthetic(_set(["x"]), saved)
    for fmt in ("png", "tensor"):
        before = files_under(tmp_path)
        res = cli_inprocess("export", str(saved), "--format", fmt, "--out", str(out))
        assert_refused(res, "is a symbolic link", root=tmp_path, before=before)
    assert secret.read_text() == "keep me"


def test_out_itself_may_be_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    res = _export(tmp_path, _set(["x"]), tmp_path / "link")
    assert res.code == 0, res.stderr + res.stdout
    assert (real / "x" / "0.png").is_file()


def test_a_label_of_a_million_is_refused_without_allocating(tmp_path):
    """A saved set whose one label says 10^6 (ten class names): refused, in a memory-capped process, fast."""
    from safetensors.torch import save_file

    meta = {"dataset": "digits-fg", "mean": [0.5], "std": [0.25], "class_names": [str(i) for i in range(10)]}
    folder = tmp_path / "bad"
    folder.mkdir()
    labels = torch.tensor([0, 1, 10**6])
    save_file({"images": torch.rand(3, 1, 4, 4), "labels": labels}, folder / "synthetic.safetensors",
              metadata={"fairdistill": json.dumps(meta)})  # fmt: skip
    before = files_under(tmp_path)
    try:
        outcome = cli("export", str(folder), "--format", "png", "--out", str(tmp_path / "png"), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the export hung on a label of 10^6")
    assert_refused(_legacy_warning_dropped(outcome), root=tmp_path, before=before)


def test_labels_without_class_names_give_folders_for_the_labels_present(tmp_path):
    """No class names, one label of 10^9: a folder per label present, not 10^9 names (memory-capped)."""
    from safetensors.torch import save_file

    folder = tmp_path / "sparse"
    folder.mkdir()
    meta = {"dataset": "digits-fg", "mean": [0.5], "std": [0.25]}
    save_file({"images": torch.rand(2, 1, 4, 4), "labels": torch.tensor([0, 10**9])}, folder / "synthetic.safetensors",
              metadata={"fairdistill": json.dumps(meta)})  # fmt: skip
    outcome = cli("export", str(folder), "--format", "png", "--out", str(tmp_path / "png"), timeout=60)
    assert "Traceback" not in outcome.stderr and outcome.code in (0, 2), outcome.stderr[-2000:]
    if outcome.code == 2:  # the set loader may refuse a label beyond its image count: that is fine too
        assert_refused(_legacy_warning_dropped(outcome))
    else:
        assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0", "1000000000", "meta.json"]


# ---- class 7: reports ----------------------------------------------------------------------------
STAT = {"mean": 50.0, "std": 1.25}
ROW = {"acc": STAT, "deo_m": STAT, "deo_a": STAT, "worst_group_acc": STAT}


def _summary(**extra) -> dict:
    """A minimal valid summary, a fresh deep copy each time (cases edit it in place)."""
    return json.loads(json.dumps({"dataset": "d", "methods": {"m": {**ROW, "kind": "baseline"}}, **extra}))


def _write_run(folder: Path, summary: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return folder


MATH = ["$\\frac{a}{b}$", "$x^$", "50$ and 60$", "$", "a_b^c", "\\$\\alpha$", "$\\undefinedcommand$"]


def test_labels_are_shown_literally(tmp_path):
    """Class, group and method names with mathtext in them are drawn as text, not parsed (nor crash)."""
    classes, groups = MATH[:3], MATH[3:5]
    tpr = [[50.0, 60.0, 70.0], [10.0, 20.0, None]]
    summary = {
        "dataset": "$d$",
        "methods": {
            MATH[5]: {**ROW, "kind": "baseline", "tpr_mean": tpr},
            "_starts_with_underscore": {**ROW, "kind": "baseline"},
            MATH[6]: {**ROW, "kind": "baseline"},
        },
        "data": {"class_names": classes, "group_names": groups, "train_counts": [[1, 2], [3, 4], [5, 6]]},
    }
    run = _write_run(tmp_path / "run", summary)
    res = cli_inprocess("report", str(run), "--out", str(tmp_path / "rep"), "--quiet")
    assert res.code == 0, res.stderr + res.stdout
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    for name in (*classes, *groups, MATH[5], MATH[6], "_starts_with_underscore"):
        assert name in html or name.replace("&", "&amp;") in html
    assert len(list((tmp_path / "rep" / "report-figures").glob("*.png"))) == 3  # TPR, scatter, composition


#: names with a $...$ pair around TeX-ish text: most are invalid mathtext, all must be drawn as they are
MATHY = st.builds(
    lambda a, b: f"{a}${b}$",
    st.text(st.sampled_from("ab _"), max_size=4),
    st.text(st.sampled_from("\\^_{}ab"), min_size=1, max_size=6),
)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(names=st.lists(MATHY, min_size=2, max_size=2))
def test_any_label_is_drawn(names, tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    summary = {
        "dataset": names[0],
        "methods": {names[0]: {**ROW, "kind": "baseline", "tpr_mean": [[50.0, 40.0]]}},
        "data": {"class_names": names, "group_names": [names[1]], "train_counts": [[1], [2]]},
    }
    from fairdistill.report import report

    written = report(_write_run(folder / "run", summary), folder / "rep")
    assert written.html.is_file() and len(written.figures) == 3


def _mutate(path: str, value):
    def apply(summary: dict) -> dict:
        *parents, last = path.split(".")
        node = summary
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
        return summary

    return apply


_DELETE = object()
SUMMARY_CASES = [
    ("mean-string", _mutate("methods.m.acc.mean", "abc"), "methods.m.acc.mean"),
    ("mean-bool", _mutate("methods.m.acc.mean", True), "methods.m.acc.mean"),
    ("mean-list", _mutate("methods.m.deo_m.mean", [1, 2]), "methods.m.deo_m.mean"),
    ("mean-a-million", _mutate("methods.m.acc.mean", 1e6), "less than or equal to 100"),
    ("mean-negative", _mutate("methods.m.deo_a.mean", -3.0), "methods.m.deo_a.mean"),
    ("mean-missing", _mutate("methods.m.acc.mean", _DELETE), "Field required"),
    ("std-string", _mutate("methods.m.acc.std", "x"), "methods.m.acc.std"),
    ("worst-group-string", _mutate("methods.m.worst_group_acc.mean", "x"), "worst_group_acc"),
    ("metric-not-a-table", _mutate("methods.m.deo_m", 5), "lacks the acc / deo_m / deo_a results"),
    ("kind-unknown", _mutate("methods.m.kind", "magic"), "methods.m.kind"),
    ("tpr-strings", _mutate("methods.m.tpr_mean", [["a"]]), "tpr_mean"),
    ("by-model-list", _mutate("methods.m.by_model", [1]), "by_model"),
    ("counts-negative", _mutate("data.train_counts", [[-1]]), "data.train_counts"),
    ("counts-string", _mutate("data.train_counts", "abc"), "data.train_counts"),
    ("class-names-object", _mutate("data.class_names", {"a": 1}), "data.class_names"),
    ("group-labels-number", _mutate("group_labels", 5), "group_labels"),
    ("group-labels-groups-number", _mutate("group_labels.groups", 5), "group_labels.groups"),
    ("seconds-list", _mutate("seconds", [1, 2]), "seconds"),
    ("eval-config-list", _mutate("eval_config", [1]), "eval_config"),
    ("methods-list", _mutate("methods", [1]), "no 'methods' table"),
    ("methods-empty", _mutate("methods", {}), "no 'methods' table"),
]


@pytest.mark.parametrize("mutate,match", [c[1:] for c in SUMMARY_CASES], ids=[c[0] for c in SUMMARY_CASES])
def test_bad_summary_values_are_one_line_errors(mutate, match, tmp_path):
    run = _write_run(tmp_path / "run", mutate(_summary()))
    before = files_under(tmp_path)
    outcome = cli_inprocess("report", str(run), "--out", str(tmp_path / "rep"))
    assert_refused(outcome, match, root=tmp_path, before=before)


@pytest.mark.parametrize(
    "text,match",
    [
        (json.dumps(_summary()).replace("50.0", "1e999", 1), "finite"),
        (json.dumps(_summary()).replace("50.0", "NaN", 1), "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ("{not json", "not valid JSON"),
    ],
    ids=["overflowing-number", "nan-literal", "nested-100000", "not-json"],
)
def test_malformed_summaries_are_one_line_errors(text, match, tmp_path):
    run = _write_run(tmp_path / "run", text)
    before = files_under(tmp_path)
    assert_refused(
        cli_inprocess("report", str(run), "--out", str(tmp_path / "rep")), match, root=tmp_path, before=before
    )


@FEW
@given(
    value=st.one_of(
        st.text(max_size=20),
        st.booleans(),
        st.floats(min_value=100.001, max_value=1e300),
        st.floats(max_value=-0.001, min_value=-1e300),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    field=st.sampled_from(["acc", "deo_m", "deo_a", "worst_group_acc"]),
)
def test_any_bad_metric_value_is_refused(value, field, tmp_path_factory):
    folder = tmp_path_factory.mktemp("summary")
    run = _write_run(folder / "run", _mutate(f"methods.m.{field}.mean", value)(_summary()))
    assert_refused(cli_inprocess("report", str(run), "--out", str(folder / "rep")), f"methods.m.{field}.mean")
    assert not (folder / "rep").exists()


def _raw_set(folder: Path, meta, labels: torch.Tensor, images: torch.Tensor | None = None) -> None:
    """A synthetic.safetensors written by hand, bypassing every check of the writer."""
    from safetensors.torch import save_file

    images = torch.rand(len(labels), 1, 8, 8) if images is None else images
    save_file({"images": images, "labels": labels}, folder / "synthetic.safetensors",
              metadata={"fairdistill": json.dumps(meta)})  # fmt: skip


@pytest.mark.parametrize("damage", ["garbage-bytes", "metadata-a-list", "mean-null", "label-beyond-classes"])
def test_a_malformed_set_in_a_method_folder_is_skipped_with_a_note(damage, compare_run, tmp_path):
    """The report is still written; the method's grid is left out (or its grid.png shown), and says why.

    The label-beyond-classes case runs in a memory-capped process: drawing a grid with a row per
    class up to a label of 10^6 once crashed matplotlib (a segmentation fault, not even a traceback).
    """
    run = tmp_path / "run"
    shutil.copytree(compare_run, run)
    target = run / "vanilla"
    names = [str(i) for i in range(10)]
    if damage == "garbage-bytes":
        (target / "synthetic.safetensors").write_bytes(b"\x00garbage" * 10)
    elif damage == "metadata-a-list":
        _raw_set(target, [1, 2], torch.arange(10))
    elif damage == "mean-null":
        _raw_set(target, {"mean": None, "std": None, "class_names": names}, torch.arange(10))
    else:
        _raw_set(target, {"mean": [0.5], "std": [0.25], "class_names": names}, torch.tensor([0, 5, 10**6]))
    (target / "grid.png").unlink()
    args = ("report", str(run), "--out", str(tmp_path / "rep"), "--quiet")
    res = cli(*args, timeout=60) if damage == "label-beyond-classes" else cli_inprocess(*args)
    assert res.code == 0 and "Traceback" not in res.stderr, res.stderr[-3000:] + res.stdout
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "vanilla: synthetic set skipped" in md


def test_a_symlink_inside_the_report_folder_is_refused(tmp_path):
    run = _write_run(tmp_path / "run", _summary())
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "report-figures").symlink_to(outside, target_is_directory=True)
    before = files_under(tmp_path)
    assert_refused(cli_inprocess("report", str(run)), "is a symbolic link", root=tmp_path, before=before)
    assert not list(outside.iterdir())
