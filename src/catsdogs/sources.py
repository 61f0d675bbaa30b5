"""Find the photos, their classes and any given splits in a SOURCE: a folder, a .zip or a .csv.

- Kaggle: one flat folder of `cat.N.jpg` / `dog.N.jpg` (class = the name before the first dot);
- PetImages: `PetImages/Cat/N.jpg`, `PetImages/Dog/N.jpg`;
- one subfolder per class (two or more);
- a pre-split tree: `train/`, `val|valid|validation/`, `test/`, each with one subfolder per class;
- a CSV of `path,label` (optionally `split`), as the SOURCE itself or inside the folder or zip.
Nothing is extracted to disk: files are read one at a time, from the folder or from the zip.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from catsdogs.data_files import SPLITS
from catsdogs.errors import UsageError, one_line, shorten
from catsdogs.images import MAX_FILE_BYTES, ImageError, read_photo_bytes, size_limit_reason

logger = logging.getLogger(__name__)

# the photos we decode (phone formats through `images.register_openers`); matched case-insensitively
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
# image types Pillow does not decode here: inside a predict folder they get an error row instead of being skipped
OTHER_IMAGE_SUFFIXES = {".svg", ".svgz", ".jxl", ".jp2", ".ico", ".psd", ".raw", ".dng",
                        ".cr2", ".nef", ".arw", ".orf", ".eps"}
# what phones and photo apps leave beside the photos: skipped and counted (`not_a_photo`), never an error
SIDECAR_SUFFIXES = {".aae", ".xmp", ".thm"}
MOVIE_SUFFIXES = {".mov", ".mp4", ".m4v", ".avi", ".3gp", ".mkv", ".webm"}
THUMBNAIL_NAMES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "picasa.ini"}
THUMBNAIL_FOLDERS = {".thumbnails", "@eadir", ".picasaoriginals", "__macosx", ".aplibrary", ".photoslibrary"}
MAX_ENTRY_BYTES = MAX_FILE_BYTES
MAX_LABEL_CHARS = 100
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


@dataclass(frozen=True)
class SourceFile:
    """One candidate photo: where it is (relative to SOURCE), its class, its given split, and how to read it."""

    relpath: str
    class_name: str
    read: Callable[[], bytes] = field(compare=False, repr=False)
    split: str | None = None  # "train", "validation" or "test" when SOURCE is a pre-split tree or CSV


@dataclass
class SourceScan:
    """What a SOURCE holds: usable candidates, files refused before decoding, and the layout found."""

    files: list[SourceFile]
    refused: list[tuple[str, str]]  # (relpath, reason)
    layout: str  # kaggle, petimages, folders, presplit or csv
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason): not photos (`not_a_photo`)

    @property
    def given_splits(self) -> list[str]:
        """The splits SOURCE itself defines (pre-split trees and CSVs with a split column), in split order."""
        found = {f.split for f in self.files if f.split}
        return [split for split in SPLIT_NAMES if split in found]


SPLIT_NAMES = SPLITS
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "test": "test", "testing": "test"}
CAT_DOG_NAMES = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
CSV_PATH_COLUMNS, CSV_LABEL_COLUMNS = ("path", "file", "filename", "image"), ("label", "class")


def normalise_class_name(name: str) -> str:
    """`Cat`, `cats`, `DOGS` -> `cat`, `dog`; every other name is kept as given (`Ants` stays `Ants`)."""
    stripped = name.strip()
    return CAT_DOG_NAMES.get(stripped.lower(), stripped)


def normalised_classes(names: set[str]) -> dict[str, str]:
    """Given name -> class name; cat/dog names are normalised only when that merges no two given names."""
    mapping = {name: normalise_class_name(name) for name in names}
    if len(set(mapping.values())) < len(mapping):
        return {name: name.strip() for name in names}
    return mapping


def split_alias(name: str) -> str | None:
    """`val`, `valid`, `Validation` -> "validation"; None when `name` is not a split's name."""
    return SPLIT_ALIASES.get(name.strip().lower())


def _starts_like_a_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _unsafe_zip_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _list_zip(path: Path) -> tuple[dict[str, Callable[[], bytes]], list[tuple[str, str]]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(f"{path}: not a readable zip archive ({error})", "source") from None
    readers: dict[str, Callable[[], bytes]] = {}
    refused: list[tuple[str, str]] = []
    entries = [info for info in archive.infolist() if not info.is_dir()]
    repeated = {name for name, count in Counter(info.filename for info in entries).items() if count > 1}
    for info in entries:
        if info.filename in repeated:
            refused.append((info.filename, "the zip holds more than one entry of this name: none is read"))
        elif _unsafe_zip_name(info.filename):
            refused.append((info.filename, "unsafe path in zip (absolute or '..')"))
        elif info.file_size > MAX_ENTRY_BYTES:
            refused.append((info.filename, size_limit_reason(MAX_ENTRY_BYTES)))
        else:
            readers[info.filename] = _zip_reader(archive, info)
    return readers, refused


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        """The entry's bytes, or ImageError: a bad CRC, a lying size or corrupt compressed data is one
        rejected entry, never the end of the whole prepare."""
        try:
            with archive.open(info) as handle:  # a lying header cannot make us read more than this
                data = handle.read(MAX_ENTRY_BYTES + 1)
        except ZIP_ERRORS as error:
            raise ImageError(f"corrupt zip entry: {one_line(error, 80, first_line=True)}") from None
        if len(data) > MAX_ENTRY_BYTES:
            raise ImageError(size_limit_reason(MAX_ENTRY_BYTES))
        return data
    return read


def _list_folder(root: Path) -> dict[str, Callable[[], bytes]]:
    """Readers of every file under `root` (`read_photo_bytes`: regular files only, no link leaving `root`)."""
    readers: dict[str, Callable[[], bytes]] = {}
    for folder, dirnames, filenames in os.walk(root):  # symlinked folders are not followed: said
        dirnames.sort()
        for name in dirnames:
            if (Path(folder) / name).is_symlink():
                logger.warning(f"{Path(folder) / name}: a symlinked folder, not followed (copy its photos in)")
        for name in filenames:
            full = Path(folder) / name
            readers[full.relative_to(root).as_posix()] = partial(read_photo_bytes, full, MAX_FILE_BYTES, root)
    return readers


def label_problem(label: str) -> str | None:
    """Why a CSV label cannot be a class (a folder name in DATA), or None when it can."""
    if not label:
        return "empty label"
    if len(label) > MAX_LABEL_CHARS:
        return f"label longer than {MAX_LABEL_CHARS} characters ({len(label)})"
    if any(c in label for c in "/\\\0") or label in (".", "..") or label.startswith("."):
        return f"label {shorten(label, 80)!r} cannot be a folder name (no /, \\, NUL or leading dot)"
    if any(ord(c) < 32 for c in label):
        return f"label {shorten(label, 80)!r} cannot be a folder name (control character)"
    return None


def not_a_photo(relpath: str) -> str | None:
    """Why a file of an export is skipped without being read (the reason for rejected.csv), or None: thumbnail
    folders and caches, hidden files (`.DS_Store`, `._x.jpg` AppleDouble), sidecars (`.AAE`) and movies
    (Live Photo `.MOV`). Names are matched case-insensitively."""
    parts = relpath.replace("\\", "/").split("/")
    folder = next((p for p in parts[:-1] if p.lower() in THUMBNAIL_FOLDERS), None)
    if folder:
        return f"thumbnail folder ({folder})"
    name = parts[-1]
    if name.lower() in THUMBNAIL_NAMES:
        return f"thumbnail cache ({name})"
    if name.startswith("._"):
        return "hidden file (AppleDouble)"
    if name.startswith(".") or any(p.startswith(".") for p in parts[:-1]):
        return "hidden file"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in SIDECAR_SUFFIXES:
        return f"not a photo: sidecar ({suffix})"
    if suffix in MOVIE_SUFFIXES:
        return f"not a photo: movie ({suffix})"
    return None


def _is_hidden(relpath: str) -> bool:
    reason = not_a_photo(relpath)
    return reason is not None and not reason.startswith("not a photo")


def scan_source(source: Path, *, allow_outside: bool = False) -> SourceScan:
    """List SOURCE's photos with their classes (and given splits); UsageError when it has fewer than 2 classes.

    `allow_outside`: a labels CSV may name files outside its own folder (absolute or `..` paths); by default
    such rows are refused.
    """
    source = Path(source)
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder", "source")
    if not source.is_dir() and not source.is_file():
        raise UsageError(f"{source}: not a folder or a regular file", "source")
    if source.is_dir():
        readers, refused = _list_folder(source), []
    elif zipfile.is_zipfile(source):
        readers, refused = _list_zip(source)
    elif source.suffix.lower() == ".csv":
        try:
            text = read_photo_bytes(source)
        except ImageError as error:
            raise UsageError(f"{source}: {error}", "source") from None
        readers, refused = {source.name: lambda: text}, []
        readers.update(_csv_file_readers(source, text, allow_outside))
    elif _starts_like_a_zip(source):
        raise UsageError(f"{source}: a corrupt or truncated zip archive (its directory at the end is missing or "
                         "damaged); copy or download it again", "source")
    else:
        raise UsageError(f"{source}: expected a folder, a .zip archive or a .csv of path,label", "source")

    labels_csv = _find_labels_csv(readers)
    if labels_csv is not None:
        layout = "csv"
        labelled, splits, csv_refused, listed = _read_labels_csv(labels_csv, readers, allow_outside)
        refused += csv_refused
        candidates = {p: readers[p] for p in labelled}
        skipped = [(p, not_a_photo(p)) for p in readers if p not in listed and not_a_photo(p)]
        refused += [(p, "not listed in " + labels_csv) for p in readers
                    if p not in listed and p != labels_csv and not not_a_photo(p)]
    else:
        candidates, skipped = {}, []
        for relpath in sorted(readers):
            if reason := not_a_photo(relpath):
                skipped.append((relpath, reason))
            elif PurePosixPath(relpath).suffix.lower() in IMAGE_SUFFIXES:
                candidates[relpath] = readers[relpath]
            else:
                refused.append((relpath, "not an image file (by its extension)"))
        if not candidates:
            raise UsageError(f"{source}: no image files found", "source")
        layout, labelled, splits, outside = _assign_classes(list(candidates))
        refused += outside

    names = normalised_classes(set(labelled.values()))
    classes = sorted(set(names.values()))
    if len(classes) < 2:
        why = f" ({len(refused)} refused, e.g. {shorten(refused[0][0], 40)}: {shorten(refused[0][1], 60)})" if refused else ""
        raise UsageError(f"{source}: found {len(classes)} class ({shorten(', '.join(classes), 80) or 'none'}){why}; a "
                         "classifier needs at least 2: one subfolder per class, Kaggle's cat.N.jpg names, "
                         "train/val/test folders of class folders, or a CSV of path,label", "source")
    files = [SourceFile(relpath, names[labelled[relpath]], candidates[relpath], splits.get(relpath))
             for relpath in sorted(labelled)]
    return SourceScan(files=files, refused=sorted(refused), layout=layout, classes=classes, skipped=sorted(skipped))


def _assign_classes(relpaths: list[str]) -> tuple[str, dict[str, str], dict[str, str], list[tuple[str, str]]]:
    """Decide the layout from where the images are: (layout, class of each image, given split of each
    image, refused (relpath, reason)). A folder whose subfolders are split names is never read as classes."""
    parents = [posixpath.dirname(p) for p in relpaths]
    common = posixpath.commonpath(parents) if all(parents) else ""
    if all(parent == common for parent in parents):  # one flat folder: Kaggle's cat.N.jpg names, or one class
        if all(posixpath.basename(p).count(".") >= 2 for p in relpaths):
            return "kaggle", {p: posixpath.basename(p).split(".")[0] for p in relpaths}, {}, []
        return "folders", {p: posixpath.basename(common) or "." for p in relpaths}, {}, []
    prefix = f"{common}/" if common else ""
    tops = {p[len(prefix):].split("/")[0] for p in relpaths if "/" in p[len(prefix):]}
    common_split = split_alias(posixpath.basename(common)) if common else None
    presplit = any(split_alias(top) for top in tops)
    labelled, splits, refused = {}, {}, []
    for relpath in relpaths:
        parts = relpath[len(prefix):].split("/")
        if presplit:
            if len(parts) < 3 or not split_alias(parts[0]):
                where = "inside a class folder" if split_alias(parts[0]) else "in a train/val/test folder"
                refused.append((relpath, f"not {where} (pre-split layout)"))
                continue
            splits[relpath], labelled[relpath] = split_alias(parts[0]), parts[1]
        elif len(parts) >= 2:
            labelled[relpath] = parts[0]
            if common_split:
                splits[relpath] = common_split
        else:
            refused.append((relpath, "outside the class folders"))
    if presplit:
        return "presplit", labelled, splits, refused
    layout = "petimages" if common.lower().endswith("petimages") else "folders"
    return layout, labelled, splits, refused


def _outside(path: str) -> bool:
    """True when a CSV's path (relative to the CSV's folder) leaves that folder: absolute, or through `..`."""
    normal = posixpath.normpath(path.replace("\\", "/"))
    return normal.startswith("/") or normal == ".." or normal.startswith("../") or (len(path) > 1 and path[1] == ":")


def _csv_file_readers(csv_path: Path, text: bytes, allow_outside: bool) -> dict[str, Callable[[], bytes]]:
    """Readers of the files a CSV SOURCE names, relative to the CSV's folder (absolute paths kept as given).
    Paths leaving the CSV's folder are read only with `allow_outside`; a symlink leaving it is refused too."""
    readers: dict[str, Callable[[], bytes]] = {}
    root = None if allow_outside else csv_path.parent
    for row in _csv_rows(text, csv_path.name):
        if not row["path"] or (_outside(row["path"]) and not allow_outside):
            continue
        path = Path(row["path"])
        full = path if path.is_absolute() else csv_path.parent / path
        if os.path.lexists(full):
            readers[posixpath.normpath(row["path"])] = partial(read_photo_bytes, full, MAX_FILE_BYTES, root, "the CSV's folder")
    return readers


def _csv_rows(data: bytes, name: str) -> list[dict[str, str]]:
    """The rows of a labels CSV as {path, label[, split]}; UsageError when its columns are not found."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not a UTF-8 text CSV", "source") from None
    try:
        return _parse_csv(text, name)
    except csv.Error as error:
        raise UsageError(f"{name}: not a readable CSV ({one_line(error, 80)})", "source") from None


def _parse_csv(text: str, name: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    path_column = next((columns[c] for c in CSV_PATH_COLUMNS if c in columns), None)
    label_column = next((columns[c] for c in CSV_LABEL_COLUMNS if c in columns), None)
    if path_column is None or label_column is None:
        raise UsageError(f"{name}: a labels CSV needs a header with path and label columns, got "
                         f"{shorten(', '.join(reader.fieldnames or []), 80) or 'no header'}", "source")
    split_column = columns.get("split")
    return [{"path": (row[path_column] or "").strip(), "label": (row[label_column] or "").strip(),
             "split": (row[split_column] or "").strip() if split_column else ""} for row in reader]


def _find_labels_csv(readers: dict[str, Callable[[], bytes]]) -> str | None:
    """The top-most .csv in SOURCE whose header has path and label columns, if any."""
    for relpath in sorted((p for p in readers if p.lower().endswith(".csv") and not _is_hidden(p)),
                          key=lambda p: (p.count("/"), p)):
        try:
            data = readers[relpath]()
        except ImageError:  # not a regular file, too large, a link leaving SOURCE: not the labels CSV
            continue
        header = data[:4096].decode("utf-8-sig", errors="replace").splitlines()[:1]
        names = {c.strip().lower() for c in next(csv.reader(header), [])}
        if names & set(CSV_PATH_COLUMNS) and names & set(CSV_LABEL_COLUMNS):
            return relpath
    return None


def _read_labels_csv(labels_csv: str, readers: dict[str, Callable[[], bytes]], allow_outside: bool = False
                     ) -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]], set[str]]:
    """(class of each listed photo, given split of each, refused rows, every path listed) from a labels CSV.

    Refused rows: an empty path, a label that cannot be a folder name (`label_problem`), a path leaving the
    CSV's folder (unless `allow_outside`), a file not found, an unknown split, and every row of a path listed
    with different labels (none of them is used).
    """
    folder = posixpath.dirname(labels_csv)
    accepted: dict[str, list[tuple[str, dict[str, str]]]] = {}
    refused: list[tuple[str, str]] = []
    listed: set[str] = set()
    for number, row in enumerate(_csv_rows(readers[labels_csv](), labels_csv), start=2):
        where = f"{labels_csv} line {number}"
        path = row["path"]
        relpath = path if path.startswith("/") else posixpath.normpath(posixpath.join(folder, path))
        listed.add(relpath)
        problem = label_problem(row["label"])
        if not path:
            refused.append((where, "empty path"))
        elif problem:
            refused.append((where, problem))
        elif _outside(path) and not allow_outside:
            refused.append((where, f"path {shorten(path, 80)!r} leaves the CSV's folder "
                                   "(--allow-outside-csv-paths reads it)"))
        elif relpath not in readers:
            refused.append((path, f"listed in {labels_csv} but not found"))
        elif row["split"] and not split_alias(row["split"]):
            refused.append((where, f"unknown split {shorten(row['split'], 80)!r} (train, val or test)"))
        else:
            accepted.setdefault(relpath, []).append((where, row))
    labelled, splits = {}, {}
    for relpath, rows in accepted.items():
        if len({row["label"] for _, row in rows}) > 1:
            refused += [(relpath, f"conflicting labels in CSV ({where}: {shorten(row['label'], 40)!r})")
                        for where, row in rows]
            continue
        labelled[relpath] = rows[0][1]["label"]
        given = [row["split"] for _, row in rows if row["split"]]
        if given:
            splits[relpath] = split_alias(given[0])
    return labelled, splits, refused, listed


def iter_image_files(paths: list[Path]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted, symlinked folders not followed) into image files;
    files given by name always stay. Inside a folder, a file is kept when its extension is an image type:
    one we decode (IMAGE_SUFFIXES) or one we do not (OTHER_IMAGE_SUFFIXES, e.g. .svg, .jxl: the caller
    reports it); other files (.txt, .csv...), hidden files and thumbnails (`not_a_photo`) are skipped."""
    wanted = IMAGE_SUFFIXES | OTHER_IMAGE_SUFFIXES
    for path in paths:
        if path.is_dir():
            for folder, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    candidate = Path(folder) / name
                    if candidate.suffix.lower() in wanted and not not_a_photo(candidate.relative_to(path).as_posix()):
                        yield candidate
        else:
            yield path
