"""UTKFace, BFFHQ and CelebA loaders: released layouts, labels, groups, splits, pixels, errors, cache."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from files_faces import (
    CELEBA_ATTRIBUTES,
    celeba_attr_text,
    celeba_partition_text,
    truncate,
    write_bffhq,
    write_celeba,
    write_image,
    write_noise,
    write_utkface,
)

from fairdistill.data import faces
from fairdistill.data.faces import bffhq, celeba, parse_bffhq_name, parse_utkface_name, utkface
from fairdistill.data.files import DATA_ENV, MissingDataError
from fairdistill.errors import FairDistillError

SIZE = 8


def pixels(ds, images: torch.Tensor) -> np.ndarray:
    """Model-space images back to uint8 pixels; asserts they sit on the 1/255 grid."""
    x = ds.to_pixels(images).double() * 255
    assert (x - x.round()).abs().max() < 1e-3
    return x.round().to(torch.uint8).numpy()


def solid_colours(ds, images: torch.Tensor) -> list[tuple[int, int, int]]:
    """The colour of each image, asserting every image is one exact solid colour."""
    px = pixels(ds, images)
    first = px[:, :, :1, :1]
    assert (px == first).all(), "images are not solid colours"
    return [tuple(int(v) for v in c) for c in first[:, :, 0, 0]]


def no_decoding(monkeypatch):
    """Make any image decode fail, to prove a load came from the cache."""

    def refuse(path, size, *args, **kwargs):
        raise AssertionError(f"decoded {path} although the cache should have been used")

    monkeypatch.setattr(faces, "decode_face", refuse)


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


# ---- UTKFace ----------------------------------------------------------------------------------
AGES = {0: (1, 19), 1: (20, 39), 2: (40, 80)}  # two ages per bin, on both sides of each boundary


def utk_entries(counts: dict[tuple[int, int], int]) -> list[tuple[int, int, int]]:
    entries = []
    for (y, race), n in sorted(counts.items()):
        entries += [(AGES[y][k % 2], k % 2, race) for k in range(n)]
    return entries


# cells (age bin, race) with 1..4 images, one with 7; every class keeps some train images with a cap of 2
UTK_COUNTS = {(y, a): 1 + a for y in range(3) for a in range(4)}
UTK_COUNTS[(1, 0)] = 7


def table(counts: dict[tuple[int, int], int], k: int, g: int) -> list[list[int]]:
    return [[counts.get((y, a), 0) for a in range(g)] for y in range(k)]


def test_parse_utkface_names():
    assert parse_utkface_name("26_1_2_20170116174525125.jpg.chip.jpg") == (26, 1, 2)
    assert parse_utkface_name("100_0_0_20170112213500903.jpg") == (100, 0, 0)
    assert parse_utkface_name("1_0_4_20161219140623097.PNG") == (1, 0, 4)
    for bad in (
        "39_1_20170116174525125.jpg.chip.jpg",
        "25_0_5_2017.jpg",
        "25_2_0_2017.jpg",
        "a_0_0_1.jpg",
        "1_0_0_1.gif",
    ):
        assert parse_utkface_name(bad) is None, bad


@pytest.mark.parametrize("test_cells", ["equal", "capped"])
def test_utkface_labels_groups_pixels_and_test_cap(tmp_path, test_cells):
    written = write_utkface(tmp_path, utk_entries(UTK_COUNTS), suffix=".png", size=(20, 24), margin=(255, 255, 255))
    ds = utkface(
        data_root=tmp_path, image_size=SIZE, test_per_cell=2, test_cells=test_cells, cache_dir=tmp_path / "cache"
    )
    assert ds.class_names == ("<20", "20-39", ">=40")
    assert ds.group_names == ("White", "Black", "Asian", "Indian")
    assert ds.train.images.shape[1:] == (3, SIZE, SIZE) and ds.test.images.shape[1:] == (3, SIZE, SIZE)
    # "equal" (the reference's): min(cap 2, smallest cell 1) = 1 from every cell; "capped" (ours): min(n, 2) per cell
    test_counts = {cell: 1 if test_cells == "equal" else min(n, 2) for cell, n in UTK_COUNTS.items()}
    train_counts = {cell: n - test_counts[cell] for cell, n in UTK_COUNTS.items()}
    assert ds.counts("test").tolist() == table(test_counts, 3, 4)
    assert ds.counts("train").tolist() == table(train_counts, 3, 4)
    # each image is its own solid PNG colour: the centre crop removed the white bands, the resize kept the colour
    truth = {colour: (age, race) for _, age, _, race, colour in written.images}
    seen = []
    for split in (ds.train, ds.test):
        for colour, y, a in zip(
            solid_colours(ds, split.images), split.labels.tolist(), split.groups.tolist(), strict=True
        ):
            age, race = truth[colour]
            assert (y, a) == (0 if age < 20 else 1 if age < 40 else 2, race)
            seen.append(colour)
    assert sorted(seen) == sorted(truth)  # every image exactly once
    # both splits keep the sorted-listing order
    order = {c: i for i, c in enumerate(c for _, _, _, _, c in sorted(written.images, key=lambda r: r[0].name))}
    for split in (ds.train, ds.test):
        idx = [order[c] for c in solid_colours(ds, split.images)]
        assert idx == sorted(idx)


def test_utkface_drops_others_and_skips_unparseable_names(tmp_path, caplog):
    counts = {(0, 0): 3, (1, 1): 4, (2, 3): 3}
    write_utkface(tmp_path, utk_entries(counts), others=3, unparseable=True)
    with caplog.at_level(logging.WARNING, logger="fairdistill.data.faces"):
        ds = utkface(data_root=tmp_path, image_size=SIZE, test_per_cell=1, cache_dir=tmp_path / "cache")
    assert len(ds.train) + len(ds.test) == 10  # 3 "Others", 4 bad names, a text file and a ._ file left out
    assert ds.counts("test").tolist() == table({c: 1 for c in counts}, 3, 4)
    assert ds.counts("train").tolist() == table({c: n - 1 for c, n in counts.items()}, 3, 4)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipped 4 file(s)" in m and "39_1_20170116174525125.jpg.chip.jpg" in m for m in warned), warned


def test_utkface_split_is_seeded_and_reproducible(tmp_path):
    write_utkface(tmp_path, utk_entries(UTK_COUNTS), suffix=".png")
    kw = dict(data_root=tmp_path, image_size=SIZE, test_per_cell=2, cache_dir=tmp_path / "cache")
    a, b, c = utkface(seed=0, **kw), utkface(seed=0, **kw), utkface(seed=1, **kw)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.images, b.train.images)
    assert a.counts("test").tolist() == c.counts("test").tolist()
    # the larger cells (up to 7 images) give other test images under another seed
    assert not torch.equal(a.test.images, c.test.images)
    assert a.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("folder", ["utkface", "UTKFace/UTKFace", "utkface/UTKFace", "."])
def test_utkface_accepted_folders(tmp_path, folder):
    write_utkface(tmp_path, utk_entries({(0, 0): 2, (1, 1): 2, (2, 2): 2}), folder=folder)
    if folder == "UTKFace/UTKFace":
        (tmp_path / "UTKFace" / "notes.txt").write_text("the outer folder holds only the inner one\n")
    ds = utkface(data_root=tmp_path, image_size=SIZE, test_per_cell=1, cache_dir=tmp_path / "cache")
    assert len(ds.train) == 3 and len(ds.test) == 3


def test_utkface_data_root_from_environment(tmp_path, monkeypatch):
    write_utkface(tmp_path, utk_entries({(0, 0): 2, (1, 1): 2, (2, 2): 2}))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert len(utkface(image_size=SIZE, test_per_cell=1, cache_dir=tmp_path / "cache").test) == 3
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(MissingDataError, match="needs a data root"):
        utkface(image_size=SIZE, cache_dir=tmp_path / "cache")


def test_utkface_missing_folder_lists_the_layout(tmp_path):
    (tmp_path / "UTKFace").mkdir()
    (tmp_path / "UTKFace" / "readme.txt").write_text("images not unpacked yet\n")
    with pytest.raises(MissingDataError) as err:
        utkface(data_root=tmp_path, cache_dir=tmp_path / "cache")
    text = str(err.value)
    assert "expected <root>/UTKFace or <root>/utkface or <root>/UTKFace/UTKFace" in text
    assert "{age}_{gender}_{race}_{datetime}.jpg" in text
    assert f"{tmp_path / 'utkface'}: no such folder" in text
    assert "found: readme.txt" in text


def test_utkface_corrupt_image_names_the_file(tmp_path):
    written = write_utkface(tmp_path, utk_entries({(0, 0): 2, (1, 1): 2, (2, 2): 2}))
    bad = truncate(written.images[3][0])
    with pytest.raises(MissingDataError, match=str(bad.name)):
        utkface(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    bad.write_text("this is not a JPEG\n")
    with pytest.raises(MissingDataError, match="cannot decode"):
        utkface(data_root=tmp_path, image_size=SIZE, cache=False)


def test_utkface_cache_hit_and_rebuild_on_changed_image(tmp_path, monkeypatch):
    written = write_utkface(tmp_path, utk_entries({(0, 0): 2, (1, 1): 2, (2, 2): 2}), suffix=".png")
    cache = tmp_path / "cache"
    kw = dict(data_root=tmp_path, image_size=SIZE, test_per_cell=1, cache_dir=cache)
    first = utkface(**kw)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["utkface"]
    with monkeypatch.context() as m:
        no_decoding(m)
        second = utkface(**kw)
        assert torch.equal(first.train.images, second.train.images)
        assert torch.equal(first.test.images, second.test.images)
        # another seed or cap reuses the same decoded pixels
        utkface(**{**kw, "seed": 5})
        # a rewritten image invalidates the entry
        path, *_ = written.images[0]
        write_image(path, (9, 8, 7), (20, 20))
        bump_mtime(path)
        with pytest.raises(AssertionError, match="decoded"):
            utkface(**kw)
    third = utkface(**kw)
    assert (9, 8, 7) in solid_colours(third, torch.cat([third.train.images, third.test.images]))
    assert (9, 8, 7) not in solid_colours(first, torch.cat([first.train.images, first.test.images]))


def test_threaded_decoding_matches_and_reports_corrupt_files(tmp_path, monkeypatch):
    written = write_utkface(tmp_path, utk_entries(UTK_COUNTS), suffix=".png", size=(20, 24), margin=(0, 0, 0))
    kw = dict(data_root=tmp_path, image_size=SIZE, test_per_cell=2, cache=False)
    alone = utkface(**kw)
    monkeypatch.setattr(faces, "THREADED_FROM", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    pooled = utkface(**kw)
    assert torch.equal(alone.train.images, pooled.train.images) and torch.equal(alone.test.images, pooled.test.images)
    bad = truncate(written.images[-2][0])
    with pytest.raises(MissingDataError, match=bad.name):
        utkface(**kw)


def test_utkface_bad_arguments(tmp_path):
    with pytest.raises(FairDistillError, match="image_size"):
        utkface(data_root=tmp_path, image_size=4)
    with pytest.raises(FairDistillError, match="test_per_cell"):
        utkface(data_root=tmp_path, test_per_cell=0)


# ---- BFFHQ ------------------------------------------------------------------------------------
ALIGN = {(0, 0): 6, (1, 1): 5}
CONFLICT = {(0, 1): 1, (1, 0): 2}
TEST = {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}


def test_parse_bffhq_names():
    assert parse_bffhq_name(Path("00123_0_1.png")) == (0, 1)
    assert parse_bffhq_name(Path("some_id_1_0.png")) == (1, 0)
    with pytest.raises(MissingDataError, match="00123_2_0.png"):
        parse_bffhq_name(Path("00123_2_0.png"))


def check_bffhq(ds, written):
    assert ds.class_names == ("young", "old") and ds.group_names == ("female", "male")
    assert ds.counts("train").tolist() == [[6, 1], [2, 5]]  # 11 aligned + 3 conflicting
    assert ds.counts("test").tolist() == [[2, 2], [2, 2]]
    for split, parts in ((ds.train, ("align", "conflict")), (ds.test, ("test",))):
        truth = {c: (y, a) for part in parts for _, y, a, c in written.images[part]}
        colours = solid_colours(ds, split.images)
        assert sorted(colours) == sorted(truth)
        assert [truth[c] for c in colours] == list(zip(split.labels.tolist(), split.groups.tolist(), strict=True))


def test_bffhq_released_layout(tmp_path):
    written = write_bffhq(tmp_path, align=ALIGN, conflict=CONFLICT, test=TEST)
    ds = bffhq(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    check_bffhq(ds, written)
    # train order: align before conflict, each in sorted path order
    colours = solid_colours(ds, ds.train.images)
    expected = [c for part in ("align", "conflict") for _, _, _, c in sorted(written.images[part])]
    assert colours == expected


def test_bffhq_flat_folders_under_the_root_and_split_test(tmp_path):
    written = write_bffhq(
        tmp_path, align=ALIGN, conflict=CONFLICT, test=TEST, under=".", nested=False, test_nested=True
    )
    check_bffhq(bffhq(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache"), written)


def test_bffhq_missing_folders_listed(tmp_path):
    (tmp_path / "bffhq" / "0.5pct" / "align").mkdir(parents=True)
    with pytest.raises(MissingDataError) as err:
        bffhq(data_root=tmp_path, cache_dir=tmp_path / "cache")
    text = str(err.value)
    assert "expected <root>/bffhq or <root> holding: 0.5pct/align/, 0.5pct/conflict/, test/" in text
    assert "missing 0.5pct/conflict/, test/" in text


def test_bffhq_empty_split_bad_name_and_corrupt_image(tmp_path):
    written = write_bffhq(tmp_path, align=ALIGN, conflict=CONFLICT, test=TEST)
    bad = write_image(tmp_path / "bffhq" / "test" / "00999_2_1.png", (1, 1, 1), (16, 16))
    with pytest.raises(MissingDataError, match="00999_2_1.png"):
        bffhq(data_root=tmp_path, cache_dir=tmp_path / "cache")
    bad.unlink()
    broken = truncate(written.images["conflict"][0][0], keep=40)
    with pytest.raises(MissingDataError, match=broken.name):
        bffhq(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    for path, *_ in written.images["test"]:
        path.unlink()
    with pytest.raises(MissingDataError, match="no images in"):
        bffhq(data_root=tmp_path, cache_dir=tmp_path / "cache")


def test_bffhq_cache_hit(tmp_path, monkeypatch):
    written = write_bffhq(tmp_path, align=ALIGN, conflict=CONFLICT, test=TEST)
    kw = dict(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    first = bffhq(**kw)
    with monkeypatch.context() as m:
        no_decoding(m)
        second = bffhq(**kw)
        assert torch.equal(first.train.images, second.train.images)
        assert torch.equal(first.test.images, second.test.images)
        write_image(written.images["test"][0][0], (3, 2, 1), (16, 16))
        bump_mtime(written.images["test"][0][0])
        with pytest.raises(AssertionError, match="decoded"):
            bffhq(**kw)


# ---- CelebA -----------------------------------------------------------------------------------
# 12 train, 4 valid, 14 test images; test cells (Attractive, Male): (0,0) 3, (0,1) 2, (1,0) 4, (1,1) 5
PARTITION = [0] * 12 + [1] * 4 + [2] * 14
ATTRACTIVE = [1, -1, 1, 1, -1, -1, 1, -1, 1, 1, 1, -1] + [1, -1, 1, -1] + [-1] * 5 + [1] * 9
MALE = [1, 1, -1, 1, -1, 1, -1, -1, 1, 1, -1, 1] + [1, 1, -1, -1] + [-1] * 3 + [1] * 2 + [-1] * 4 + [1] * 5
SMILING = [(-1) ** i for i in range(30)]
YOUNG = [(-1) ** (i // 2) for i in range(30)]


def write_small_celeba(root: Path, folder: str = "celeba"):
    attrs = {"Attractive": ATTRACTIVE, "Male": MALE, "Smiling": SMILING, "Young": YOUNG}
    return write_celeba(root, PARTITION, attrs, folder=folder)


def near_colours(ds, images: torch.Tensor, palette: list[tuple[int, int, int]]) -> list[int]:
    """Index in ``palette`` of each (JPEG, so nearly solid) image; asserts it is within 4 levels everywhere."""
    px = pixels(ds, images).astype(int)
    pal = np.array(palette)
    found = []
    for img in px:
        mean = img.reshape(3, -1).mean(1)
        k = int(np.abs(pal - mean).sum(1).argmin())
        assert np.abs(img - pal[k][:, None, None]).max() <= 4, "a white band was not cropped away"
        found.append(k)
    return found


def test_celeba_train_test_labels_and_balance(tmp_path):
    written = write_small_celeba(tmp_path)
    ds = celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("not Attractive", "Attractive") and ds.group_names == ("not Male", "Male")
    att, male = np.array(ATTRACTIVE), np.array(MALE)
    # train = partition 0, in file order, every image
    assert ds.train.labels.tolist() == (att[:12] == 1).astype(int).tolist()
    assert ds.train.groups.tolist() == (male[:12] == 1).astype(int).tolist()
    assert near_colours(ds, ds.train.images, written.colours) == list(range(12))
    # test = partition 2 balanced: 2 per cell (the smallest test cell), partition 1 unused
    assert ds.counts("test").tolist() == [[2, 2], [2, 2]]
    rows = near_colours(ds, ds.test.images, written.colours)
    assert all(16 <= r < 30 for r in rows) and rows == sorted(rows) and len(set(rows)) == 8
    assert ds.test.labels.tolist() == [int(att[r] == 1) for r in rows]
    assert ds.test.groups.tolist() == [int(male[r] == 1) for r in rows]
    again = celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    assert torch.equal(ds.test.images, again.test.images)


def test_celeba_other_attributes(tmp_path):
    write_small_celeba(tmp_path)
    ds = celeba(data_root=tmp_path, target="Smiling", sensitive="Young", image_size=SIZE, cache_dir=tmp_path / "cache")
    assert ds.class_names == ("not Smiling", "Smiling") and ds.group_names == ("not Young", "Young")
    assert ds.train.labels.tolist() == [int(v == 1) for v in SMILING[:12]]
    assert ds.train.groups.tolist() == [int(v == 1) for v in YOUNG[:12]]
    smiling, young = np.array(SMILING[16:]), np.array(YOUNG[16:])
    smallest = min(int(((smiling == s) & (young == g)).sum()) for s in (-1, 1) for g in (-1, 1))
    assert ds.counts("test").tolist() == [[smallest] * 2] * 2


@pytest.mark.parametrize("folder", ["CelebA", "celeba/celeba"])
def test_celeba_accepted_folders(tmp_path, folder):
    write_small_celeba(tmp_path, folder=folder)
    assert len(celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache").train) == 12


def test_celeba_kaggle_nested_image_folder(tmp_path):
    written = write_small_celeba(tmp_path)
    inner = written.image_folder / "img_align_celeba"
    inner.mkdir()
    for name in written.names:
        (written.image_folder / name).rename(inner / name)
    assert len(celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache").train) == 12


def test_celeba_unknown_attribute(tmp_path):
    write_small_celeba(tmp_path)
    with pytest.raises(FairDistillError, match="unknown CelebA attribute 'Beautiful'") as err:
        celeba(data_root=tmp_path, target="Beautiful", cache_dir=tmp_path / "cache")
    assert all(name in str(err.value) for name in ("Attractive", "Male", "Young", "5_o_Clock_Shadow"))
    with pytest.raises(FairDistillError, match="sensitive"):
        celeba(data_root=tmp_path, target="Male", sensitive="Male", cache_dir=tmp_path / "cache")


def _edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "which, number, edit, message",
    [
        ("attr", 1, lambda s: "31", r"list_attr_celeba.txt: line 1 announces 31 images but 30 rows follow"),
        ("attr", 1, lambda s: "many", r"list_attr_celeba.txt: line 1 should be the number of images"),
        ("attr", 2, lambda s: s.replace("Young", ""), r"list_attr_celeba.txt: line 2 should name 40 distinct"),
        ("attr", 5, lambda s: s.rsplit(" ", 1)[0], r"list_attr_celeba.txt: line 5: expected a file name and 40 values"),
        ("attr", 7, lambda s: s[:11] + " 0" + s[13:], r"list_attr_celeba.txt: line 7: value '0' for 5_o_Clock_Shadow"),
        ("attr", 8, lambda s: s[:-2] + "-10", r"list_attr_celeba.txt: line 8: value '-10' for Young"),
        ("attr", 9, lambda s: "000003.jpg" + s[10:], r"list_attr_celeba.txt: line 9: 000003.jpg is listed twice"),
        ("part", 3, lambda s: "000003.jpg 3", r"list_eval_partition.txt: line 3: expected '<file> 0\|1\|2'"),
        ("part", 4, lambda s: "000099.jpg 0", r"list_eval_partition.txt: it must list the same images"),
    ],
)
def test_celeba_text_files_are_validated(tmp_path, which, number, edit, message):
    written = write_small_celeba(tmp_path)
    _edit_line(written.attr_file if which == "attr" else written.partition_file, number, edit)
    with pytest.raises(MissingDataError, match=message):
        celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")


def test_celeba_double_spaces_and_trailing_blank_lines_are_fine(tmp_path):
    written = write_small_celeba(tmp_path)
    text = written.attr_file.read_text()
    assert "-1  1" in text or " 1 -1" in text  # the released spacing
    written.attr_file.write_text(text.replace(" ", "  ") + "\n\n")
    assert len(celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache").train) == 12


def test_celeba_missing_image_and_corrupt_image(tmp_path):
    written = write_small_celeba(tmp_path)
    (written.image_folder / "000004.jpg").unlink()
    with pytest.raises(MissingDataError, match=r"1 image\(s\) listed in .* are missing: 000004.jpg"):
        celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    write_noise(written.image_folder / "000004.jpg", seed=3, size=(18, 22))
    truncate(written.image_folder / "000002.jpg")
    with pytest.raises(MissingDataError, match="000002.jpg"):
        celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")


def test_celeba_missing_folder_lists_the_layout(tmp_path):
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text("0\n")
    with pytest.raises(MissingDataError) as err:
        celeba(data_root=tmp_path, cache_dir=tmp_path / "cache")
    text = str(err.value)
    assert "holding: list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/" in text
    assert "missing list_eval_partition.txt, img_align_celeba/" in text


def test_celeba_unbalanceable_test(tmp_path):
    male = MALE[:16] + [1] * 14
    write_celeba(tmp_path, PARTITION, {"Attractive": ATTRACTIVE, "Male": male})
    with pytest.raises(FairDistillError, match="cannot be balanced"):
        celeba(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")


def test_celeba_cache_hit_fresh_labels_and_rebuild(tmp_path, monkeypatch):
    written = write_small_celeba(tmp_path)
    kw = dict(data_root=tmp_path, image_size=SIZE, cache_dir=tmp_path / "cache")
    first = celeba(**kw)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["celeba"]
    with monkeypatch.context() as m:
        no_decoding(m)
        second = celeba(**kw)
        assert torch.equal(first.train.images, second.train.images)
        assert torch.equal(first.test.images, second.test.images)
        # a rewritten attribute file: labels are read afresh, the pixels still come from the cache
        flipped = written.values.copy()
        flipped[:, CELEBA_ATTRIBUTES.index("Attractive")] *= -1
        written.attr_file.write_text(celeba_attr_text(written.names, flipped))
        third = celeba(**kw)
        assert third.train.labels.tolist() == (1 - first.train.labels).tolist()
        # a rewritten partition file (one valid image moves to train): the entry is rebuilt
        moved = list(PARTITION)
        moved[12] = 0
        written.partition_file.write_text(celeba_partition_text(written.names, moved))
        bump_mtime(written.partition_file)
        with pytest.raises(AssertionError, match="decoded"):
            celeba(**kw)
    rebuilt = celeba(**kw)
    assert len(rebuilt.train) == 13
    assert near_colours(rebuilt, rebuilt.train.images, written.colours) == list(range(13))
