"""Writers of tiny face-benchmark folders, in the released layouts, for the loader tests.

The images are genuine JPEG / PNG files made with Pillow (small, solid colours or noise), the text
files follow the released formats byte for byte in spirit (CelebA's ``list_attr_celeba.txt`` with
its count line, 40 attribute names and right-aligned ``-1`` / `` 1`` values), and the file names
are the real patterns (``{age}_{gender}_{race}_{datetime}.jpg.chip.jpg``, ``<id>_<age>_<gender>.png``,
``000001.jpg``). Every writer returns what it wrote so the tests can compute the expected result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
assert len(CELEBA_ATTRIBUTES) == 40


def colour_of(i: int) -> tuple[int, int, int]:
    """A distinct, reproducible RGB colour for image number ``i``."""
    return ((37 * i + 11) % 256, (91 * i + 50) % 256, (53 * i + 200) % 256)


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 24), *, margin=None) -> Path:
    """A solid-colour image (format from the suffix: PNG or JPEG); ``margin`` colours the rows the centre crop drops.

    ``size`` is (width, height); with height > width the top and bottom ``(height - width) / 2`` rows
    are painted ``margin`` (if given), so a correct centred square crop sees only ``colour``.
    """
    w, h = size
    img = Image.new("RGB", size, colour)
    if margin is not None and h > w:
        band = (h - w) // 2
        img.paste(margin, (0, 0, w, band))
        img.paste(margin, (0, h - band, w, h))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=95, subsampling=0)
    return path


def write_noise(path: Path, seed: int, size: tuple[int, int] = (20, 24)) -> Path:
    """A random-pixel JPEG image."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, format="JPEG", quality=90)
    return path


def truncate(path: Path, keep: int = 60) -> Path:
    """Cut a file short (a half-downloaded image)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


# ---- UTKFace ----------------------------------------------------------------------------------
@dataclass
class UTKWritten:
    folder: Path
    #: kept images: (path, age, gender, race, colour)
    images: list[tuple[Path, int, int, int, tuple[int, int, int]]] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # race 4
    unparseable: list[Path] = field(default_factory=list)


def utk_name(age: int, gender: int, race: int, i: int, suffix: str = ".jpg.chip.jpg") -> str:
    return f"{age}_{gender}_{race}_{20170109150557335 + 1000 * i}{suffix}"


def write_utkface(
    root: Path,
    entries: list[tuple[int, int, int]],
    *,
    folder: str = "UTKFace",
    suffix: str = ".jpg.chip.jpg",
    others: int = 0,
    unparseable: bool = False,
    size: tuple[int, int] = (20, 20),
    margin: tuple[int, int, int] | None = None,
) -> UTKWritten:
    """UTKFace images for ``entries`` (age, gender, race) under ``root/folder``.

    ``others`` adds that many race-4 images; ``unparseable`` adds the kinds of bad names the release
    has (a missing field) plus a race out of range and a non-numeric age, and some non-image files
    that must be ignored silently. ``size`` (width, height) and ``margin``: see :func:`write_image`.
    """
    out = UTKWritten(root / folder)
    for i, (age, gender, race) in enumerate(entries):
        colour = colour_of(i)
        path = write_image(out.folder / utk_name(age, gender, race, i, suffix), colour, size, margin=margin)
        out.images.append((path, age, gender, race, colour))
    for j in range(others):
        out.others.append(write_noise(out.folder / utk_name(30 + j, j % 2, 4, 900 + j), seed=j))
    if unparseable:
        for k, name in enumerate(
            [
                "39_1_20170116174525125.jpg.chip.jpg",  # race missing (as in the real release)
                "61_3_20170109150557335.jpg.chip.jpg",  # gender missing: '3' would be read as gender
                "25_0_7_20170116174525125.jpg.chip.jpg",  # race out of range
                "x_0_1_20170116174525125.jpg",  # not a number
            ]
        ):
            out.unparseable.append(write_noise(out.folder / name, seed=100 + k))
        (out.folder / "README.txt").write_text("not an image\n")
        (out.folder / "._1_0_0_20170109150557335.jpg.chip.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    return out


# ---- BFFHQ ------------------------------------------------------------------------------------
@dataclass
class BFFHQWritten:
    folder: Path
    #: split ("align", "conflict", "test") -> [(path, age class, gender, colour)]
    images: dict[str, list[tuple[Path, int, int, tuple[int, int, int]]]] = field(default_factory=dict)


def write_bffhq(
    root: Path,
    *,
    align: dict[tuple[int, int], int],
    conflict: dict[tuple[int, int], int],
    test: dict[tuple[int, int], int],
    under: str = "bffhq",
    nested: bool = True,
    test_nested: bool = False,
    size: tuple[int, int] = (16, 16),
) -> BFFHQWritten:
    """BFFHQ as released: ``under/0.5pct/{align,conflict}/<class>/<id>_<age>_<gender>.png`` and ``under/test/``.

    Each dict maps (age class, gender) to an image count. ``nested=False`` puts the train images
    directly in ``align/`` and ``conflict/``; ``test_nested=True`` splits ``test/`` into ``align/``
    and ``conflict/`` sub-folders. A ``valid/`` folder is written too (it must be ignored).
    """
    base = root / under if under != "." else root
    out = BFFHQWritten(base)
    counter = 0
    for split, cells in (("align", align), ("conflict", conflict), ("test", test)):
        rows = []
        for (y, a), n in sorted(cells.items()):
            for _ in range(n):
                if split == "test":
                    where = base / "test" / ("align" if y == a else "conflict") if test_nested else base / "test"
                else:
                    where = base / "0.5pct" / split / (str(y) if nested else "")
                colour = colour_of(counter)
                path = write_image(where / f"{counter:05d}_{y}_{a}.png", colour, size)
                rows.append((path, y, a, colour))
                counter += 1
        out.images[split] = rows
        (base / ("test" if split == "test" else f"0.5pct/{split}")).mkdir(parents=True, exist_ok=True)
    write_image(base / "0.5pct" / "valid" / f"{counter:05d}_0_1.png", (1, 2, 3), size)
    return out


# ---- CelebA -----------------------------------------------------------------------------------
@dataclass
class CelebAWritten:
    folder: Path
    names: list[str]
    partition: list[int]
    values: np.ndarray  # (N, 40) int in {1, -1}
    colours: list[tuple[int, int, int]]

    @property
    def attr_file(self) -> Path:
        return self.folder / "list_attr_celeba.txt"

    @property
    def partition_file(self) -> Path:
        return self.folder / "list_eval_partition.txt"

    @property
    def image_folder(self) -> Path:
        return self.folder / "img_align_celeba"

    def column(self, attribute: str) -> np.ndarray:
        return self.values[:, CELEBA_ATTRIBUTES.index(attribute)]


def celeba_attr_text(names: list[str], values: np.ndarray) -> str:
    """``list_attr_celeba.txt`` as released: count, names, then ``name`` and right-aligned values."""
    lines = [str(len(names)), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f"{n} " + " ".join(f"{int(v):2d}" for v in row) for n, row in zip(names, values, strict=True)]
    return "\n".join(lines) + "\n"


def celeba_partition_text(names: list[str], partition: list[int]) -> str:
    return "".join(f"{n} {p}\n" for n, p in zip(names, partition, strict=True))


def write_celeba(
    root: Path,
    partition: list[int],
    attributes: dict[str, list[int]],
    *,
    folder: str = "celeba",
    seed: int = 0,
    size: tuple[int, int] = (18, 22),
) -> CelebAWritten:
    """CelebA's release for ``len(partition)`` images ``000001.jpg``...: the jpgs and both text files.

    ``attributes`` gives the 1 / -1 values of some attributes per image; the others are random.
    Images are solid-colour JPEGs with the aspect of the aligned 178x218 images, whose top and bottom
    bands (cut by the centre crop) are painted another colour.
    """
    n = len(partition)
    values = np.random.default_rng(seed).choice(np.array([-1, 1]), size=(n, len(CELEBA_ATTRIBUTES)))
    for name, column in attributes.items():
        values[:, CELEBA_ATTRIBUTES.index(name)] = column
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    base = root / folder
    colours = [colour_of(i) for i in range(n)]
    for name, colour in zip(names, colours, strict=True):
        write_image(base / "img_align_celeba" / name, colour, size, margin=(255, 255, 255))
    written = CelebAWritten(base, names, list(partition), values, colours)
    written.attr_file.write_text(celeba_attr_text(names, values))
    written.partition_file.write_text(celeba_partition_text(names, list(partition)))
    return written
