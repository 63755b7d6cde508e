"""Writers of tiny image folders with a metadata table: the ``folder`` format and Waterbirds' official layout.

The images are genuine PNG / JPEG files made with Pillow (solid colours, one per image, so a test
can tell them apart), and the tables follow the formats: ``metadata.csv`` with a header line, and
Waterbirds' ``img_id,img_filename,y,split,place,place_filename`` with the species folders
(``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``) and split values 0 / 1 / 2.
Every writer returns what it wrote, so the tests can compute the expected result.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from files_faces import colour_of, write_image

#: Waterbirds' release folder
WATERBIRDS = "waterbird_complete95_forest2water2"
#: a few of CUB's species folders, by bird type (0 landbird, 1 waterbird), as the release names them
SPECIES = {
    0: ("010.Red_winged_Blackbird", "Red_Winged_Blackbird"),
    1: ("001.Black_footed_Albatross", "Black_Footed_Albatross"),
}
#: Places backgrounds by place (0 land, 1 water), as ``place_filename`` names them
PLACES = {0: "/b/bamboo_forest/0000{:04d}.jpg", 1: "/o/ocean/0000{:04d}.jpg"}


@dataclass
class Written:
    """A written folder: its root, the table file, and one dict per row (path, label, group, split, colour, size)."""

    root: Path
    table: Path
    rows: list[dict] = field(default_factory=list)

    def count(self, split: str, label, group) -> int:
        return sum(1 for r in self.rows if (r["split"], r["label"], r["group"]) == (split, label, group))


def write_folder(
    root: Path,
    cells: Mapping[tuple[str, object, object], int],
    *,
    columns: Mapping[str, str] | None = None,
    sizes: Sequence[tuple[int, int]] = ((12, 10),),
    suffixes: Sequence[str] = (".png",),
    names: Mapping[str, Mapping[object, str]] | None = None,
    meta: dict | None = None,
    extra: Mapping[str, str] | None = None,
) -> Written:
    """A ``folder`` dataset: for each ``(split, label, group)`` cell, that many images under ``root/images/``.

    ``columns`` renames the columns (keys path, label, group, split, class_name, group_name);
    ``sizes`` (width, height) and ``suffixes`` are cycled over the images; ``names`` writes the name
    columns (``{"class_name": {label: name}, "group_name": {...}}``); ``meta`` goes to ``meta.json``;
    ``extra`` adds constant columns (``{"note": "x"}``) that the loader must ignore.
    """
    cols = {"path": "path", "label": "label", "group": "group", "split": "split", **(columns or {})}
    names = names or {}
    out = Written(root, root / "metadata.csv")
    i = 0
    for (split, label, group), n in cells.items():
        for _ in range(n):
            size, suffix = sizes[i % len(sizes)], suffixes[i % len(suffixes)]
            rel = f"images/{split}/{i:04d}{suffix}"
            write_image(root / rel, colour_of(i), size)
            row = {"path": rel, "label": label, "group": group, "split": split, "colour": colour_of(i), "size": size}
            for key, by_value in names.items():
                row[key] = by_value[label if key == "class_name" else group]
            out.rows.append(row)
            i += 1
    header = [cols[k] for k in ("path", "label", "group", "split")] + [cols.get(k, k) for k in names]
    header += list(extra or {})
    with open(out.table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in out.rows:
            w.writerow([r["path"], r["label"], r["group"], r["split"], *(r[k] for k in names), *(extra or {}).values()])
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    return out


#: the small Waterbirds of the tests: (split, y, place) -> images. Train is 'biased' (most birds on
#: their own kind of place), validation and test are group-balanced within each class, as released.
WATERBIRDS_CELLS = {
    (0, 0, 0): 6, (0, 0, 1): 1, (0, 1, 0): 1, (0, 1, 1): 4,
    (1, 0, 0): 2, (1, 0, 1): 2, (1, 1, 0): 2, (1, 1, 1): 2,
    (2, 0, 0): 3, (2, 0, 1): 3, (2, 1, 0): 3, (2, 1, 1): 3,
}  # fmt: skip
#: Waterbirds' images come in many sizes; these are cycled over the fixture's JPEGs (width, height)
WATERBIRDS_SIZES = ((30, 24), (24, 30), (28, 28), (36, 20))


def write_waterbirds(root: Path, cells: Mapping[tuple[int, int, int], int] = WATERBIRDS_CELLS) -> Written:
    """Waterbirds in its official layout under ``root/waterbird_complete95_forest2water2/``.

    One species folder per bird type, JPEG images of mixed sizes, and ``metadata.csv`` with the
    release's six columns, its rows in ``img_id`` order (split values 0 train, 1 validation, 2 test).
    """
    folder = root / WATERBIRDS
    out = Written(folder, folder / "metadata.csv")
    counters = {0: 0, 1: 0}
    for (split, y, place), n in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        for _ in range(n):
            i = len(out.rows)
            species_dir, stem = SPECIES[y]
            counters[y] += 1
            rel = f"{species_dir}/{stem}_{counters[y]:04d}_{100 + i}.jpg"
            size = WATERBIRDS_SIZES[i % len(WATERBIRDS_SIZES)]
            write_image(folder / rel, colour_of(i), size)
            out.rows.append(
                {"img_id": i + 1, "path": rel, "label": y, "split": split, "group": place, "size": size,
                 "place_filename": PLACES[place].format(i), "colour": colour_of(i)}
            )  # fmt: skip
    with open(out.table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        for r in out.rows:
            w.writerow([r["img_id"], r["path"], r["label"], r["split"], r["group"], r["place_filename"]])
    return out
