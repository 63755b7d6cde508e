"""The on-disk benchmarks through the command line: `datasets`, `datasets show`, and `compare` on fixture files."""

import json

import pytest
from files_mnist import write_mnist
from typer.testing import CliRunner

from fairdistill.cli import app

runner = CliRunner()

TINY = ["--ipc", "1", "--iterations", "2", "--models", "1", "--epochs", "2", "--device", "cpu", "--quiet"]


def test_datasets_lists_every_key_with_a_description():
    from fairdistill.data import DATASETS

    res = runner.invoke(app, ["datasets"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == len(DATASETS.list())
    for key in DATASETS.list():
        assert any(line.startswith(key + " ") and len(line.split()) > 3 for line in lines), key


def test_datasets_show_prints_train_and_test_count_tables(tmp_path):
    write_mnist(tmp_path, train_per_class=20, test_per_class=10)
    res = runner.invoke(app, ["datasets", "show", "cmnist-bg", "--data-root", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "train: 200 images" in res.output and "test: 100 images" in res.output
    rows = [line for line in res.output.splitlines() if line.startswith("│ 3 ")]
    assert len(rows) == 2
    train_row = [int(v) for v in rows[0].strip("│ ").replace("│", " ").split()[1:]]
    assert train_row[3] == 18 and train_row[-1] == 20  # 90% of class 3 in its own colour; row total
    test_row = [int(v) for v in rows[1].strip("│ ").replace("│", " ").split()[1:]]
    assert test_row == [1] * 10 + [10]


def test_datasets_show_missing_files_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["datasets", "show", "cmnist-fg", "--data-root", str(tmp_path)])
    assert res.exit_code == 2
    assert "expected <root>/MNIST/raw" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_compare_runs_end_to_end_on_cmnist_bg_fixture_files(tmp_path):
    write_mnist(tmp_path / "data", train_per_class=20, test_per_class=10)
    out = tmp_path / "run"
    args = ["compare", "--dataset", "cmnist-bg", "--data-root", str(tmp_path / "data"), *TINY, "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "cmnist-bg"
    assert set(summary["methods"]) == {"vanilla", "fairdd", "cobra", "fair", "random", "random-balanced", "full"}
    for m in summary["methods"].values():
        assert 0 <= m["acc"]["mean"] <= 100 and 0 <= m["deo_a"]["mean"] <= 100
    assert (out / "cobra" / "synthetic.safetensors").is_file()


@pytest.mark.slow
def test_compare_runs_end_to_end_on_cifar10_s_fixture_batches(tmp_path):
    from files_cifar import write_cifar_batches

    write_cifar_batches(tmp_path / "data", n_train_per_class=10, n_test_per_class=4)
    out = tmp_path / "run"
    args = ["compare", "--dataset", "cifar10-s", "--data-root", str(tmp_path / "data"), *TINY, "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "cifar10-s" and "cobra" in summary["methods"]
    cobra = summary["methods"]["cobra"]
    assert 0 <= cobra["acc"]["mean"] <= 100 and 0 <= cobra["deo_m"]["mean"] <= 100


@pytest.mark.slow
def test_compare_runs_end_to_end_on_bffhq_fixture_folders(tmp_path):
    from files_faces import write_bffhq

    write_bffhq(
        tmp_path / "data",
        align={(0, 0): 8, (1, 1): 8},
        conflict={(0, 1): 1, (1, 0): 1},
        test={(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2},
    )
    out = tmp_path / "run"
    args = ["compare", "--dataset", "bffhq", "--data-root", str(tmp_path / "data"), *TINY, "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "bffhq" and set(summary["methods"]) >= {"vanilla", "fairdd", "cobra"}
    assert (out / "cobra" / "grid.png").is_file()
