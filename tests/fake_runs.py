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
             full: bool = True, n_test: int = 12, n_explain: int = 2, seed: int = 0,
             classes: list[str] = CLASSES) -> Path:
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
    (run / "classes.json").write_text(json.dumps(classes))
    rng = np.random.default_rng(seed)
    y = np.arange(n_test) % 2
    p1 = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.25, n_test), 0, 1)
    metrics = compute_metrics(y, p1, classes, 0.5) | {"split": "test"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5, "metric": "accuracy", "split": "validation"}))
    save_evaluation_plots(y, p1, classes, 0.5, run / "plots")
    images = root / "data" / "test"
    images.mkdir(parents=True, exist_ok=True)
    with (run / "predictions-test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", f"p_{classes[1]}"])
        for i, (label, p) in enumerate(zip(y, p1)):
            path = images / f"{CLASSES[label]}.{i}.jpg"
            Image.new("RGB", (48, 36), (40 * (i % 6), 90, 200 - 40 * label)).save(path)
            writer.writerow([str(path), classes[label], f"{p:.6f}"])
    (run / "explain").mkdir()
    for i in range(n_explain):
        Image.new("RGB", (64, 64), (255, 20 * i, 0)).save(run / "explain" / f"cam{i}.png")
    return run


def add_calibration(run: Path, *, other: dict | None = None, seed: int = 0) -> dict:
    """Make a full fake run calibrated, as `catsdogs calibrate` then `evaluate` would: calibration.json (Platt
    a=1.7, b=-0.2, a novelty threshold of 0.8), metrics.json's `trust` and the trust plots. Returns `trust`."""
    from catsdogs.calibration import Calibration
    from catsdogs.trust import save_trust_plots, selective_metrics

    metrics = json.loads((run / "metrics.json").read_text())
    classes = json.loads((run / "classes.json").read_text())
    rows = list(csv.DictReader((run / "predictions-test.csv").open()))
    y = np.array([classes.index(r["label"]) for r in rows])
    p1 = np.array([float(r[f"p_{classes[1]}"]) for r in rows])
    raw = np.stack([1 - p1, p1], axis=1)
    calibration = Calibration("platt", slope=1.7, intercept=-0.2, nll_before=0.61, nll_after=0.52, n=40)
    novelty = np.random.default_rng(seed).normal(0.5, 0.25, len(y))
    trust = selective_metrics(y, raw, calibration.apply(raw), novelty, raw.argmax(axis=1), 0.8)
    (run / "metrics.json").write_text(json.dumps(metrics | {"trust": trust}))
    save_trust_plots(y, raw, calibration.apply(raw), classes, 0.5, trust, run / "plots")
    data = {"calibration": calibration.to_dict(), "split": "validation", "n_validation": 40, "other": other,
            "novelty": {"method": "knn+mahalanobis", "k": 10, "threshold": 0.8, "accept": 0.98,
                        "accepted_validation": 0.975}}
    (run / "calibration.json").write_text(json.dumps(data))
    return trust
