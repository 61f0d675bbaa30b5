"""Files that a crash or `kill -9` never leaves half-written: written beside their place, then renamed."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
