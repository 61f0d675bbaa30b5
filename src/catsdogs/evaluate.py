"""`catsdogs evaluate`: metrics of a trained RUN on one split of DATA, in file order (never shuffled)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from catsdogs.dataset import load_split
from catsdogs.errors import UsageError
from catsdogs.metrics import compute_metrics
from catsdogs.predict import Predictor
from catsdogs.runs import METRICS, read_config, write_json


def split_probabilities(predictor: Predictor, data: Path, split: str, cache_dir: Path | None = None):
    """(labels, p1, paths) of a split; refuses DATA whose classes differ from the run's."""
    arrays = load_split(data, split, predictor.image_size, cache_dir=cache_dir)
    if arrays.classes != predictor.classes:
        raise UsageError(f"DATA classes {arrays.classes} differ from the run's {predictor.classes}")
    return arrays.labels, predictor.probabilities(arrays.images), arrays.paths


def evaluate(run: Path, data: Path | None = None, split: str = "test", *, tta: bool = False,
             threshold: float | None = None, cache_dir: Path | None = None) -> dict:
    """Compute and save RUN/metrics.json (and RUN/predictions-<split>.csv) for `split`."""
    run = Path(run)
    data = Path(data or read_config(run)["data"])
    predictor = Predictor(run, threshold=threshold, tta=tta)
    labels, p1, paths = split_probabilities(predictor, data, split, cache_dir)
    metrics = compute_metrics(labels, p1, predictor.classes, threshold=predictor.threshold)
    metrics.update(split=split, tta=tta, data=str(data))
    write_json(run / METRICS, metrics)
    _write_predictions(run / f"predictions-{split}.csv", paths, labels, p1, predictor.classes)
    return metrics


def _write_predictions(path: Path, paths: list[Path], labels: np.ndarray, p1: np.ndarray, classes: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", f"p_{classes[1]}"])
        writer.writerows([str(p), classes[y], f"{q:.6f}"] for p, y, q in zip(paths, labels, p1))
