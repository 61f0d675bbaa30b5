"""A person's own photos: N classes, the layouts people already have, sizes given as counts or fractions."""

from __future__ import annotations

import csv
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from catsdogs.errors import UsageError
from catsdogs.preparation import prepare
from catsdogs.sources import scan_source

from helpers import make_class_folders, make_photo

NAMES = ("ants", "bees", "wasps")


def manifest(data: Path) -> list[dict]:
    with open(data / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def counts(data: Path) -> Counter:
    return Counter((row["split"], row["class"]) for row in manifest(data))


def presplit(root: Path, splits: dict[str, int], names=NAMES) -> Path:
    """A torchvision-style tree: root/SPLIT/CLASS/*.jpg with `splits[SPLIT]` photos per class."""
    for offset, (split, per_class) in enumerate(splits.items()):
        for kind, name in enumerate(names):
            for i in range(per_class):
                make_photo(root / split / name / f"{split}-{i}.jpg", kind, 1000 * offset + i, kinds=len(names))
    return root


def test_presplit_tree_keeps_every_given_split(tmp_path):
    source = presplit(tmp_path / "photos", {"train": 10, "val": 4, "test": 3})
    summary = prepare(source, tmp_path / "data")
    assert summary.layout == "presplit" and summary.classes == list(NAMES)
    assert summary.given_splits == ["train", "validation", "test"] and summary.carved_splits == []
    for row in manifest(tmp_path / "data"):  # every photo stays in the split its folder names
        given = {"train": "train", "val": "validation", "test": "test"}[row["source"].split("/")[0]]
        assert row["split"] == given and row["source"].split("/")[1] == row["class"]
    assert counts(tmp_path / "data")[("validation", "bees")] == 4


def test_presplit_tree_without_test_carves_it_from_train(tmp_path):
    source = presplit(tmp_path / "photos", {"train": 20, "valid": 5})
    summary = prepare(source, tmp_path / "data")
    assert summary.given_splits == ["train", "validation"] and summary.carved_splits == ["test"]
    rows = manifest(tmp_path / "data")
    assert {r["source"].split("/")[0] for r in rows if r["split"] == "test"} == {"train"}
    assert all(r["source"].startswith("valid/") for r in rows if r["split"] == "validation")
    assert counts(tmp_path / "data")[("test", "ants")] == 3  # 15% of 20, per class
    assert counts(tmp_path / "data")[("train", "ants")] == 17
    record = json.loads((tmp_path / "data" / "prepare.json").read_text())
    assert record["given_splits"] == ["train", "validation"] and record["carved_splits"] == ["test"]
    assert "carved from train: test" in summary.line()
    with pytest.raises(UsageError, match="SOURCE gives its own validation split"):
        prepare(source, tmp_path / "other", val=0.2)


def test_split_named_folders_are_never_classes(tmp_path):
    source = presplit(tmp_path / "photos", {"train": 6, "validation": 3}, names=("a", "b"))
    make_photo(source / "train" / "stray.jpg", 0, 99)  # directly in a split folder: no class
    scan = scan_source(source)
    assert scan.classes == ["a", "b"] and scan.layout == "presplit"
    assert dict(scan.refused)["train/stray.jpg"].startswith("not inside a class folder")


def test_zip_of_a_presplit_tree(tmp_path):
    tree = presplit(tmp_path / "photos", {"train": 8, "val": 3, "test": 3})
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(tree.rglob("*.jpg")):
            handle.write(path, "hymenoptera/" + path.relative_to(tree).as_posix())
    summary = prepare(archive, tmp_path / "data")
    assert summary.layout == "presplit" and summary.counts["test"] == {name: 3 for name in NAMES}


def test_csv_of_labels_inside_a_folder_and_as_the_source(tmp_path):
    root = tmp_path / "photos"
    rows = []
    for kind, name in enumerate(NAMES):
        for i in range(8):
            make_photo(root / "images" / f"{name[0]}{i}.jpg", kind, i, kinds=3)
            rows.append([f"images/{name[0]}{i}.jpg", name])
    rows.append(["images/missing.jpg", "ants"])
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *rows])
    summary = prepare(root, tmp_path / "data")
    assert summary.layout == "csv" and summary.classes == list(NAMES)
    assert all(row["class"][0] == Path(row["source"]).name[0] for row in manifest(tmp_path / "data"))
    with open(tmp_path / "data" / "rejected.csv", newline="") as handle:
        reasons = {row["source"]: row["reason"] for row in csv.DictReader(handle)}
    assert reasons["images/missing.jpg"] == "listed in labels.csv but not found"
    direct = prepare(root / "labels.csv", tmp_path / "direct")
    assert direct.layout == "csv" and direct.counts == summary.counts


def test_csv_with_a_split_column_and_a_bad_header(tmp_path):
    root = tmp_path / "photos"
    lines = ["file,class,split"]
    for kind, name in enumerate(("x", "y")):
        for i in range(10):
            make_photo(root / f"{name}{i}.jpg", kind, i)
            lines.append(f"{name}{i}.jpg,{name},{'test' if i < 2 else ''}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    summary = prepare(root / "labels.csv", tmp_path / "data")
    assert summary.given_splits == ["test"] and summary.counts["test"] == {"x": 2, "y": 2}
    (tmp_path / "bad.csv").write_text("name,kind\na.jpg,x\n")
    with pytest.raises(UsageError, match="needs a header with path and label columns"):
        scan_source(tmp_path / "bad.csv")


def test_fractions_counts_and_unused_photos(tmp_path):
    source = make_class_folders(tmp_path / "photos", per_class=20, names=NAMES)
    fractions = prepare(source, tmp_path / "f", train=0.5, val=0.25, test=0.25)
    assert fractions.counts["train"] == {n: 10 for n in NAMES} and fractions.counts["test"] == {n: 5 for n in NAMES}
    counted = prepare(source, tmp_path / "c", train=30, val=6, test=6)
    assert counted.counts["train"] == {n: 10 for n in NAMES} and counted.unused == 3 * 6
    with open(tmp_path / "c" / "unused.csv", newline="") as handle:
        unused = list(csv.DictReader(handle))
    assert len(unused) == 18 and not {r["source"] for r in unused} & {r["source"] for r in manifest(tmp_path / "c")}
    with pytest.raises(UsageError, match="val must be a count .* or a fraction"):
        prepare(source, tmp_path / "bad", val=1.5)


def test_unbalanced_classes_are_split_per_class(tmp_path):
    source = tmp_path / "photos"
    for kind, (name, n) in enumerate((("common", 40), ("rare", 8))):
        for i in range(n):
            make_photo(source / name / f"{i}.jpg", kind, i)
    summary = prepare(source, tmp_path / "data")
    assert summary.counts["validation"] == {"common": 6, "rare": 1}
    assert summary.counts["test"] == {"common": 6, "rare": 1}
    assert summary.counts["train"] == {"common": 28, "rare": 6} and summary.unused == 0


def test_a_class_too_small_to_split_is_one_clear_error(tmp_path):
    source = make_class_folders(tmp_path / "photos", per_class=10, names=("big", "small"))
    for path in sorted((source / "small").iterdir())[2:]:
        path.unlink()
    with pytest.raises(UsageError, match="class 'small' has 2 usable images: too few to split") as error:
        prepare(source, tmp_path / "data")
    assert "\n" not in str(error.value) and not (tmp_path / "data").exists()


def test_class_names_are_kept_as_given_except_cats_and_dogs(tmp_path):
    scan = scan_source(make_class_folders(tmp_path / "a", per_class=2, names=("Ants", "bees", "Cats")))
    assert scan.classes == ["Ants", "bees", "cat"]
    both = make_class_folders(tmp_path / "b", per_class=2, names=("Cat", "cats"))
    assert scan_source(both).classes == ["Cat", "cats"]  # normalising would merge them: kept as given


def test_class_weight_balanced(tmp_path):
    from catsdogs.training import class_weights

    weights = class_weights(np.array([0] * 30 + [1] * 10 + [2] * 20), 3)
    assert weights == pytest.approx({0: 60 / 90, 1: 60 / 30, 2: 60 / 60})
