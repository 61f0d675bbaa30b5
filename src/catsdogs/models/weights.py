"""Pretrained weights: Keras' own cache ($KERAS_HOME/models), offline copies of it, and clear errors.

Keras downloads ImageNet weights on first use into `$KERAS_HOME/models/` (default `~/.keras/models/`).
Without internet that fails; `install_weights` links a folder of Keras weight files (such as the
project's `../shared/weights/keras/`) into the cache, under every name Keras looks them up by.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from catsdogs.compat import keras_dir_set_to, keras_home
from catsdogs.errors import CatsdogsError, UsageError

WEIGHTS_ENV = "CATSDOGS_WEIGHTS"  # a folder of Keras weight files to install into the cache
# keras.applications (MobileNet, MobileNetV2) pick the file by input size: one file serves them all
KERAS_SIZE_NAMES = (96, 128, 160, 192, 224)
FETCH_FAILURE = re.compile(r"URL fetch failure on (\S+?): ")


def resolve_weights(weights: str | os.PathLike | None) -> str | None:
    """`"imagenet"`, None (random initialisation; also the string "none") or an existing file's path."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights) == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise UsageError(f"weights {weights}: no such file (use imagenet, none or a weights file)", "weights")
    return str(weights)


def keras_models_dir() -> Path:
    """The folder Keras caches downloaded weights in: `$KERAS_HOME/models` (the variable as set now, else the
    home Keras resolved at import, which falls back to /tmp/.keras when ~/.keras is not writable)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        home = keras_home() or os.path.join(os.path.expanduser("~"), ".keras")  # what Keras itself uses
    return Path(home).expanduser() / "models"


@contextmanager
def keras_cache(home: Path) -> Iterator[Path]:
    """Point Keras' weights cache at `home` (as `KERAS_HOME=home` would) inside the block; yields home/models.

    Keras reads KERAS_HOME once, at import; this also updates the value Keras already read.
    """
    home = Path(home).resolve()
    saved_env = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    try:
        with keras_dir_set_to(str(home)):
            yield home / "models"
    finally:
        if saved_env is None:
            os.environ.pop("KERAS_HOME", None)
        else:
            os.environ["KERAS_HOME"] = saved_env


def offline_weights_dir() -> Path | None:
    """`$CATSDOGS_WEIGHTS`: a folder of Keras weight files to use instead of downloading (None when unset).
    The command line sets it to the project's `../shared/weights/keras` when that exists."""
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value) if value else None


@contextmanager
def weights_cache(home: Path) -> Iterator[Path]:
    """`keras_cache(home)` with the offline weights (`offline_weights_dir()`, when set) linked into it."""
    with keras_cache(home) as models_dir:
        if offline_weights_dir() is not None:
            install_weights(offline_weights_dir(), models_dir)  # linked, never copied
        yield models_dir


def cache_names(file_name: str) -> list[str]:
    """The names Keras may look `file_name` up by: a `_224` file also serves the other input sizes."""
    if not re.search(r"_224(?=[_.])", file_name):
        return [file_name]
    return [re.sub(r"_224(?=[_.])", f"_{size}", file_name) for size in KERAS_SIZE_NAMES]


def install_weights(source: Path | None = None, models_dir: Path | None = None) -> Path:
    """Link the Keras weight files (*.h5) of `source` into Keras' cache; returns the cache folder.

    `source` defaults to `offline_weights_dir()`; `models_dir` to `keras_models_dir()`. Files already in
    the cache are kept. Nothing is written into `source`.
    """
    source = Path(source) if source else offline_weights_dir()
    if source is None or not source.is_dir():
        raise UsageError(f"no weights folder {source or '(none given)'}: set ${WEIGHTS_ENV} to a folder of "
                         "Keras weight files")
    models_dir = Path(models_dir) if models_dir else keras_models_dir()
    if models_dir.resolve() == source.resolve():
        return models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.h5")):
        for name in cache_names(file.name):
            target = models_dir / name
            if target.exists():
                continue
            target.unlink(missing_ok=True)  # a dangling link
            try:
                target.symlink_to(file.resolve())
            except OSError:
                shutil.copyfile(file, target)
    return models_dir


def missing_weights_error(error: Exception, backbone: str) -> CatsdogsError | None:
    """Keras' failed download of `backbone`'s ImageNet weights as a one-line error; None if it is not one."""
    match = FETCH_FAILURE.search(str(error))
    if not match:
        return None
    file_name = match.group(1).rsplit("/", 1)[-1]
    return CatsdogsError(f"ImageNet weights for {backbone} are missing: {file_name} could not be downloaded "
                         f"(offline?); put it in a folder named by ${WEIGHTS_ENV} (or in $KERAS_HOME/models/, "
                         "default ~/.keras/models/), or give train --weights PATH")
