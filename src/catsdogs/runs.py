"""A RUN folder: the files one experiment writes and how to read them back."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from catsdogs.errors import UsageError

CONFIG, CLASSES, MODEL, HISTORY, CURVES = "config.json", "classes.json", "model.keras", "history.csv", "curves.png"
METRICS, THRESHOLD, CHECKPOINT_DIR = "metrics.json", "threshold.json", "checkpoint"


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_config(run: Path) -> dict:
    """The run's config.json; a UsageError when RUN is not a catsdogs run."""
    path = Path(run) / CONFIG
    if not path.exists():
        raise UsageError(f"{run}: not a catsdogs run (no {CONFIG})")
    return read_json(path)


def read_run_classes(run: Path) -> list[str]:
    return read_json(Path(run) / CLASSES)


def read_threshold(run: Path) -> float | None:
    """The tuned threshold of a run, when one was saved."""
    path = Path(run) / THRESHOLD
    return float(read_json(path)["threshold"]) if path.exists() else None


def load_run_model(run: Path):
    """Load RUN/model.keras (Keras safe mode: no arbitrary code)."""
    import keras

    path = Path(run) / MODEL
    if not path.exists():
        read_config(run)
        raise UsageError(f"{run}: no {MODEL} yet (training has not finished an epoch)")
    return keras.models.load_model(path, safe_mode=True)


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    import keras
    import numpy
    import tensorflow

    from catsdogs import __version__

    return {"catsdogs": __version__, "keras": keras.__version__, "tensorflow": tensorflow.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(), "backend": keras.backend.backend()}
