"""Errors that the command line turns into one-line messages and exit codes."""

from __future__ import annotations


class CatsdogsError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1.

    `parameter` names the argument the message speaks of (the Python name, e.g. "epochs"); the CLI shows it as
    its flag (`--epochs`), and the `others` the message also names (`start must be below end`: parameter
    "start", others ("end",)).
    """

    exit_code = 1

    def __init__(self, message: str, parameter: str | None = None, *, others: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.others = others


class UsageError(CatsdogsError, ValueError):
    """Bad arguments or bad input (wrong path, too few images, foreign DATA...): exit code 2. A `ValueError`,
    as scikit-learn's validation errors are."""

    exit_code = 2


def shorten(text: str, limit: int | None = 300) -> str:
    """`text` on one line (whitespace collapsed), cut to at most `limit` characters with "..." (None: no cut)."""
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def one_line(exc: BaseException, limit: int | None = 300, *, first_line: bool = False) -> str:
    """`exc`'s message on one line for an error message or a log, or its type's name when it has none.

    `first_line=True` keeps only the message's first line (the rest is often a traceback or a hint).
    """
    text = str(exc).strip()
    if first_line and text:
        text = text.splitlines()[0]
    return shorten(text, limit) or type(exc).__name__
