"""How much the library says: `set_verbosity(0|1|2)` over the `catsdogs` logger of Python's logging.

0: nothing at all on stdout or stderr (messages, warnings, progress lines, Keras' epoch lines; TensorFlow is
imported then, its C++ start-up lines kept off stderr, if it was not imported yet). 1: what the command line
shows (messages and progress on stderr; Keras' progress bar on a terminal, one line per epoch otherwise).
2: 1 and debug detail.
Default, for a library user who never calls it: like scikit-learn, nothing extra: warnings only (through
Python's logging as configured, else on stderr), no progress, no Keras lines; `get_verbosity()` is then 0.
An application that configures logging at INFO for the `catsdogs` logger (or the root) gets level 1.
The state is the logger's own (level, handler, propagation): no other global.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("catsdogs")
SILENT = logging.CRITICAL + 10  # above every level: no record passes
_LEVELS = {0: SILENT, 1: logging.INFO, 2: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (a notebook's, pytest's capture), as logging.lastResort does."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property ignores it
        pass


def set_verbosity(level: int) -> None:
    """0: silent (nothing on stdout/stderr); 1: messages, progress and Keras' epoch lines; 2: and debug detail."""
    from catsdogs.errors import UsageError

    if level not in _LEVELS:
        raise UsageError(f"level must be 0, 1 or 2, got {level!r}", "level")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(_LEVELS[level])
    if level == 0:
        logger.propagate = False  # nor through the application's handlers, nor logging.lastResort
        import_tensorflow_quietly()
    else:
        logger.propagate = False  # our handler shows the records; the root's would show them twice
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (through Keras) and let it probe its devices now, with stderr sent to /dev/null: its
    C++ start-up lines (absl, oneDNN, a failed CUDA probe on a machine without a GPU) are written before any
    setting can stop them. Then its C++ log is limited to errors and its Python logger's warnings (tf.function
    retracing) are off. Done by level 0 and by the command line without --debug."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow is imported
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import keras  # noqa: F401  (imports tensorflow)
                import tensorflow as tf

                tf.config.list_physical_devices()  # the first device probe (cuInit) logs once
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # the logger tf.get_logger() returns


def get_verbosity() -> int:
    """The level in effect: 2 when debug records pass, 1 when info records do, else 0."""
    if logger.isEnabledFor(logging.DEBUG):
        return 2
    return 1 if logger.isEnabledFor(logging.INFO) else 0


def keras_verbose(chief: bool = True) -> int | str:
    """Keras' `verbose=` for fit: 0 below level 1 (or off the chief worker); its progress bar ('auto') when
    stdout, where Keras writes, is a terminal; one line per epoch (2) otherwise."""
    if not chief or get_verbosity() < 1:
        return 0
    return "auto" if sys.stdout.isatty() else 2
