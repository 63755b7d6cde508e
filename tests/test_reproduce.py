"""`fairdistill reproduce`: the published tables as package data, row selection, skipping, the side-by-side files."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from files_mnist import write_mnist
from typer.testing import CliRunner

from fairdistill import reproduce as rep
from fairdistill.errors import FairDistillError
from fairdistill.reproduce import PublishedRow, paper_method, published_rows, reproduce, select_rows

ROOT = Path(__file__).resolve().parents[1]


def row(paper, dataset, method, ipc=10):
    found = [r for r in published_rows(paper) if (r.dataset, r.method, r.ipc) == (dataset, method, ipc)]
    assert len(found) == 1, found
    return found[0]


# ---- the CSVs ---------------------------------------------------------------------------------------
def test_published_spot_cells():
    r = row("fairdd", "cmnist-bg", "dm+fairdd")
    assert (r.acc, r.deo_m, r.deo_a, r.table) == (94.88, 13.42, 6.77, "1+2")
    assert (r.backbone, r.name, r.kind, r.eod) == ("dm", "fairdd", "distilled", None)
    r = row("fairdd", "cfmnist-fg", "dc")
    assert (r.acc, r.deo_m, r.deo_a) == (60.77, 99.40, 78.96)
    r = row("fairdd", "cifar10-s", "dm+fairdd", ipc=100)
    assert (r.acc, r.deo_m, r.deo_a) == (61.33, 14.77, 5.89)
    r = row("cobra", "cifar10-s", "dm+cobra", ipc=100)
    assert (r.acc, r.eod, r.eod_scale, r.deo_m, r.deo_a) == (62.4, 9.37, "deo_m", None, None)
    r = row("cobra", "cmnist-fg", "dm+fairdd")
    assert (r.acc, r.eod, r.eod_scale) == (94.0, 7.26, "uncertain")
    r = row("cobra", "cifar10-s", "dc+cobra", ipc=50)
    assert (r.acc, r.eod, r.eod_scale, r.backbone, r.name) == (46.6, 26.18, "deo_m", "dc", "cobra")


def test_whole_rows_and_the_uncertain_cell():
    r = row("fairdd", "cfmnist-bg", "whole", ipc=None)
    assert (r.deo_m, r.deo_a, r.acc, r.kind, r.name) == (91.4, 51.68, 77.97, "reference", "full")
    whole = {r.dataset: (r.deo_m, r.deo_a, r.acc) for r in published_rows("fairdd") if r.method == "whole"}
    assert whole == {
        "cmnist-fg": (10.1, 5.89, 97.71),
        "cmnist-bg": (9.7, 5.78, 97.80),
        "cfmnist-fg": (79.2, 41.72, 82.94),
        "cfmnist-bg": (91.4, 51.68, 77.97),
        "cifar10-s": (49.72, 33.17, 69.78),
        "celeba": (24.85, 24.16, 74.09),
        "utkface": (39.0, 24.0, 78.67),
        "bffhq": (66.4, 55.2, 71.40),
    }
    flagged = [r for r in published_rows() if r.uncertain]
    assert [(r.paper, r.dataset, r.method, r.acc, r.uncertain) for r in flagged] == [
        ("fairdd", "cifar10-s", "dc", 37.88, ("acc",))
    ]
    assert "uncertain" in flagged[0].remark()


def test_table_sizes_and_columns():
    fairdd, cobra = published_rows("fairdd"), published_rows("cobra")
    assert len(fairdd) == 47 + 8 and len(cobra) == 28
    assert all(r.deo_m is not None and r.deo_a is not None and r.eod is None for r in fairdd)
    assert all(r.eod is not None and r.eod_scale in ("deo_m", "uncertain") for r in cobra)
    scales = {r.dataset: r.eod_scale for r in cobra}
    assert scales["cifar10-s"] == scales["bffhq"] == "deo_m"
    assert {scales[d] for d in ("cmnist-fg", "cmnist-bg", "cfmnist-fg", "cfmnist-bg", "utkface")} == {"uncertain"}
    assert published_rows() == fairdd + cobra
    assert all(isinstance(r, PublishedRow) for r in fairdd)
    with pytest.raises(AttributeError):  # frozen
        fairdd[0].acc = 1.0  # type: ignore[misc]


def test_csvs_ship_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.csv" in config["tool"]["setuptools"]["package-data"]["fairdistill.published"]
    folder = ROOT / "src" / "fairdistill" / "published"
    assert {p.name for p in folder.glob("*.csv")} == set(rep.PAPERS.values())
    header = (folder / "cobra.csv").read_text().splitlines()[0]
    assert header == "paper,table,dataset,ipc,method,eod,acc,eod_scale"
    header = (folder / "fairdd.csv").read_text().splitlines()[0]
    assert header.startswith("paper,table,dataset,ipc,method,deo_m,deo_a,acc")


# ---- names and selection ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,ours",
    [
        ("dm", ("dm", "vanilla")),
        ("dm+fairdd", ("dm", "fairdd")),
        ("dm+cobra", ("dm", "cobra")),
        ("dc", ("dc", "vanilla")),
        ("dc+fairdd", ("dc", "fairdd")),
        ("dc+cobra", ("dc", "cobra")),
        ("random", (None, "random")),
        ("whole", (None, "full")),
    ],
)
def test_paper_method_names(method, ours):
    assert paper_method(method) == ours


def test_paper_method_rejects_unknown():
    with pytest.raises(FairDistillError, match="unknown published method"):
        paper_method("dm+magic")


def test_select_rows():
    rows = select_rows("fairdd", datasets=["cmnist-fg"], ipc=10)
    assert [r.method for r in rows] == ["random", "dm", "dm+fairdd", "dc", "dc+fairdd", "whole"]
    rows = select_rows("fairdd", datasets="cmnist-fg,cifar10-s", backbones=["dm"], ipc=50)
    assert [(r.dataset, r.method) for r in rows] == [
        ("cmnist-fg", "dm"),
        ("cmnist-fg", "dm+fairdd"),
        ("cifar10-s", "dm"),
        ("cifar10-s", "dm+fairdd"),
        ("cmnist-fg", "whole"),
        ("cifar10-s", "whole"),
    ]
    rows = select_rows("fairdd", ipc=10)
    assert {r.dataset for r in rows} == {r.dataset for r in published_rows("fairdd")}
    assert {r.backbone for r in rows if r.kind == "distilled"} == {"dm", "dc"}
    rows = select_rows("cobra", ipc=100)
    assert [(r.dataset, r.method) for r in rows] == [
        ("cifar10-s", "dm"),
        ("cifar10-s", "dm+fairdd"),
        ("cifar10-s", "dm+cobra"),
        ("bffhq", "dm"),
        ("bffhq", "dm+cobra"),
    ]
    assert [r.method for r in select_rows("cobra", ipc=50)] == ["dc", "dc+fairdd", "dc+cobra"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"paper": "nope"}, "unknown paper 'nope'; allowed: cobra, fairdd"),
        ({"paper": "cobra", "datasets": ["celeba"]}, "dataset 'celeba' is not in the cobra table; allowed: cifar10-s"),
        ({"paper": "fairdd", "datasets": ["mnist"]}, "allowed: cmnist-fg, cmnist-bg, cfmnist-fg, cfmnist-bg"),
        ({"paper": "fairdd", "backbones": ["idc"]}, "backbone 'idc' is not in the fairdd table; allowed: dm, dc"),
        ({"paper": "fairdd", "ipc": 20}, "the fairdd table has no rows at IPC 20; allowed: 10, 50, 100"),
        ({"paper": "fairdd", "ipc": 50, "datasets": ["celeba"]}, "no rows for celeba at IPC 50; datasets with"),
        ({"paper": "cobra", "backbones": ["dc"]}, "no dc rows at IPC 10; backbones with rows at IPC 10: dm"),
        ({"paper": "fairdd", "scale": "gpu"}, "unknown scale 'gpu'; allowed: cpu, paper"),
    ],
)
def test_selection_errors_list_the_allowed_values(kwargs, message, monkeypatch):
    monkeypatch.setattr("fairdistill.data.load_dataset", _no_load)
    paper = kwargs.pop("paper")
    with pytest.raises(FairDistillError, match=re.escape(message)):
        reproduce(paper, **kwargs)


def _no_load(*args, **kwargs):
    raise AssertionError("a selection error must come before any data is loaded")


def test_published_values_by_eod_scale():
    pub = row("cobra", "cifar10-s", "dm+cobra").published()
    assert pub == {"acc": 44.5, "deo_m": 20.18, "deo_a": None}
    pub = row("cobra", "cmnist-bg", "dm+cobra").published()
    assert pub == {"acc": 94.5, "deo_m": 7.04, "deo_a": 7.04}
    assert "scale uncertain (DEO_M or DEO_A)" in row("cobra", "cmnist-bg", "dm+cobra").remark()
    assert row("cobra", "cmnist-bg", "dm+cobra").uncertain_metrics() == ("deo_m", "deo_a")
    assert row("cobra", "bffhq", "dm").uncertain_metrics() == ()


# ---- runs with a fake compare ---------------------------------------------------------------------------
OURS = {
    "vanilla": (30.0, 99.0, 90.0),
    "fairdd": (90.0, 20.0, 10.0),
    "cobra": (91.0, 15.0, 8.0),
    "random": (28.0, 100.0, 98.0),
    "random-balanced": (85.0, 30.0, 14.0),
}


class FakeCompare:
    """Stands in for fairdistill.api.compare: records the calls, returns a summary shaped like the real one."""

    def __init__(self, reductions=("ConvNet width 128 -> 32", "evaluation <b>epochs</b> & 1000 -> 200")):
        self.calls = []
        self.reductions = list(reductions)

    def __call__(self, dataset, **kw):
        self.calls.append({"dataset": dataset, **kw})
        names = [*kw["methods"], *kw["baselines"]]
        methods = {
            n: {
                "acc": {"mean": OURS[n][0], "std": 1.0},
                "deo_m": {"mean": OURS[n][1], "std": 2.0},
                "deo_a": {"mean": OURS[n][2], "std": 0.5},
                "worst_group_acc": {"mean": 1.0, "std": 0.0},
                "kind": "baseline" if n in kw["baselines"] else "distilled",
            }
            for n in names
        }
        summary = {
            "dataset": getattr(dataset, "name", dataset),
            "preset": kw["preset"],
            "backbone": kw["backbone"],
            "ipc": kw["ipc"],
            "methods": methods,
            "eval_config": {"num_models": 2},
            "scale": {"name": kw["scale"], "reductions": self.reductions if kw["scale"] == "cpu" else []},
        }
        return SimpleNamespace(summary=summary, dataset=summary["dataset"], report=None)


@pytest.fixture
def fake(monkeypatch):
    f = FakeCompare()
    monkeypatch.setattr("fairdistill.api.compare", f)
    return f


@pytest.fixture
def mnist_root(tmp_path):
    root = tmp_path / "data"
    write_mnist(root, train_per_class=20, test_per_class=10)
    return root


def by_key(result):
    return {(c.dataset, c.backbone, c.method): c for c in result.rows}


def test_skipped_when_the_data_is_not_on_disk(tmp_path, fake):
    out = tmp_path / "out"
    result = reproduce("fairdd", datasets=["cmnist-fg", "cifar10-s"], data_root=tmp_path, out=out, device="cpu")
    assert fake.calls == [] and result.rows == [] and result.groups == []
    assert [(s.dataset, s.backbone) for s in result.skipped] == [
        ("cmnist-fg", "dm"),
        ("cmnist-fg", "dc"),
        ("cifar10-s", "dm"),
        ("cifar10-s", "dc"),
    ]
    first = result.skipped[0]
    assert first.methods == ("dm", "dm+fairdd", "random")
    assert first.reason == "dataset 'cmnist-fg': files not found" and "\n" not in first.reason
    assert "MNIST/raw" in first.detail
    record = json.loads((out / "reproduce.json").read_text())
    assert record["skipped"][2]["reason"].startswith("dataset 'cifar10-s'")
    assert record["skipped"][0]["published"][1]["acc"] == 94.61
    md = (out / "reproduce.md").read_text()
    assert "## Skipped" in md and "files not found" in md


def test_side_by_side_with_a_fake_compare(tmp_path, fake, mnist_root):
    out = tmp_path / "out"
    seen = []
    result = reproduce(
        "fairdd",
        datasets="cmnist-fg",
        scale="cpu",
        data_root=mnist_root,
        out=out,
        seed=3,
        device="cpu",
        progress=lambda *a: seen.append(a),
        iterations=2,
    )
    # one compare per (dataset, backbone), the contract's arguments
    # FairDD's table has no COBRA rows: the fairdd-paper profile still runs cobra (on FairDD's schedule)
    assert [(c["backbone"], c["methods"]) for c in fake.calls] == [
        ("dm", ["vanilla", "fairdd", "cobra"]),
        ("dc", ["vanilla", "fairdd", "cobra"]),
    ]
    call = fake.calls[0]
    assert call["dataset"].name == "cmnist-fg"
    assert call["baselines"] == ["random", "random-balanced"]
    assert (call["preset"], call["scale"], call["ipc"], call["seed"], call["device"]) == (
        "fairdd-paper",
        "cpu",
        10,
        3,
        "cpu",
    )
    assert (call["out"], call["report"], call["iterations"], call["data_root"]) == (
        out / "cmnist-fg-dm",
        False,
        2,
        mnist_root,
    )
    call["progress"]("distill", 1, 2)
    assert seen == [("cmnist-fg dm: distill", 1, 2)]

    rows = by_key(result)
    c = rows[("cmnist-fg", "dm", "dm+fairdd")]
    assert c.ours_name == "fairdd" and c.status == "published"
    assert c.published == {"acc": 94.61, "deo_m": 17.04, "deo_a": 7.95}
    assert c.ours["acc"] == {"mean": 90.0, "std": 1.0}
    assert c.difference["acc"] == pytest.approx(90.0 - 94.61)
    assert c.difference["deo_m"] == pytest.approx(20.0 - 17.04)
    assert c.difference["deo_a"] == pytest.approx(10.0 - 7.95)
    c = rows[("cmnist-fg", "dc", "dc")]
    assert c.difference["acc"] == pytest.approx(30.0 - 71.41)
    c = rows[("cmnist-fg", "dm", "random")]
    assert c.published["acc"] == 30.75 and c.difference["acc"] == pytest.approx(28.0 - 30.75)
    ours = rows[("cmnist-fg", "dc", "random-balanced")]
    assert ours.status == "ours" and ours.published == {"acc": None, "deo_m": None, "deo_a": None}
    assert ours.ours["acc"]["mean"] == 85.0 and ours.difference == {"acc": None, "deo_m": None, "deo_a": None}
    extra = rows[("cmnist-fg", "dm", "cobra")]
    assert extra.status == "ours" and extra.published["acc"] is None and "not in the paper's table" in extra.remark
    whole = rows[("cmnist-fg", None, "whole")]
    assert whole.status == "reference" and whole.ours is None and whole.published["acc"] == 97.71
    assert [c.method for c in result.rows] == [
        *("dm", "dm+fairdd", "cobra", "random", "random-balanced"),
        *("dc", "dc+fairdd", "cobra", "random", "random-balanced"),
        "whole",
    ]
    assert result.reductions == fake.reductions and result.skipped == []

    record = json.loads((out / "reproduce.json").read_text())
    assert record["paper"] == "fairdd" and record["command"] == "reproduce"
    assert record["settings"]["scale"] == "cpu" and record["settings"]["overrides"] == {"iterations": 2}
    assert record["settings"]["profile"] == "fairdd-paper" and record["settings"]["seed"] == 3
    assert record["scale"]["name"] == "cpu" and record["scale"]["reductions"] == fake.reductions
    assert record["scale"]["by_backbone"] == {"dm": fake.reductions, "dc": fake.reductions}
    assert [g["summary_path"] for g in record["groups"]] == ["cmnist-fg-dm/summary.json", "cmnist-fg-dc/summary.json"]
    assert all(g["seconds"] >= 0 and g["scale"]["name"] == "cpu" for g in record["groups"])
    assert "torch" in record["environment"] and record["environment"]["device"] == "cpu"
    jrow = next(r for r in record["rows"] if r["method"] == "dm+fairdd")
    assert jrow["difference"]["acc"] == pytest.approx(90.0 - 94.61)
    assert jrow["ours"]["deo_m"] == {"mean": 20.0, "std": 2.0} and jrow["published"]["deo_m"] == 17.04

    md = (out / "reproduce.md").read_text()
    first_table = next(line for line in md.splitlines() if line.startswith("|"))
    assert first_table.startswith("| dataset | backbone | method | published ACC | published DEO_M | published DEO_A")
    assert "| cmnist-fg | dm | dm+fairdd | 94.61 | 17.04 | 7.95 | 90.00 ± 1.00 | 20.00 ± 2.00 | 10.00 ± 0.50 |" in md
    assert "-4.61 | +2.96 | +2.05" in md
    assert "random-balanced (ours)" in md and "ConvNet width 128 -> 32" in md

    page = (out / "reproduce.html").read_text()
    first = page[page.index("<table") : page.index("</table>")]
    assert "published ACC" in first and "dm+fairdd" in first and "random-balanced (ours)" in first
    assert "<script" not in page and "href=" not in page and "src=" not in page and "<link" not in page
    assert "<style>" in page
    assert "&lt;b&gt;epochs&lt;/b&gt; &amp; 1000" in page and "<b>epochs</b>" not in page
    assert "evaluation &lt;b>epochs&lt;/b> &amp; 1000" in md  # no raw HTML in the Markdown either


def test_fashion_background_is_built_with_the_reference_pixels(tmp_path, fake):
    """The papers measured C-FMNIST BG with their code's uint8-wrapped pixels, not our intended blend."""
    root = tmp_path / "data"
    write_mnist(root, "FashionMNIST/raw", train_per_class=20, test_per_class=10)
    out = tmp_path / "out"
    reproduce("fairdd", datasets="cfmnist-bg,cfmnist-fg", backbones="dm", data_root=root, out=out, device="cpu")
    built = {c["dataset"].name: c["dataset"] for c in fake.calls}
    assert built["cfmnist-bg"].params["fmnist_bg"] == "reference"
    assert "fmnist_bg" not in built["cfmnist-fg"].params
    record = json.loads((out / "reproduce.json").read_text())
    assert record["settings"]["dataset_options"] == {"cfmnist-bg": {"fmnist_bg": "reference"}}
    assert (
        "- cfmnist-bg built with: fmnist_bg=reference (the reference code's pixels)"
        in (out / "reproduce.md").read_text()
    )


def test_cobra_eod_against_deo_m_or_both(tmp_path, fake, mnist_root):
    result = reproduce("cobra", datasets=["cmnist-fg"], data_root=mnist_root, device="cpu")
    assert fake.calls[0]["methods"] == ["vanilla", "fairdd", "cobra"] and fake.calls[0]["preset"] == "cobra-paper"
    assert fake.calls[0]["scale"] == "paper" and fake.calls[0]["out"] is None
    assert result.files == {} and result.reductions == []
    c = by_key(result)[("cmnist-fg", "dm", "dm+cobra")]
    assert c.published == {"acc": 94.1, "deo_m": 6.71, "deo_a": 6.71}
    assert c.difference["deo_m"] == pytest.approx(15.0 - 6.71)
    assert c.difference["deo_a"] == pytest.approx(8.0 - 6.71)
    assert "scale uncertain (DEO_M or DEO_A)" in c.remark
    assert rep.published_cells(c) == ["94.10", "6.71?", "6.71?"]
    assert by_key(result)[("cmnist-fg", "dm", "random")].status == "ours"  # COBRA reports no random subset
    # a DEO_M-scale row (CIFAR10-S) compares EOD with our DEO_M only
    methods = fake("x", methods=["cobra"], baselines=[], preset="p", backbone="dm", ipc=10, scale="paper").summary
    c = rep._comparison("cifar10-s", "dm", row("cobra", "cifar10-s", "dm+cobra"), "cobra", methods["methods"])
    assert c.difference["deo_m"] == pytest.approx(15.0 - 20.18) and c.difference["deo_a"] is None
    assert c.remark == "EOD on the DEO_M scale"


def test_nan_means_give_no_difference():
    methods = {"vanilla": {m: {"mean": math.nan, "std": math.nan} for m in ("acc", "deo_m", "deo_a")}}
    c = rep._comparison("cmnist-fg", "dm", row("fairdd", "cmnist-fg", "dm"), "vanilla", methods)
    assert c.difference == {"acc": None, "deo_m": None, "deo_a": None}
    assert rep.ours_cells(c)[0] == "nan"


# ---- the command line ---------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_prints_the_table_reductions_and_skips(tmp_path, fake, mnist_root):
    from fairdistill.cli import app

    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "reproduce", "--paper", "fairdd", "--datasets", "cmnist-fg,cifar10-s", "--backbones", "dm",
            "--scale", "cpu", "--data-root", str(mnist_root), "--out", str(out), "--device", "cpu",
            "--iterations", "2", "--models", "1", "--epochs", "3", "-q",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "dm+fairdd" in res.output and "random-balanced (ours)" in res.output
    assert "reduced settings (scale cpu)" in res.output and "ConvNet width 128 -> 32" in res.output
    assert "skipped cifar10-s / dm" in res.output and "files not found" in res.output
    assert [c["backbone"] for c in fake.calls] == ["dm"]
    assert (fake.calls[0]["iterations"], fake.calls[0]["num_models"], fake.calls[0]["epochs"]) == (2, 1, 3)
    assert (out / "reproduce.json").is_file() and (out / "reproduce.html").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--paper", "nope"], "unknown paper 'nope'; allowed: cobra, fairdd"),
        (["--paper", "cobra", "--datasets", "celeba"], "dataset 'celeba' is not in the cobra table"),
        (["--paper", "fairdd", "--backbones", "cafe"], "backbone 'cafe' is not in the fairdd table; allowed: dm, dc"),
        (["--paper", "cobra", "--ipc", "1"], "no rows at IPC 1; allowed: 10, 50, 100"),
    ],
)
def test_cli_errors_are_one_line(args, message, tmp_path):
    from fairdistill.cli import app

    res = runner.invoke(app, ["reproduce", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


# ---- one real run -------------------------------------------------------------------------------------
def test_end_to_end_on_idx_files(tmp_path):
    """The real compare, cut to seconds: 2 iterations, 1 evaluation model of 2 epochs."""
    root = tmp_path / "data"
    write_mnist(root, train_per_class=30, test_per_class=10)
    out = tmp_path / "out"
    result = reproduce(
        "fairdd",
        datasets=["cmnist-fg"],
        backbones=["dm"],
        scale="cpu",
        data_root=root,
        out=out,
        device="cpu",
        iterations=2,
        num_models=1,
        epochs=2,
    )
    assert [c.method for c in result.rows] == ["dm", "dm+fairdd", "cobra", "random", "random-balanced", "whole"]
    for c in result.rows[:4]:
        assert c.ours is not None and set(c.ours) == {"acc", "deo_m", "deo_a"}
        assert 0.0 <= c.ours["acc"]["mean"] <= 100.0
    dm = result.rows[0]
    assert dm.difference["acc"] == pytest.approx(dm.ours["acc"]["mean"] - 25.01)
    assert (out / "cmnist-fg-dm" / "summary.json").is_file()
    record = json.loads((out / "reproduce.json").read_text())
    assert record["groups"][0]["summary_path"] == "cmnist-fg-dm/summary.json" and record["groups"][0]["seconds"] > 0
    assert result.reductions and record["scale"]["reductions"] == result.reductions
    assert result.groups[0].profile == "fairdd-paper"
    md = (out / "reproduce.md").read_text()
    first_table = md[md.index("| dataset |") : md.index("\n\n", md.index("| dataset |"))]
    assert first_table.count("| cmnist-fg |") == 6
    assert "## Reduced settings (scale cpu)" in md


def test_reductions_by_backbone_when_they_differ(tmp_path, monkeypatch, mnist_root):
    fake = FakeCompare()

    def compare(dataset, **kw):
        fake.reductions = [f"iterations {'20000' if kw['backbone'] == 'dm' else '1000'} -> 10"]
        return fake(dataset, **kw)

    monkeypatch.setattr("fairdistill.api.compare", compare)
    result = reproduce("fairdd", datasets=["cmnist-fg"], scale="cpu", data_root=mnist_root, device="cpu")
    assert result.reductions == ["iterations 20000 -> 10", "iterations 1000 -> 10"]
    assert rep.reductions_text(result) == ["dm: iterations 20000 -> 10", "dc: iterations 1000 -> 10"]
