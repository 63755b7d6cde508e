"""Turn one or more ``fairdistill compare`` run folders into a report: one offline HTML file and Markdown.

:func:`report` reads each run's ``summary.json`` (and, where present, the per-method ``record.json``
and ``synthetic.safetensors``) and writes into ``out``:

* ``report.html``: a single self-contained page (inline CSS, every figure embedded as a base64
  ``data:`` URI, no scripts and no external links), so it opens offline and can be mailed around;
* ``report.md``: the same tables in Markdown, with the figures written as PNG files into
  ``report-figures/`` beside it and linked relatively.

Per run: the method table (ACC, DEO_M, DEO_A, worst-group accuracy as mean ± std, distilled methods
and baselines), the synthetic image grid of each distilled method (one row per class), the
per-(group, class) TPR heatmap of every method, an accuracy-versus-DEO_M scatter with standard
deviations as error bars, and the (class x group) composition of the real training data. With
several runs a combined table comes first.

Figures need matplotlib, an optional extra (``pip install 'fairdistill[report]'``). It is imported
lazily and used through its object-oriented API only (no pyplot), so making a report never
switches the backend of the caller's matplotlib session.

The reader is tolerant: fields that newer or older runs lack (per-architecture results, TPR
tables, training counts, timings) are shown when present and skipped with a note otherwise.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .artifacts import SYNTHETIC_FILE, atomic_write_bytes
from .errors import FairDistillError
from .outputs import check_inside, check_out_dir
from .validate import one_line, parse, read_json_file

log = logging.getLogger(__name__)

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURES_DIR = "report-figures"

#: the columns of the method table: summary key, header
METRICS = (("acc", "ACC ↑"), ("deo_m", "DEO_M ↓"), ("deo_a", "DEO_A ↓"), ("worst_group_acc", "worst group ↑"))

INSTALL_HINT = "pip install 'fairdistill[report]'"

#: the longest label drawn in a figure (class, group, method names), in characters; longer ones are cut
#: with "…" (tables show them whole). Labels are always drawn literally: no mathtext, no TeX.
MAX_LABEL = 40
#: the most rows or columns a heatmap draws (beyond it the figure is skipped with a note)
MAX_HEATMAP_SIDE = 200
#: the synthetic-image grid shows at most this many classes (rows) and images per class
MAX_GRID_ROWS = 100
MAX_GRID_PER_ROW = 50
#: the largest grid.png embedded in place of a set that cannot be drawn, in bytes
MAX_GRID_PNG = 16 * 2**20
#: matplotlib settings every figure is drawn with: text as it is ("$x$" stays "$x$")
LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


class MissingDependencyError(FairDistillError):
    """An optional package needed for the report is not installed."""


def _matplotlib() -> Any:
    """Import matplotlib lazily; explain how to get it when it is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(f"the report needs matplotlib, which is not installed: {INSTALL_HINT}") from err
    import matplotlib

    return matplotlib


# ---- reading runs --------------------------------------------------------------------------------
@dataclass
class Run:
    """One compare run folder: its summary and whatever per-method files it holds."""

    folder: Path
    summary: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset", "?"))

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return self.summary["methods"]

    def kind(self, name: str) -> str:
        kind = self.methods[name].get("kind")
        if kind in ("distilled", "baseline"):
            return kind
        return "distilled" if _plain_name(name) and (self.folder / name / SYNTHETIC_FILE).is_file() else "baseline"

    @property
    def data(self) -> dict[str, Any]:
        data = self.summary.get("data")
        return data if isinstance(data, dict) else {}

    def class_names(self, k: int) -> list[str]:
        names = self.data.get("class_names")
        if not (isinstance(names, list) and len(names) == k):
            names = self._from_records("class_names", k)
        return [str(n) for n in names] if names else [str(i) for i in range(k)]

    def group_names(self, g: int) -> list[str]:
        names = self.data.get("group_names")
        if not (isinstance(names, list) and len(names) == g):
            names = self._from_records("group_names", g)
        return [str(n) for n in names] if names else [str(i) for i in range(g)]

    def _from_records(self, key: str, n: int) -> list[Any] | None:
        """Names from a distilled set's metadata (older summaries do not hold them)."""
        for rec in self.records.values():
            names = rec.get("synthetic", {}).get(key) if isinstance(rec.get("synthetic"), dict) else None
            if isinstance(names, list) and len(names) == n:
                return names
        return None

    def tpr(self, name: str) -> np.ndarray | None:
        """The method's (groups, classes) TPR table averaged over evaluation models, or None."""
        for source in (self.methods[name], self.records.get(name, {})):
            table = _table(source.get("tpr_mean"))
            if table is not None:
                return table
        models = self.records.get(name, {}).get("models")
        if isinstance(models, list):
            tables = [_table(m.get("tpr")) for m in models if isinstance(m, dict)]
            tables = [t for t in tables if t is not None]
            if tables and all(t.shape == tables[0].shape for t in tables):
                stack = np.stack(tables)
                seen = ~np.isnan(stack)
                # the mean over the models that have a value; NaN where none has (an empty test cell)
                total = np.where(seen, stack, 0.0).sum(0)
                n = seen.sum(0)
                return np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)
        return None


def _table(value: Any) -> np.ndarray | None:
    """A 2-D float table from JSON (null -> NaN), or None when it is not one."""
    if not isinstance(value, list) or not value:
        return None
    try:
        arr = np.array([[np.nan if v is None else float(v) for v in row] for row in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.size else None


# ---- the schema of summary.json ------------------------------------------------------------------
# Only what the report reads is checked (other keys pass through): numbers are finite JSON numbers
# (not strings, not bools), percentages lie in [0, 100], counts are non-negative integers.
_Percent = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=100)]
_Count = Annotated[int, Field(strict=True, ge=0, le=10**15)]
_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Name = str | int


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Stat(_Open):
    mean: _Percent | None
    std: _Percent | None = None


class _ArchRow(_Open):
    acc: _Stat | None = None
    deo_m: _Stat | None = None
    deo_a: _Stat | None = None
    worst_group_acc: _Stat | None = None


class _MethodRow(_Open):
    acc: _Stat
    deo_m: _Stat
    deo_a: _Stat
    worst_group_acc: _Stat | None = None
    kind: Literal["distilled", "baseline"] | None = None
    by_model: dict[str, _ArchRow] | None = None
    tpr_mean: list[list[_Percent | None]] | None = None


class _DataRecord(_Open):
    class_names: list[_Name] | None = None
    group_names: list[_Name] | None = None
    train_counts: list[list[_Count]] | None = None
    train_unlabelled: list[_Count] | None = None
    train_group_names: list[_Name] | None = None


class _GroupLabels(_Open):
    groups: str | None = None
    noise: _Finite | None = None
    fraction: _Finite | None = None


class _Summary(_Open):
    dataset: _Name | None = None
    methods: dict[str, _MethodRow] = Field(min_length=1)
    eval_config: dict[str, Any] | None = None
    distill_config: dict[str, Any] | None = None
    group_labels: _GroupLabels | None = None
    data: _DataRecord | None = None
    seconds: dict[str, Any] | None = None


def _run_folder(path: Path) -> Path:
    """The run folder a report argument names (the folder itself, or the folder of its summary.json)."""
    return path.parent if path.name == "summary.json" and path.is_file() else path


def _plain_name(name: str) -> bool:
    """Whether ``name`` can be a folder inside the run folder (one path component, no NUL)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def load_run(path: str | Path) -> Run:
    """Read a compare run folder (or its ``summary.json``), checking that it is one.

    ``summary.json`` is read with bounds (size, nesting, no NaN) and checked against the schema of
    the fields the report uses; a value of the wrong type or out of range is one error line naming
    the file and the field. A method's ``record.json`` that cannot be read is skipped with a warning.
    """
    path = Path(path)
    folder = _run_folder(path)
    if not folder.exists():
        raise FairDistillError(f"run folder not found: {folder}")
    if not folder.is_dir():
        raise FairDistillError(f"{folder} is not a folder; pass the --out folder of `fairdistill compare`")
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise FairDistillError(f"{folder} holds no summary.json: not a `fairdistill compare` run folder")
    summary = read_json_file(summary_path)
    methods = summary.get("methods") if isinstance(summary, dict) else None
    if not isinstance(methods, dict) or not methods:
        raise FairDistillError(f"{summary_path} has no 'methods' table: not a compare summary")
    for name, row in methods.items():
        if not isinstance(row, dict) or not all(isinstance(row.get(k), dict) for k, _ in METRICS[:3]):
            raise FairDistillError(one_line(f"{summary_path}: method {name!r} lacks the acc / deo_m / deo_a results"))
    summary = parse(_Summary, summary, str(summary_path)).model_dump(exclude_unset=True)
    records = {}
    for name in methods:
        if not _plain_name(name):
            continue  # a name that is no folder of this run (e.g. "a/b"): shown, but no files read for it
        rec_path = folder / name / "record.json"
        if rec_path.is_file():
            try:
                rec = read_json_file(rec_path)
            except FairDistillError as err:  # the summary alone still makes a report
                log.warning("skipping %s: %s", rec_path, err)
                continue
            if isinstance(rec, dict):
                records[name] = rec
    return Run(folder, summary, records)


# ---- formatting ----------------------------------------------------------------------------------
def format_stat(stats: Any) -> str:
    """``mean ± std`` with one decimal, as the command line prints it; ``n/a`` when missing."""
    from .evaluate import format_mean_std

    if not isinstance(stats, dict) or stats.get("mean") is None:
        return "n/a"
    mean = float(stats["mean"])
    std = stats.get("std")
    std = 0.0 if std is None or not math.isfinite(float(std)) else float(std)
    return format_mean_std({"mean": mean, "std": std})


def _mean_std(stats: Any) -> tuple[float, float]:
    if not isinstance(stats, dict) or stats.get("mean") is None:
        return math.nan, math.nan
    std = stats.get("std")
    return float(stats["mean"]), 0.0 if std is None else float(std)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: Any) -> str:
    """Text safe inside Markdown (and its table cells): no raw HTML, no cell breaks."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _label(text: Any, limit: int = MAX_LABEL) -> str:
    """A name as a figure shows it: literal text on one line, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


# ---- figures -------------------------------------------------------------------------------------
@dataclass
class Figure:
    """A rendered PNG and where the Markdown links it."""

    name: str  # file name inside FIGURES_DIR
    title: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _new_figure(width: float, height: float, dpi: int = 100, layout: str | None = "constrained") -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=dpi, layout=layout)


def _grid_canvas(pixels: np.ndarray, rows: np.ndarray, k: int, per_row: int, pad: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] laid out one row per class (``rows``: each image's row in [0, k)).

    At most ``per_row`` images of a row are drawn; images of rows >= ``k`` are left out.
    """
    n, c, h, w = pixels.shape
    canvas = np.ones((k * (h + pad) + pad, per_row * (w + pad) + pad, 3), dtype=np.float32)
    col = np.zeros(k, dtype=int)
    for i in np.argsort(rows, kind="stable"):
        r = int(rows[i])
        if r >= k or col[r] >= per_row:
            continue
        img = pixels[i]
        img = np.repeat(img, 3, axis=0) if c == 1 else img[:3]
        top, left = pad + r * (h + pad), pad + col[r] * (w + pad)
        canvas[top : top + h, left : left + w] = img.transpose(1, 2, 0)
        col[r] += 1
    return canvas


def _grid_fallback(folder: Path, reason: str) -> tuple[bytes | None, str]:
    """The run's own grid.png when the set cannot be drawn (a PNG of bounded size), and the note saying why."""
    grid = folder / "grid.png"
    try:
        if grid.is_file() and grid.stat().st_size <= MAX_GRID_PNG:
            data = grid.read_bytes()
            if data.startswith(b"\x89PNG\r\n\x1a\n"):
                return data, f"{folder.name}: synthetic set not drawn ({reason}); its grid.png is shown"
    except OSError:
        pass
    return None, f"{folder.name}: synthetic set skipped ({reason})"


def grid_figure(run: Run, name: str) -> tuple[bytes | None, str | None]:
    """The distilled set of ``name`` as a grid, one row per class, labelled with the class names.

    Rendered from ``synthetic.safetensors`` (at most :data:`MAX_GRID_ROWS` classes and
    :data:`MAX_GRID_PER_ROW` images of each). A set that cannot be read or drawn (corrupt, labels
    outside its classes, no normalisation) is skipped: the run's own ``grid.png`` is shown instead
    when there is one, and the note (second value) says why; None and no note when there is no set.
    """
    from .artifacts import load_synthetic

    folder = run.folder / name
    if not (folder / SYNTHETIC_FILE).is_file():
        png = folder / "grid.png"
        return (_grid_fallback(folder, "no synthetic.safetensors")[0], None) if png.is_file() else (None, None)
    try:
        synset = load_synthetic(folder)
        labels = synset.labels.numpy()
        names = synset.meta.get("class_names")
        if labels.ndim != 1:
            raise FairDistillError(f"labels of shape {labels.shape}")
        if len(labels) == 0:
            raise FairDistillError("no images")
        if int(labels.min()) < 0:
            raise FairDistillError(f"label {int(labels.min())} is negative")
        if isinstance(names, list) and names:
            if int(labels.max()) >= len(names):
                raise FairDistillError(f"label {int(labels.max())} beyond its {len(names)} classes")
            rows, k = labels, len(names)
            names = [str(n) for n in names]
        else:  # no names: the labels present are the rows
            present, rows = np.unique(labels, return_inverse=True)
            k = len(present)
            names = run.class_names(int(present.max()) + 1) if int(present.max()) < 10**6 else []
            names = [names[c] if c < len(names) else str(c) for c in present.tolist()]
        pixels = synset.to_pixels().numpy()
    except (FairDistillError, KeyError, IndexError, RuntimeError, TypeError, ValueError, OverflowError) as err:
        reason = one_line(str(err) or type(err).__name__, 160)
        log.warning("report: %s", _grid_fallback(folder, reason)[1])
        return _grid_fallback(folder, reason)
    per_row = max(1, min(MAX_GRID_PER_ROW, int(np.bincount(rows, minlength=k).max())))
    shown = min(k, MAX_GRID_ROWS)
    canvas = _grid_canvas(pixels, rows, shown, per_row)
    h = pixels.shape[2]
    scale = max(1, min(4, round(36 / h)))  # thumbnails of roughly 32-48 screen pixels
    cw, ch = canvas.shape[1] * scale, canvas.shape[0] * scale
    while cw > 1100 and scale > 1:
        scale -= 1
        cw, ch = canvas.shape[1] * scale, canvas.shape[0] * scale
    labels_shown = [_label(s) for s in names[:shown]]
    label_w = 8 + 7 * max(map(len, labels_shown), default=1)  # room for the class names, in pixels
    top = 26
    dpi = 100
    cut = f", first {shown} of {k} classes" if shown < k else ""
    title = _label(f"{name} ({len(labels)} images{cut})", 2 * MAX_LABEL + 30)
    W, H = max(cw + label_w + 8, 16 + 7 * len(title)), ch + top + 6  # wide enough for the title
    fig = _new_figure(W / dpi, H / dpi, dpi, layout=None)
    ax = fig.add_axes((label_w / W, 6 / H, cw / W, ch / H))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    pad, step = 2, h + 2
    ax.set_yticks([pad + r * step + h / 2 - 0.5 for r in range(shown)], labels_shown, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.text(4 / W, 1 - 4 / H, title, fontsize=9, va="top")
    return _png(fig), None


def _heatmap(
    values: np.ndarray,
    *,
    rows: list[str],
    cols: list[str],
    row_label: str,
    col_label: str,
    title: str,
    cmap: Any,
    cbar_label: str,
    cell_text: np.ndarray | None = None,
    light_text_below: float | None = None,
    light_text_above: float | None = None,
) -> bytes:
    """A labelled 0-100 heatmap with a colour bar, laid out by hand (much faster than a layout engine)."""
    n_rows, n_cols = values.shape
    rows, cols = [_label(r) for r in rows], [_label(c) for c in cols]
    title = _label(title, 2 * MAX_LABEL + 30)
    cell = 0.2  # inches per cell; about 0.055 inches per character of a 7 pt tick label
    rotate = max(map(len, cols)) > 3
    left = 0.38 + 0.055 * max(map(len, rows))
    bottom = 0.36 + (0.055 * max(map(len, cols)) if rotate else 0.1)
    top, right = 0.3, 0.72
    width, height = max(1.6, cell * n_cols), max(1.2, cell * n_rows)
    fig_w, fig_h = left + width + right, bottom + height + top
    fig = _new_figure(fig_w, fig_h, layout=None)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), cols, fontsize=7, rotation=90 if rotate else 0)
    ax.set_yticks(range(n_rows), rows, fontsize=7)
    ax.set_xlabel(col_label, fontsize=8)
    ax.set_ylabel(row_label, fontsize=8)
    ax.set_title(title, fontsize=9)
    if cell_text is not None and n_rows * n_cols <= 144:
        for (i, j), text in np.ndenumerate(cell_text):
            if text:
                v = values[i, j]
                light = (light_text_below is not None and v < light_text_below) or (
                    light_text_above is not None and v > light_text_above
                )
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5, color="white" if light else "black")
    cax = fig.add_axes(((left + width + 0.12) / fig_w, bottom / fig_h, 0.1 / fig_w, height / fig_h))
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=7)
    cb.set_label(cbar_label, fontsize=7)
    return _png(fig)


def tpr_figure(run: Run, name: str, tpr: np.ndarray) -> bytes:
    """Heatmap of one method's TPR per (group, class), 0-100 %, empty test cells in grey."""
    import matplotlib

    g, k = tpr.shape
    text = np.array([["" if math.isnan(v) else f"{v:.0f}" for v in row] for row in tpr])
    return _heatmap(
        tpr,
        rows=run.group_names(g),
        cols=run.class_names(k),
        row_label="group",
        col_label="class",
        title=f"{name}  (DEO_M {format_stat(run.methods[name].get('deo_m'))})",
        cmap=matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0"),
        cbar_label="TPR (%)",
        cell_text=text,
        light_text_below=60,
    )


def scatter_figure(run: Run) -> bytes:
    """ACC against DEO_M for every method and baseline, with the standard deviations as error bars."""
    fig = _new_figure(6.2, 4.0)
    ax = fig.add_subplot()
    handles: list[Any] = []
    names: list[str] = []
    for i, (name, row) in enumerate(run.methods.items()):
        acc, acc_sd = _mean_std(row.get("acc"))
        deo, deo_sd = _mean_std(row.get("deo_m"))
        if math.isnan(acc) or math.isnan(deo):
            continue
        distilled = run.kind(name) == "distilled"
        color = f"C{i % 10}"
        handles.append(
            ax.errorbar(
                acc,
                deo,
                xerr=acc_sd,
                yerr=deo_sd,
                fmt="o" if distilled else "s",
                color=color,
                mfc=color if distilled else "white",
                ms=7,
                capsize=3,
            )
        )
        # passed to the legend explicitly: an automatic legend would drop a name that starts with "_"
        names.append(_label(f"{name}{'' if distilled else ' (baseline)'}"))
    ax.set_xlabel("ACC (%)  ↑ better", fontsize=9)
    ax.set_ylabel("DEO_M (%)  ↓ better", fontsize=9)
    ax.set_title(f"{_label(run.dataset)}: accuracy vs. fairness (mean ± std)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.margins(0.08)
    if handles:  # beside the axes: points often crowd (e.g. several at DEO_M 100)
        fig.legend(handles, names, fontsize=7, loc="outside right upper")
    return _png(fig)


def composition_figure(run: Run, counts: np.ndarray, groups: list[str], classes: list[str]) -> bytes:
    """The (class x group) training counts: colour = share of the class, numbers = images."""
    totals = counts.sum(1, keepdims=True)
    share = np.divide(100.0 * counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    return _heatmap(
        share,
        rows=classes,
        cols=groups,
        row_label="class",
        col_label="group",
        title=f"{run.dataset}: training images per (class, group)",
        cmap="Blues",
        cbar_label="share of the class (%)",
        cell_text=counts.astype(str),
        light_text_above=55,
    )


# ---- one run's content ---------------------------------------------------------------------------
@dataclass
class RunSection:
    """Everything the HTML and Markdown writers show for one run."""

    index: int
    run: Run
    settings: list[tuple[str, str]]
    rows: list[tuple[str, str, list[str]]]  # (method, kind, formatted metrics)
    grids: list[Figure] = field(default_factory=list)
    heatmaps: list[Figure] = field(default_factory=list)
    scatter: Figure | None = None
    composition: Figure | None = None
    counts: tuple[list[str], list[str], np.ndarray] | None = None  # groups, classes, (K, G) counts
    cross_arch: tuple[list[str], list[tuple[str, list[str]]]] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        return f"run-{self.index}"

    @property
    def title(self) -> str:
        return f"{self.run.folder.name or self.run.folder} · {self.run.dataset}"


def _settings(run: Run) -> list[tuple[str, str]]:
    s = run.summary
    ecfg = s.get("eval_config") if isinstance(s.get("eval_config"), dict) else {}
    dcfg = s.get("distill_config") if isinstance(s.get("distill_config"), dict) else {}
    items = [
        ("folder", str(run.folder)),
        ("dataset", s.get("dataset")),
        ("backbone", s.get("backbone")),
        ("IPC", s.get("ipc")),
        ("profile", s.get("preset")),
        ("iterations", dcfg.get("iterations")),
        ("evaluation models", ecfg.get("num_models")),
        ("evaluation epochs", ecfg.get("epochs")),
        ("seed", s.get("seed")),
        ("device", s.get("device")),
        ("config hash", s.get("config_hash")),
    ]
    groups = s.get("group_labels")
    if isinstance(groups, dict):  # the training groups were transformed: say how
        parts = [f"groups {groups['groups']}"] if groups.get("groups") not in (None, "true") else []
        parts += [f"{key} {groups[key]}" for key in ("noise", "fraction") if groups.get(key) is not None]
        items.append(("training group labels", ", ".join(parts) or "transformed"))
    seconds = s.get("seconds")
    if isinstance(seconds, dict):
        flat = _flat_seconds(seconds)
        total = flat.pop("total", None)
        if flat:
            total = sum(flat.values()) if total is None else total
            items.append(("time", f"{total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in flat.items()) + ")"))
    return [(k, str(v)) for k, v in items if v is not None and v != ""]


def _flat_seconds(seconds: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in seconds.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, dict):
            out.update(_flat_seconds(value, f"{prefix}{key} "))
    return out


def _cross_arch(run: Run) -> tuple[list[str], list[tuple[str, list[str]]]] | None:
    """ACC / DEO_M per evaluation architecture, when the run evaluated several."""
    archs: list[str] = []
    for row in run.methods.values():
        by_model = row.get("by_model")
        if isinstance(by_model, dict):
            archs += [a for a in by_model if a not in archs]
    if not archs:
        return None
    rows = []
    for name, row in run.methods.items():
        by_model = row.get("by_model") if isinstance(row.get("by_model"), dict) else {}
        cells = []
        for a in archs:
            r = by_model.get(a)
            cells.append(f"{format_stat(r.get('acc'))} / {format_stat(r.get('deo_m'))}" if isinstance(r, dict) else "–")
        rows.append((name, cells))
    return archs, rows


def _counts(run: Run) -> tuple[list[str], list[str], np.ndarray] | None:
    data = run.data
    counts = _table(data.get("train_counts"))
    if counts is None:
        return None
    k, g = counts.shape
    groups = data.get("group_names")
    groups = [str(x) for x in groups] if isinstance(groups, list) and len(groups) == g else [str(i) for i in range(g)]
    classes = run.class_names(k)
    unlabelled = data.get("train_unlabelled")
    if isinstance(unlabelled, list) and len(unlabelled) == k and any(unlabelled):
        counts = np.concatenate([counts, np.array(unlabelled, dtype=float)[:, None]], axis=1)
        groups = [*groups, "unlabelled"]
    return groups, classes, np.nan_to_num(counts).astype(np.int64)


def _too_large(shape: tuple[int, ...]) -> bool:
    return max(shape, default=0) > MAX_HEATMAP_SIDE


def _figure_namer(prefix: str) -> Callable[..., str]:
    """A maker of figure file names under ``prefix``, each unique within the report.

    Two method names may share a slug ("a b", "a-b"): a later clash gets ``-2``, ``-3``, ... appended.
    """
    taken: set[str] = set()

    def figure_name(kind: str, name: str = "") -> str:
        base = f"{prefix}-{kind}" + (f"-{_slug(name)[:60]}" if name else "")
        unique, n = base, 2
        while unique in taken:
            unique, n = f"{base}-{n}", n + 1
        taken.add(unique)
        return f"{unique}.png"

    return figure_name


def _add_grids(sec: RunSection, figure_name: Callable[..., str], tick: Callable[[], None]) -> None:
    """The synthetic-image grid of every distilled method, or a note on why there is none."""
    run = sec.run
    distilled = [name for name in run.methods if run.kind(name) == "distilled"]
    skipped = []
    for name in distilled:
        png, note = grid_figure(run, name)
        tick()
        if note is not None:
            skipped.append(note)
        if png is not None:
            sec.grids.append(Figure(figure_name("grid", name), f"{name}: synthetic images", png))
    if not distilled:
        sec.notes["grids"] = "no distilled method in this run"
    elif skipped:
        sec.notes["grids"] = "; ".join(skipped)
    elif not sec.grids:
        sec.notes["grids"] = "no synthetic images found in the run folder"


def _add_heatmaps(sec: RunSection, figure_name: Callable[..., str], tick: Callable[[], None]) -> None:
    """The TPR heatmap of every method whose table is recorded and small enough to draw; a note names the rest."""
    run = sec.run
    missing, large = [], []
    for name in run.methods:
        tpr = run.tpr(name)
        if tpr is None:
            missing.append(name)
            continue
        if _too_large(tpr.shape):
            large.append(name)
            continue
        sec.heatmaps.append(
            Figure(figure_name("tpr", name), f"{name}: TPR per group and class", tpr_figure(run, name, tpr))
        )
        tick()
    notes = []
    if missing:
        notes.append("no TPR table recorded for: " + ", ".join(missing))
    if large:
        notes.append(f"TPR tables larger than {MAX_HEATMAP_SIDE} groups or classes not drawn: " + ", ".join(large))
    if notes:
        sec.notes["tpr"] = "; ".join(notes)


def _add_composition(sec: RunSection, figure_name: Callable[..., str]) -> None:
    """The training counts per (class, group) and their figure, or a note on why it is not drawn.

    Where the methods were given transformed groups, the figure still shows the true ones and the
    note says so.
    """
    run = sec.run
    sec.counts = _counts(run)
    if sec.counts is None:
        sec.notes["composition"] = "this run's summary does not record the training counts (made by an older version)"
        return
    if _too_large(sec.counts[2].shape):
        sec.notes["composition"] = f"more than {MAX_HEATMAP_SIDE} classes or groups: the figure is not drawn"
        return
    groups, classes, counts = sec.counts
    sec.composition = Figure(
        figure_name("training-composition"),
        "training images per (class, group)",
        composition_figure(run, counts, groups, classes),
    )
    data = run.data
    if data.get("train_counts_used") is not None and data.get("train_group_names"):
        sec.notes["composition"] = (
            "true groups shown; the methods were given transformed training groups ("
            + ", ".join(str(n) for n in data["train_group_names"])
            + ")"
        )


def build_section(index: int, run: Run, tick: Callable[[], None] = lambda: None) -> RunSection:
    """Read one run and render its figures (with every label drawn literally, see :data:`LITERAL_TEXT`).

    The figures are made in a fixed order (grids, TPR heatmaps, scatter, composition), which also
    decides which of two clashing file names gets a suffix.
    """
    rows = [
        (name, run.kind(name), [format_stat(row.get(key)) for key, _ in METRICS]) for name, row in run.methods.items()
    ]
    sec = RunSection(index, run, _settings(run), rows, cross_arch=_cross_arch(run))
    figure_name = _figure_namer(f"run{index}-{_slug(run.dataset)[:40]}")
    _add_grids(sec, figure_name, tick)
    _add_heatmaps(sec, figure_name, tick)
    sec.scatter = Figure(figure_name("acc-vs-deo-m"), "accuracy versus DEO_M", scatter_figure(run))
    tick()
    _add_composition(sec, figure_name)
    tick()
    return sec


# ---- HTML ----------------------------------------------------------------------------------------
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px 32px; color: #1d2329;
       max-width: 1216px; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 20px; border-bottom: 2px solid #d8dee4; padding-bottom: 4px;
margin-top: 32px; } h3 { font-size: 16px; margin: 20px 0 8px; }
p.sub { color: #57606a; margin: 0 0 16px; } p.note { color: #8c6d1f; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; } th { background: #f3f5f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.baseline td:first-child { font-style: italic; } tr.distilled td:first-child { font-weight: 600; }
ul.settings { list-style: none; padding: 0; margin: 8px 0; font-size: 13px; display: flex; flex-wrap: wrap; gap: 6px; }
ul.settings li { background: #f3f5f7; border: 1px solid #d8dee4; border-radius: 4px; padding: 2px 8px; }
ul.settings li span { color: #57606a; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; border: 1px solid #e1e4e8; padding: 6px; background: #fff; }
figcaption { font-size: 12px; color: #57606a; text-align: center; }
img { display: block; max-width: 100%; height: auto; } img.px { image-rendering: pixelated; }
.row2 { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; } .row2 > div { flex: 1 1 480px; }
details summary { cursor: pointer; font-size: 13px; color: #57606a; }
"""


def _html_table(headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]], num_from: int = 1) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for cls, cells in rows:
        tds = "".join(
            f'<td class="num">{_esc(c)}</td>' if i >= num_from else f"<td>{_esc(c)}</td>" for i, c in enumerate(cells)
        )
        body.append(f'<tr class="{_esc(cls)}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_figure(fig: Figure, cls: str = "") -> str:
    attr = f' class="{_esc(cls)}"' if cls else ""
    caption = _esc(fig.title)
    return f'<figure><img{attr} src="{fig.data_uri()}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _html_note(sec: RunSection, key: str) -> str:
    return f'<p class="note">{_esc(sec.notes[key])}</p>' if key in sec.notes else ""


def _html_section(sec: RunSection) -> str:
    a = sec.anchor
    metric_headers = ["method", "kind", *(h for _, h in METRICS)]
    out = [f'<section class="run" id="{a}"><h2>{_esc(sec.title)}</h2>']
    settings = "".join(f"<li><span>{_esc(k)}</span> {_esc(v)}</li>" for k, v in sec.settings)
    out.append(f'<ul class="settings">{settings}</ul>')
    out.append(f'<section id="{a}-methods" class="methods"><h3>Methods</h3>')
    out.append('<p class="sub">Mean ± std over the evaluation models, in %. ↑ higher is better, ↓ lower is better.</p>')
    out.append(
        _html_table(metric_headers, [(kind, [name, kind, *cells]) for name, kind, cells in sec.rows], num_from=2)
    )
    if sec.cross_arch is not None:
        archs, rows = sec.cross_arch
        out.append("<h3>Per evaluation architecture (ACC / DEO_M)</h3>")
        out.append(_html_table(["method", *archs], [("", [n, *cells]) for n, cells in rows]))
    out.append("</section>")
    out.append(f'<section id="{a}-grids" class="grids"><h3>Synthetic images</h3>')
    out.append('<p class="sub">One row per class.</p>' + _html_note(sec, "grids"))
    out.append('<div class="figs">' + "".join(_html_figure(f, "px") for f in sec.grids) + "</div></section>")
    out.append(f'<section id="{a}-tpr" class="tpr"><h3>TPR per group and class</h3>')
    out.append(
        '<p class="sub">Recall of each class within each group, averaged over the evaluation models; '
        "a fair model has even columns. Grey: no test images in the cell.</p>" + _html_note(sec, "tpr")
    )
    out.append('<div class="figs">' + "".join(_html_figure(f) for f in sec.heatmaps) + "</div></section>")
    out.append('<div class="row2">')
    out.append(f'<div><section id="{a}-scatter" class="scatter"><h3>Accuracy versus DEO_M</h3>')
    if sec.scatter is not None:
        out.append(_html_figure(sec.scatter))
    out.append("</section></div>")
    out.append(f'<div><section id="{a}-composition" class="composition"><h3>Training data composition</h3>')
    out.append(_html_note(sec, "composition"))
    if sec.composition is not None:
        out.append(_html_figure(sec.composition))
    if sec.counts is not None:
        groups, classes, counts = sec.counts
        rows = [("", [c, *map(str, r.tolist()), str(int(r.sum()))]) for c, r in zip(classes, counts, strict=True)]
        rows.append(("total", ["total", *map(str, counts.sum(0).tolist()), str(int(counts.sum()))]))
        out.append("<details><summary>counts table</summary>")
        out.append(_html_table(["class", *groups, "total"], rows))
        out.append("</details>")
    out.append("</section></div></div></section>")
    return "\n".join(out)


def _combined_rows(sections: Sequence[RunSection]) -> list[tuple[str, list[str]]]:
    return [
        (kind, [sec.run.folder.name or str(sec.run.folder), sec.run.dataset, name, kind, *cells])
        for sec in sections
        for name, kind, cells in sec.rows
    ]


def render_html(sections: Sequence[RunSection]) -> str:
    title = "fairdistill report"
    datasets = ", ".join(dict.fromkeys(sec.run.dataset for sec in sections))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}: {_esc(datasets)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">{len(sections)} run(s): {_esc(datasets)}. '
        "ACC: test accuracy; DEO_M / DEO_A: largest / mean over classes of the gap between the best and "
        "worst group's true-positive rate; worst group: accuracy of the worst-served group.</p>",
    ]
    if len(sections) > 1:
        parts.append('<section id="combined"><h2>All runs</h2>')
        headers = ["run", "dataset", "method", "kind", *(h for _, h in METRICS)]
        parts.append(_html_table(headers, _combined_rows(sections), num_from=4))
        parts.append("</section>")
    parts += [_html_section(sec) for sec in sections]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---- Markdown ------------------------------------------------------------------------------------
def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], num_from: int = 1) -> list[str]:
    align = ["---" if i < num_from else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def _md_image(fig: Figure) -> str:
    return f"![{_md(fig.title)}]({FIGURES_DIR}/{fig.name})"


def render_markdown(sections: Sequence[RunSection]) -> str:
    lines = ["# fairdistill report", ""]
    if len(sections) > 1:
        lines += ["## All runs", ""]
        headers = ["run", "dataset", "method", "kind", *(h for _, h in METRICS)]
        lines += _md_table(headers, [cells for _, cells in _combined_rows(sections)], num_from=4) + [""]
    for sec in sections:
        lines += [f"## {_md(sec.title)}", ""]
        lines += [f"- {_md(k)}: {_md(v)}" for k, v in sec.settings] + [""]
        lines += ["### Methods", "", "Mean ± std over the evaluation models, in %.", ""]
        headers = ["method", "kind", *(h for _, h in METRICS)]
        lines += _md_table(headers, [[n, k, *c] for n, k, c in sec.rows], num_from=2) + [""]
        if sec.cross_arch is not None:
            archs, rows = sec.cross_arch
            lines += ["Per evaluation architecture (ACC / DEO_M):", ""]
            lines += _md_table(["method", *archs], [[n, *c] for n, c in rows]) + [""]
        for key, heading, figs in (
            ("grids", "Synthetic images (one row per class)", sec.grids),
            ("tpr", "TPR per group and class", sec.heatmaps),
            ("scatter", "Accuracy versus DEO_M", [sec.scatter] if sec.scatter else []),
            ("composition", "Training data composition", [sec.composition] if sec.composition else []),
        ):
            lines += [f"### {heading}", ""]
            if key in sec.notes:
                lines += [f"*{_md(sec.notes[key])}*", ""]
            lines += [_md_image(f) for f in figs] + ([""] if figs else [])
        if sec.counts is not None:
            groups, classes, counts = sec.counts
            rows = [[c, *map(str, r.tolist()), str(int(r.sum()))] for c, r in zip(classes, counts, strict=True)]
            rows.append(["total", *map(str, counts.sum(0).tolist()), str(int(counts.sum()))])
            lines += _md_table(["class", *groups, "total"], rows) + [""]
    return "\n".join(lines)


# ---- entry point ---------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`report` wrote."""

    html: Path
    markdown: Path
    figures: list[Path]


def report(
    run_dirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> Report:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report-figures/``) for compare runs.

    ``run_dirs`` are ``fairdistill compare`` output folders; ``out`` defaults to the run folder when
    there is one. The output folder is checked first (:func:`fairdistill.outputs.check_out_dir`),
    each ``summary.json`` against its schema next, and nothing is written through a symbolic link
    inside ``out``. Raises :class:`FairDistillError` for a folder that is not a compare run or a
    summary with a bad value, and :class:`MissingDependencyError` (a FairDistillError) when
    matplotlib is not installed. A method whose synthetic set cannot be read is reported without its
    image grid, with a note saying why.
    """
    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    if not dirs:
        raise FairDistillError("no run folder given")
    if out is None and len(dirs) > 1:
        raise FairDistillError("several run folders: pass an output folder (--out)")
    # the output folder first, before anything is read or drawn
    if out is None:  # into the one run folder: that it is one is said by load_run
        out = _run_folder(Path(dirs[0]))
        if not out.is_dir():
            load_run(dirs[0])
    out = check_out_dir(out, "report folder", writes=f"{HTML_FILE}, {MARKDOWN_FILE}, {FIGURES_DIR}/")
    check_inside(out, [HTML_FILE, MARKDOWN_FILE, FIGURES_DIR], "report folder")  # the figures' names: below
    runs = [load_run(d) for d in dirs]
    matplotlib = _matplotlib()
    total = sum(len(r.methods) + sum(r.kind(n) == "distilled" for n in r.methods) + 2 for r in runs)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress("report", min(done, total), total)

    with matplotlib.rc_context(LITERAL_TEXT):  # every label literally: "$x$" is not mathtext
        sections = [build_section(i, run, tick) for i, run in enumerate(runs, 1)]
    figure_paths = [
        f"{FIGURES_DIR}/{fig.name}"
        for sec in sections
        for fig in [*sec.grids, *sec.heatmaps, sec.scatter, sec.composition]
        if fig is not None
    ]
    check_inside(out, [HTML_FILE, MARKDOWN_FILE, *figure_paths], "report folder")
    html_path = atomic_write_bytes(out / HTML_FILE, render_html(sections).encode("utf-8"))
    figures = []
    for sec in sections:
        for fig in [*sec.grids, *sec.heatmaps, sec.scatter, sec.composition]:
            if fig is not None:
                figures.append(atomic_write_bytes(out / FIGURES_DIR / fig.name, fig.png))
    md_path = atomic_write_bytes(out / MARKDOWN_FILE, render_markdown(sections).encode("utf-8"))
    if progress is not None and done < total:  # steps skipped for missing data
        progress("report", total, total)
    log.info("wrote %s and %s (%d figures)", html_path, md_path, len(figures))
    return Report(html_path, md_path, figures)
