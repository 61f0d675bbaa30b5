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

from catsdogs.decision import decide
from catsdogs.errors import UsageError
from catsdogs.metrics import (
    calibration_bins,
    check_binary_inputs,
    check_classes,
    check_multiclass_inputs,
    check_threshold,
    expected_calibration_error,
    is_multiclass,
    positive_probability,
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


def render_plain(fig: Figure, target, **savefig_options) -> None:
    """`fig.savefig(target)` with every text drawn as plain text: class and file names such as `$x$` or
    `a_$b` are never read as TeX (mathtext would crash on unbalanced `$`, or show formulas)."""
    import matplotlib
    from matplotlib.text import Text

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        for text in fig.findobj(Text):
            text.set_parse_math(False)
        fig.savefig(target, **savefig_options)


def figure_png(fig: Figure) -> bytes:
    """The figure rendered as PNG bytes (text never read as TeX)."""
    buf = io.BytesIO()
    render_plain(fig, buf, format="png", dpi=DPI)
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
    return (*check_binary_inputs(y_true, positive_probability(p1)), check_classes(classes),
            check_threshold(threshold))


def _multiclass(y_true, probabilities, classes) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(labels, n x N probabilities, class names, predicted labels) of an N > 2 classifier."""
    y, p = check_multiclass_inputs(y_true, probabilities)
    return y, p, check_classes(classes, p.shape[1]), decide(p)


MAX_ANNOTATED_CLASSES, MAX_ROC_CURVES = 15, 10


def _multiclass_confusion(y_true, probabilities, classes) -> Figure:
    """N x N confusion matrix coloured by row share (readable up to ~40 classes; counts up to 15)."""
    y, p, classes, pred = _multiclass(y_true, probabilities, classes)
    n = len(classes)
    matrix = confusion_matrix(y, pred, labels=list(range(n)))
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = max(4.8, 0.32 * n + 2.2)
    fig = Figure(figsize=(side, side * 0.9), layout="constrained")
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=max(6, 12 - n // 3),
                    color="white" if share[i, j] > 0.5 else "black")
    font = max(5, 11 - n // 5)
    ax.set_xticks(range(n), labels=classes, rotation=90 if n > 6 else 0, fontsize=font)
    ax.set_yticks(range(n), labels=classes, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({n} classes; colour: share of the true class)")
    return fig


def _multiclass_roc(y_true, probabilities, classes) -> Figure:
    """One-vs-rest ROC curves (at most 10 classes drawn, the worst first) and their macro AUC."""
    y, p, classes, _ = _multiclass(y_true, probabilities, classes)
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    curves = [(roc_auc_score(y == i, p[:, i]), i) for i in range(len(classes)) if 0 < np.sum(y == i) < len(y)]
    for auc, i in sorted(curves)[:MAX_ROC_CURVES]:
        fpr, tpr, _ = roc_curve(y == i, p[:, i])
        ax.plot(fpr, tpr, label=f"{classes[i]} (AUC {auc:.3f})")
    macro = np.mean([auc for auc, _ in curves]) if curves else float("nan")
    ax.set_title(f"ROC, one class against the rest (macro AUC {macro:.3f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return fig


def _multiclass_reliability(y_true, probabilities, classes) -> Figure:
    """Accuracy against the top class's probability (confidence) in 10 bins, with ECE and bin counts."""
    y, p, classes, pred = _multiclass(y_true, probabilities, classes)
    return _reliability(pred == y, p.max(axis=1), "accuracy", "confidence (probability of the predicted class)")


def _multiclass_histogram(y_true, probabilities, classes) -> Figure:
    """Histograms of the probability given to the true class, for right and wrong predictions."""
    y, p, classes, pred = _multiclass(y_true, probabilities, classes)
    true_p = p[np.arange(len(y)), y]
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0, 1, 21)
    for right, colour in ((True, "tab:blue"), (False, "tab:red")):
        ax.hist(true_p[(pred == y) == right], bins=edges, alpha=0.6, color=colour,
                label="right" if right else "wrong")
    ax.set_xlabel("predicted probability of the true class")
    ax.set_ylabel("images")
    ax.set_xlim(0, 1)
    ax.set_title("Probability of the true class")
    ax.legend()
    return fig


def confusion_matrix_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """Counts and row shares; rows = true class, columns = predicted class, named on the axes.

    ``p1``: two classes, p(classes[1]) (or n x 2 probabilities); more, n x N probabilities.
    """
    if is_multiclass(p1):
        return _multiclass_confusion(y_true, p1, classes)
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
    """ROC curve of ``p1`` with its AUC and the operating point of ``threshold`` (N > 2: one-vs-rest)."""
    if is_multiclass(p1):
        return _multiclass_roc(y_true, p1, classes)
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
    """Observed fraction of positives against mean ``p1`` in 10 bins, with ECE and bin counts (N > 2:
    accuracy against the predicted class's probability)."""
    if is_multiclass(p1):
        return _multiclass_reliability(y_true, p1, classes)
    y, p, classes, threshold = _checked(y_true, p1, classes, threshold)
    return _reliability(y, p, f"observed fraction of {classes[1]}", f"predicted p({classes[1]})")


def _reliability(y: np.ndarray, p: np.ndarray, observed: str, predicted: str) -> Figure:
    bins = calibration_bins(y, p)
    filled = bins["counts"] > 0
    ece = expected_calibration_error(y, p)
    fig = Figure(figsize=(4.8, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    top.plot(bins["mean_p"][filled], bins["frac_pos"][filled], "bo-", label=f"model (ECE = {ece:.3f})")
    top.set_ylabel(observed)
    top.set_ylim(0, 1)
    top.set_title("Reliability diagram")
    top.legend(loc="upper left")
    edges = bins["edges"]
    bottom.bar(edges[:-1], bins["counts"], width=np.diff(edges), align="edge", color="lightsteelblue",
               edgecolor="steelblue")
    bottom.set_xlabel(predicted)
    bottom.set_ylabel("images")
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.set_xlim(0, 1)
    return fig


def probability_histogram_figure(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> Figure:
    """Histograms of ``p1`` for each true class, with the threshold as a vertical line (N > 2: of the true
    class's probability, for right and wrong predictions)."""
    if is_multiclass(p1):
        return _multiclass_histogram(y_true, p1, classes)
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
    out_dir = Path(out_dir)
    return {key: _save(make(y_true, p1, classes, threshold), out_dir / EVALUATION_PLOTS[key])
            for key, make in _FIGURES.items()}


def most_wrong(paths: Sequence[str | os.PathLike], y_true, p1, n: int = 16, threshold: float = 0.5) -> list[dict]:
    """The ``n`` misclassified images that gave their true class the lowest probability, most confident first.

    Each record is {"path": str, "label": true label index, "predicted": predicted index, "p1": probability
    of classes[1] (two classes) or of the predicted class (more), "p_true": probability of the true class}.
    """
    if is_multiclass(p1):
        y, p = check_multiclass_inputs(y_true, p1)
        predicted = decide(p)
        p_true, p_shown = p[np.arange(len(y)), y], p.max(axis=1)
    else:
        y, p = check_binary_inputs(y_true, positive_probability(p1))
        predicted = predict_labels(p, threshold)
        p_true, p_shown = np.where(y == 1, p, 1 - p), p
    if len(paths) != len(y):
        raise UsageError(f"paths and y_true have inconsistent numbers of samples: [{len(paths)}, {len(y)}]")
    wrong = np.flatnonzero(predicted != y)
    order = wrong[np.argsort(p_true[wrong], kind="stable")][: max(n, 0)]
    return [{"path": str(paths[i]), "label": int(y[i]), "predicted": int(predicted[i]), "p1": float(p_shown[i]),
             "p_true": float(p_true[i])} for i in order]


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
        shown = classes[1] if len(classes) == 2 else classes[rec.get("predicted", rec["label"])]
        caption = f"true: {classes[rec['label']]} / p({shown})={rec['p1']:.2f}\n{name}"
        ax.set_title(caption if ok else caption + " (unreadable)", fontsize=8)
    return fig


def save_gallery(records: Sequence[dict], classes: Sequence[str], out_png: Path, thumb: int = 160) -> Path:
    """Write ``gallery_figure`` (e.g. of ``most_wrong`` records) to ``out_png``."""
    return _save(gallery_figure(records, classes, thumb), out_png)


def learning_curve_figure(curve: dict) -> Figure:
    """Validation accuracy and each class's recall against the number of training photos (catsdogs.learning_curve)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    photos = curve["train_photos"]
    ax.plot(photos, curve["val_accuracy"], "o-", color="black", linewidth=2, label="accuracy")
    for name, values in list(curve["recall"].items())[:MAX_ROC_CURVES]:
        ax.plot(photos, values, ".--", linewidth=1, label=f"recall {name}")
    ax.set_xlabel("training photos")
    ax.set_ylabel("validation")
    ax.set_title("How many more photos?")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def save_learning_curve(curve: dict, out_png: Path) -> Path:
    return _save(learning_curve_figure(curve), out_png)
