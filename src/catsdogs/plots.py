"""Training curves, evaluation plots and the most-wrong gallery as PNG files (matplotlib Agg, no Keras).

Figures are plain ``matplotlib.figure.Figure`` objects (no pyplot state), so this is safe in threads
and servers. The ``*_figure`` functions return figures for notebooks; the ``save_*`` ones write PNGs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageOps
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from catsdogs.errors import UsageError
from catsdogs.metrics import (
    calibration_bins,
    check_binary_inputs,
    check_classes,
    check_threshold,
    expected_calibration_error,
    predict_labels,
)

DPI = 100
#: File names written by ``save_evaluation_plots``, by key.
EVALUATION_PLOTS = {
    "confusion_matrix": "confusion_matrix.png",
    "roc_curve": "roc_curve.png",
    "reliability": "reliability.png",
    "probability_histogram": "probability_histogram.png",
}
#: Conventional file name of the most-wrong gallery inside ``RUN/plots``.
GALLERY_PNG = "most_wrong.png"
GREY = (128, 128, 128)
TRAIN_STYLE, VAL_STYLE = "bo", "b"  # Chollet's plots: dots for training, a line for validation


def figure_png(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _save(fig: Figure, out_png: Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(figure_png(fig))
    return out_png


def _series(history: Sequence[dict], key: str) -> np.ndarray | None:
    """Column ``key`` of the history rows as floats (NaN where blank), or None if absent."""
    if not any(row.get(key) not in (None, "") for row in history):
        return None
    return np.array([float(row[key]) if row.get(key) not in (None, "") else np.nan for row in history])


def curves_figure(history: Sequence[dict], title: str = "") -> Figure:
    """Accuracy and loss per epoch (epochs from 1), training as dots and validation as a line.

    ``history`` rows are dicts like those of history.csv (values may be strings); epoch is 0-based.
    """
    if not history:
        raise UsageError("history is empty: nothing to plot")
    epoch = _series(history, "epoch")
    x = epoch + 1 if epoch is not None else np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("accuracy", "loss")):
        for prefix, style, label in (("", TRAIN_STYLE, "Training"), ("val_", VAL_STYLE, "Validation")):
            y = _series(history, prefix + key)
            if y is not None:
                ax.plot(x, y, style, label=f"{label} {key}")
        ax.set_title(f"Training and validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def save_curves(history: Sequence[dict], out_png: Path, title: str = "") -> Path:
    """Write ``curves_figure`` (two panels: accuracy and loss) to ``out_png``."""
    return _save(curves_figure(history, title), out_png)


def _checked(y_true, p1, classes, threshold) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    return (*check_binary_inputs(y_true, p1), check_classes(classes), check_threshold(threshold))


def confusion_matrix_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """Counts and row shares; rows = true class, columns = predicted class, named on the axes."""
    y, p, classes, threshold = _checked(y_true, p1, classes, threshold)
    matrix = confusion_matrix(y, predict_labels(p, threshold), labels=[0, 1])
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    row_totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count}\n({share[i, j]:.0%})", ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks([0, 1], labels=classes)
    ax.set_yticks([0, 1], labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (threshold {threshold:.2f})")
    return fig


def roc_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """ROC curve of ``p1`` with its AUC and the operating point of ``threshold``."""
    y, p, classes, threshold = _checked(y_true, p1, classes, threshold)
    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p, pos_label=1)
        ax.plot(fpr, tpr, "b", label=f"ROC (AUC = {roc_auc_score(y, p):.3f})")
        pred = predict_labels(p, threshold)
        ax.plot(pred[y == 0].mean(), pred[y == 1].mean(), "ro", label=f"threshold {threshold:.2f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "ROC undefined:\nonly one true class present", ha="center", va="center")
    ax.set_xlabel(f"false positive rate ({classes[0]} called {classes[1]})")
    ax.set_ylabel(f"true positive rate ({classes[1]} found)")
    ax.set_title(f"ROC curve, positive class: {classes[1]}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return fig


def reliability_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """Observed fraction of positives against mean ``p1`` in 10 bins, with ECE and bin counts."""
    y, p, classes, threshold = _checked(y_true, p1, classes, threshold)
    bins = calibration_bins(y, p)
    filled = bins["counts"] > 0
    ece = expected_calibration_error(y, p)
    fig = Figure(figsize=(4.8, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.plot(bins["mean_p"][filled], bins["frac_pos"][filled], "bo-", label=f"model (ECE = {ece:.3f})")
    top.set_ylabel(f"observed fraction of {classes[1]}")
    top.set_ylim(0, 1)
    top.set_title("Reliability diagram")
    top.legend(loc="upper left")
    edges = bins["edges"]
    bottom.bar(edges[:-1], bins["counts"], width=np.diff(edges), align="edge", color="lightsteelblue",
               edgecolor="steelblue")
    bottom.set_xlabel(f"predicted p({classes[1]})")
    bottom.set_ylabel("images")
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.set_xlim(0, 1)
    return fig


def probability_histogram_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """Histograms of ``p1`` for each true class, with the threshold as a vertical line."""
    y, p, classes, threshold = _checked(y_true, p1, classes, threshold)
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0, 1, 21)
    for label, colour in ((0, "tab:orange"), (1, "tab:blue")):
        ax.hist(p[y == label], bins=edges, alpha=0.6, color=colour, label=f"true {classes[label]}")
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_xlabel(f"predicted p({classes[1]})")
    ax.set_ylabel("images")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, 1)
    ax.set_title("Predicted probability by true class")
    ax.legend()
    return fig


_FIGURES = {
    "confusion_matrix": confusion_matrix_figure,
    "roc_curve": roc_figure,
    "reliability": reliability_figure,
    "probability_histogram": probability_histogram_figure,
}


def save_evaluation_plots(y_true, p1, classes: Sequence[str], threshold: float, out_dir: Path) -> dict[str, Path]:
    """Write the confusion matrix, ROC curve, reliability diagram and probability histogram.

    Returns {key: path} with the file names of ``EVALUATION_PLOTS`` inside ``out_dir``.
    """
    args = _checked(y_true, p1, classes, threshold)
    out_dir = Path(out_dir)
    return {key: _save(make(*args), out_dir / EVALUATION_PLOTS[key]) for key, make in _FIGURES.items()}


def most_wrong(paths: Sequence[str | os.PathLike], y_true, p1, n: int = 16, threshold: float = 0.5) -> list[dict]:
    """The ``n`` misclassified images with the highest |p1 - y_true|, most confident first.

    Each record is {"path": str, "label": true label index, "p1": float}.
    """
    y, p = check_binary_inputs(y_true, p1)
    if len(paths) != len(y):
        raise UsageError(f"paths and y_true have inconsistent numbers of samples: [{len(paths)}, {len(y)}]")
    wrong = np.flatnonzero(predict_labels(p, threshold) != y)
    order = wrong[np.argsort(-np.abs(p[wrong] - y[wrong]), kind="stable")][: max(n, 0)]
    return [{"path": str(paths[i]), "label": int(y[i]), "p1": float(p[i])} for i in order]


def load_thumbnail(path: str | os.PathLike, thumb: int) -> tuple[np.ndarray, bool]:
    """A ``thumb`` x ``thumb`` RGB tile of the image (letter-boxed in white) and whether it loaded.

    An unreadable file gives a grey tile instead of an error.
    """
    tile = Image.new("RGB", (thumb, thumb), "white")
    try:
        with Image.open(path) as im:
            im = ImageOps.contain(ImageOps.exif_transpose(im).convert("RGB"), (thumb, thumb))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return np.full((thumb, thumb, 3), GREY, dtype=np.uint8), False
    tile.paste(im, ((thumb - im.width) // 2, (thumb - im.height) // 2))
    return np.asarray(tile), True


def gallery_figure(records: Sequence[dict], classes: Sequence[str], thumb: int = 160, cols: int = 4) -> Figure:
    """A grid of thumbnails captioned "true: cat / p(dog)=0.97" and the file name."""
    caption_px = 44
    if not records:
        fig = Figure(figsize=(4, 1), dpi=DPI)
        fig.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return fig
    ncols = min(cols, len(records))
    nrows = -(-len(records) // ncols)
    fig = Figure(figsize=(ncols * (thumb + 16) / DPI, nrows * (thumb + caption_px) / DPI), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - caption_px / (thumb + caption_px) / nrows,
                        wspace=0.08, hspace=caption_px / thumb)
    for ax in axes:
        ax.set_axis_off()
    for ax, rec in zip(axes, records):
        pixels, ok = load_thumbnail(rec["path"], thumb)
        ax.imshow(pixels)
        name = Path(rec["path"]).name
        name = name if len(name) <= 26 else name[:11] + "..." + name[-12:]
        caption = f"true: {classes[rec['label']]} / p({classes[1]})={rec['p1']:.2f}\n{name}"
        ax.set_title(caption if ok else caption + " (unreadable)", fontsize=8)
    return fig


def save_gallery(records: Sequence[dict], classes: Sequence[str], out_png: Path, thumb: int = 160) -> Path:
    """Write ``gallery_figure`` (e.g. of ``most_wrong`` records) to ``out_png``."""
    return _save(gallery_figure(records, classes, thumb), out_png)
