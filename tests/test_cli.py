"""The command line: user errors are one line with a non-zero exit; commands write what they promise."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fairdistill.cli import app

runner = CliRunner()

FAST = ["--dataset", "digits-fg", "--ipc", "2", "--iterations", "2", "--device", "cpu", "--quiet"]


def invoke(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "args,message",
    [
        (["distill", "--dataset", "nope"], "unknown dataset 'nope'; allowed:"),
        (["distill", "--dataset", "digits-fg", "--target", "median"], "unknown target 'median'; allowed:"),
        (["distill", "--dataset", "digits-fg", "--preset", "turbo"], "unknown preset 'turbo'; allowed:"),
        (["distill", "--dataset", "digits-fg", "--ipc", "0"], "ipc must"),
        (["distill", "--dataset", "digits-fg", "--ipc", "100000"], "ipc must lie in [1, "),
        (["distill", "--dataset", "digits-fg", "--data-root", "/no/such/folder"], "does not exist"),
        (["compare", "--dataset", "digits-fg", "--methods", "vanilla,magic"], "unknown method 'magic'; allowed:"),
        (
            ["compare", "--dataset", "digits-fg", "--preset", "tpu"],
            "unknown profile 'tpu'; allowed: cobra-paper, cpu, fairdd-paper, gpu",
        ),
        (["evaluate", "/no/such/set.safetensors"], "synthetic set not found"),
        (["distill", "--dataset", "digits-fg", "--device", "cuda:x"], "unknown device"),
        (["distill", "--dataset", "digits-fg", "--out", "/no/such/run", "--resume"], "no checkpoint to resume from"),
        (["evaluate", "/no/such/set.safetensors", "--resume"], "need an output folder"),
    ],
)
def test_user_errors_are_one_line(args, message):
    res = invoke(*args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_user_error_in_a_real_process_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "fairdistill", "compare", "--dataset", "imagenet-9000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown dataset 'imagenet-9000'" in proc.stderr and "Traceback" not in proc.stderr


def test_nan_synthetic_set_is_rejected(tmp_path):
    import torch

    from fairdistill.artifacts import SyntheticSet, save_synthetic

    x = torch.zeros(2, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    save_synthetic(SyntheticSet(x, torch.tensor([0, 1]), {"dataset": "digits-fg"}), tmp_path)
    res = invoke("evaluate", str(tmp_path), "--device", "cpu")
    assert res.exit_code == 2 and "NaN" in res.output and "Traceback" not in res.output


def test_distill_then_evaluate(tmp_path):
    out = tmp_path / "run"
    res = invoke("distill", *FAST, "--preset", "cobra-cpu", "--out", str(out))
    assert res.exit_code == 0, res.output
    for name in ("synthetic.safetensors", "record.json", "grid.png"):
        assert (out / name).is_file()
    assert (out / "checkpoint" / "distill.safetensors").is_file()  # --checkpoint-every 50: the last iteration
    record = json.loads((out / "record.json").read_text())
    assert record["synthetic"]["method"] == {
        "name": "cobra",
        "backbone": "dm",
        "target": "barycenter",
        "distance": "l1",
        "embedder": "warm",
        "sampling": None,
        "settings": {"init": "balanced"},  # our profiles start group targets from the balanced subset
    }
    assert record["preset"] == "cobra-cpu"
    res = invoke(
        "evaluate",
        str(out),
        "--models",
        "1",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(tmp_path / "eval.json"),
    )
    assert res.exit_code == 0, res.output
    assert "DEO_M" in res.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= ev["acc"]["mean"] <= 100 and len(ev["models"]) == 1


def test_compare_writes_summary(tmp_path):
    out = tmp_path / "cmp"
    res = invoke("compare", *FAST, "--models", "1", "--epochs", "2", "--out", str(out))
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "digits-fg" and summary["preset"] == "cpu"
    assert set(summary["methods"]) == {"vanilla", "fairdd", "cobra", "fair", "random", "random-balanced", "full"}
    for m in summary["methods"].values():
        for key in ("acc", "deo_m", "deo_a"):
            assert set(m[key]) >= {"mean", "std"} and 0 <= m[key]["mean"] <= 100
    for method in ("vanilla", "fairdd", "cobra"):
        assert (out / method / "synthetic.safetensors").is_file() and (out / method / "grid.png").is_file()
    for word in ("vanilla", "fairdd", "cobra", "random-balanced", "full", "ACC", "DEO_A"):
        assert word in res.output


def test_compare_and_evaluate_on_several_architectures(tmp_path):
    out = tmp_path / "cmp"
    tiny = ["--dataset", "digits-fg", "--ipc", "1", "--iterations", "2", "--models", "1", "--epochs", "2"]
    res = invoke(
        "compare",
        *tiny,
        "--methods",
        "vanilla,cobra",
        "--baselines",
        "random-balanced",
        "--eval-models",
        "convnet,alexnet",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_config"]["eval_models"] == ["convnet", "alexnet"]
    for m in summary["methods"].values():
        assert list(m["by_model"]) == ["convnet", "alexnet"]
        assert m["acc"] == m["by_model"]["convnet"]["acc"]  # the top level is the first architecture
    assert "convnet ·" in res.output and "alexnet ·" in res.output  # one table per architecture
    record = json.loads((out / "cobra" / "record.json").read_text())
    assert set(record["by_model"]) == {"convnet", "alexnet"}
    res = invoke(
        "evaluate",
        str(out / "cobra"),
        *("--models", "1", "--epochs", "2", "--eval-models", "alexnet,convnet", "--device", "cpu", "--quiet"),
        *("--out", str(tmp_path / "eval.json")),
    )
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["model"] == "alexnet" and list(ev["by_model"]) == ["alexnet", "convnet"]
    assert ev["by_model"]["convnet"]["acc"] == summary["methods"]["cobra"]["by_model"]["convnet"]["acc"]
    res = invoke("evaluate", str(out / "cobra"), "--eval-models", "convnet,lenet", "--device", "cpu", "--quiet")
    assert res.exit_code == 2 and "unknown model 'lenet'" in res.output


def test_listing_commands():
    res = invoke("datasets")
    assert res.exit_code == 0 and "cmnist-fg-mini" in res.output and "digits-fg" in res.output
    res = invoke("presets")
    assert res.exit_code == 0 and "cobra" in res.output and "barycenter + l1 + warm" in res.output
