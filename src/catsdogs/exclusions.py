"""`catsdogs prepare --exclude FILE`: which photos of SOURCE to leave out.

FILE is a CSV with a `path` column: an AUDIT/issues.csv, or any list. A path may name
- a photo of a prepared DATA (`train/cat/cat.12.jpg`): it is matched through that DATA's manifest.csv (the one
  beside FILE, which `catsdogs audit` copies into AUDIT, or the DATA that AUDIT/audit.json names) to the
  sha256 of its source file, so the same photo is left out wherever it sits in SOURCE;
- a file of SOURCE, relative to SOURCE (`train/cat.12.jpg`, as manifest.csv's `source` column writes it).
A `sha256` column, when present, is used as well. Every excluded photo is listed in rejected.csv.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from catsdogs.errors import UsageError


@dataclass(frozen=True)
class Exclusions:
    sha256: frozenset[str]
    paths: frozenset[str]  # SOURCE-relative paths
    listed: int  # paths in FILE
    name: str

    def excludes(self, sha256: str, relpath: str) -> bool:
        return sha256 in self.sha256 or relpath in self.paths


def _manifests(file: Path) -> list[Path]:
    found = [file.parent / "manifest.csv"]
    record = file.parent / "audit.json"
    if record.exists():
        try:
            found.append(Path(json.loads(record.read_text())["data"]) / "manifest.csv")
        except (ValueError, KeyError, TypeError):
            pass
    return [path for path in found if path.exists()]


def read_exclusions(file: str | Path) -> Exclusions:
    """The photos FILE names (see the module docstring); UsageError when FILE is missing or has no `path`."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"exclude {file}: no such file", "exclude")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise UsageError(f"exclude {file}: a CSV with a path column is needed (such as AUDIT/issues.csv)",
                                 "exclude")
            rows = list(reader)
    except UnicodeDecodeError:
        raise UsageError(f"exclude {file}: not a text CSV file", "exclude") from None
    listed = {row["path"].strip().replace("\\", "/") for row in rows if row.get("path")}
    sha256 = {row["sha256"].strip() for row in rows if row.get("sha256")}
    for manifest in _manifests(file):
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("path") in listed and row.get("sha256"):
                    sha256.add(row["sha256"])
    return Exclusions(frozenset(sha256), frozenset(listed), len(listed), file.name)
