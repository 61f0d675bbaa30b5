"""`catsdogs prepare`: check every photo of a SOURCE, de-duplicate, split, and write DATA.

DATA/{train,validation,test}/{class}/*.jpg, manifest.csv, rejected.csv (files that cannot be used, and why),
unused.csv (usable photos left out by the requested sizes), classes.json and prepare.json (where DATA came
from, which splits SOURCE gave and which were carved). SOURCE is only ever read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from catsdogs.corrections import REASON as CORRECTIONS_REASON
from catsdogs.corrections import apply_corrections, check_corrections, read_corrections
from catsdogs.data_files import MANIFEST_FIELDS, OWN_FILES, RECORD, SPLITS
from catsdogs.errors import UsageError
from catsdogs.exclusions import read_exclusions
from catsdogs.files import check_outside, safe_cell
from catsdogs.grouping import Moment, check_group, exif_moment, photo_groups
from catsdogs.images import ImageError, decode_image, decode_workers, encode_jpeg
from catsdogs.near_duplicates import cross_split_pairs, drop_near_duplicates, phash
from catsdogs.options import DEFAULT_SEED
from catsdogs.progress import progress
from catsdogs.sources import SourceFile, scan_source

SPLIT_PARAMETERS = {"train": "train", "validation": "val", "test": "test"}  # prepare()'s argument of each split
DEFAULT_FRACTIONS = {"validation": 0.15, "test": 0.15}  # a user's own photos: 70/15/15 per class
STUDY_SIZES = {"train": 3000, "val": 1000, "test": 1000}  # the study's 1500/500/500 per class (reproduce)
WORK_DIR = ".incomplete"
MAX_STEM_BYTES = 120  # of a file name in DATA (file systems allow 255 bytes)

SplitSize = int | float | None  # a count (total over the classes), a fraction (of each class) or the default


@dataclass(frozen=True)
class CheckedPhoto:
    """A photo that decoded: its bytes as they will be stored in DATA."""

    source: SourceFile
    sha256: str
    jpeg: bytes
    width: int
    height: int
    phash: object = field(default=None, compare=False, repr=False)  # near_duplicates.phash: (2, 8) uint8
    moment: Moment | None = field(default=None, compare=False)  # (camera, EXIF time): bursts (`grouping`)


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
    given_splits: list[str] = field(default_factory=list)
    carved_splits: list[str] = field(default_factory=list)
    excluded: int = 0  # --exclude and --corrections' exclude rows
    near_dropped: int = 0  # --dedupe near
    near_leaks: int = 0  # near-duplicate pairs (perceptual hash) across splits in DATA
    relabelled: int = 0  # --corrections' relabel rows
    skipped: int = 0  # not photos (sidecars, movies, hidden files, thumbnails): listed in rejected.csv too
    groups_kept: int = 0  # groups of 2+ photos (near-duplicates, bursts) carved into one split each
    grouped_photos: int = 0  # the photos in those groups

    def audit_line(self) -> str:
        """The cheap audit that `prepare` ends with: perceptual hashes only (`catsdogs audit` does the rest)."""
        done = f"excluded {self.excluded} listed photos, " if self.excluded else ""
        done += f"relabelled {self.relabelled} photos, " if self.relabelled else ""
        done += f"dropped {self.near_dropped} near-duplicates, " if self.near_dropped else ""
        done += (f"kept {self.groups_kept} groups together ({self.grouped_photos} photos: near-duplicates, bursts), "
                 if self.groups_kept else "")
        hint = (f"; keep one of each with --dedupe near, or run catsdogs audit {self.data_dir}" if self.near_leaks
                else f"; catsdogs audit {self.data_dir} also finds label errors and outliers")
        return f"audit: {done}{self.near_leaks} near-duplicate pairs across splits (perceptual hash){hint}"

    def line(self) -> str:
        splits = ", ".join(f"{split} {sum(self.counts[split].values())}" for split in SPLITS)
        shown = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
        origin = ""
        if self.given_splits:
            origin = f"; given: {', '.join(self.given_splits)}"
            origin += f", carved from train: {', '.join(self.carved_splits)}" if self.carved_splits else ""
        return (f"prepared {self.data_dir}: {splits} ({len(self.classes)} classes: {shown}; {self.layout} layout"
                f"{origin}); scanned {self.scanned}, rejected {self.rejected}, duplicates {self.duplicates}, "
                f"unused {self.unused}" + (f", skipped {self.skipped} not photos (see rejected.csv)" if self.skipped else ""))


def parse_split_size(text: str) -> int | float:
    """A split size as typed: `700` (a count), `0.7` or `70%` (a fraction of each class)."""
    text = text.strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        raise ValueError(f"expected a count (700) or a fraction (0.7 or 70%), got {text!r}") from None


def check_split_size(parameter: str, value: SplitSize) -> SplitSize:
    """A count >= 0 or a fraction in (0, 1); UsageError naming `parameter` otherwise."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise UsageError(f"{parameter} must be a count (an int >= 0) or a fraction in (0, 1), got {value!r}", parameter)


def _evenly(total: int, classes: list[str]) -> dict[str, int]:
    base, extra = divmod(total, len(classes))
    return {name: base + (i < extra) for i, name in enumerate(classes)}


def plan_split(available: dict[str, int], sizes: dict[str, SplitSize], carve: list[str]) -> dict[str, dict[str, int]]:
    """Per-class counts of train and of each split in `carve`, taken from `available` photos of each class.

    A count is a total shared out evenly over the classes (any remainder to the first ones); a fraction is
    taken from each class (at least one photo); the default for validation and test is 15% of each class,
    for train the rest. UsageError when a class is too small for what is asked.
    """
    classes = sorted(available)
    plan: dict[str, dict[str, int]] = {}
    for split in (*carve, "train"):
        size = sizes.get(split)
        if size is None and split != "train":
            size = DEFAULT_FRACTIONS[split]
        if isinstance(size, int):
            plan[split] = _evenly(size, classes)
        elif isinstance(size, float):
            plan[split] = {name: max(1, round(size * n)) if n else 0 for name, n in available.items()}
        else:  # train, by default: the rest
            plan[split] = {name: n - sum(plan[s][name] for s in carve) for name, n in available.items()}
    for name, n in available.items():
        wanted = {split: plan[split][name] for split in SPLITS if split in plan}
        if sum(wanted.values()) > n or wanted["train"] < 1:
            asked = " + ".join(f"{split} {count}" for split, count in wanted.items())
            if all(isinstance(sizes.get(split), int) for split in plan):
                raise UsageError(f"class '{name}' has {n} usable images, but {asked} were requested; lower "
                                 f"{'/'.join(SPLIT_PARAMETERS[s] for s in wanted)}", "train")
            raise UsageError(f"class '{name}' has {n} usable images: too few to split into {asked} "
                             f"(add photos, or lower val/test)", "train")
    return plan


def _check(source_file: SourceFile) -> CheckedPhoto | tuple[str, str]:
    """Read (bounded: `images.read_photo_bytes`, or a zip entry) and fully decode one file; return the photo,
    or (relpath, reason) when it is unusable."""
    try:
        data = source_file.read()
    except ImageError as error:
        return source_file.relpath, str(error)
    except OSError as error:
        return source_file.relpath, f"cannot read: {error.strerror or error}"
    try:
        decoded = decode_image(data)
    except ImageError as error:
        return source_file.relpath, str(error)
    keep_bytes = decoded.original_format == "JPEG" and not decoded.converted
    jpeg = data if keep_bytes else encode_jpeg(decoded.pixels)
    height, width = decoded.pixels.shape[:2]
    return CheckedPhoto(source_file, hashlib.sha256(data).hexdigest(), jpeg, width, height, phash(decoded.pixels),
                        exif_moment(data))


def _source_identity(source: Path) -> dict:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size if source.is_file() else None}


def prepared_markers(data: str = "data") -> tuple[str, str]:
    """What shows that `prepare` wrote a DATA at `data` (a path inside an OUT): its work folder, written first,
    and prepare.json, written last (fit and reproduce recognise their own OUT by them)."""
    return f"{data}/{WORK_DIR}", f"{data}/{RECORD}"


def _guard_data_dir(source: Path, data_dir: Path, overwrite: bool) -> None:
    """Refuse to write into SOURCE, or over a DATA that came from somewhere else (unless overwrite)."""
    check_outside(source, data_dir)
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise UsageError(f"out {data_dir} exists and is not a folder", "out")
    contents = [p for p in data_dir.iterdir() if p.name != WORK_DIR]
    if not contents or overwrite:
        return
    record = data_dir / RECORD
    previous = json.loads(record.read_text()).get("source") if record.exists() else None
    if previous != str(source.resolve()):
        where = f"from {previous}" if previous else "not made by catsdogs prepare"
        raise UsageError(f"out {data_dir} is not empty and was {where}; overwrite=True replaces it", "out")


def prepare(source: Path, data_dir: Path, *, train: SplitSize = None, val: SplitSize = None,
            test: SplitSize = None, seed: int = DEFAULT_SEED, overwrite: bool = False,
            workers: int | None = None, exclude: str | Path | None = None, dedupe: str = "exact",
            allow_outside: bool = False, corrections: str | Path | None = None, group: str = "near+burst"
            ) -> PrepareSummary:
    """Check, de-duplicate and split SOURCE into DATA; see the module docstring for the layout.

    `train`, `val`, `test`: a count (total over the classes), a fraction of each class, or None (validation
    and test 15% of each class, train the rest). Splits given by SOURCE (a pre-split tree, a CSV with a split
    column) are kept; missing ones are carved from train, stratified and seeded.
    `exclude`: a CSV of photos to leave out (`catsdogs.exclusions`); `dedupe`: "exact" (sha256) or "near"
    (also perceptual-hash near-duplicates: one photo of each group is kept, so it lands in one split).
    `group`: when splits are carved, photos that belong together go to one split: "near+burst" (default),
    "near" (perceptual-hash near-duplicates), "burst" (same camera, EXIF times within 2 s) or "none".
    `allow_outside`: a CSV SOURCE may name files outside its folder (absolute or `..` paths); refused rows
    by default. `corrections`: a CSV `source,action,label` (`catsdogs.corrections`, as `catsdogs review` writes
    it): relabelled photos go to their new class, excluded ones to rejected.csv; applied after the split, so
    that every other photo keeps its split (a relabelled photo stays in its split). Files that are not regular
    files, symlinks leaving SOURCE and files over 64 MB are never read: each gets its row in rejected.csv.
    """
    source, data_dir = Path(source), Path(data_dir)
    if dedupe not in ("exact", "near"):
        raise UsageError(f"dedupe must be exact or near, got {dedupe!r}", "dedupe")
    check_group(group)
    exclusions = read_exclusions(exclude) if exclude is not None else None
    fixes = read_corrections(corrections) if corrections is not None else []
    sizes = {split: check_split_size(SPLIT_PARAMETERS[split], value)
             for split, value in zip(SPLITS, (train, val, test))}
    scan = scan_source(source, allow_outside=allow_outside)
    given = scan.given_splits
    for split in given:
        if split != "train" and sizes[split] is not None:
            parameter = SPLIT_PARAMETERS[split]
            raise UsageError(f"{parameter}: SOURCE gives its own {split} split; leave {parameter} out", parameter)
    if fixes:
        check_corrections(fixes, scan.classes, [f.relpath for f in scan.files], Path(corrections).name)
    _guard_data_dir(source, data_dir, overwrite)

    photos, rejected = _checked_photos(scan, workers)
    photos, left_out = _excluded(photos, exclusions)
    rejected += left_out
    excluded = len(left_out)
    unique, duplicates = _deduplicate(photos)
    rejected += duplicates
    near: list[tuple[str, str]] = []
    if dedupe == "near":
        unique, near = drop_near_duplicates(unique, np.stack([p.phash for p in unique]) if unique else
                                            np.zeros((0, 2, 8), np.uint8), lambda p: p.source.relpath)
        duplicates += near
        rejected += near
    carve = [split for split in SPLITS[1:] if split not in given]
    assignment, unused, kept_together = _split(unique, scan.classes, sizes, carve, seed, group if carve else "none")
    assignment, unused, gone, relabelled = _corrected(assignment, unused, fixes)
    rejected += [(p.source.relpath, CORRECTIONS_REASON) for p in gone]
    excluded += len(gone)
    counts = {split: {name: sum(1 for p, s in assignment if s == split and p.source.class_name == name)
                      for name in scan.classes} for split in SPLITS}
    record = {"layout": scan.layout, "seed": seed, "given_splits": given, "carved_splits": carve,
              "requested": {SPLIT_PARAMETERS[s]: v for s, v in sizes.items()}, "counts": counts,
              "dedupe": dedupe, "group": group, "groups_kept": len(kept_together),
              "grouped_photos": sum(kept_together), "exclude": str(Path(exclude).resolve()) if exclude is not None else None,
              "corrections": corrections_identity(corrections)}
    _write(data_dir, source, scan.classes, assignment, sorted(rejected), unused, record)
    leaks = cross_split_pairs(np.stack([p.phash for p, _ in assignment]), [s for _, s in assignment]) if assignment else 0
    skipped = len(scan.skipped)
    return PrepareSummary(data_dir, scan.layout, scan.classes, counts, len(scan.files) + len(scan.refused) + skipped,
                          len(rejected) - len(duplicates) - excluded - skipped, len(duplicates) - len(near), len(unused),
                          given, record["carved_splits"], excluded, len(near), leaks, relabelled=relabelled,
                          skipped=skipped, groups_kept=len(kept_together), grouped_photos=sum(kept_together))


def _checked_photos(scan, workers: int | None) -> tuple[list[CheckedPhoto], list[tuple[str, str]]]:
    """(photos that decode, rejected rows: refused, skipped and undecodable files) of a scanned SOURCE."""
    bar = progress(len(scan.files), "checking photos")
    photos: list[CheckedPhoto] = []
    rejected = list(scan.refused) + list(scan.skipped)
    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        for result in pool.map(_check, scan.files, chunksize=16):
            bar.update()
            if isinstance(result, CheckedPhoto):
                photos.append(result)
            else:
                rejected.append(result)
    bar.close()
    return photos, rejected


def _excluded(photos: list[CheckedPhoto], exclusions) -> tuple[list[CheckedPhoto], list[tuple[str, str]]]:
    """(the photos an --exclude file keeps, rejected rows of the others)."""
    if exclusions is None:
        return photos, []
    kept = [p for p in photos if not exclusions.excludes(p.sha256, p.source.relpath)]
    return kept, [(p.source.relpath, f"excluded by {exclusions.name}") for p in photos
                  if exclusions.excludes(p.sha256, p.source.relpath)]


def _corrected(assignment: list[tuple[CheckedPhoto, str]], unused: list[CheckedPhoto], fixes: list
               ) -> tuple[list[tuple[CheckedPhoto, str]], list[CheckedPhoto], list[CheckedPhoto], int]:
    """(assignment, unused, excluded photos, relabelled count) after the corrections: applied after the split,
    so that no other photo changes split."""
    if not fixes:
        return assignment, unused, [], 0
    assignment, dropped, relabelled = apply_corrections(
        assignment, fixes, lambda item: item[0].source.relpath, lambda item, label: (_relabel(item[0], label), item[1]))
    unused, dropped_unused, _ = apply_corrections(unused, fixes, lambda p: p.source.relpath, _relabel)
    return assignment, unused, [p for p, _ in dropped] + dropped_unused, relabelled


def _relabel(photo: CheckedPhoto, label: str) -> CheckedPhoto:
    return replace(photo, source=replace(photo.source, class_name=label))


def corrections_identity(path: str | Path | None) -> dict | None:
    """Where a corrections file is and the sha256 of what it said (a later fit knows whether DATA is current)."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _deduplicate(photos: list[CheckedPhoto]) -> tuple[list[CheckedPhoto], list[tuple[str, str]]]:
    """Keep the first photo (by path) of each sha256; the others are listed as duplicates."""
    first: dict[str, CheckedPhoto] = {}
    duplicates = []
    for photo in sorted(photos, key=lambda p: p.source.relpath):
        kept = first.setdefault(photo.sha256, photo)
        if kept is not photo:
            duplicates.append((photo.source.relpath, f"duplicate of {kept.source.relpath}"))
    return list(first.values()), duplicates


def _split(photos: list[CheckedPhoto], classes: list[str], sizes: dict[str, SplitSize], carve: list[str],
           seed: int, group: str = "none") -> tuple[list[tuple[CheckedPhoto, str]], list[CheckedPhoto], list[int]]:
    """Stratified, seeded split: photos keep a split SOURCE gives them (other than train); the others (the
    pool) are shuffled class by class and cut into `carve` and train, each group (`grouping.photo_groups`: one
    unit, counted in the class of its first member) whole into the first split not yet full. Returns the
    assignment, the unused, and the size of each group of 2+ photos kept together."""
    assignment = [(p, p.source.split) for p in photos if p.source.split not in (None, "train")]
    pool = {name: sorted((p for p in photos if p.source.class_name == name and p.source.split in (None, "train")),
                         key=lambda p: p.sha256) for name in classes}
    for name, members in pool.items():
        if not members:
            elsewhere = {split: sum(1 for p, s in assignment if s == split and p.source.class_name == name)
                         for split in SPLITS[1:]}
            if any(elsewhere.values()):
                found = ", ".join(f"{split} {n}" for split, n in elsewhere.items() if n)
                raise UsageError(f"class '{name}' has no usable training photos (SOURCE gives it {found}); add its "
                                 f"photos to train/{name}, or remove {name} from the other splits", "source")
    plan = plan_split({name: len(members) for name, members in pool.items()}, sizes, carve)
    units = _units(pool, group)
    unused: list[CheckedPhoto] = []
    for name, class_units in units.items():
        random.Random(f"{seed}:{name}").shuffle(class_units)
        filled = dict.fromkeys(plan, 0)
        for unit in class_units:  # train first, then validation and test: the study's cuts, unchanged
            split = next((s for s in SPLITS if s in plan and filled[s] < plan[s][name]), None)
            if split is None:
                unused += unit
                continue
            assignment += [(photo, split) for photo in unit]
            filled[split] += len(unit)
    return assignment, unused, [len(unit) for class_units in units.values() for unit in class_units if len(unit) > 1]


def _units(pool: dict[str, list[CheckedPhoto]], group: str) -> dict[str, list[list[CheckedPhoto]]]:
    """The pool of each class as units: one photo each, or (`group`) whole groups, each in the class of its
    first member (by sha256 order), in that order."""
    everyone = [p for members in pool.values() for p in members]
    if group == "none" or len(everyone) < 2:
        return {name: [[p] for p in members] for name, members in pool.items()}
    leader = photo_groups(np.stack([p.phash for p in everyone]), [p.moment for p in everyone], group)
    members_of: dict[int, list[CheckedPhoto]] = {}
    for i, photo in enumerate(everyone):
        members_of.setdefault(leader[i], []).append(photo)
    units: dict[str, list[list[CheckedPhoto]]] = {name: [] for name in pool}
    for members in members_of.values():
        members.sort(key=lambda p: p.sha256)
        units[members[0].source.class_name].append(members)
    for class_units in units.values():
        class_units.sort(key=lambda unit: unit[0].sha256)
    return units


def _target_name(photo: CheckedPhoto, taken: set[str]) -> str:
    """The photo's file name in DATA: its own stem, shortened past MAX_STEM_BYTES (a zip's names may be longer
    than a file system allows), made unique with its content hash."""
    stem = PurePosixPath(photo.source.relpath).stem
    if len(stem.encode()) > MAX_STEM_BYTES:
        stem = f"{stem.encode()[:MAX_STEM_BYTES].decode(errors='ignore')}-{photo.sha256[:10]}"
    name = f"{stem}.jpg"
    if name in taken:
        name = f"{stem}-{photo.sha256[:10]}.jpg"
    taken.add(name)
    return name


def _write(data_dir: Path, source: Path, classes: list[str], assignment: list[tuple[CheckedPhoto, str]],
           rejected: list[tuple[str, str]], unused: list[CheckedPhoto], record: dict) -> None:
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
    _write_csv(work / "rejected.csv", ["source", "reason"], [[safe_cell(cell) for cell in r] for r in rejected])
    _write_csv(work / "unused.csv", ["source", "class", "sha256"],
               [[p.source.relpath, p.source.class_name, p.sha256] for p in sorted(unused, key=lambda p: p.source.relpath)])
    (work / "classes.json").write_text(json.dumps(classes) + "\n")
    (work / RECORD).write_text(json.dumps({**_source_identity(source), **record}, indent=2) + "\n")

    for name in (*SPLITS, *OWN_FILES):
        target = data_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in (*SPLITS, *OWN_FILES[:-1]):
        if (work / name).exists():
            (work / name).rename(data_dir / name)
    (work / RECORD).rename(data_dir / RECORD)  # last: marks DATA complete
    work.rmdir()


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
