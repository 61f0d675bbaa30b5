"""Caches keyed by the photos themselves rather than by DATA's manifest: a photo's identity is its content hash
(manifest.csv's `sha256`), so what was computed from its pixels (features, perceptual hashes) survives a
relabel, which changes its class, its path and the manifest but never its pixels. Labels always come from the
current manifest; the identities stored beside a cached array put its rows back in the current order."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from catsdogs.files import atomic_path

logger = logging.getLogger(__name__)


def photo_ids(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The identity of each manifest row: its sha256, else (a hand-made manifest) its source and size."""
    return [row.get("sha256") or f"{row.get('source') or row.get('path')}:{row.get('width')}x{row.get('height')}"
            for row in rows]


def set_digest(ids: Sequence[str]) -> str:
    """A short hash of a set of photos, whatever their order or labels."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def save_ids(path: Path, ids: Sequence[str]) -> None:
    """Write the identities of a cached array's rows (atomically; a plain .npy of strings, no pickle)."""
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        np.save(handle, np.array(list(ids), dtype=str))


def stored_order(path: Path, ids: Sequence[str]) -> np.ndarray | None:
    """The rows of the array whose identities are in `path` that give `ids` in order; None when `path` is missing
    or lacks one of them. (Photos with one identity have the same pixels: any of their rows will do.)"""
    stored = read_cached_array(path)
    if stored is None:
        return None
    where = {photo: row for row, photo in enumerate(stored.tolist())}
    try:
        return np.array([where[photo] for photo in ids], dtype=np.int64)
    except KeyError:
        return None


def in_order(array: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`array`'s rows in `order`: `array` itself (memory-mapped or not) when the order is unchanged."""
    if len(order) == len(array) and np.array_equal(order, np.arange(len(array))):
        return array
    return np.asarray(array[order])


def read_cached_array(path: Path, mmap: bool = False) -> np.ndarray | None:
    """A cache's .npy array (memory-mapped with `mmap`), or None when it is missing or unreadable (truncated,
    not an array, pickled objects, NaN or infinite floats): a cache miss, said once, so the caller computes it
    again and overwrites the file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        if not isinstance(array, np.ndarray) or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            raise ValueError("not a finite array")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        logger.warning(f"ignoring the unreadable cache file {path} ({str(error).splitlines()[0][:80]}): "
                       "computing it again")
        return None
    return array
