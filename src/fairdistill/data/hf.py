"""Hugging Face datasets kept on local disk (dataset key ``hf``); never the Hub.

``--data-root DIR`` is one of:

* a ``DatasetDict`` written by ``save_to_disk(DIR)`` (``DIR/dataset_dict.json``), read with
  ``datasets.load_from_disk``;
* a folder of parquet files (``DIR/data/train-*.parquet``...) or an image folder
  (``DIR/train/<class>/x.png`` with an optional ``metadata.csv``), read with
  ``datasets.load_dataset("parquet" | "imagefolder", data_dir=DIR)``, which reads only local files
  (its Arrow copy goes under the decoded-data cache, ``<cache>/huggingface``).

fairdistill never downloads: a ``--data-root`` that does not exist and looks like a Hub name
(``owner/name``) is refused with the two lines that save it to disk first.

The splits are ``train`` and ``test`` unless ``splits`` maps them (``--splits train=train,test=validation``);
other splits are left out and counted in the description and ``params["ignored_splits"]``. The
label, group and image columns are ``label_column`` (default ``label``), ``group_column`` (required)
and ``image_column`` (default ``image``, a ``datasets.Image`` feature). Labels and groups are integers
(a ``ClassLabel`` names them), or strings (their names); see :mod:`fairdistill.data.table`. The
images are decoded by fairdistill with Pillow from the stored bytes (or local paths), as in the
``folder`` loader: RGB, one size or ``image_size`` x ``image_size``, in the decoded cache (stamped
by every file under DIR), streamed by default, normalised with 0.5 per channel.

``datasets`` is imported only here, when the dataset is loaded (``pip install 'fairdistill[hf]'``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import FairDistillError
from ..validate import one_line
from .cache import default_cache_dir
from .dataset import FairDataset, listed
from .files import MissingDataError, data_root_from
from .table import ImageInput, SplitRows, TableSpec, check_image_size, parse_pairs, table_dataset

KEY = "hf"
SPLITS = {"train": "train", "test": "test"}
#: what a Hub dataset name looks like: owner/name
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: label and group features that are ids or names (besides ClassLabel)
_ID_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "string", "large_string")
_BATCH = 256


def refuse_hub_name(data_root: str | Path) -> None:
    """Raise for a data root that is no local path but looks like a Hub name; nothing otherwise."""
    text = str(data_root)
    if Path(text).expanduser().exists() or not _HUB_NAME.fullmatch(text):
        return
    raise FairDistillError(
        f"{text!r} is no local folder but looks like a Hugging Face Hub name, and fairdistill never downloads: "
        f"save it to disk first (python -c \"import datasets; datasets.load_dataset('{text}').save_to_disk('DIR')\") "
        "and pass --data-root DIR"
    )


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise FairDistillError(
            f"dataset {KEY!r} reads Hugging Face datasets and needs the datasets package: pip install 'fairdistill[hf]'"
        ) from None
    return datasets


@contextmanager
def _no_progress_bars(ds: Any) -> Iterator[None]:
    """datasets' progress bars off while it loads (fairdistill reports its own progress), as they were after."""
    was_on = ds.is_progress_bar_enabled() if hasattr(ds, "is_progress_bar_enabled") else False
    if was_on:
        ds.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            ds.enable_progress_bars()


def load_local(folder: Path, cache_dir: str | Path | None) -> tuple[Any, str]:
    """The DatasetDict in ``folder`` and how it was read: ``save_to_disk``, ``parquet`` or ``imagefolder``."""
    ds = _datasets()
    saved = (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()
    kind = "save_to_disk" if saved else "parquet" if any(folder.rglob("*.parquet")) else "imagefolder"
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        with _no_progress_bars(ds):
            if saved:
                return ds.load_from_disk(str(folder)), kind
            arrow_cache = None if base is None else str(base / "huggingface")
            return ds.load_dataset(kind, data_dir=str(folder), cache_dir=arrow_cache), kind
    except Exception as err:  # noqa: BLE001 - datasets fails in many ways on a bad folder; each is the folder's
        raise MissingDataError(f"{folder}: datasets cannot read it as {kind} ({one_line(str(err), 160)})") from None


def _pick_splits(dd: Any, names: dict[str, str], folder: Path) -> tuple[Any, Any, dict[str, int]]:
    """The train and test splits of ``dd`` by ``names``; the other splits' sizes (left out)."""
    if not isinstance(dd, Mapping):
        raise FairDistillError(
            f"{folder}: holds one split (a Dataset); fairdistill needs a DatasetDict with a train and a test split "
            "(datasets.DatasetDict({'train': ..., 'test': ...}).save_to_disk(DIR))"
        )
    for key, name in names.items():
        if name not in dd:
            raise FairDistillError(
                f"{folder}: no split {name!r} (the {key} split); splits: {listed(sorted(dd))} (map them with --splits)"
            )
    ignored = {name: len(dd[name]) for name in sorted(dd) if name not in names.values()}
    return dd[names["train"]], dd[names["test"]], ignored


def _check_columns(split: Any, test: Any, cols: dict[str, str], folder: Path) -> None:
    """Each column in both splits, of the same feature there; ids or names for labels and groups, images for images."""
    ds = _datasets()
    for key, col in cols.items():
        for part in (split, test):
            if col not in part.column_names:
                raise FairDistillError(
                    f"{folder}: no column {col!r} (the {key} column) in split {part.split or '?'}; "
                    f"columns: {listed(part.column_names)}"
                )
        feature = split.features[col]
        if test.features[col] != feature:
            raise FairDistillError(f"{folder}: column {col!r} is {feature} in train but {test.features[col]} in test")
        if key == "image":
            if not isinstance(feature, ds.Image):
                raise FairDistillError(f"{folder}: column {col!r} holds {feature}, not images (a datasets.Image)")
        elif not isinstance(feature, ds.ClassLabel) and getattr(feature, "dtype", None) not in _ID_DTYPES:
            raise FairDistillError(
                f"{folder}: column {col!r} holds {feature}; a {key} column holds integers, strings or a ClassLabel"
            )


class _Images:
    """A split's image column, iterated in batches: the stored bytes (with a name) or the local file."""

    def __init__(self, split: Any, column: str, where: str) -> None:
        self.split, self.column, self.where = split, column, where

    def __len__(self) -> int:
        return len(self.split)

    def __iter__(self) -> Iterator[ImageInput]:
        i = 0
        table = self.split.select_columns([self.column]).with_format("arrow")
        for batch in table.iter(batch_size=_BATCH):
            for cell in batch.column(self.column).to_pylist():
                yield self._item(cell, i)
                i += 1

    def _item(self, cell: dict[str, Any] | None, i: int) -> ImageInput:
        name = f"{self.where} row {i}"
        if cell is not None and cell.get("bytes"):
            return name, cell["bytes"]
        if cell is not None and cell.get("path") and Path(cell["path"]).is_file():
            return Path(cell["path"])
        raise MissingDataError(f"{name}: no image bytes and no readable local file ({(cell or {}).get('path')})")


def _split_rows(split: Any, cols: dict[str, str], folder: Path, name: str) -> SplitRows:
    """A split's label and group values as text, and its images (read when decoded)."""
    values = split.select_columns([cols["label"], cols["group"]]).to_dict()
    text = {k: ["" if v is None else str(v) for v in values[cols[k]]] for k in ("label", "group")}
    return SplitRows(
        rows=[f"split {name} row {i}" for i in range(len(split))],
        images=_Images(split, cols["image"], f"{folder} split {name}"),
        labels=text["label"],
        groups=text["group"],
    )


def _class_names(split: Any, column: str) -> tuple[str, ...] | None:
    """The names of a ClassLabel column (None: another feature; the values then name themselves or are ids)."""
    names = getattr(split.features[column], "names", None)
    return tuple(str(n) for n in names) if names else None


def hf_dataset(
    *,
    data_root: str | Path | None = None,
    label_column: str = "label",
    group_column: str | None = None,
    image_column: str = "image",
    splits: str | Mapping[str, str] | None = None,
    image_size: int | None = None,
    stream: bool = True,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> FairDataset:
    """A local Hugging Face dataset (see the module docstring); ``group_column`` must be given."""
    size = check_image_size(image_size)
    names = {**SPLITS, **parse_pairs(splits, "--splits", list(SPLITS))}
    if names["train"] == names["test"]:
        raise FairDistillError(f"--splits: train and test are both {names['train']!r}")
    if data_root is not None:
        refuse_hub_name(data_root)
    folder = data_root_from(data_root)
    if folder is None:
        raise MissingDataError(f"dataset {KEY!r} reads a dataset saved with save_to_disk: give --data-root DIR")
    if group_column is None:
        raise FairDistillError(f"dataset {KEY!r} needs --group-column COL, the column of each image's group")
    dd, how = load_local(folder, cache_dir)
    train_ds, test_ds, ignored = _pick_splits(dd, names, folder)
    cols = {"label": label_column, "group": group_column, "image": image_column}
    _check_columns(train_ds, test_ds, cols, folder)
    spec = TableSpec(
        key=KEY,
        name=KEY,
        where=str(folder),
        description=_describe(folder, how, cols, names, (len(train_ds), len(test_ds)), ignored),
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        classes=_class_names(train_ds, label_column),
        groups=_class_names(train_ds, group_column),
        image_size=size,
        params={
            "source": str(folder.resolve()),
            "format": how,
            "columns": cols,
            "splits": names,
            "ignored_splits": ignored,
        },
        cache_params={"format": how, "splits": names, "image_column": image_column},
    )
    train = _split_rows(train_ds, cols, folder, names["train"])
    test = _split_rows(test_ds, cols, folder, names["test"])
    sources = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return table_dataset(spec, train, test, sources=sources, stream=stream, cache_dir=cache_dir, cache=cache)


def _describe(
    folder: Path, how: str, cols: dict[str, str], names: dict[str, str], sizes: tuple[int, int], ignored: dict[str, int]
) -> str:
    text = (
        f"Hugging Face dataset in {folder} ({how}): class = {cols['label']}, group = {cols['group']}; "
        f"train = split {names['train']!r} ({sizes[0]}), test = split {names['test']!r} ({sizes[1]})"
    )
    if ignored:
        text += "; splits not used: " + ", ".join(f"{n} ({k})" for n, k in ignored.items())
    return text


__all__ = ["KEY", "SPLITS", "hf_dataset", "load_local", "refuse_hub_name"]
