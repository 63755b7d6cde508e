"""Waterbirds (Sagawa et al. 2020, "Distributionally Robust Neural Networks"), read from its official folder.

The release is the folder ``waterbird_complete95_forest2water2/``: CUB bird photographs pasted on
Places backgrounds, one sub-folder per bird species, and ``metadata.csv`` with the columns
``img_id, img_filename, y, split, place, place_filename``. Class = bird type (``y``: 0 landbird,
1 waterbird), group = place (0 land, 1 water). In the training split 95% of each class stands on
its own kind of place, so the place is a shortcut.

Read with the ``folder`` loader's code (:mod:`fairdistill.data.folder`): train is split 0, test
split 2 as distributed (group-balanced within each class); the validation split 1 is left out on
purpose, and its size is said in the dataset's description and ``params["ignored_rows"]``. The
images (of many sizes) are resized to ``image_size`` x ``image_size`` with Pillow's bilinear
filter, without the central crop of Sagawa et al.'s 224-px pipeline (resize to 256, crop 224): at
64 px every pixel of the bird is kept. Normalised with the ImageNet statistics that pipeline uses,
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

The data root is the release folder itself or the folder holding it.
"""

from __future__ import annotations

from pathlib import Path

from .dataset import FairDataset
from .files import Layout, data_root_from
from .folder import Selection, read_csv, split_rows
from .table import TableSpec, check_image_size, table_dataset

KEY = "waterbirds"
FOLDER = "waterbird_complete95_forest2water2"
CLASSES = ("landbird", "waterbird")
GROUPS = ("land", "water")
#: ImageNet's per-channel statistics, which the Waterbirds pipeline of Sagawa et al. (2020) normalises with
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: metadata.csv's columns for the folder loader's keys; train = split 0, test = split 2 (1: validation, unused)
COLUMNS = {"path": "img_filename", "label": "y", "group": "place", "split": "split"}
SPLITS = {"train": "0", "test": "2"}

WATERBIRDS_LAYOUT = Layout(
    key=KEY,
    folders=(FOLDER, "."),
    files=(("metadata.csv",),),
    note="the official release: metadata.csv and one folder of images per bird species",
)


def waterbirds(
    *,
    data_root: str | Path | None = None,
    image_size: int = 64,
    stream: bool = False,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> FairDataset:
    """Waterbirds: class = bird type (landbird, waterbird), group = place (land, water); see the module docstring.

    ``stream=True`` keeps both splits uint8, memory-mapped from the decoded cache, decoded a batch at a time.
    """
    size = check_image_size(image_size)
    folder = WATERBIRDS_LAYOUT.find(data_root_from(data_root))
    table = read_csv(folder / "metadata.csv")
    train, test, ignored = split_rows(folder, table, Selection(dict(COLUMNS), dict(SPLITS)))
    others = sum(n for v, n in ignored.items() if v != "1")
    spec = TableSpec(
        key=KEY,
        name=KEY,
        where=str(table.path),
        description=(
            f"Waterbirds {size}x{size}: bird type by place, train split 0 ({len(train)}), test split 2 "
            f"({len(test)}) as distributed; validation split 1 ({ignored.get('1', 0)} images) not used"
            + (f"; {others} row(s) of other split values ignored" if others else "")
        ),
        mean=IMAGENET_NORM[0],
        std=IMAGENET_NORM[1],
        classes=CLASSES,
        groups=GROUPS,
        image_size=size,
        params={
            "source": str(folder.resolve()),
            "splits": {"train": 0, "test": 2, "unused": {v: n for v, n in sorted(ignored.items())}},
            "ignored_rows": sum(ignored.values()),
        },
    )
    sources = [*train.images, *test.images]
    return table_dataset(spec, train, test, sources=sources, stream=stream, cache_dir=cache_dir, cache=cache)


__all__ = ["CLASSES", "GROUPS", "IMAGENET_NORM", "KEY", "WATERBIRDS_LAYOUT", "waterbirds"]
