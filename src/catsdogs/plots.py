"""Plots (placeholder until the results module lands): training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def save_curves(history: list[dict], out_png: Path, title: str = "") -> None:
    """Accuracy and loss, training vs validation, two panels."""
    figure = Figure(figsize=(10, 4))
    epochs = [row["epoch"] + 1 for row in history]
    for axis, metric in zip(figure.subplots(1, 2), ("accuracy", "loss")):
        axis.plot(epochs, [row.get(metric) for row in history], "bo", label=f"Training {metric}")
        axis.plot(epochs, [row.get(f"val_{metric}") for row in history], "b", label=f"Validation {metric}")
        axis.set_title(f"{title} {metric}".strip())
        axis.set_xlabel("epoch")
        axis.legend()
    figure.savefig(out_png, dpi=80)
