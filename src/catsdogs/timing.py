"""Timing: how long a call takes, and how many images/s a forward function classifies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def timed(function: Callable[[], T]) -> tuple[T, float]:
    """What `function` returns, and the seconds it took (wall clock, `time.perf_counter`)."""
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def images_per_second(forward: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int = 3) -> float:
    """Warm `forward` on `batch` with one call, then time `repeats` calls: images/s."""
    forward(batch)

    def run() -> None:
        for _ in range(repeats):
            forward(batch)

    return repeats * len(batch) / timed(run)[1]
