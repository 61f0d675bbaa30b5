"""Giving freed memory back to the operating system after large allocations (glibc keeps it in its arenas)."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None elsewhere (macOS, musl, Windows)."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return library.malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Return the allocator's free memory to the OS (glibc `malloc_trim(0)`); False where unavailable."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
