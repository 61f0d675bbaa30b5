"""A small progress line on stderr: redrawn in place on a terminal, a line every few seconds in logs.

Library code asks `progress(total, label)`: a real line at verbosity 1 or more (catsdogs.verbosity), a no-op
below."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """Counts work done and shows `label: done/total (rate unit/s)`."""

    def __init__(self, label: str, total: int | None = None, unit: str = "files",
                 stream: TextIO | None = None, interval: float = 5.0, delay: float = 0.0) -> None:
        """`delay`: seconds before the first line (tqdm's `delay`): work done sooner shows nothing at all."""
        self.label, self.total, self.unit, self.delay = label, total, unit, delay
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = 0.2 if self.interactive else interval
        self.done = self.shown = 0
        self.closed = False
        self.started = self.last_shown = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.started, 1e-9)

    def _line(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total and 0 < self.done < self.total and self.rate > 0:
            eta = f", ETA {_duration((self.total - self.done) / self.rate)}"
        return f"{self.label}: {self.done}{total} {self.unit} ({self.rate:.0f} {self.unit}/s{eta})"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last_shown >= self.interval and now - self.started >= self.delay:
            self.last_shown, self.shown = now, self.done
            end = "\r" if self.interactive else "\n"
            print(self._line(), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        """End the line with the final count: kept on a terminal (as Keras' bar), one line in logs, never the
        same count twice."""
        if self.closed or not self.done or (self.delay and not self.shown):
            self.closed = True
            return
        self.closed = True
        if self.interactive:
            print(f"{self._line():<79}", file=self.stream, flush=True)
        elif self.done != self.shown:
            print(self._line(), file=self.stream, flush=True)


class NoProgress:
    """Progress's interface, showing nothing (verbosity 0)."""

    done = 0

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        pass


def progress(total: int | None, label: str, unit: str = "files") -> Progress | NoProgress:
    """A progress line for `total` units of work at verbosity >= 1, else one that shows nothing."""
    from catsdogs.verbosity import get_verbosity

    return Progress(label, total=total, unit=unit) if get_verbosity() >= 1 else NoProgress()


def track(items: Iterable[T], total: int | None, label: str, unit: str = "images",
          delay: float = 3.0) -> Iterator[T]:
    """`items` as they come, with a progress line once they take more than `delay` seconds (verbosity >= 1)."""
    from catsdogs.verbosity import get_verbosity

    bar = Progress(label, total=total, unit=unit, delay=delay) if get_verbosity() >= 1 else NoProgress()
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
