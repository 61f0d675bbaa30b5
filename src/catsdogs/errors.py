"""Errors that the command line turns into one-line messages and exit codes."""

from __future__ import annotations


class CatsdogsError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1."""

    exit_code = 1


class UsageError(CatsdogsError, ValueError):
    """Bad arguments or bad input (wrong path, too few images, foreign DATA...): exit code 2.

    A `ValueError`, as scikit-learn's validation errors are. `parameter` names the argument at fault (the
    Python name, e.g. "epochs"); the CLI shows it as its flag (`--epochs`).
    """

    exit_code = 2

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
