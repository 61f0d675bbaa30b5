"""Fake run folders for report tests: real PNGs from catsdogs.plots, tiny JPEG test images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from catsdogs.metrics import compute_metrics
from catsdogs.plots import save_curves, save_evaluation_plots

CLASSES = ["cat", "dog"]


def make_history(epochs: int = 5) -> list[dict]:
    """History rows shaped like history.csv (0-based epoch)."""
    return [
        {"epoch": e, "accuracy": 0.6 + 0.06 * e, "loss": 0.7 - 0.1 * e,
         "val_accuracy": 0.55 + 0.05 * e - 0.1 * (e == epochs - 1), "val_loss": 0.72 - 0.05 * e}
        for e in range(epochs)
    ]


def write_history(path: Path, history: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def make_run(root: Path, name: str, *, model: str = "baseline", backbone: str | None = None,
             full: bool = True, n_test: int = 12, n_explain: int = 2, seed: int = 0) -> Path:
    """A run folder; ``full`` adds history, curves, metrics, threshold, plots, predictions, explain."""
    run = root / name
    run.mkdir(parents=True)
    config = {"model": model, "backbone": backbone, "image_size": 180, "epochs": 5, "seed": seed,
              "precision": "float32", "wall_time_s": 125.4, "versions": {"keras": "3.15.1"},
              "data": str(root / "data"), "manifest_sha256": "ab" * 32}
    (run / "config.json").write_text(json.dumps(config))
    if not full:
        return run
    history = make_history()
    write_history(run / "history.csv", history)
    save_curves(history, run / "curves.png", title=name)
    (run / "classes.json").write_text(json.dumps(CLASSES))
    rng = np.random.default_rng(seed)
    y = np.arange(n_test) % 2
    p1 = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.25, n_test), 0, 1)
    metrics = compute_metrics(y, p1, CLASSES, 0.5) | {"split": "test"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "metric": "accuracy", "split": "validation"}))
    save_evaluation_plots(y, p1, CLASSES, 0.5, run / "plots")
    images = root / "data" / "test"
    images.mkdir(parents=True, exist_ok=True)
    with (run / "predictions-test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "p_dog"])
        for i, (label, p) in enumerate(zip(y, p1)):
            path = images / f"{CLASSES[label]}.{i}.jpg"
            Image.new("RGB", (48, 36), (40 * (i % 6), 90, 200 - 40 * label)).save(path)
            writer.writerow([str(path), CLASSES[label], f"{p:.6f}"])
    (run / "explain").mkdir()
    for i in range(n_explain):
        Image.new("RGB", (64, 64), (255, 20 * i, 0)).save(run / "explain" / f"cam{i}.png")
    return run
