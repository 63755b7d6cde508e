"""Resuming: a killed or interrupted run continues to exactly the result of an uninterrupted one.

Also: settings that differ from the checkpoint's are refused, corrupt checkpoints give a clear error,
nothing half-written is left behind, and the run records hold the configuration hash, one row per
evaluation model, phase timings and the environment.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import fairdistill.api as fd
from fairdistill.artifacts import load_synthetic
from fairdistill.checkpoint import DISTILL_FILE, load_checkpoint, save_checkpoint
from fairdistill.cli import app
from fairdistill.errors import FairDistillError

runner = CliRunner()
TINY = dict(ipc=2, device="cpu", batch_real=16, model_kwargs={"width": 8})


class Interrupt(Exception):
    """Stands for Ctrl-C / a crash at a chosen point of a run."""


def stop_at(phase_prefix, n):
    """A progress hook that raises once ``phase_prefix`` reaches ``n`` done."""

    def hook(phase, done, total):
        if phase.startswith(phase_prefix) and done >= n:
            raise Interrupt(f"{phase} {done}/{total}")

    return hook


def ckpt_file(out):
    return out / "checkpoint" / DISTILL_FILE


def temporaries(folder):
    return [p for p in folder.rglob("*.tmp")]


# ---- distillation: killed process, resumed ---------------------------------------------------------
CLI_ARGS = [
    "distill",
    "--dataset",
    "digits-fg",
    "--preset",
    "cobra-cpu",
    "--ipc",
    "2",
    "--iterations",
    "12",
    "--seed",
    "3",
    "--device",
    "cpu",
    "--quiet",
    "--checkpoint-every",
    "2",
]


def test_killed_distill_process_resumes_bit_identical(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairdistill", *CLI_ARGS, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not ckpt_file(killed).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert not (killed / "synthetic.safetensors").exists()
    state, doc = load_checkpoint(ckpt_file(killed))
    assert 2 <= state.done < 12 and doc["done"] == state.done

    # the resumed run and an uninterrupted one (here in-process, one torch thread as in the child)
    res = runner.invoke(app, [*CLI_ARGS, "--out", str(killed), "--resume"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*CLI_ARGS, "--out", str(whole)])
    assert res.exit_code == 0, res.output
    a, b = load_synthetic(killed), load_synthetic(whole)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.meta["final_loss"] == b.meta["final_loss"]
    record = json.loads((killed / "record.json").read_text())
    assert record["resumed_from_iteration"] == state.done
    assert not temporaries(killed)  # a write cut by SIGKILL is cleaned up on resume


# ---- distillation: in-process interruption, every backbone ----------------------------------------
BACKBONE_RUNS = {
    "dm": dict(preset="cobra", iterations=5, warm_epochs=1),
    "dc": dict(preset="cobra", backbone="dc", iterations=4, outer_loop=2, inner_loop=1),
    "idc": dict(preset="cobra", backbone="idc", iterations=4, outer_loop=2, inner_loop=1, factor=2),
    "cafe": dict(preset="fairdd", backbone="cafe", iterations=5, outer_loop=2, inner_loop=2),
    "mtt": dict(
        preset="cobra", backbone="mtt", iterations=5, syn_steps=2, expert_epochs=1, max_start_epoch=1,
        num_experts=2, expert_train_epochs=2, lr_img=100.0,
    ),  # fmt: skip
}


@pytest.mark.parametrize("backbone", list(BACKBONE_RUNS))
def test_interrupted_distill_resumes_bit_identical(tmp_path, backbone):
    kw = {**TINY, **BACKBONE_RUNS[backbone]}
    part, whole = tmp_path / "part", tmp_path / "whole"
    # stop during iteration 3: the checkpoint holds iteration 2; the third is redone on resume
    with pytest.raises(Interrupt):
        fd.distill("digits-fg", out=part, checkpoint_every=1, progress=stop_at("distill", 3), **kw)
    assert load_checkpoint(ckpt_file(part))[0].done == 2
    resumed = fd.distill("digits-fg", out=part, checkpoint_every=1, resume=True, **kw)
    straight = fd.distill("digits-fg", out=whole, **kw)
    assert torch.equal(resumed.images, straight.images)
    for key in ("final_loss", "final_feature_loss", "inner_epochs", "inner_stop_reasons", "stored_images", "step_size"):
        assert resumed.meta.get(key) == straight.meta.get(key), key
    assert torch.equal(load_synthetic(part).images, straight.images)
    assert not temporaries(tmp_path)


def test_the_optimizer_state_matters(tmp_path):
    """Resuming without the momentum buffers gives other images: the checkpoint must (and does) carry them."""
    kw = {**TINY, "preset": "vanilla", "iterations": 4}
    with pytest.raises(Interrupt):
        fd.distill("digits-fg", out=tmp_path, checkpoint_every=2, progress=stop_at("distill", 3), **kw)
    path = ckpt_file(tmp_path)
    state, doc = load_checkpoint(path)
    assert any("momentum_buffer" in s for m in state.methods.values() for s in m.optimizer["state"].values())
    straight = fd.distill("digits-fg", **kw)
    assert torch.equal(fd.distill("digits-fg", out=tmp_path, resume=True, **kw).images, straight.images)
    for m in state.methods.values():
        m.optimizer["state"] = {}
    save_checkpoint(path, state, doc["identity"])
    assert not torch.equal(fd.distill("digits-fg", out=tmp_path, resume=True, **kw).images, straight.images)


def test_a_finished_checkpoint_reproduces_the_result(tmp_path):
    kw = {**TINY, "preset": "vanilla", "iterations": 3}
    first = fd.distill("digits-fg", out=tmp_path, checkpoint_every=2, **kw)
    assert load_checkpoint(ckpt_file(tmp_path))[0].done == 3  # the last iteration is always saved
    again = fd.distill("digits-fg", out=tmp_path, resume=True, **kw)
    assert torch.equal(first.images, again.images) and again.meta["final_loss"] == first.meta["final_loss"]


# ---- refusals and corrupt files -----------------------------------------------------------------------
def test_resume_with_other_settings_is_refused(tmp_path):
    kw = {**TINY, "preset": "vanilla", "iterations": 2}
    fd.distill("digits-fg", out=tmp_path, checkpoint_every=1, **kw)
    with pytest.raises(FairDistillError, match=r"other settings \(distill_config.iterations: 2 -> 3\)"):
        fd.distill("digits-fg", out=tmp_path, resume=True, **{**kw, "iterations": 3})
    with pytest.raises(FairDistillError, match="other settings.*target"):
        fd.distill("digits-fg", out=tmp_path, resume=True, **{**kw, "target": "barycenter"})
    with pytest.raises(FairDistillError, match="other settings.*seed"):
        fd.distill("digits-fg", out=tmp_path, resume=True, **{**kw, "seed": 1})


CLI_FAST = ["--dataset", "digits-fg", "--ipc", "2", "--iterations", "2", "--device", "cpu", "--quiet"]


def _one_line_error(res, message):
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_resume_errors(tmp_path):
    out = tmp_path / "run"
    base = ["distill", *CLI_FAST, "--preset", "vanilla-cpu", "--out", str(out)]
    _one_line_error(runner.invoke(app, [*base, "--resume"]), "no checkpoint to resume from")
    assert runner.invoke(app, base).exit_code == 0
    _one_line_error(runner.invoke(app, [*base, "--seed", "5", "--resume"]), "belongs to a run with other settings")
    path = ckpt_file(out)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _one_line_error(runner.invoke(app, [*base, "--resume"]), "is corrupt or truncated")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    _one_line_error(runner.invoke(app, [*base, "--resume"]), "is corrupt or truncated")
    _one_line_error(runner.invoke(app, ["distill", *CLI_FAST, "--checkpoint-every", "-1"]), "checkpoint_every")
    _one_line_error(
        runner.invoke(app, ["compare", *CLI_FAST, "--out", str(tmp_path / "none"), "--resume"]), "nothing to resume"
    )


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    kw = {**TINY, "preset": "vanilla", "iterations": 2}
    fd.distill("digits-fg", out=tmp_path, checkpoint_every=1, **kw)
    path = ckpt_file(tmp_path)
    before = path.read_bytes()
    stale = path.parent / ".distill.safetensors.killed.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(before[:100])

    def broken_fsync(fd_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full") as err:
        fd.distill("digits-fg", out=tmp_path, checkpoint_every=1, **{**kw, "seed": 9})
    assert any(entry.name == "save_checkpoint" for entry in err.traceback)  # it failed writing the checkpoint
    assert path.read_bytes() == before  # the old checkpoint survives a failed write whole
    assert not temporaries(tmp_path)  # the stale file was swept, the failed one removed
    monkeypatch.undo()
    fd.distill("digits-fg", out=tmp_path, resume=True, **kw)  # and it still resumes


# ---- evaluation sweeps ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synset():
    return fd.distill("digits-fg", preset="vanilla", iterations=1, **TINY)


class CountTraining:
    def __init__(self, monkeypatch):
        import fairdistill.evaluate as ev

        self.calls = 0
        real = ev.train

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(ev, "train", counted)


def _strip(record):
    volatile = {"seconds", "timings", "environment", "synthetic", "resumed_models"}
    return {k: v for k, v in record.items() if k not in volatile}


def test_interrupted_evaluation_resumes_without_retraining(tmp_path, synset, monkeypatch):
    kw = dict(num_models=3, epochs=2, device="cpu", seed=4)
    with pytest.raises(Interrupt):
        fd.evaluate(synset, out=tmp_path / "cut.json", progress=stop_at("evaluate", 1), **kw)
    partial = json.loads((tmp_path / "cut.partial.json").read_text())
    assert list(partial["models"]) == ["0"]  # model 1 of 3 finished before the interruption
    with pytest.raises(FairDistillError, match="other settings.*epochs"):
        fd.evaluate(synset, out=tmp_path / "cut.json", resume=True, **{**kw, "epochs": 3})
    count = CountTraining(monkeypatch)
    resumed = fd.evaluate(synset, out=tmp_path / "cut.json", resume=True, **kw)
    assert count.calls == 2  # models 2 and 3; model 1 is not retrained
    straight = fd.evaluate(synset, out=tmp_path / "whole.json", **kw)
    assert count.calls == 5
    assert resumed.seeds == straight.seeds
    assert json.dumps(resumed.to_dict()["models"]) == json.dumps(straight.to_dict()["models"])
    a = json.loads((tmp_path / "cut.json").read_text())
    b = json.loads((tmp_path / "whole.json").read_text())
    assert a["resumed_models"] == [0] and b["resumed_models"] == []
    assert _strip(a) == _strip(b)
    assert not temporaries(tmp_path)


def test_interrupted_compare_resumes_identically(tmp_path, monkeypatch):
    kw = dict(
        methods=["vanilla", "fairdd"],
        baselines=["random"],
        ipc=2,
        iterations=3,
        num_models=2,
        epochs=2,
        device="cpu",
        batch_real=16,
        model_kwargs={"width": 8},
    )
    with pytest.raises(Interrupt):  # the distillation has finished, fairdd's first model too
        fd.compare("digits-fg", out=tmp_path / "cut", checkpoint_every=2, progress=stop_at("evaluate fairdd", 1), **kw)
    count = CountTraining(monkeypatch)
    resumed = fd.compare("digits-fg", out=tmp_path / "cut", checkpoint_every=2, resume=True, **kw)
    assert count.calls == 3  # fairdd's second model and random's two; the distillation is not redone
    assert resumed.summary["resumed_from_iteration"] == 3
    assert resumed.summary["resumed_models"] == {"vanilla": [0, 1], "fairdd": [0], "random": []}
    straight = fd.compare("digits-fg", out=tmp_path / "whole", **kw)
    for name in ("vanilla", "fairdd"):
        assert torch.equal(resumed.synthetic[name].images, straight.synthetic[name].images)
    a = json.loads((tmp_path / "cut" / "summary.json").read_text())
    b = json.loads((tmp_path / "whole" / "summary.json").read_text())
    volatile = {"seconds", "timings", "environment", "resumed_models", "resumed_from_iteration", "checkpoint"}
    assert {k: v for k, v in a.items() if k not in volatile} == {k: v for k, v in b.items() if k not in volatile}


# ---- run records -----------------------------------------------------------------------------------
def test_distill_record_hash_timings_environment(tmp_path):
    kw = {**TINY, "preset": "vanilla", "iterations": 1}
    records = []
    for name, extra in (("a", {}), ("b", {}), ("c", {"lr_img": 0.5})):
        fd.distill("digits-fg", out=tmp_path / name, **kw, **extra)
        records.append(json.loads((tmp_path / name / "record.json").read_text()))
    a, b, c = records
    assert len(a["config_hash"]) == 64 and a["config_hash"] == b["config_hash"] != c["config_hash"]
    cfg = a["config"]
    assert cfg["command"] == "distill" and cfg["dataset"] == "digits-fg" and cfg["backbone"] == "dm"
    assert cfg["distill_config"]["iterations"] == 1 and cfg["methods"][0]["name"] == "vanilla"
    assert {"preset", "seconds", "synthetic", "environment"} <= set(a)  # what was there before stays
    assert set(a["timings"]) == {"load data", "distill", "write"}
    env = a["environment"]
    assert {"fairdistill", "torch", "python", "platform", "device", "threads"} <= set(env)
    assert env["device"] == "cpu" and env["threads"] >= 1


def test_evaluate_and_compare_records_hold_model_rows(tmp_path, synset):
    fd.evaluate(synset, num_models=2, epochs=1, device="cpu", out=tmp_path / "e.json")
    ev = json.loads((tmp_path / "e.json").read_text())
    assert len(ev["config_hash"]) == 64 and ev["config"]["eval_config"]["num_models"] == 2
    assert ev["config"]["synthetic"]["method"]["name"] == "vanilla"
    rows = ev["rows"]
    assert len(rows) == 2 and rows[0]["seed"] != rows[1]["seed"]
    for row in rows:
        assert {"seed", "architecture", "acc", "deo_m", "deo_a", "worst_group_acc", "suff_m", "suff_a"} <= set(row)
        assert row["architecture"] == "convnet" and isinstance(row["empty_cells"], int)
    assert ev["aggregates"]["acc"]["mean"] == pytest.approx(sum(r["acc"] for r in rows) / 2)
    assert set(ev["timings"]) == {"load data", "evaluate"} and ev["environment"]["device"] == "cpu"

    cmp = fd.compare(
        "digits-fg",
        methods=["vanilla"],
        baselines=["random"],
        ipc=2,
        iterations=1,
        num_models=1,
        epochs=1,
        device="cpu",
        out=tmp_path / "cmp",
        batch_real=16,
        model_kwargs={"width": 8},
    )
    s = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert s["config_hash"] == cmp.summary["config_hash"] and len(s["config_hash"]) == 64
    assert s["config"]["eval_config"]["num_models"] == 1 and s["config"]["baselines"] == ["random"]
    assert [(r["set"], r["index"]) for r in s["rows"]] == [("vanilla", 0), ("random", 0)]
    assert set(s["aggregates"]) == {"vanilla", "random"}
    assert {"load data", "distill", "evaluate vanilla", "evaluate random", "write"} <= set(s["timings"])
    assert {"methods", "seconds", "distill_config", "method_specs"} <= set(s)  # the existing fields stay
    per_method = json.loads((tmp_path / "cmp" / "vanilla" / "record.json").read_text())
    assert len(per_method["rows"]) == 1 and per_method["rows"][0]["set"] == "vanilla"


def test_sweep_over_several_architectures_resumes_by_global_model_index(digits, cpu):
    from fairdistill.config import EvalConfig
    from fairdistill.evaluate import evaluate_images

    x, y = digits.train.images[:40], digits.train.labels[:40]
    cfg = EvalConfig(num_models=2, epochs=1, eval_models=("convnet", "alexnet"), model_kwargs={"width": 8})
    told: list[int] = []
    full = evaluate_images(x, y, digits, cfg, device=cpu, on_model=lambda j, s, r: told.append(j))
    assert told == [0, 1, 2, 3]  # convnet 0, 1 then alexnet 0, 1
    done = {0: full.by_model["convnet"].reports[0], 3: full.by_model["alexnet"].reports[1]}
    told.clear()
    again = evaluate_images(x, y, digits, cfg, device=cpu, done=done, on_model=lambda j, s, r: told.append(j))
    assert told == [1, 2]  # only the models not done are trained
    for arch in ("convnet", "alexnet"):
        assert [r.acc for r in again.by_model[arch].reports] == [r.acc for r in full.by_model[arch].reports]
        assert again.by_model[arch].seeds == full.by_model[arch].seeds
