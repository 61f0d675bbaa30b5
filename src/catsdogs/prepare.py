"""`catsdogs prepare`: check every photo of a SOURCE, de-duplicate, split, and write DATA.

DATA/{train,validation,test}/{class}/*.jpg, manifest.csv, rejected.csv, classes.json and
prepare.json (where DATA came from). SOURCE is only ever read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from catsdogs.errors import UsageError
from catsdogs.images import ImageError, decode_image, encode_jpeg
from catsdogs.progress import Progress
from catsdogs.sources import SourceFile, scan_source

SPLITS = ("train", "validation", "test")
DEFAULT_PER_CLASS = {"train": 1500, "validation": 500, "test": 500}
DEFAULT_SEED = 1337
MANIFEST_FIELDS = ["path", "class", "split", "sha256", "width", "height", "source"]
OWN_FILES = ("manifest.csv", "rejected.csv", "classes.json", "prepare.json")
WORK_DIR = ".incomplete"


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo that decoded: its bytes as they will be stored in DATA."""

    source: SourceFile
    sha256: str
    jpeg: bytes
    width: int
    height: int


@dataclass
class PrepareSummary:
    """What `prepare` did, for the one-line summary and for callers."""

    data_dir: Path
    layout: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> n
    scanned: int
    rejected: int
    duplicates: int
    unused: int

    def line(self) -> str:
        splits = ", ".join(f"{split} {sum(self.counts[split].values())}" for split in SPLITS)
        return (f"prepared {self.data_dir}: {splits} ({'/'.join(self.classes)}, {self.layout} layout); "
                f"scanned {self.scanned}, rejected {self.rejected}, duplicates {self.duplicates}, "
                f"unused {self.unused}")


def split_sizes(classes: list[str], train: int | None, val: int | None, test: int | None) -> dict[str, dict[str, int]]:
    """Per-class counts for each split: totals are shared out evenly (any remainder to the first classes)."""
    sizes: dict[str, dict[str, int]] = {}
    for split, total in zip(SPLITS, (train, val, test)):
        if total is not None and total < 0:
            raise UsageError(f"--{ {'validation': 'val'}.get(split, split)} must be >= 0, got {total}")
        if total is None:
            sizes[split] = {name: DEFAULT_PER_CLASS[split] for name in classes}
        else:
            base, extra = divmod(total, len(classes))
            sizes[split] = {name: base + (i < extra) for i, name in enumerate(classes)}
    if sum(sizes["train"].values()) < len(classes):
        raise UsageError("--train must give at least one image per class")
    return sizes


def _check(source_file: SourceFile) -> CheckedPhoto | tuple[str, str]:
    """Read and fully decode one file; return the photo, or (relpath, reason) when it is unusable."""
    try:
        data = source_file.read()
    except OSError as error:
        return source_file.relpath, f"cannot read: {error}"
    try:
        decoded = decode_image(data)
    except ImageError as error:
        return source_file.relpath, str(error)
    keep_bytes = decoded.original_format == "JPEG" and not decoded.converted
    jpeg = data if keep_bytes else encode_jpeg(decoded.pixels)
    height, width = decoded.pixels.shape[:2]
    return CheckedPhoto(source_file, hashlib.sha256(data).hexdigest(), jpeg, width, height)


def _source_identity(source: Path) -> dict:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size if source.is_file() else None}


def _guard_data_dir(source: Path, data_dir: Path, force: bool) -> None:
    """Refuse to write into SOURCE, or over a DATA that came from somewhere else (unless force)."""
    source_abs, data_abs = source.resolve(), data_dir.resolve()
    if source_abs.is_dir() and (data_abs == source_abs or source_abs in data_abs.parents):
        raise UsageError(f"--out {data_dir} is inside SOURCE {source}; choose a folder outside it")
    if data_abs in source_abs.parents or data_abs == source_abs:
        raise UsageError(f"SOURCE {source} is inside --out {data_dir}; choose another --out")
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise UsageError(f"--out {data_dir} exists and is not a folder")
    contents = [p for p in data_dir.iterdir() if p.name != WORK_DIR]
    if not contents or force:
        return
    record = data_dir / "prepare.json"
    previous = json.loads(record.read_text()).get("source") if record.exists() else None
    if previous != str(source_abs):
        where = f"from {previous}" if previous else "not made by catsdogs prepare"
        raise UsageError(f"--out {data_dir} is not empty and was {where}; use --force to replace it")


def prepare(source: Path, data_dir: Path, *, train: int | None = None, val: int | None = None,
            test: int | None = None, seed: int = DEFAULT_SEED, force: bool = False,
            workers: int = 2) -> PrepareSummary:
    """Check, de-duplicate and split SOURCE into DATA; see the module docstring for the layout."""
    source, data_dir = Path(source), Path(data_dir)
    scan = scan_source(source)
    _guard_data_dir(source, data_dir, force)
    sizes = split_sizes(scan.classes, train, val, test)

    progress = Progress("checking photos", total=len(scan.files))
    photos: list[CheckedPhoto] = []
    rejected = list(scan.refused)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_check, scan.files, chunksize=16):
            progress.update()
            if isinstance(result, CheckedPhoto):
                photos.append(result)
            else:
                rejected.append(result)
    progress.close()

    unique, duplicates = _deduplicate(photos)
    rejected += duplicates
    assignment, unused = _split(unique, scan.classes, sizes, seed)
    _write(data_dir, source, scan.classes, assignment, sorted(rejected), seed, sizes, scan.layout)
    counts = {split: {name: sum(1 for p, s in assignment if s == split and p.source.class_name == name)
                      for name in scan.classes} for split in SPLITS}
    return PrepareSummary(data_dir, scan.layout, scan.classes, counts, len(scan.files) + len(scan.refused),
                          len(rejected) - len(duplicates), len(duplicates), unused)


def _deduplicate(photos: list[CheckedPhoto]) -> tuple[list[CheckedPhoto], list[tuple[str, str]]]:
    """Keep the first photo (by path) of each sha256; the others are listed as duplicates."""
    first: dict[str, CheckedPhoto] = {}
    duplicates = []
    for photo in sorted(photos, key=lambda p: p.source.relpath):
        kept = first.setdefault(photo.sha256, photo)
        if kept is not photo:
            duplicates.append((photo.source.relpath, f"duplicate of {kept.source.relpath}"))
    return list(first.values()), duplicates


def _split(photos: list[CheckedPhoto], classes: list[str], sizes: dict[str, dict[str, int]],
           seed: int) -> tuple[list[tuple[CheckedPhoto, str]], int]:
    """Stratified, seeded split: each class is shuffled on its own, then cut into the three splits."""
    assignment: list[tuple[CheckedPhoto, str]] = []
    unused = 0
    for name in classes:
        members = sorted((p for p in photos if p.source.class_name == name), key=lambda p: p.sha256)
        wanted = sum(sizes[split][name] for split in SPLITS)
        if len(members) < wanted:
            asked = "+".join(str(sizes[split][name]) for split in SPLITS)
            raise UsageError(f"class '{name}' has {len(members)} usable images, but {asked} = {wanted} "
                             "were requested; lower --train/--val/--test")
        random.Random(f"{seed}:{name}").shuffle(members)
        start = 0
        for split in SPLITS:
            assignment += [(photo, split) for photo in members[start:start + sizes[split][name]]]
            start += sizes[split][name]
        unused += len(members) - start
    return assignment, unused


def _target_name(photo: CheckedPhoto, taken: set[str]) -> str:
    stem = PurePosixPath(photo.source.relpath).stem
    name = f"{stem}.jpg"
    if name in taken:
        name = f"{stem}-{photo.sha256[:10]}.jpg"
    taken.add(name)
    return name


def _write(data_dir: Path, source: Path, classes: list[str], assignment: list[tuple[CheckedPhoto, str]],
           rejected: list[tuple[str, str]], seed: int, sizes: dict, layout: str) -> None:
    """Write everything into DATA/.incomplete, then move it into place (an interrupted run loses nothing)."""
    work = data_dir / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = []
    taken: dict[tuple[str, str], set[str]] = {}
    for photo, split in sorted(assignment, key=lambda item: (SPLITS.index(item[1]), item[0].source.class_name,
                                                             item[0].source.relpath)):
        name = photo.source.class_name
        filename = _target_name(photo, taken.setdefault((split, name), set()))
        relpath = f"{split}/{name}/{filename}"
        (work / split / name).mkdir(parents=True, exist_ok=True)
        (work / relpath).write_bytes(photo.jpeg)
        rows.append([relpath, name, split, photo.sha256, photo.width, photo.height, photo.source.relpath])
    _write_csv(work / "manifest.csv", MANIFEST_FIELDS, rows)
    _write_csv(work / "rejected.csv", ["source", "reason"], [list(r) for r in rejected])
    (work / "classes.json").write_text(json.dumps(classes) + "\n")
    record = {**_source_identity(source), "layout": layout, "seed": seed, "sizes": sizes}
    (work / "prepare.json").write_text(json.dumps(record, indent=2) + "\n")

    for name in (*SPLITS, *OWN_FILES):
        target = data_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in (*SPLITS, *OWN_FILES[:-1]):
        if (work / name).exists():
            (work / name).rename(data_dir / name)
    (work / "prepare.json").rename(data_dir / "prepare.json")  # last: marks DATA complete
    work.rmdir()


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def manifest_sha256(data_dir: Path) -> str:
    """The hash that identifies a prepared DATA (used by runs and caches)."""
    path = Path(data_dir) / "manifest.csv"
    if not path.exists():
        raise UsageError(f"{data_dir}: not a prepared DATA folder (no manifest.csv); run catsdogs prepare first")
    return hashlib.sha256(path.read_bytes()).hexdigest()
