"""Bring your own data as practitioners keep it: image files plus a metadata table (dataset key ``folder``).

The folder (``--data-root DIR``) holds the images, anywhere below it, and::

    metadata.csv      one row per image: its path relative to DIR, a label, a group, a split
                      (or metadata.parquet, read when pyarrow or pandas is installed)
    meta.json         optional: {"name", "classes", "groups", "mean", "std", "description", "dsa_strategy"}

Columns are named ``path, label, group, split`` unless ``columns`` says otherwise
(``--columns path=img_filename,label=y,group=place,split=split``); the optional columns
``class_name`` and ``group_name`` (keys of the same name) give the name of each integer label or
group. Rows whose split is ``train`` or ``test`` are kept (``splits``: ``--splits train=0,test=2``
maps other values); rows of any other split value are left out and counted in the dataset's
description and ``params["ignored_rows"]``. Labels and groups are integers or names
(:mod:`fairdistill.data.table`); ``classes`` / ``groups`` in ``meta.json`` declare the names and
their order. Images are decoded with Pillow to RGB, resized to ``image_size`` x ``image_size`` when
given (bilinear), held in the decoded cache and streamed by default.

Normalisation: ``mean`` and ``std`` from ``meta.json``, else 0.5 per channel, as for ``npy``: a fixed
default keeps a pixel's model-space value independent of which rows are in the training split and
costs no pass over the data; declare the data's own statistics in ``meta.json`` to use them.

Checked, each failure one line naming the file (and the row): a column named but missing from the
table, duplicate or ragged columns, an empty or absolute path, one that leads outside DIR (``..``
or a symbolic link), a missing image, an image Pillow cannot decode, images of mixed sizes without
``image_size``, an empty split, a label or group outside the declared names, a class with no
training image, and ``meta.json`` as for ``npy`` (:class:`~fairdistill.data.npyfolder.ImageMeta`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FairDistillError
from ..validate import one_line
from .dataset import FairDataset, listed
from .files import MissingDataError, corrupt, data_root_from
from .npyfolder import ImageMeta, read_meta
from .table import SplitRows, TableSpec, check_image_size, parse_pairs, table_dataset

KEY = "folder"
TABLES = ("metadata.csv", "metadata.parquet")
#: the column keys and their default column names
COLUMNS = {"path": "path", "label": "label", "group": "group", "split": "split"}
NAME_COLUMNS = {"class_name": "class_name", "group_name": "group_name"}
#: the split keys and their default values
SPLITS = {"train": "train", "test": "test"}
#: the most rows a metadata table may have
MAX_ROWS = 10_000_000
CHANNELS = 3


@dataclass(frozen=True)
class Table:
    """A metadata table as read: its file, the columns by name (values as text) and where each row is."""

    path: Path
    columns: dict[str, list[str]]
    rows: list[str]


def read_csv(path: Path) -> Table:
    """A CSV table with a header line; cells stripped, blank lines skipped, ragged rows refused."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            _check_header(path, header)
            cells: list[list[str]] = []
            rows: list[str] = []
            for line in reader:
                if not any(c.strip() for c in line):
                    continue
                if len(line) != len(header):
                    raise FairDistillError(
                        f"{path}: line {reader.line_num} has {len(line)} fields, the header {len(header)}"
                    )
                if len(rows) >= MAX_ROWS:
                    raise FairDistillError(f"{path}: more than {MAX_ROWS} rows")
                cells.append([c.strip() for c in line])
                rows.append(f"line {reader.line_num}")
    except (UnicodeDecodeError, csv.Error) as err:
        raise corrupt(path, f"not a readable CSV table ({one_line(str(err), 120)})") from None
    except OSError as err:
        raise MissingDataError(f"{path}: cannot be read ({err.strerror or err})") from None
    columns = {h: [row[i] for row in cells] for i, h in enumerate(header)}
    return Table(path, columns, rows)


def _check_header(path: Path, header: list[str]) -> None:
    if not header or not any(header):
        raise corrupt(path, "no header line (the first line names the columns)")
    dup = sorted(h for h, n in Counter(header).items() if n > 1)
    if dup:
        raise FairDistillError(f"{path}: column(s) {listed(dup)} appear more than once in the header")


def read_parquet(path: Path) -> Table:
    """A parquet table, read with pyarrow (or pandas); every value as text (null: empty)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    try:
        if pq is not None:
            data = pq.read_table(path).to_pydict()
        else:
            import pandas as pd

            data = pd.read_parquet(path).to_dict(orient="list")
    except ImportError:
        raise FairDistillError(
            f"{path}: reading parquet needs pyarrow (pip install pyarrow); or save the table as metadata.csv"
        ) from None
    except Exception as err:  # noqa: BLE001 - pyarrow and pandas fail in many ways; each means unreadable
        raise corrupt(path, f"not a readable parquet table ({one_line(str(err), 120)})") from None
    n = len(next(iter(data.values()), []))
    if n > MAX_ROWS:
        raise FairDistillError(f"{path}: more than {MAX_ROWS} rows")
    columns = {str(k): ["" if v is None else str(v).strip() for v in vs] for k, vs in data.items()}
    return Table(path, columns, [f"row {i + 1}" for i in range(n)])


def find_table(root: Path) -> Path:
    """``metadata.csv`` in the folder, else ``metadata.parquet``; neither is a one-line error."""
    for name in TABLES:
        if (root / name).is_file():
            return root / name
    raise MissingDataError(f"{root}: no {' or '.join(TABLES)} (one row per image: path, label, group, split)")


def read_table(path: Path) -> Table:
    return read_parquet(path) if path.suffix == ".parquet" else read_csv(path)


# ---- rows ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Which columns and split values a table is read with; ``named`` lists the name columns that must exist."""

    columns: dict[str, str]
    splits: dict[str, str]
    named: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, columns: str | Mapping[str, str] | None, splits: str | Mapping[str, str] | None) -> Selection:
        """From the ``--columns`` and ``--splits`` options (see :func:`~fairdistill.data.table.parse_pairs`)."""
        given = parse_pairs(columns, "--columns", [*COLUMNS, *NAME_COLUMNS])
        split_values = {**SPLITS, **parse_pairs(splits, "--splits", list(SPLITS))}
        if split_values["train"] == split_values["test"]:
            raise FairDistillError(f"--splits: train and test are both {split_values['train']!r}")
        named = frozenset(k for k in NAME_COLUMNS if k in given)
        return cls({**COLUMNS, **NAME_COLUMNS, **given}, split_values, named)


def split_rows(root: Path, table: Table, sel: Selection) -> tuple[SplitRows, SplitRows, Counter[str]]:
    """The train and test rows of ``table`` (their images checked to be files under ``root``), and how
    many rows each other split value had (left out)."""
    where = str(table.path)
    for key in (*COLUMNS, *sel.named):
        if sel.columns[key] not in table.columns:
            raise FairDistillError(
                f"{where}: no column {sel.columns[key]!r} (the {key} column); columns: {listed(list(table.columns))}"
            )
    col = {k: table.columns.get(name) for k, name in sel.columns.items()}
    chosen: dict[str, list[int]] = {"train": [], "test": []}
    which = {value: key for key, value in sel.splits.items()}
    ignored: Counter[str] = Counter()
    for i, value in enumerate(col["split"]):
        if value in which:
            chosen[which[value]].append(i)
        else:
            ignored[value] += 1
    for key, idx in chosen.items():
        if not idx:
            found = listed(sorted(set(col["split"]))) or "none"
            raise FairDistillError(
                f"{where}: the {key} split is empty: no row has {sel.columns['split']} = {sel.splits[key]!r} "
                f"(values found: {found}; map them with --splits train=...,test=...)"
            )
    paths = image_paths(root, [col["path"][i] for i in chosen["train"] + chosen["test"]],
                        [table.rows[i] for i in chosen["train"] + chosen["test"]], where)  # fmt: skip
    n = len(chosen["train"])
    splits = [_rows(table, col, chosen[k], paths[a:b]) for k, (a, b) in (("train", (0, n)), ("test", (n, None)))]
    return splits[0], splits[1], ignored


def _rows(table: Table, col: dict[str, list[str] | None], idx: list[int], paths: list[Path]) -> SplitRows:
    def pick(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in idx]

    return SplitRows(
        rows=[table.rows[i] for i in idx],
        images=paths,
        labels=pick(col["label"]) or [],
        groups=pick(col["group"]) or [],
        class_names=pick(col.get("class_name")),
        group_names=pick(col.get("group_name")),
    )


def image_paths(root: Path, values: Sequence[str], rows: Sequence[str], where: str) -> list[Path]:
    """Each row's image as a regular file inside ``root`` (symbolic links followed and checked too).

    Refused, naming the row: an empty or absolute path, one that leads outside the root (``..``, a
    link), a missing file, something that is not a regular file. One ``lstat`` per row; each folder
    is resolved once.
    """
    base = str(root.resolve())
    inside = base.rstrip(os.sep) + os.sep
    parents: dict[str, str] = {}
    out: list[Path] = []
    for value, row in zip(values, rows, strict=True):
        if not value:
            raise FairDistillError(f"{where} {row}: empty image path")
        if os.path.isabs(value) or value.startswith("\\") or value[1:2] == ":":  # POSIX or Windows (C:, \\x)
            raise FairDistillError(f"{where} {row}: image path {value!r} is absolute; give it relative to {root}")
        head, name = os.path.split(value)
        if head not in parents:
            parents[head] = os.path.realpath(os.path.join(base, head))
        path = os.path.join(parents[head], name)
        if name in ("", ".", "..") or not path.startswith(inside):
            raise FairDistillError(f"{where} {row}: image path {value!r} leads outside the data root {root}")
        out.append(Path(_regular_file(path, inside, value, f"{where} {row}", root)))
    return out


def _regular_file(path: str, inside: str, value: str, at: str, root: Path) -> str:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            path = os.path.realpath(path)
            if not path.startswith(inside):
                raise FairDistillError(f"{at}: image {value!r} is a link that leads outside the data root {root}")
            st = os.stat(path)
    except FileNotFoundError:
        raise MissingDataError(f"{at}: image {path} does not exist") from None
    except OSError as err:
        raise MissingDataError(f"{at}: image {path} cannot be read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FairDistillError(f"{at}: image {path} is not a regular file")
    return path


# ---- the dataset ---------------------------------------------------------------------------------
def image_folder(
    *,
    data_root: str | Path | None = None,
    columns: str | Mapping[str, str] | None = None,
    splits: str | Mapping[str, str] | None = None,
    image_size: int | None = None,
    stream: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> FairDataset:
    """The images listed in ``data_root``'s ``metadata.csv`` (see the module docstring).

    ``columns``, ``splits``: ``"key=value,..."`` strings (the CLI's ``--columns``, ``--splits``) or
    mappings; ``image_size``: resize every image to that square (None: keep their one size);
    ``stream``: keep the pixels uint8, memory-mapped from the decoded cache, decoded a batch at a time
    (default); ``cache_dir`` / ``cache``: see :func:`~fairdistill.data.cache.cached_arrays`.
    """
    sel = Selection.parse(columns, splits)
    size = check_image_size(image_size)
    root = data_root_from(data_root)
    if root is None:
        raise MissingDataError(f"dataset {KEY!r} reads DIR/{TABLES[0]} and the images it lists: give --data-root DIR")
    path = find_table(root)
    meta, meta_sha = read_meta(root, ImageMeta)
    table = read_table(path)
    train, test, ignored = split_rows(root, table, sel)
    mean, std = _normalisation(root, meta)
    spec = TableSpec(
        key=KEY,
        name=meta.name or KEY,
        where=str(path),
        description=meta.description or _describe(path, len(train), len(test), ignored),
        mean=mean,
        std=std,
        classes=tuple(meta.classes) if meta.classes else None,
        groups=tuple(meta.groups) if meta.groups else None,
        image_size=size,
        dsa_strategy=meta.dsa_strategy,
        params=_params(root, table, sel, ignored, meta_sha),
    )
    return table_dataset(spec, train, test, sources=[*train.images, *test.images], stream=stream,
                         cache_dir=cache_dir, cache=cache)  # fmt: skip


def _normalisation(root: Path, meta: ImageMeta) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` / ``std`` of ``meta.json`` (three each: the images are RGB), else 0.5 per channel."""
    for name, values in (("mean", meta.mean), ("std", meta.std)):
        if values is not None and len(values) != CHANNELS:
            raise FairDistillError(f"{root / 'meta.json'}: {name} has {len(values)} entries; the images are RGB (3)")
    mean = tuple(meta.mean) if meta.mean else (0.5,) * CHANNELS
    std = tuple(meta.std) if meta.std else (0.5,) * CHANNELS
    return mean, std


def _describe(path: Path, n_train: int, n_test: int, ignored: Counter[str]) -> str:
    text = f"images listed in {path}: {n_train} train, {n_test} test"
    if ignored:
        parts = ", ".join(f"{v!r}: {n}" for v, n in sorted(ignored.items()))
        text += f"; {sum(ignored.values())} row(s) of other splits ignored ({parts})"
    return text


def _params(root: Path, table: Table, sel: Selection, ignored: Counter[str], meta_sha: str | None) -> dict[str, Any]:
    """What identifies the table: the folder, its metadata file's hash, the columns used and the splits, and
    what was left out."""
    return {
        "source": str(root.resolve()),
        "metadata": table.path.name,
        "metadata_sha256": hashlib.sha256(table.path.read_bytes()).hexdigest(),
        "meta_sha256": meta_sha,
        "columns": {k: v for k, v in sel.columns.items() if k in COLUMNS or v in table.columns},
        "splits": dict(sel.splits),
        "ignored_rows": sum(ignored.values()),
        "ignored_split_values": dict(sorted(ignored.items())),
    }


__all__ = ["COLUMNS", "KEY", "NAME_COLUMNS", "SPLITS", "Selection", "image_folder", "image_paths", "split_rows"]
