"""The report: one offline HTML file and Markdown from compare runs; compare writes it unless told not to."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairdistill.cli import app
from fairdistill.errors import FairDistillError
from fairdistill.evaluate import format_mean_std
from fairdistill.report import MissingDependencyError, report

runner = CliRunner()

TINY = "--dataset digits-fg --ipc 2 --iterations 2 --models 1 --epochs 2 --device cpu".split()
METHODS = ("vanilla", "fairdd", "cobra", "fair")  # compare's default methods
BASELINES = ("random", "random-balanced", "full")
SECTIONS = ("methods", "grids", "tpr", "scatter", "composition")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The parts of a report page the tests look at: ids, headings, images, tables by section, tags."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self.tables: dict[str, list[list[list[str]]]] = {}  # innermost section id -> tables -> rows -> cells
        self._sections: list[str] = []
        self._heading: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "section":
            self._sections.append(attrs.get("id", ""))
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.setdefault(self._sections[-1] if self._sections else "", []).append([])
        elif tag == "tr":
            self._current_table().append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "section":
            self._sections.pop()
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None:
            self._current_table()[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        for sink in (self._heading, self._cell):
            if sink is not None:
                sink.append(data)

    def _current_table(self):
        return self.tables[self._sections[-1] if self._sections else ""][-1]


def _check_png(data: bytes) -> None:
    from PIL import Image

    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as img:
        img.verify()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny compare run through the command line, quiet, with the report it writes by default."""
    out = tmp_path_factory.mktemp("compare") / "run"
    res = runner.invoke(app, ["compare", *TINY, "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res


def test_compare_writes_the_report_by_default_and_quiet_prints_no_progress(run_dir):
    out, res = run_dir
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "report.html" in res.stdout
    assert not re.search(r"(distill|evaluate \S+): \d+/\d+", res.output)  # no progress lines
    assert res.stderr == ""  # no bars, no notes


def test_summary_records_names_and_training_counts(run_dir, digits):
    summary = json.loads((run_dir[0] / "summary.json").read_text())
    data = summary["data"]
    assert data["class_names"] == list(digits.class_names) and data["group_names"] == list(digits.group_names)
    assert data["train_counts"] == digits.counts("train").tolist()
    assert sum(map(sum, data["train_counts"])) == len(digits.train)
    record = json.loads((run_dir[0] / "cobra" / "record.json").read_text())
    assert len(record["tpr_mean"]) == digits.num_groups and len(record["tpr_mean"][0]) == digits.num_classes


def test_html_is_self_contained_and_complete(run_dir):
    out, _ = run_dir  # the report compare wrote
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    for section in SECTIONS:
        assert f"run-1-{section}" in page.ids
    for heading in ("Methods", "Synthetic images", "TPR per group and class", "Accuracy versus DEO_M"):
        assert heading in page.headings
    # no scripts, no external references: it opens offline
    assert "script" not in page.tags and "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I)
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text and "url(" not in text
    # every image is an embedded PNG: 3 grids + 6 heatmaps + scatter + composition
    assert len(page.images) == len(METHODS) + len(METHODS) + len(BASELINES) + 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        _check_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    # the method table: every method and baseline, numbers as summary.json has them
    summary = json.loads((out / "summary.json").read_text())
    (table,) = page.tables["run-1-methods"]
    header, *rows = table
    assert header[:2] == ["method", "kind"] and header[2].startswith("ACC") and header[3].startswith("DEO_M")
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == set(METHODS) | set(BASELINES)
    for name, row in by_name.items():
        stats = summary["methods"][name]
        assert row[1] == ("distilled" if name in METHODS else "baseline")
        assert row[2:] == [format_mean_std(stats[k]) for k in ("acc", "deo_m", "deo_a", "worst_group_acc")]


def test_markdown_links_existing_figures(run_dir):
    out, _ = run_dir
    md = (out / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(list((out / "report-figures").glob("*.png"))) == 2 * len(METHODS) + len(BASELINES) + 2
    for link in links:
        assert not Path(link).is_absolute() and link.startswith("report-figures/")
        _check_png((out / link).read_bytes())
    summary = json.loads((out / "summary.json").read_text())
    for name in (*METHODS, *BASELINES):
        assert f"| {name} |" in md
    assert format_mean_std(summary["methods"]["cobra"]["deo_m"]) in md


def _bare_run(folder: Path, dataset: str = "other", methods=("plain", "other")) -> Path:
    """A summary.json alone, as an older or foreign run might leave it: no records, names or counts."""
    stat = {"mean": 50.0, "std": 1.25}
    row = {"acc": stat, "deo_m": stat, "deo_a": stat, "worst_group_acc": {"mean": None, "std": None}}
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"dataset": dataset, "methods": {m: {**row, "kind": "baseline"} for m in methods}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_two_runs_give_sections_and_a_combined_table(run_dir, tmp_path):
    out, _ = run_dir
    second = _bare_run(tmp_path / "second")
    res = runner.invoke(app, ["report", str(out), str(second / "summary.json"), "--out", str(tmp_path / "both")])
    assert res.exit_code == 0, res.output
    page = Page((tmp_path / "both" / "report.html").read_text(encoding="utf-8"))
    assert {"combined", "run-1", "run-2"} | {f"run-{i}-{s}" for i in (1, 2) for s in SECTIONS} <= page.ids
    (combined,) = page.tables["combined"]
    assert len(combined) == 1 + len(METHODS) + len(BASELINES) + 2
    assert [r[0] for r in combined[1:]] == [out.name] * (len(METHODS) + len(BASELINES)) + ["second"] * 2
    md = (tmp_path / "both" / "report.md").read_text(encoding="utf-8")
    assert "## All runs" in md and md.count("### Methods") == 2


def test_report_is_quiet_when_asked(tmp_path):
    run = _bare_run(tmp_path / "run")
    res = runner.invoke(app, ["report", str(run), "--quiet"])
    assert res.exit_code == 0 and res.output.strip() == ""
    assert (run / "report.html").is_file()  # one run: the report goes into its folder
    res = runner.invoke(app, ["report", str(run)])
    assert res.exit_code == 0 and "wrote" in res.stdout and "report: " in res.stderr  # a plain progress line


def test_bad_run_folders_are_clear_errors(tmp_path):
    with pytest.raises(FairDistillError, match="run folder not found"):
        report(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FairDistillError, match="no summary.json"):
        report(tmp_path, tmp_path / "out")
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(FairDistillError, match="not valid JSON"):
        report(tmp_path, tmp_path / "out")
    (tmp_path / "summary.json").write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(FairDistillError, match="no 'methods' table"):
        report(tmp_path, tmp_path / "out")
    with pytest.raises(FairDistillError, match="--out"):
        report([tmp_path, tmp_path])
    for args in (["report", str(tmp_path / "nope")], ["report", str(tmp_path)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1


def test_a_bare_summary_still_reports_and_text_is_escaped(tmp_path):
    """Old or foreign runs: no records, no names, no counts; names with markup are shown, not rendered."""
    stat = {"mean": 50.0, "std": 1.25}
    row = {"acc": stat, "deo_m": stat, "deo_a": stat, "worst_group_acc": {"mean": None, "std": None}}
    summary = {
        "dataset": "a&b <i>",
        "methods": {
            "<script>x</script>": {**row, "kind": "baseline", "by_model": {"convnet": row, "resnet<1>": row}},
            "plain": {**row, "kind": "baseline"},
        },
        "seconds": {"evaluate": 3.0, "phases": {"io": 1.0}},
        "config_hash": "abc123",
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    written = report(tmp_path)
    text = written.html.read_text(encoding="utf-8")
    assert "<script" not in text and "<i>" not in text and "resnet<1>" not in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "a&amp;b &lt;i&gt;" in text
    page = Page(text)
    assert {f"run-1-{s}" for s in SECTIONS} <= page.ids
    rows = {r[0]: r for r in page.tables["run-1-methods"][0][1:]}
    assert rows["plain"][2:] == ["50.0 ± 1.2", "50.0 ± 1.2", "50.0 ± 1.2", "n/a"]
    assert "abc123" in text and "resnet&lt;1&gt;" in text  # config hash, per-architecture table
    md = written.markdown.read_text(encoding="utf-8")
    assert "<script" not in md and "&lt;script&gt;" in md


def test_missing_matplotlib_is_explained_and_compare_still_succeeds(tmp_path, monkeypatch, run_dir):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingDependencyError, match=re.escape("pip install 'fairdistill[report]'")):
        report(run_dir[0], tmp_path / "rep")
    res = runner.invoke(app, ["report", str(run_dir[0]), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and "fairdistill[report]" in res.output
    out = tmp_path / "cmp"
    args = ["compare", *TINY, "--methods", "vanilla", "--baselines", "random", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "summary.json").is_file() and not (out / "report.html").exists()
    assert "note: no report" in res.output and "fairdistill[report]" in res.output


def test_no_report_skips_it_and_progress_is_plain_lines_off_a_terminal(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", *TINY, "--methods", "vanilla", "--baselines", "random", "--no-report", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "summary.json").is_file() and not (out / "report.html").exists()
    assert not (out / "report.md").exists()
    assert "distill: 2/2" in res.output and "evaluate vanilla: 1/1" in res.output
    assert "━" not in res.stderr and "\x1b[" not in res.output  # no bars, no cursor control


def test_verbose_logs_through_logging(tmp_path, caplog):
    import logging

    run = _bare_run(tmp_path / "run")
    logger = logging.getLogger("fairdistill")
    try:
        res = runner.invoke(app, ["report", str(run), "--quiet", "--verbose"])
        assert res.exit_code == 0 and res.output.strip() == ""  # quiet: no progress; the log goes to logging
        assert logger.getEffectiveLevel() == logging.INFO
        assert any("wrote" in r.getMessage() and r.name == "fairdistill.report" for r in caplog.records)
    finally:
        logger.setLevel(logging.NOTSET)


def test_the_library_does_not_print():
    """Everything but the command line reports through logging."""
    src = Path(__file__).resolve().parents[1] / "src" / "fairdistill"
    offenders = [
        f"{path.name}:{i}"
        for path in src.rglob("*.py")
        if path.name != "cli.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(?<![\w.])print\(", line)
    ]
    assert offenders == []
