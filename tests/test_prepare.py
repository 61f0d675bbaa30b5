"""`prepare`: the three layouts, bad files, duplicates, deterministic leak-free splits, safe re-runs."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from catsdogs.errors import UsageError
from catsdogs.images import encode_jpeg
from catsdogs.preparation import STUDY_SIZES, prepare
from catsdogs.sources import normalise_class_name, scan_source

from helpers import make_class_folders, make_photo


def manifest(data: Path) -> list[dict]:
    with open(data / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def rejected(data: Path) -> dict[str, str]:
    with open(data / "rejected.csv", newline="") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def zip_folder(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


@pytest.mark.parametrize("name, expected", [("Cat", "cat"), ("cats", "cat"), ("DOGS", "dog"), ("glass", "glass"),
                                            ("bus", "bus")])
def test_class_names_are_normalised(name, expected):
    assert normalise_class_name(name) == expected


def test_class_folders_layout(class_folders, tmp_path):
    summary = prepare(class_folders, tmp_path / "data", train=12, val=6, test=6)
    assert summary.layout == "folders"
    assert json.loads((tmp_path / "data" / "classes.json").read_text()) == ["cat", "dog"]
    rows = manifest(tmp_path / "data")
    assert {(r["split"], r["class"]) for r in rows} == {(s, c) for s in ("train", "validation", "test")
                                                        for c in ("cat", "dog")}
    for row in rows:
        assert (tmp_path / "data" / row["path"]).exists()
        assert row["path"].startswith(f"{row['split']}/{row['class']}/")


def test_kaggle_layout_from_zip(tmp_path):
    flat = tmp_path / "flat" / "train"
    for i in range(10):
        make_photo(flat / f"cat.{i}.jpg", 0, i)
        make_photo(flat / f"dog.{i}.jpg", 1, i)
    source = zip_folder(tmp_path / "flat", tmp_path / "train.zip")
    summary = prepare(source, tmp_path / "data", train=10, val=4, test=4)
    assert summary.layout == "kaggle" and summary.classes == ["cat", "dog"]
    assert all(Path(r["path"]).name.split(".")[0] == r["class"] for r in manifest(tmp_path / "data"))


def test_petimages_layout_with_corrupt_files(tmp_path):
    root = tmp_path / "pet"
    make_class_folders(root / "PetImages", per_class=10, names=("Cat", "Dog"))
    (root / "PetImages" / "Cat" / "666.jpg").write_bytes(b"")  # PetImages' famous empty file
    (root / "PetImages" / "Dog" / "Thumbs.db").write_bytes(b"\0" * 100)
    (root / "readme[1].txt").write_text("Microsoft's readme")
    source = zip_folder(root, tmp_path / "kagglecatsanddogs.zip")
    summary = prepare(source, tmp_path / "data", train=8, val=4, test=4)
    assert summary.layout == "petimages" and summary.classes == ["cat", "dog"]
    reasons = rejected(tmp_path / "data")
    assert reasons["PetImages/Cat/666.jpg"] == "empty file"
    assert "readme[1].txt" in reasons


def test_bad_files_are_listed_and_odd_ones_kept(class_folders, tmp_path):
    cats = class_folders / "Cats"
    (cats / "empty.jpg").write_bytes(b"")
    (cats / "text.jpg").write_text("not a photo")
    good = make_photo(tmp_path / "big.jpg", 0, 99, size=(200, 200)).read_bytes()
    (cats / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (cats / "tiny.jpg").write_bytes(encode_jpeg(np.zeros((10, 10, 3), np.uint8)))
    make_photo(cats / "odd.png", 0, 77, fmt="PNG")  # PNG: converted to an RGB JPEG and kept
    before = tree_digest(class_folders)
    prepare(class_folders, tmp_path / "data", train=14, val=6, test=4)
    reasons = rejected(tmp_path / "data")
    assert reasons["Cats/empty.jpg"] == "empty file"
    assert "not an image" in reasons["Cats/text.jpg"]
    assert "cannot decode" in reasons["Cats/truncated.jpg"]
    assert "too small" in reasons["Cats/tiny.jpg"]
    assert "Cats/odd.png" in {r["source"] for r in manifest(tmp_path / "data")}
    assert tree_digest(class_folders) == before, "SOURCE must never change"


def test_unsafe_zip_entries_are_refused(tmp_path):
    source = tmp_path / "evil.zip"
    photo = make_photo(tmp_path / "p.jpg", 0, 1).read_bytes()
    with zipfile.ZipFile(source, "w") as archive:
        for i in range(6):
            archive.writestr(f"cats/{i}.jpg", make_photo(tmp_path / f"c{i}.jpg", 0, i).read_bytes())
            archive.writestr(f"dogs/{i}.jpg", make_photo(tmp_path / f"d{i}.jpg", 1, i).read_bytes())
        archive.writestr("../escape.jpg", photo)
        archive.writestr("/etc/absolute.jpg", photo)
    prepare(source, tmp_path / "data", train=6, val=2, test=2)
    reasons = rejected(tmp_path / "data")
    assert "unsafe path" in reasons["../escape.jpg"] and "unsafe path" in reasons["/etc/absolute.jpg"]
    assert not (tmp_path / "escape.jpg").exists()


def test_duplicates_are_kept_once_and_never_in_two_splits(class_folders, tmp_path):
    for i in range(6):  # the same bytes under other names, in both classes
        shutil.copy(class_folders / "Cats" / f"{i}.jpg", class_folders / "Cats" / f"copy{i}.jpg")
        shutil.copy(class_folders / "Cats" / f"{i}.jpg", class_folders / "Dogs" / f"mislabelled{i}.jpg")
    summary = prepare(class_folders, tmp_path / "data", train=12, val=6, test=6)
    rows = manifest(tmp_path / "data")
    assert summary.duplicates == 12
    assert len({r["sha256"] for r in rows}) == len(rows)
    assert sum("duplicate of" in reason for reason in rejected(tmp_path / "data").values()) == 12


def test_split_is_deterministic_stratified_and_leak_free(class_folders, tmp_path):
    prepare(class_folders, tmp_path / "a", train=12, val=6, test=6, seed=7)
    prepare(class_folders, tmp_path / "b", train=12, val=6, test=6, seed=7)
    prepare(class_folders, tmp_path / "c", train=12, val=6, test=6, seed=8)
    a, b, c = (manifest(tmp_path / name) for name in "abc")
    assert a == b and tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert [r["split"] for r in a] != [r["split"] for r in c] or [r["sha256"] for r in a] != [r["sha256"] for r in c]
    for split, total in (("train", 12), ("validation", 6), ("test", 6)):
        members = [r for r in a if r["split"] == split]
        assert len(members) == total
        assert sum(r["class"] == "cat" for r in members) == total // 2
    sources = [r["source"] for r in a]
    assert len(sources) == len(set(sources))


@pytest.mark.slow  # prepares the 5000 real photos twice: ~20 s
def test_real_kaggle_zip_study_and_default_split(real_zip, tmp_path):
    summary = prepare(real_zip, tmp_path / "data", **STUDY_SIZES)  # what reproduce asks for
    counts = {split: summary.counts[split] for split in summary.counts}
    assert counts == {"train": {"cat": 1500, "dog": 1500}, "validation": {"cat": 500, "dog": 500},
                      "test": {"cat": 500, "dog": 500}}
    rows = manifest(tmp_path / "data")
    assert len({r["source"] for r in rows}) == 5000
    assert summary.rejected == 0
    default = prepare(real_zip, tmp_path / "default")  # a user's photos: 70/15/15 of each class
    assert default.counts == {"train": {"cat": 1750, "dog": 1750}, "validation": {"cat": 375, "dog": 375},
                              "test": {"cat": 375, "dog": 375}}
    assert default.unused == 0


def test_too_few_images_is_a_clear_error(class_folders, tmp_path):
    with pytest.raises(UsageError, match="class 'cat' has 12 usable images, but train 1500"):
        prepare(class_folders, tmp_path / "data", **STUDY_SIZES)  # the study asks for 2500 per class
    assert not (tmp_path / "data").exists()


def test_rerun_is_idempotent_and_foreign_data_is_refused(class_folders, tmp_path):
    data = tmp_path / "data"
    prepare(class_folders, data, train=12, val=6, test=6)
    first = tree_digest(data)
    prepare(class_folders, data, train=12, val=6, test=6)
    assert tree_digest(data) == first
    other = make_class_folders(tmp_path / "other", per_class=12, names=("birds", "fish"))
    with pytest.raises(UsageError, match="overwrite=True"):
        prepare(other, data, train=12, val=6, test=6)
    assert tree_digest(data) == first
    prepare(other, data, train=12, val=6, test=6, overwrite=True)
    assert json.loads((data / "classes.json").read_text()) == ["birds", "fish"]  # names as given (not cat/dog)


def test_not_a_classifier_source(tmp_path):
    make_class_folders(tmp_path / "one", per_class=3, names=("a", "a"))
    with pytest.raises(UsageError, match="found 1 class .a.; a classifier needs at least 2"):
        scan_source(tmp_path / "one")
    with pytest.raises(UsageError, match="no such file"):
        scan_source(tmp_path / "missing")
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(UsageError, match="a folder, a .zip archive or a .csv"):
        scan_source(tmp_path / "notzip.zip")
