"""Metrics (placeholder until the results module lands)."""

from __future__ import annotations

import numpy as np


def compute_metrics(y_true: np.ndarray, p1: np.ndarray, classes: list[str], threshold: float = 0.5) -> dict:
    y_true, p1 = np.asarray(y_true), np.clip(np.asarray(p1, dtype=np.float64), 1e-7, 1 - 1e-7)
    predicted = (p1 >= threshold).astype(int)
    loss = -np.mean(y_true * np.log(p1) + (1 - y_true) * np.log(1 - p1))
    return {"accuracy": float(np.mean(predicted == y_true)), "log_loss": float(loss),
            "threshold": threshold, "n": int(len(y_true))}
