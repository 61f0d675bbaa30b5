"""Files that a crash or `kill -9` never leaves half-written: written beside their place, then renamed."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from catsdogs.errors import UsageError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same folder, same suffixes) to write to; renamed to `path` when the
    block succeeds, removed when it fails. The rename is atomic: readers see the old file or the new one."""
    path = Path(path)
    partial = path.with_name(f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists():
            partial.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as partial:
        partial.write_text(text)


def _writable_folder(folder: Path, what: Path, parameter: str) -> None:
    """A UsageError naming `what` when `folder` (existing or to be made) cannot hold it."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"cannot write {what}: {existing} is a file, not a folder", parameter)
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what}: {existing} is read-only (permission denied); choose another "
                         f"{parameter}", parameter)


def check_out_dir(path: str | os.PathLike, parameter: str = "out") -> Path:
    """`path` as an output folder: a one-line UsageError naming it when it is a file or cannot be made there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{parameter} {path} is an existing file, not a folder; choose another {parameter}",
                         parameter)
    _writable_folder(path, path, parameter)
    return path


def check_own_out(path: str | os.PathLike, markers: Iterable[str], what: str, parameter: str = "out") -> Path:
    """`path` as the folder a command writes several files into: refused (one line) when it is a file, or an
    existing folder that is not empty and holds none of `markers` (what the command writes there: it is then
    somebody else's folder, whose files could be replaced)."""
    path = check_out_dir(path, parameter)
    if path.is_dir() and any(path.iterdir()) and not any((path / marker).exists() for marker in markers):
        raise UsageError(f"{parameter} {path} is not empty and is not a catsdogs {what} folder; choose another "
                         f"{parameter} (an empty or new folder)", parameter)
    return path


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # `b` absent or unreadable: not the same file
        return False


def check_out_file(path: str | os.PathLike, parameter: str = "out", *, overwrite: bool | None = True,
                   inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """`path` as an output file: a one-line UsageError naming it when it is a folder, one of `inputs` (the
    files the command reads: never replaced), an existing file that `overwrite` does not allow (False: refused,
    naming `overwrite=True`; None: always refused), or when its folder cannot be written (a file in the way,
    read-only)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{parameter} {path} is a folder; give a file name", parameter)
    if path.exists() and any(_same_file(path, p) for p in inputs):
        raise UsageError(f"{parameter} {path} is one of the inputs; choose another {parameter}", parameter)
    if not overwrite and (path.exists() or path.is_symlink()):
        how = " or remove it" if overwrite is None else ", remove it, or pass overwrite=True"
        raise UsageError(f"{path} already exists; choose another {parameter}{how}", parameter)
    _writable_folder(path.parent if str(path.parent) else Path("."), path, parameter)
    return path


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: a leading `'` before = + - @ tab or CR (OWASP's advice against
    CSV injection: `=HYPERLINK(...)` as a photo name is then not a formula); a NUL byte written as `\\x00` (CSV
    readers stop at it)."""
    text = str(text).replace("\x00", "\\x00")
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def check_outside(source: Path, out: Path) -> None:
    """Refuse an OUT inside a SOURCE folder (SOURCE is only read) or a SOURCE inside OUT: before OUT is made."""
    source_abs, out_abs = Path(source).resolve(), Path(out).resolve()
    if source_abs.is_dir() and (out_abs == source_abs or source_abs in out_abs.parents):
        raise UsageError(f"out {out} is inside source {source}; choose a folder outside it", "out")
    if out_abs in source_abs.parents or out_abs == source_abs:
        raise UsageError(f"source {source} is inside out {out}; choose another out", "out")
