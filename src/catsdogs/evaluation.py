"""`catsdogs evaluate`: metrics, plots, most-wrong gallery and Grad-CAM examples of a RUN on one split.

Images are evaluated in manifest order, never shuffled, so every number can be traced back to a file
(RUN/predictions-<split>.csv). A threshold is only ever tuned on the validation split.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from catsdogs.dataset import load_split
from catsdogs.errors import UsageError
from catsdogs.files import safe_cell
from catsdogs.metrics import compute_metrics, tune_threshold
from catsdogs.plots import GALLERY_PNG, most_wrong, save_evaluation_plots, save_gallery
from catsdogs.predict import Predictor
from catsdogs.run_files import METRICS, THRESHOLD, read_config, read_run_classes, run_data, write_json

TUNING_SPLIT = "validation"
EXPLAIN_EXAMPLES = 4


def split_probabilities(predictor: Predictor, data: Path, split: str, cache_dir: Path | None = None,
                        assessed: dict | None = None):
    """(labels, n x N class probabilities, paths, images) of a split; refuses DATA whose classes differ.
    `assessed`: a dict that receives the raw probabilities and the novelty too (catsdogs.trust)."""
    arrays = load_split(data, split, predictor.image_size, cache_dir=cache_dir)
    if arrays.classes != predictor.classes:
        raise UsageError(f"DATA classes {arrays.classes} differ from the run's {predictor.classes}", "data")
    if len(arrays.labels) == 0:
        raise UsageError(f"the {split} split of {data} is empty", "split")
    if assessed is None:
        return arrays.labels, predictor.probabilities(arrays.images), arrays.paths, arrays.images
    pooled = _pooled_features(predictor, data, split, cache_dir, arrays)
    embeddings = _pretrained_features(predictor, data, split, cache_dir, arrays) if pooled is not None else None
    assessed["raw"], probabilities, assessed["novelty"] = (predictor.assess(arrays.images) if pooled is None
                                                           else predictor.assess_pooled(pooled, embeddings))
    return arrays.labels, probabilities, arrays.paths, arrays.images


def _pooled_features(predictor: Predictor, data: Path, split: str, cache_dir: Path | None, arrays):
    """A `heads` (or `finetune-top`) run's pooled features of the split through the features cache (read, or
    extracted once and cached for the next reader, e.g. the audit after `fit`), or None for other runs (no
    flip-averaged bases), engines and TTA."""
    if cache_dir is None or predictor.engine != "keras" or predictor.tta:
        return None
    from catsdogs.trainers.features import cached_pool_features

    backbone = read_config(predictor.run).get("backbone")
    if not backbone:
        return None
    return cached_pool_features(predictor.model, backbone, data, split, cache_dir, arrays.images)


def _pretrained_features(predictor: Predictor, data: Path, split: str, cache_dir: Path, arrays):
    """A tuned top's novelty embeddings, the pretrained base's features (catsdogs.novelty), through the features
    cache (the audit after `fit` reads them there); None when the novelty reads the model's own."""
    novelty = predictor.trust.novelty if predictor.trust is not None else None
    if novelty is None or novelty.reference_top is None:
        return None
    from catsdogs.models.frozen import pretrained_twin
    from catsdogs.trainers.features import cached_pool_features

    twin = pretrained_twin(predictor.model, novelty.reference_top)
    return cached_pool_features(twin, read_config(predictor.run).get("backbone"), data, split, cache_dir, arrays.images)


def tune_run_threshold(run: Path, data: Path | None = None, metric: str = "accuracy", *, tta: bool = False,
                       cache_dir: Path | None = None) -> float:
    """Choose the threshold that maximises `metric` on the VALIDATION split and save RUN/threshold.json."""
    run = Path(run)
    data = run_data(run, data)
    classes = read_run_classes(run)
    if len(classes) != 2:
        raise UsageError(f"threshold tuning needs 2 classes; this run has {len(classes)} (the predicted class is "
                         "the most probable one)", "tune_threshold")
    predictor = Predictor(run, threshold=0.5, tta=tta, calibrated=False)  # tuned on raw p (Predictor maps it)
    labels, probabilities, _, _ = split_probabilities(predictor, data, TUNING_SPLIT, cache_dir)
    threshold = tune_threshold(labels, probabilities[:, 1], metric=metric)
    write_json(run / THRESHOLD, {"threshold": threshold, "metric": metric, "split": TUNING_SPLIT,
                                 "n": int(len(labels)), "tta": tta})
    return threshold


def evaluate(run: Path, data: Path | None = None, split: str = "test", *, tta: bool = False,
             threshold: float | None = None, cache_dir: Path | None = None, explain: bool = True,
             predictor: Predictor | None = None, engine: str = "keras") -> dict:
    """Compute and save RUN/metrics.json, RUN/predictions-<split>.csv, RUN/plots/ and RUN/explain/."""
    run = Path(run)
    data = run_data(run, data)
    if predictor is None or predictor.tta != tta or (threshold is not None and predictor.threshold != threshold):
        predictor = Predictor(run, threshold=threshold, tta=tta, model=predictor.model if predictor else None,
                              engine=engine)
    assessed: dict = {}
    labels, probabilities, paths, images = split_probabilities(predictor, data, split, cache_dir, assessed)
    metrics = compute_metrics(labels, probabilities, predictor.classes, threshold=predictor.threshold)
    origin = "argument" if threshold is not None else ("tuned on validation" if predictor.tuned_threshold
                                                       is not None else "default")
    metrics.update(split=split, tta=tta, data=str(data), threshold_origin=origin, engine=predictor.engine)
    if predictor.trust is not None:  # hook: catsdogs.trust (calibration before/after, selective prediction)
        from catsdogs.trust import save_trust_plots, selective_metrics

        novelty = predictor.trust.novelty
        metrics["trust"] = selective_metrics(labels, assessed["raw"], probabilities, assessed["novelty"],
                                             predictor.predicted_index(probabilities),
                                             novelty.threshold if novelty is not None else None)
        save_trust_plots(labels, assessed["raw"], probabilities, predictor.classes, predictor.threshold,
                         metrics["trust"], run / "plots")
    write_json(run / METRICS, metrics)
    from catsdogs.tracking import log_evaluation  # hook: the run's MLflow run (trained with log='mlflow')

    log_evaluation(run, read_config(run), metrics)
    _write_predictions(run / f"predictions-{split}.csv", paths, labels, probabilities, predictor)
    save_evaluation_plots(labels, probabilities, predictor.classes, predictor.threshold, run / "plots")
    wrong = most_wrong([str(p) for p in paths], labels, probabilities, n=16, threshold=predictor.threshold)
    if wrong:
        save_gallery(wrong, predictor.classes, run / "plots" / GALLERY_PNG)
    if explain:
        _explain_examples(predictor, run / "explain", labels, probabilities, images, paths)
    return metrics


def _explain_examples(predictor: Predictor, out: Path, labels: np.ndarray, probabilities: np.ndarray,
                      images: np.ndarray, paths: list[Path]) -> None:
    """Grad-CAM of the two most confident right answers and the two most confident mistakes."""
    from catsdogs.explain import save_explanation

    confidence_wrong = 1 - probabilities[np.arange(len(labels)), labels]
    order = np.argsort(confidence_wrong, kind="stable")
    picks = list(order[: EXPLAIN_EXAMPLES // 2]) + list(order[::-1][: EXPLAIN_EXAMPLES // 2])
    predicted = predictor.predicted_index(probabilities)
    out.mkdir(parents=True, exist_ok=True)
    for rank, index in enumerate(picks):
        kind = "right" if predicted[index] == labels[index] else "wrong"
        save_explanation(predictor.model, images[index], predictor.classes,
                         out / f"{rank}-{kind}-{Path(paths[index]).stem}.png", threshold=predictor.threshold)


def _write_predictions(path: Path, paths: list[Path], labels: np.ndarray, probabilities: np.ndarray,
                       predictor: Predictor) -> None:
    """RUN/predictions-<split>.csv: path, true and predicted label, each class's probability."""
    classes = predictor.classes
    predicted = predictor.predicted_index(probabilities)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "true_label", "label", *(safe_cell(f"p_{name}") for name in classes)])
        writer.writerows([safe_cell(str(p)), safe_cell(classes[y]), safe_cell(classes[q]), *(f"{v:.6f}" for v in row)]
                         for p, y, q, row in zip(paths, labels, predicted, probabilities))
