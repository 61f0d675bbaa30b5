"""The DATA folder format (what `prepare` writes): split and file names, and how to read them back.

    DATA/{train,validation,test}/{class}/*.jpg   the photos, re-encoded
    DATA/manifest.csv    path,class,split,sha256,width,height,source (one row per photo)
    DATA/classes.json    class names in index order
    DATA/rejected.csv    source,reason (files left out, and why)
    DATA/unused.csv      usable photos the requested counts left out
    DATA/prepare.json    source, layout, given and carved splits, counts (written last: DATA is complete)
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from catsdogs.errors import UsageError

SPLITS = ("train", "validation", "test")
MANIFEST, CLASSES, REJECTED, UNUSED, RECORD = "manifest.csv", "classes.json", "rejected.csv", "unused.csv", "prepare.json"
OWN_FILES = (MANIFEST, REJECTED, UNUSED, CLASSES, RECORD)
MANIFEST_FIELDS = ["path", "class", "split", "sha256", "width", "height", "source"]


def check_prepared(data_dir: Path) -> Path:
    """DATA as a Path; a one-line UsageError when it is not a prepared DATA folder."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise UsageError(f"{data_dir} is not a prepared DATA folder (it does not exist); prepare the photos into it first "
                         "(catsdogs.prepare)", "data")
    if not data_dir.is_dir() or not (data_dir / MANIFEST).is_file() or not (data_dir / CLASSES).is_file():
        raise UsageError(f"{data_dir} is not a prepared DATA folder (no {MANIFEST} or {CLASSES}); "
                         "prepare the photos into it first (catsdogs.prepare)", "data")
    return data_dir


def read_classes(data_dir: Path) -> list[str]:
    """The class names of a prepared DATA, in index order."""
    path = check_prepared(data_dir) / CLASSES
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}", "data") from None
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes) \
            or len(set(classes)) != len(classes):
        raise UsageError(f"{path}: expected a list of 2 or more distinct class names", "data")
    return classes


def read_manifest(data_dir: Path, split: str | None = None) -> list[dict[str, str]]:
    """The manifest rows (of one split, or all); a UsageError when a row names a class not in classes.json."""
    if split is not None and split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", "split")
    classes = set(read_classes(data_dir))
    with open(Path(data_dir) / MANIFEST, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    unknown = sorted({row.get("class") or "" for row in rows} - classes)
    if unknown:
        raise UsageError(f"{data_dir}: {MANIFEST} names classes not in {CLASSES}: {', '.join(unknown)}", "data")
    return [row for row in rows if split is None or row["split"] == split]


def manifest_sha256(data_dir: Path) -> str:
    """The hash that identifies a prepared DATA (runs and caches record it)."""
    return hashlib.sha256((check_prepared(data_dir) / MANIFEST).read_bytes()).hexdigest()


def read_record(data_dir: Path) -> dict | None:
    """DATA/prepare.json (what prepared it), or None when DATA is not complete."""
    path = Path(data_dir) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def prepared_from(data_dir: Path, source: Path) -> bool:
    """Whether DATA is complete and was prepared from SOURCE."""
    record = read_record(data_dir)
    return bool(record) and record.get("source") == str(Path(source).resolve())
