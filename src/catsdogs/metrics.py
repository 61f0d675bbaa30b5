"""Metrics of a classifier from true labels and predicted probabilities (no Keras), for 2 classes or more.

Conventions: ``classes`` holds the class names in index order. Two classes: label 1 is the positive class,
``p1`` is the predicted probability of ``classes[1]`` and the predicted label is ``p1 >= threshold``.
More: ``probabilities`` is n x N (each row sums to 1) and the predicted label is the most probable class.
Two-class callers may pass either ``p1`` or the n x 2 ``probabilities``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from catsdogs.decision import decide
from catsdogs.errors import UsageError

TUNING_METRICS = ("accuracy", "f1", "balanced_accuracy")
MAX_PRINTED_CLASSES = 12
N_CALIBRATION_BINS = 10


def check_binary_inputs(y_true, p1) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and probabilities; return them as 1-D int and float arrays.

    ``p1`` may also have shape (n, 1), as a one-unit sigmoid model returns. Raises ``UsageError``.
    """
    y = np.asarray(y_true)
    p = np.asarray(p1)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    for name, arr in (("y_true", y), ("p1", p)):
        if arr.ndim != 1:
            raise UsageError(f"{name} must be 1-D, got an array of shape {arr.shape}")
    if len(y) != len(p):
        raise UsageError(f"y_true and p1 have inconsistent numbers of samples: [{len(y)}, {len(p)}]")
    if len(y) == 0:
        raise UsageError("y_true and p1 are empty: need at least one sample")
    if not (np.issubdtype(p.dtype, np.number) or p.dtype == bool):
        raise UsageError(f"p1 must be numeric probabilities, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise UsageError(f"p1 contains NaN or infinity ({int(np.sum(~np.isfinite(p)))} values)")
    if p.min() < 0 or p.max() > 1:
        raise UsageError(f"p1 must be probabilities in [0, 1], got values from {p.min():g} to {p.max():g}")
    try:
        is_binary = np.isin(y, (0, 1)).all()
    except TypeError:
        is_binary = False
    if not is_binary:
        found = sorted({str(v) for v in np.unique(y.astype(object))})[:5]
        raise UsageError(f"y_true must contain only 0 and 1 (label indices), found {', '.join(found)}")
    return y.astype(np.int64), p


def check_classes(classes: Sequence[str], n: int = 2) -> list[str]:
    """`n` distinct class names as a list of strings; ``UsageError`` otherwise."""
    names = [str(c) for c in classes]
    if len(names) != n or len(set(names)) != n:
        raise UsageError(f"classes must be {n} distinct names, got {names}", "classes")
    return names


def check_multiclass_inputs(y_true, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels (0..N-1) and n x N class probabilities (N > 2); return them as int and float arrays."""
    y = np.asarray(y_true)
    p = np.asarray(probabilities)
    if y.ndim != 1:
        raise UsageError(f"y_true must be 1-D, got an array of shape {y.shape}", "y_true")
    if p.ndim != 2:
        raise UsageError(f"probabilities must be n x N, got an array of shape {p.shape}", "probabilities")
    if len(y) != len(p):
        raise UsageError(f"y_true and probabilities have inconsistent numbers of samples: [{len(y)}, {len(p)}]",
                         "probabilities")
    if len(y) == 0:
        raise UsageError("y_true and probabilities are empty: need at least one sample", "y_true")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise UsageError("probabilities must be finite values in [0, 1]", "probabilities")
    if not np.allclose(p.sum(axis=1), 1, atol=1e-3):
        raise UsageError("each row of probabilities must sum to 1 (a softmax)", "probabilities")
    p = p / p.sum(axis=1, keepdims=True)  # float32 softmax rounding, which scikit-learn warns about
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)) or y.min() < 0 or y.max() >= p.shape[1]:
        raise UsageError(f"y_true must hold class indices from 0 to {p.shape[1] - 1}", "y_true")
    return y.astype(np.int64), p


def is_multiclass(probabilities) -> bool:
    """Whether `probabilities` are n x N with N > 2 (else a two-class p1 or n x 2 / n x 1 array)."""
    shape = np.shape(probabilities)
    return len(shape) == 2 and shape[1] > 2


def positive_probability(probabilities) -> np.ndarray:
    """p(classes[1]) from a two-class p1, n x 1 or n x 2 array."""
    p = np.asarray(probabilities)
    return p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p


def check_threshold(threshold: float) -> float:
    """The threshold as a float in [0, 1]; ``UsageError`` otherwise."""
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise UsageError(f"threshold must be in [0, 1], got {threshold}")
    return t


def predict_labels(p1: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted label indices: 1 where ``p1 >= threshold``, else 0 (`decision.decide` on [1 - p1, p1])."""
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
    return decide(np.stack([1 - p1, p1], axis=1), threshold)


def calibration_bins(y_true, p1, n_bins: int = N_CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """Equal-width bins of ``p1`` with count, mean predicted probability and fraction of positives.

    Binning matches ``sklearn.calibration.calibration_curve(strategy="uniform")``; empty bins get NaN.
    """
    y, p = check_binary_inputs(y_true, p1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], p, side="right")
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / counts
        frac_pos = np.bincount(idx, weights=y, minlength=n_bins) / counts
    return {"edges": edges, "counts": counts, "mean_p": mean_p, "frac_pos": frac_pos}


def expected_calibration_error(y_true, p1, n_bins: int = N_CALIBRATION_BINS) -> float:
    """ECE of ``p1``: count-weighted mean of |fraction of positives - mean p1| over equal-width bins.

    scikit-learn has no ECE function, hence this one (built on the same binning as its
    ``calibration_curve``).
    """
    b = calibration_bins(y_true, p1, n_bins)
    filled = b["counts"] > 0
    gaps = np.abs(b["frac_pos"][filled] - b["mean_p"][filled])
    return float(np.sum(b["counts"][filled] * gaps) / np.sum(b["counts"]))


def ece_if_calibrated(p1, n_bins: int = N_CALIBRATION_BINS, draws: int = 200, seed: int = 0) -> float:
    """The ECE that a perfectly calibrated model with these probabilities would show on this many photos: the
    mean over `draws` outcomes drawn with P(y = 1) = p1. ECE is biased upwards on few photos (each bin's fraction
    of positives is itself noisy), so an ECE near this value is as calibrated as the sample can show."""
    p = np.clip(np.asarray(p1, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if p.size == 0:
        raise UsageError("no probabilities to measure")
    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error((rng.random(p.size) < p).astype(int), p, n_bins)
                          for _ in range(draws)]))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """sklearn's balanced accuracy, without its warning when only one true class is present."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(y, pred))


def compute_metrics(y_true, p1, classes: Sequence[str], threshold: float = 0.5) -> dict:
    """All evaluation metrics as a JSON-serialisable dict.

    Keys: n, threshold, classes, positive_class, accuracy, balanced_accuracy, per_class
    ({name: {precision, recall, f1, support}}), macro ({precision, recall, f1}), roc_auc (None when
    only one class is present), log_loss, brier, ece, confusion_matrix ({labels, matrix}; rows = true
    class, columns = predicted class, in ``classes`` order).
    """
    if is_multiclass(p1):
        return multiclass_metrics(y_true, p1, classes)
    y, p = check_binary_inputs(y_true, positive_probability(p1))
    names = check_classes(classes)
    t = check_threshold(threshold)
    pred = predict_labels(p, t)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=0
    )
    both_present = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "threshold": t,
        "classes": names,
        "positive_class": names[1],
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "macro": {
            "precision": float(np.mean(precision)),
            "recall": float(np.mean(recall)),
            "f1": float(np.mean(f1)),
        },
        "weighted": _weighted(precision, recall, f1, support),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both_present else None,
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
        "ece": expected_calibration_error(y, p),
        "confusion_matrix": {
            "labels": names,
            "matrix": skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        },
    }


def _weighted(precision, recall, f1, support) -> dict[str, float]:
    total = max(int(np.sum(support)), 1)
    return {name: float(np.sum(values * support) / total)
            for name, values in (("precision", precision), ("recall", recall), ("f1", f1))}


TOP_K = (2, 3, 5)


def multiclass_metrics(y_true, probabilities, classes: Sequence[str]) -> dict:
    """`compute_metrics` for N > 2 classes: the predicted class is the most probable one (no threshold).

    Keys: n, threshold (None), classes, accuracy, balanced_accuracy, per_class, macro, weighted, roc_auc
    (one-vs-rest macro average; None unless every class is present), roc_auc_per_class, log_loss, brier
    (multi-class: mean squared distance to the one-hot label), ece (top-label confidence), top_k_accuracy
    ({k: value} for k in 2, 3, 5 below N), confusion_matrix ({labels, matrix}).
    """
    y, p = check_multiclass_inputs(y_true, probabilities)
    names = check_classes(classes, p.shape[1])
    labels = list(range(len(names)))
    pred = decide(p)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = np.bincount(y, minlength=len(names)) > 0
    # one class against the rest: defined when the class and some other class are both present
    per_class_auc = {name: float(skm.roc_auc_score(y == i, p[:, i])) if present[i] and np.any(y != i) else None
                     for i, name in enumerate(names)}
    correct = (pred == y).astype(np.int64)
    return {
        "n": int(len(y)),
        "threshold": None,
        "classes": names,
        "accuracy": float(np.mean(correct)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(names)},
        "macro": {"precision": float(np.mean(precision)), "recall": float(np.mean(recall)), "f1": float(np.mean(f1))},
        "weighted": _weighted(precision, recall, f1, support),
        "roc_auc": float(skm.roc_auc_score(y, p, multi_class="ovr", labels=labels)) if present.all() else None,
        "roc_auc_per_class": per_class_auc,
        "log_loss": float(skm.log_loss(y, p, labels=labels)),
        "brier": float(np.mean(np.sum((p - np.eye(len(names))[y]) ** 2, axis=1))),
        "ece": expected_calibration_error(correct, p.max(axis=1)),
        "top_k_accuracy": {str(k): float(skm.top_k_accuracy_score(y, p, k=k, labels=labels))
                           for k in TOP_K if k < len(names)},
        "confusion_matrix": {"labels": names, "matrix": skm.confusion_matrix(y, pred, labels=labels).tolist()},
    }


def _counts_at_thresholds(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tn, fp, fn, tp, thresholds) for each distinct score, highest first (sklearn's counting)."""
    if hasattr(skm, "confusion_matrix_at_thresholds"):  # scikit-learn >= 1.8
        return skm.confusion_matrix_at_thresholds(y, p, pos_label=1)
    fpr, tpr, thr = skm.roc_curve(y, p, pos_label=1, drop_intermediate=False)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    fp, tp = np.rint(fpr[1:] * n_neg), np.rint(tpr[1:] * n_pos)
    return n_neg - fp, fp, n_pos - tp, tp, thr[1:]


def tune_threshold(y_true, p1, metric: str = "accuracy") -> float:
    """Threshold that maximises ``metric`` (accuracy, f1 or balanced_accuracy) on the given data.

    Every distinct way of splitting the scores is a candidate; it is represented by 0.5 when 0.5
    gives that split, else by the middle of its threshold interval. Ties go to the candidate closest
    to 0.5. Pass validation data only: the function knows nothing about splits.
    """
    if metric not in TUNING_METRICS:
        raise UsageError(f"unknown metric {metric!r} for threshold tuning; choose from {', '.join(TUNING_METRICS)}")
    y, p = check_binary_inputs(y_true, p1)
    if len(np.unique(y)) < 2:
        raise UsageError(f"threshold tuning needs both classes in y_true, got only class {int(y[0])}")
    tn, fp, fn, tp, scores = (np.asarray(a, dtype=np.float64) for a in _counts_at_thresholds(y, p))
    # Split k predicts positive for p >= scores[k]: thresholds in (scores[k+1], scores[k]] give it.
    hi, lo = scores, np.append(scores[1:], 0.0)
    if scores[0] < 1.0:  # "everything negative" is reachable with a threshold in (max p1, 1]
        n_pos, n_neg = tp[-1] + fn[-1], tn[0] + fp[0]
        tn, fp = np.append(n_neg, tn), np.append(0.0, fp)
        fn, tp = np.append(n_pos, fn), np.append(0.0, tp)
        hi, lo = np.append(1.0, hi), np.append(scores[0], lo)
    contains_half = (lo < 0.5) & (0.5 <= hi)
    candidates = np.where(contains_half, 0.5, (lo + hi) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = {
            "accuracy": (tp + tn) / len(y),
            "f1": np.nan_to_num(2 * tp / (2 * tp + fp + fn)),
            "balanced_accuracy": (tp / (tp + fn) + tn / (tn + fp)) / 2,
        }[metric]
    best = np.flatnonzero(np.isclose(score, score.max(), rtol=0, atol=1e-12))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_metrics_table(metrics: dict) -> str:
    """A short plain-text table of ``compute_metrics`` output for the terminal."""
    names = metrics["confusion_matrix"]["labels"]
    width = max(12, *(len(n) for n in names))
    threshold = f"   threshold={metrics['threshold']:.3f}" if metrics.get("threshold") is not None else ""
    top_k = "".join(f"   top-{k} {_fmt(v)}" for k, v in metrics.get("top_k_accuracy", {}).items())
    lines = [
        f"accuracy {_fmt(metrics['accuracy'])}   balanced {_fmt(metrics.get('balanced_accuracy'))}   "
        f"n={metrics['n']}{threshold}{top_k}",
        f"ROC AUC {_fmt(metrics['roc_auc'])}   log loss {_fmt(metrics['log_loss'])}   "
        f"Brier {_fmt(metrics['brier'])}   ECE {_fmt(metrics['ece'])}",
        "",
        f"{'class':<{width}}  precision  recall      f1  support",
    ]
    rows = [(name, metrics["per_class"][name]) for name in names] + [("macro avg", metrics["macro"])]
    rows += [("weighted avg", metrics["weighted"])] if "weighted" in metrics else []
    for name, m in rows:
        support = str(m.get("support", metrics["n"]))
        lines.append(
            f"{name:<{width}}  {m['precision']:9.4f}  {m['recall']:6.4f}  {m['f1']:6.4f}  {support:>7}"
        )
    matrix = metrics["confusion_matrix"]["matrix"]
    if len(names) > MAX_PRINTED_CLASSES:
        return "\n".join([*lines, "", f"confusion matrix: {len(names)} classes, see plots/confusion_matrix.png"])
    cell = max(5, *(len(str(v)) for v in [*names, *(v for row in matrix for v in row)]))
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * width + "".join(f"  {n:>{cell}}" for n in names))
    for name, row in zip(names, matrix):
        lines.append(f"{name:<{width}}" + "".join(f"  {v:>{cell}}" for v in row))
    return "\n".join(lines)
