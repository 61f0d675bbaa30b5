"""Time budgets: `parse_duration("10m")`, and a `Budget` that plans stages against the time left.

A duration is a number of seconds, or a number with a unit: `90s`, `10m`, `1.5h`, `1h30m` (each unit once, the
largest first: `5m5m` is refused). `0` means no budget (fit's heads stage only).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from catsdogs.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600}
AFTER_ALL = "it still runs if the stages before it run faster than planned"  # of a stage skipped for time
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str | float | int, parameter: str = "budget") -> float:
    """Seconds in `text` (`600`, `10m`, `1h30m`); UsageError naming `parameter` for anything else."""
    if isinstance(text, bool):
        raise UsageError(f"{parameter} must be a duration such as 10m, 90s or 1h, got {text!r}", parameter)
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        value = str(text).strip().lower()
        try:
            seconds = -1.0 if value.startswith("-") and value[1:2].isdigit() else float(value)  # `-5m`: refused below
        except ValueError:
            parts = _PART.findall(value)
            units = [unit for _, unit in parts]
            if not parts or "".join(number + unit for number, unit in parts) != value or \
                    units != sorted(set(units), key=list(UNITS).index, reverse=True):
                raise UsageError(f"{parameter} must be a duration such as 10m, 90s, 1h or 1h30m (each unit once, "
                                 f"the largest first), got {text!r}", parameter) from None
            seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"{parameter} must be a duration >= 0 such as 10m, 90s or 1h, got {text!r}", parameter)
    return seconds


def format_seconds(seconds: float) -> str:
    """`7 min 05 s`, `42 s`."""
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class Budget:
    """`seconds` of wall time from `started` (0: unlimited); stages are planned against what is left."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    given: str | None = None  # as written (`0.5s`, `10m`), for messages

    def __str__(self) -> str:
        return self.given or f"{self.seconds:g}s"

    @property
    def unlimited(self) -> bool:
        return self.seconds == 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return math.inf if self.unlimited else self.seconds - self.elapsed()

    def deadline(self) -> float:
        """The monotonic time at which the budget runs out (inf when unlimited)."""
        return math.inf if self.unlimited else self.started + self.seconds

    def allows(self, estimate: float) -> bool:
        return estimate <= self.left()
