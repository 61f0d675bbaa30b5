"""Find the photos and their classes in a SOURCE: a folder or a .zip, in one of three layouts.

- Kaggle: one flat folder of `cat.N.jpg` / `dog.N.jpg` (class = the name before the first dot);
- PetImages: `PetImages/Cat/N.jpg`, `PetImages/Dog/N.jpg`;
- any folder with one subfolder per class.
Nothing is extracted to disk: files are read one at a time, from the folder or from the zip.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from catsdogs.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
MAX_ENTRY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SourceFile:
    """One candidate photo: where it is (relative to SOURCE), its class, and how to read it."""

    relpath: str
    class_name: str
    read: Callable[[], bytes] = field(compare=False, repr=False)


@dataclass
class SourceScan:
    """What a SOURCE holds: usable candidates, files refused before decoding, and the layout found."""

    files: list[SourceFile]
    refused: list[tuple[str, str]]  # (relpath, reason)
    layout: str
    classes: list[str]


def normalise_class_name(name: str) -> str:
    """`Cat`, `cats`, `CATS` -> `cat`; leaves names like `glass` or `bus` alone."""
    lowered = name.strip().lower()
    if len(lowered) > 3 and lowered.endswith("s") and not lowered.endswith(("ss", "us", "is")):
        return lowered[:-1]
    return lowered


def _unsafe_zip_name(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _list_zip(path: Path) -> tuple[dict[str, Callable[[], bytes]], list[tuple[str, str]]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(f"{path}: not a readable zip archive ({error})") from None
    readers: dict[str, Callable[[], bytes]] = {}
    refused: list[tuple[str, str]] = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        if _unsafe_zip_name(info.filename):
            refused.append((info.filename, "unsafe path in zip (absolute or '..')"))
        elif info.file_size > MAX_ENTRY_BYTES:
            refused.append((info.filename, f"file larger than {MAX_ENTRY_BYTES // 2**20} MB"))
        else:
            readers[info.filename] = _zip_reader(archive, info)
    return readers, refused


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        with archive.open(info) as handle:  # a lying header cannot make us read more than this
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            raise OSError(f"file larger than {MAX_ENTRY_BYTES // 2**20} MB")
        return data
    return read


def _list_folder(root: Path) -> dict[str, Callable[[], bytes]]:
    readers: dict[str, Callable[[], bytes]] = {}
    for folder, dirnames, filenames in os.walk(root):  # symlinked folders are not followed
        dirnames.sort()
        for name in filenames:
            full = Path(folder) / name
            readers[full.relative_to(root).as_posix()] = full.read_bytes
    return readers


def _is_hidden(relpath: str) -> bool:
    parts = relpath.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in IGNORED_NAMES


def scan_source(source: Path) -> SourceScan:
    """List SOURCE's photos with their classes; raise UsageError when it is not a two-class source."""
    source = Path(source)
    if not source.exists():
        raise UsageError(f"{source}: no such file or folder")
    if source.is_dir():
        readers, refused = _list_folder(source), []
    elif zipfile.is_zipfile(source):
        readers, refused = _list_zip(source)
    else:
        raise UsageError(f"{source}: expected a folder or a .zip archive")

    candidates: dict[str, Callable[[], bytes]] = {}
    for relpath in sorted(readers):
        if _is_hidden(relpath):
            continue
        if PurePosixPath(relpath).suffix.lower() in IMAGE_SUFFIXES:
            candidates[relpath] = readers[relpath]
        else:
            refused.append((relpath, "not an image file (by its extension)"))
    if not candidates:
        raise UsageError(f"{source}: no image files found")

    layout, labelled, outside = _assign_classes(list(candidates))
    refused += [(relpath, "outside the class folders") for relpath in outside]
    classes = sorted({name for name in labelled.values()})
    if len(classes) != 2:
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise UsageError(f"{source}: expected exactly 2 classes, found {len(classes)} ({shown}); "
                         "use Kaggle's cat.N.jpg names or one subfolder per class")
    files = [SourceFile(relpath, labelled[relpath], candidates[relpath]) for relpath in sorted(labelled)]
    return SourceScan(files=files, refused=sorted(refused), layout=layout, classes=classes)


def _assign_classes(relpaths: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """Decide the layout from where the images are, and give each image its class."""
    parents = [posixpath.dirname(p) for p in relpaths]
    common = posixpath.commonpath(parents) if all(parents) else ""
    if all(parent == common for parent in parents):
        labelled = {p: normalise_class_name(posixpath.basename(p).split(".")[0]) for p in relpaths}
        return "kaggle", labelled, []
    prefix = f"{common}/" if common else ""
    labelled, outside = {}, []
    for relpath in relpaths:
        rest = relpath[len(prefix):]
        if "/" in rest:
            labelled[relpath] = normalise_class_name(rest.split("/")[0])
        else:
            outside.append(relpath)
    layout = "petimages" if common.lower().endswith("petimages") else "folders"
    return layout, labelled, outside


def iter_image_files(paths: list[Path]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted) into image files; other files given by name stay."""
    for path in paths:
        if path.is_dir():
            for folder, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    candidate = Path(folder) / name
                    if candidate.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(name):
                        yield candidate
        else:
            yield path
