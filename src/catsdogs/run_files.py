"""The RUN folder format: the names of the files one experiment writes, and how to read and write them."""

from __future__ import annotations

import csv
import json
import math
import platform
import zipfile
from pathlib import Path
from typing import Any

from catsdogs.errors import UsageError, one_line
from catsdogs.files import write_text_atomic

CONFIG, CLASSES, MODEL, HISTORY, CURVES = "config.json", "classes.json", "model.keras", "history.csv", "curves.png"
METRICS, THRESHOLD, CHECKPOINT_DIR = "metrics.json", "threshold.json", "checkpoint"
FIT_RECORD = "fit.json"  # a `fit` RUN's record of its plan and stages (catsdogs.fitting)


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None (null): JSON has no NaN; every JSON catsdogs writes is valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return json_safe(value.item())
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text (NaN and infinities written as null; `allow_nan=False` guards the rest)."""
    return json.dumps(json_safe(value), indent=indent, default=str, allow_nan=False)


def write_json(path: Path, value: Any) -> None:
    """Write strict JSON atomically (a temporary file renamed into place)."""
    write_text_atomic(path, json_text(value) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file; UsageError naming it when it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}", "run") from None


def read_config(run: Path) -> dict:
    """The run's config.json; a UsageError when RUN is not a catsdogs run."""
    path = Path(run) / CONFIG
    if not path.exists():
        raise UsageError(f"{run}: not a catsdogs run (no {CONFIG})", "run")
    config = read_json(path)
    if not isinstance(config, dict):
        raise UsageError(f"{path}: expected a JSON object", "run")
    for name, (valid, what) in CONFIG_FIELDS.items():
        value = config.get(name)
        if value is not None and not valid(value):
            raise UsageError(f"{path}: {name} must be {what}, got {value!r}; restore config.json from a copy (train "
                             "and fit write it) or train the run again", "run")
    return config


def run_data(run: Path, data: str | Path | None = None) -> Path:
    """`data` when given, else the DATA the run was trained on (config.json's); a UsageError naming config.json
    when it does not say."""
    if data:
        return Path(data)
    configured = read_config(run).get("data")
    if not configured:
        raise UsageError(f"{Path(run) / CONFIG} does not say which DATA the run was trained on; restore config.json "
                         "from a copy, or give data=DATA", "data")
    return Path(configured)


def _count(least: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= least


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


# the fields of config.json that catsdogs reads back, each checked when present and not null: (valid, what it must be)
CONFIG_FIELDS = {
    "data": (_text, "the path of the DATA folder the run was trained on"),
    "model": (_text, "a model name"),
    "status": (_text, "a word such as complete or running"),
    "backbone": (_text, "a backbone name"),
    "monitor": (_text, "a metric name such as val_loss"),
    "image_size": (_count(1), "an integer >= 1 (the model's input size in pixels)"),
    "epochs": (_count(1), "an integer >= 1"),
    "batch_size": (_count(1), "an integer >= 1"),
    "seed": (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer"),
    "classes": (lambda value: isinstance(value, list) and bool(value) and all(map(_text, value)),
                "a list of class names"),
}


def read_run_classes(run: Path) -> list[str]:
    """RUN/classes.json: a list of distinct class names (strings); a UsageError naming the file otherwise."""
    path = Path(run) / CLASSES
    if not path.exists():
        raise UsageError(f"{path} is missing; restore it from the DATA the run was trained on "
                         "(DATA/classes.json)", "run")
    classes = read_json(path)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise UsageError(f"{path} must be a JSON list of class names; restore it from the DATA the run was "
                         "trained on (DATA/classes.json)", "run")
    if len(set(classes)) != len(classes):
        raise UsageError(f"{path} lists a class twice; restore it from the DATA the run was trained on", "run")
    return classes


def check_run(run: Path, model) -> list[str]:
    """The run's classes, once checked against the model's outputs and config.json (UsageError naming the file
    and the fix otherwise): the same number as the model tells apart (one sigmoid unit: two), in config's order."""
    from catsdogs.models.heads import output_classes

    run = Path(run)
    classes = read_run_classes(run)
    outputs = output_classes(model)
    if len(classes) != outputs:
        raise UsageError(f"{run / CLASSES} lists {len(classes)} classes but the model has {outputs} outputs; "
                         "restore classes.json from the DATA the run was trained on", "run")
    configured = read_config(run).get("classes") if (run / CONFIG).exists() else None
    if configured is not None and list(configured) != classes:
        raise UsageError(f"{run / CLASSES} ({', '.join(classes)}) does not match {run / CONFIG}'s classes "
                         f"({', '.join(map(str, configured))}); restore classes.json from the DATA the run was "
                         "trained on", "run")
    return classes


def read_threshold(run: Path) -> float | None:
    """The tuned threshold of a run, when one was saved."""
    path = Path(run) / THRESHOLD
    if not path.exists():
        return None
    value = read_json(path)
    threshold = value.get("threshold") if isinstance(value, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise UsageError(f"{path}: threshold must be a number between 0 and 1, got {threshold!r}; tune it again "
                         "(tune_threshold) or delete the file", "run")
    return float(threshold)


def run_model_path(run: Path) -> Path:
    """RUN/model.keras, checked without loading it: a UsageError naming `run` when RUN is not a run or has no
    model yet (what a command checks before any long work)."""
    path = Path(run) / MODEL
    if not path.exists():
        if read_config(run).get("status") == "complete":
            raise UsageError(f"{path} is missing from a finished run ({CONFIG} says status complete); train the run "
                             "again, or restore model.keras from a copy", "run")
        raise UsageError(f"{run}: no {MODEL} yet (training has not finished an epoch)", "run")
    return path


DAMAGED = f"its {CONFIG} or {MODEL} is unreadable; training it again"  # what a resuming command says of one


def run_status(run: Path) -> str | None:
    """What an interrupted study or fit finds in one of its RUNs: None (not started), "complete" (reused as it is),
    "damaged" (config.json unreadable, or complete but model.keras missing or not a whole archive: trained again)
    or config.json's own status (an unfinished run)."""
    run = Path(run)
    if not (run / CONFIG).exists():
        return None
    try:
        status = read_json(run / CONFIG).get("status")
    except (UsageError, AttributeError):
        return "damaged"
    if status == "complete" and not zipfile.is_zipfile(run / MODEL):
        return "damaged"
    return status


def load_run_model(run: Path):
    """Load RUN/model.keras (Keras safe mode: no arbitrary code)."""
    return load_keras_model(run_model_path(run))


def load_keras_model(path: Path):
    """`keras.models.load_model` in safe mode (no arbitrary code), with catsdogs' own layers registered."""
    import keras

    import catsdogs.models.augmentation  # noqa: F401  (registers RandomAffine for deserialization)
    import catsdogs.models.heads  # noqa: F401  (the heads' Standardize)
    import catsdogs.models.optimizers  # noqa: F401  (and finetune's DiscriminativeAdamW)

    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise UsageError(f"cannot load {path}: not a Keras model file (truncated or corrupt); train the run again "
                         "or restore the file", "run")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, UsageError) or not path.is_file():
            raise
        reason = one_line(error)
        raise UsageError(f"cannot load {path}: {reason}", "run") from None


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    import keras
    import numpy
    import tensorflow

    from catsdogs import __version__

    return {"catsdogs": __version__, "keras": keras.__version__, "tensorflow": tensorflow.__version__,
            "numpy": numpy.__version__, "python": platform.python_version(), "backend": keras.backend.backend()}


def read_history_csv(path: Path) -> list[dict]:
    """A history.csv as a list of dicts: epoch an int, numbers as floats, other text kept."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as handle:
        return [{k: _number(k, v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def _number(key: str, value: str):
    try:
        return int(value) if key == "epoch" else float(value)
    except ValueError:
        return value


def monitor_mode(monitor: str) -> str:
    """"max" for accuracies and AUCs, "min" for losses."""
    return "max" if "acc" in monitor or "auc" in monitor else "min"


def best_row(rows: list[dict], monitor: str) -> dict | None:
    """The history row with the best `monitor` value, or None. Among equal accuracies (a few hundred validation
    photos often give two epochs the same) the lower validation loss, then the first (as the checkpoint keeps)."""
    scored = [row for row in rows if isinstance(row.get(monitor), float)]
    if not scored:
        return None
    if monitor_mode(monitor) == "min":
        return min(scored, key=lambda row: row[monitor])
    return max(scored, key=lambda row: (row[monitor], -_loss(row)))


def _loss(row: dict) -> float:
    loss = row.get("val_loss")
    return loss if isinstance(loss, float) and math.isfinite(loss) else math.inf
