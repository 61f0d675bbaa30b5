"""Errors that the command line turns into one-line messages and exit codes."""


class CatsdogsError(Exception):
    """A failure the user can act on; the CLI prints it on one line and exits 1."""

    exit_code = 1


class UsageError(CatsdogsError):
    """Bad arguments or bad input (wrong path, too few images, foreign DATA...): exit code 2."""

    exit_code = 2
