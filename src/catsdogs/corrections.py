"""A corrections file: the photos of SOURCE to relabel or leave out, as `catsdogs review` writes it and
`prepare(..., corrections=PATH)` applies it.

CSV `source,action,label`, one row per photo:
- `source`: the photo's path inside SOURCE, as DATA/manifest.csv's `source` column writes it;
- `action`: `relabel` (`label`: the photo's new class, one of the classes) or `exclude` (`label` empty);
Every problem (a missing column, an unknown action, a path leaving SOURCE, a photo listed twice, a class or a
photo that does not exist) is a one-line UsageError naming the row (its line in the file, the header is row 1)
before anything is written. The photos themselves are never moved or changed.
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from catsdogs.errors import UsageError
from catsdogs.files import write_text_atomic

FIELDS = ["source", "action", "label"]
ACTIONS = ("relabel", "exclude")
REASON = "excluded by corrections"
PARAMETER = "corrections"


@dataclass(frozen=True)
class Correction:
    source: str  # SOURCE-relative path (manifest.csv's `source`)
    action: str  # relabel or exclude
    label: str = ""  # the new class (relabel)
    row: int = 0  # line in the file it was read from (0: not read from a file)


def _outside(path: str) -> bool:
    """True for a path that leaves SOURCE: absolute (also `C:`) or through `..`."""
    normal = posixpath.normpath(path)
    return (path.startswith("/") or normal == ".." or normal.startswith("../") or (len(path) > 1 and path[1] == ":"))


def _fail(name: str, row: int, message: str) -> UsageError:
    return UsageError(f"{name} row {row}: {message}", PARAMETER)


def parse_corrections(text: str, name: str = "corrections.csv") -> list[Correction]:
    """The rows of a corrections CSV's text, checked on their own (columns, actions, paths, duplicates)."""
    reader = csv.DictReader(io.StringIO(text))
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    missing = [c for c in FIELDS if c not in columns]
    if missing:
        got = ", ".join(c for c in reader.fieldnames or [] if c) or "no header"
        raise _fail(name, 1, f"missing column {', '.join(missing)} (a corrections file has source,action,label; "
                             f"got {got[:80]})")
    found: dict[str, Correction] = {}
    corrections = []
    try:
        rows = list(reader)
    except csv.Error as error:
        raise UsageError(f"{name}: not a readable CSV ({error})", PARAMETER) from None
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise _fail(name, number, "more fields than the header's columns")
        source = (row[columns["source"]] or "").strip().replace("\\", "/")
        action = (row[columns["action"]] or "").strip().lower()
        label = (row[columns["label"]] or "").strip()
        if not source:
            raise _fail(name, number, "empty source")
        if _outside(source):
            raise _fail(name, number, f"source {source[:80]!r} is outside SOURCE (absolute or '..')")
        source = posixpath.normpath(source)
        if action not in ACTIONS:
            raise _fail(name, number, f"unknown action {action[:40]!r} (relabel or exclude)")
        if action == "relabel" and not label:
            raise _fail(name, number, "relabel needs a label (the new class)")
        if action == "exclude" and label:
            raise _fail(name, number, f"exclude takes no label (got {label[:40]!r})")
        correction = Correction(source, action, label, number)
        earlier = found.get(source)
        if earlier is not None:
            what = "duplicated" if (earlier.action, earlier.label) == (action, label) else "conflicting"
            raise _fail(name, number, f"{source[:80]!r} is listed again ({what}; first on row {earlier.row})")
        found[source] = correction
        corrections.append(correction)
    return corrections


def read_corrections(file: str | Path) -> list[Correction]:
    """The corrections in FILE (see the module docstring); a missing FILE is a UsageError."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"corrections {file}: no such file", PARAMETER)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"corrections {file}: not a UTF-8 text CSV", PARAMETER) from None
    return parse_corrections(text, file.name)


def check_corrections(corrections: Iterable[Correction], classes: Sequence[str], sources: Iterable[str],
                      name: str = "corrections.csv") -> None:
    """A UsageError naming the first row whose class or photo does not exist."""
    known = set(sources)
    for correction in corrections:
        if correction.action == "relabel" and correction.label not in classes:
            shown = ", ".join(list(classes)[:8]) + (", ..." if len(classes) > 8 else "")
            raise _fail(name, correction.row, f"class {correction.label[:40]!r} does not exist (classes: {shown})")
        if correction.source not in known:
            raise _fail(name, correction.row, f"photo {correction.source[:80]!r} not found in SOURCE")


def corrections_text(corrections: Iterable[Correction]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows([c.source, c.action, c.label if c.action == "relabel" else ""] for c in corrections)
    return buffer.getvalue()


def write_corrections(path: str | Path, corrections: Iterable[Correction]) -> Path:
    """Write the corrections to `path` atomically (readers see the old file or the new one)."""
    path = Path(path)
    write_text_atomic(path, corrections_text(corrections))
    return path


def apply_corrections(items: list, corrections: Iterable[Correction], source_of, relabel) -> tuple[list, list, int]:
    """(kept items with relabels applied, excluded items, relabelled count) of `items`; `source_of(item)` is its
    SOURCE path, `relabel(item, label)` a copy of it with the new class."""
    by_source = {c.source: c for c in corrections}
    kept, excluded, relabelled = [], [], 0
    for item in items:
        correction = by_source.get(source_of(item))
        if correction is None:
            kept.append(item)
        elif correction.action == "exclude":
            excluded.append(item)
        else:
            kept.append(relabel(item, correction.label))
            relabelled += 1
    return kept, excluded, relabelled
