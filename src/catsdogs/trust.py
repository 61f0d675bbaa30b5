"""`catsdogs calibrate RUN`: calibrated probabilities and an honest "unknown" for a finished RUN.

On the RUN's validation split: a calibration (catsdogs.calibration) and a novelty threshold that accepts
`accept` of the in-distribution photos (catsdogs.novelty), fitted on training-photo embeddings. Written to
RUN/calibration.json (the numbers) and RUN/novelty.npz (the reference embeddings, class means, precision).
`Predictor` reads them back through `load_trust`; `evaluate` adds `selective_metrics`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.calibration import Calibration, fit_calibration
from catsdogs.errors import UsageError
from catsdogs.novelty import METHODS, Novelty, check_accept, check_settings, embedding_model, fit_novelty, fit_stats
from catsdogs.run_files import read_config, read_json, run_data, write_json

CALIBRATION, NOVELTY = "calibration.json", "novelty.npz"
UNKNOWN = "unknown"
# chosen on benchmarks/open_set_methods.py, half A of the other photos (docs/open_set.md): centred k-NN kept <= 3%
# of held-out own photos unknown in both directions and rejected the most; Mahalanobis (2560 dimensions from about
# a thousand photos) put 4.5% of held-out cats and dogs above the threshold and let 76% of them past a TrashNet RUN
DEFAULT_METHOD = "knn"
COVERAGES = tuple(round(c, 2) for c in np.arange(0.05, 1.0001, 0.05))
log = logging.getLogger(__name__)


class RunTrust:
    """A RUN's calibration and novelty scorer, ready for a Predictor (the embedding model built on first use)."""

    def __init__(self, model, calibration: Calibration, novelty: Novelty | None, run: Path | None = None):
        self.model, self.calibration, self.novelty, self.run = model, calibration, novelty, run
        self._joint = None

    def embed(self, images: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, raw model outputs) of uint8 images, in batches."""
        return embed(self.joint, images, batch_size)

    @property
    def joint(self):
        if self._joint is None:
            try:
                self._joint = embedding_model(self.model, self.novelty.reference_top if self.novelty else None)
            except UsageError as error:  # a tampered top in novelty.npz: name the file
                if self.run is None:
                    raise
                raise UsageError(f"{Path(self.run) / NOVELTY}: {error}; {_rebuild(self.run)}", "run") from None
        return self._joint


def embed(joint, images, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, outputs) of images (an array or shards) through an `embedding_model`, batch by batch in
    Keras' compiled predict function (calling the model eagerly peaked at 5.9 GB instead of 1.5 GB for 32
    photos through EfficientNet-Lite2's two views, and took twice as long); `batch_size` default:
    `images.batch_for` the model's input size."""
    from catsdogs.images import batch_for

    batch_size = batch_size or batch_for(int(joint.input_shape[1]))
    embeddings, outputs = [], []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size]).astype(np.float32)
        e, o = joint.predict_on_batch(batch)
        embeddings.append(np.asarray(e, np.float32).reshape(len(batch), -1))
        outputs.append(np.asarray(o, np.float32))
    if not embeddings:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(embeddings), np.concatenate(outputs)


def load_trust(run: Path, model) -> RunTrust | None:
    """The RUN's calibration and novelty data, or None (logged) when `catsdogs calibrate` never ran on it."""
    path = Path(run) / CALIBRATION
    if not path.exists():
        log.warning("%s has no %s: probabilities are not calibrated and no photo is labelled unknown "
                    "(catsdogs.calibrate(run) adds them without retraining)", run, CALIBRATION)
        return None
    calibration, settings = read_calibration(run)
    arrays = Path(run) / NOVELTY
    if settings is not None and not arrays.exists():
        log.warning("%s is missing (calibration.json's novelty settings need it): no novelty score, and no photo is "
                    "labelled unknown; %s", arrays, _rebuild(run))
        return RunTrust(model, calibration, None)
    if settings is None:
        return RunTrust(model, calibration, None)
    try:
        novelty = Novelty.load(arrays, settings)
    except UsageError as error:
        raise UsageError(f"{arrays}: {error}; {_rebuild(run)}", "run") from None
    if novelty.reference_top is None and "embedding" not in settings and _tuned_top(run):
        log.warning("%s was calibrated by an earlier release on its tuned top's features, which let photos of other "
                    "subjects pass as known; `catsdogs calibrate %s` sets its unknown threshold on the pretrained "
                    "ones (no retraining)", run, run)
    return RunTrust(model, calibration, novelty, run)


def _tuned_top(run: Path) -> bool:
    try:
        return read_config(Path(run)).get("model") == "finetune-top"
    except UsageError:
        return False


def read_calibration(run: Path) -> tuple[Calibration, dict | None]:
    """RUN/calibration.json, checked: the calibration and the novelty settings (None: none stored); a UsageError
    naming the file, the field and `catsdogs calibrate RUN` otherwise (never NaN probabilities or a wrong label)."""
    path = Path(run) / CALIBRATION
    try:
        data = read_json(path)
        if not isinstance(data, dict):
            raise UsageError(f"expected a JSON object, got {type(data).__name__}", "run")
        if "calibration" not in data:
            raise UsageError("no calibration entry", "run")
        calibration = Calibration.from_dict(data["calibration"])
        return calibration, check_settings(data["novelty"]) if data.get("novelty") else None
    except UsageError as error:
        message = str(error) if str(path) in str(error) else f"{path}: {error}"
        raise UsageError(f"{message}; {_rebuild(run)}", "run") from None


def _rebuild(run: Path) -> str:
    return f"run `catsdogs calibrate {run}` to rebuild it"


@dataclass
class CalibrationSummary:
    run: Path
    calibration: Calibration
    novelty: Novelty
    other: dict | None

    def line(self) -> str:
        c, n = self.calibration, self.novelty
        text = f"{self.run}: {c.method} calibration (validation NLL {c.nll_before:.4f} -> {c.nll_after:.4f}); "
        if n.threshold == float("inf"):
            text += f"no unknown threshold: too few validation photos for a {n.accept:.0%} cut"
        else:
            features = " on the pretrained top's features" if n.reference_top is not None else ""
            text += (f"unknown above novelty {n.threshold:.4g} ({n.method}{features}), {n.accepted:.1%} of validation "
                     "accepted")
        if self.other and n.threshold == float("inf"):
            text += f"; other photos: AUROC {self.other['auroc']:.4f} ({self.other['n']} photos; none rejected " \
                    "without a threshold)"
        elif self.other:
            text += (f"; other photos: {self.other['rejected']:.1%} rejected, AUROC {self.other['auroc']:.4f} "
                     f"({self.other['n']} photos)")
        return text


def _other_images(other: str | os.PathLike, image_size: int) -> np.ndarray:
    from catsdogs.images import ImageError, load_image
    from catsdogs.sources import iter_image_files

    folder = Path(other)
    if not folder.is_dir():
        raise UsageError(f"other {other} is not a folder of photos", "other")
    images = []
    for path in iter_image_files([folder]):
        try:
            images.append(load_image(path, image_size))
        except ImageError:
            continue
    if not images:
        raise UsageError(f"other {other} holds no readable photos", "other")
    return np.stack(images)


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def calibrate(run: str | os.PathLike, accept: float = 0.98, other: str | os.PathLike | None = None, *,
              method: str = DEFAULT_METHOD, data: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None, seed: int = 0) -> CalibrationSummary:
    """Fit the calibration and the novelty threshold of a finished RUN on its validation split and write
    RUN/calibration.json and RUN/novelty.npz. `accept`: the share of in-distribution validation photos to
    accept. `other`: a folder of photos of none of the classes, to report AUROC and the share rejected."""
    from catsdogs.decision import class_probabilities
    from catsdogs.models.frozen import pretrained_twin
    from catsdogs.run_files import load_run_model, read_run_classes

    check_accept(accept)
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}", "method")
    run = Path(run)
    config = read_config(run)
    data = run_data(run, data)
    model = load_run_model(run)
    classes = read_run_classes(run)
    image_size = int(model.input_shape[1])
    other_images = _other_images(other, image_size) if other is not None else None
    top = _reference_top(run, config, model)
    joint = embedding_model(model, top)
    (train_embeddings, train_labels), (val_embeddings, val_outputs, val_labels) = _embeddings(
        model, joint, config, data, classes, cache_dir, seed, features_cache=Path(cache_dir or run / "cache"),
        reference=None if top is None else pretrained_twin(model, top))
    val_raw = class_probabilities(val_outputs)
    calibration = fit_calibration(val_labels, val_raw)
    val_probabilities = calibration.apply(val_raw)
    novelty = fit_novelty(train_embeddings, train_labels, len(classes), seed=seed, method=method)
    novelty.reference_top = top
    components = novelty.components(val_embeddings, val_probabilities)
    fit_stats(novelty, components)
    novelty.set_threshold(novelty.combine(components), accept)
    report = None
    if other_images is not None:
        other_embeddings, other_outputs = embed(joint, other_images)
        other_components = novelty.components(other_embeddings, calibration.apply(class_probabilities(other_outputs)))
        report = {"folder": str(other), "n": int(len(other_images)), "methods": {}}
        for name in METHODS:  # every method, to compare them; the chosen one's numbers at the top level
            inside, outside = novelty.combine(components, name), novelty.combine(other_components, name)
            cut = np.sort(inside)[min(len(inside) - 1, max(0, int(np.ceil(accept * len(inside))) - 1))]
            report["methods"][name] = {"auroc": _auroc(inside, outside), "rejected": float(np.mean(outside > cut))}
        report.update(report["methods"][method])
    write_json(run / CALIBRATION, {"calibration": calibration.to_dict(), "novelty": novelty.to_dict(),
                                   "split": "validation", "n_validation": int(len(val_labels)),
                                   "data": str(data), "other": report})
    novelty.save_arrays(run / NOVELTY)
    return CalibrationSummary(run, calibration, novelty, report)


def _reference_top(run: Path, config: dict, model) -> list[np.ndarray] | None:
    """A `finetune-top` model's top as it was before tuning (novelty reads the pretrained features; fine-tuning
    pulls the tuned ones onto the classes): an earlier calibration's copy in RUN/novelty.npz, else the weights
    the run started from. None for other models."""
    from catsdogs.models.backbones import get_backbone
    from catsdogs.models.frozen import pretrained_top_weights, split_base, tuned_top_base
    from catsdogs.novelty import read_arrays, reference_top

    name = tuned_top_base(model)
    if config.get("model") != "finetune-top" or name is None:
        return None
    base = model.get_layer(name)
    shapes = [tuple(w.shape) for w in split_base(base, get_backbone(name).tuned_from(base))[1].weights]
    try:
        stored = reference_top(read_arrays(run / NOVELTY)) if (run / NOVELTY).exists() else None
    except UsageError:
        stored = None  # unreadable: rebuilt below
    if stored and [w.shape for w in stored] == shapes:
        return stored
    return pretrained_top_weights(name, int(model.input_shape[1]), _starting_weights(config))


def _starting_weights(config: dict):
    """The `weights` option of the run a chain of `from_run`s started from (a finetune-top RUN continues
    another): "imagenet" unless it says otherwise."""
    seen = set()
    while True:
        options = config.get("model_options") or {}
        source = options.get("from_run")
        if not source or source in seen:
            return options.get("weights", "imagenet")
        seen.add(source)
        try:
            config = read_config(Path(source))
        except (UsageError, OSError):
            return "imagenet"


def _embeddings(model, joint, config: dict, data: Path, classes: list[str], cache_dir, seed: int, *,
                features_cache: Path, reference=None):
    """((train embeddings, labels) of up to MAX_REFERENCE training photos, (validation embeddings, outputs,
    labels)): from the features cache for a `heads` or `finetune-top` run (no image decoded), else through `joint`.
    `reference`: the model whose pooled features are the embeddings, when not `model` (a tuned top's pretrained
    twin: `fit`'s heads stage cached them)."""
    from catsdogs.dataset import load_split
    from catsdogs.novelty import MAX_REFERENCE
    from catsdogs.trainers.features import cached_pool_features

    rng, backbone = np.random.default_rng(seed), config.get("backbone")
    cached = [cached_pool_features(model, backbone, data, split, features_cache)
              for split in ("train", "validation")]  # None unless a flip-averaged model (heads, finetune-top)
    outputs_of = cached[1]
    if reference is not None and outputs_of is not None:  # the twin's features: extracted once when not cached
        cached = [cached_pool_features(reference, backbone, data, split, features_cache)
                  for split in ("train", "validation")]
        cached = [found if found is not None else cached_pool_features(
                      reference, backbone, data, split, features_cache,
                      load_split(data, split, int(model.input_shape[1]), cache_dir=cache_dir).images)
                  for split, found in zip(("train", "validation"), cached)]
    if cached[0] is not None and cached[1] is not None and outputs_of is not None:
        from catsdogs.data_files import read_manifest

        labels = [np.array([classes.index(row["class"]) for row in read_manifest(data, split)], np.int64)
                  for split in ("train", "validation")]
        if len(labels[0]) == len(cached[0]) and len(labels[1]) == len(cached[1]) and len(labels[1]):
            keep = np.sort(rng.permutation(len(labels[0]))[:MAX_REFERENCE])
            outputs = np.asarray(model.get_layer("head").predict(outputs_of, verbose=0, batch_size=256))
            return (cached[0][keep], labels[0][keep]), (cached[1], outputs, labels[1])
    image_size = int(model.input_shape[1])
    validation = load_split(data, "validation", image_size, cache_dir=cache_dir)
    train = load_split(data, "train", image_size, cache_dir=cache_dir)
    if validation.classes != classes or len(validation.labels) == 0:
        raise UsageError(f"the validation split of {data} is empty or has other classes than the run", "data")
    keep = np.sort(rng.permutation(len(train.labels))[:MAX_REFERENCE])
    train_embeddings = np.concatenate([embed(joint, np.stack([train.images[j] for j in keep[i:i + 512]]))[0]
                                       for i in range(0, len(keep), 512)])
    val_embeddings, val_outputs = embed(joint, validation.images)
    return (train_embeddings, train.labels[keep]), (val_embeddings, val_outputs, validation.labels)


def selective_metrics(labels: np.ndarray, raw: np.ndarray, probabilities: np.ndarray, novelty: np.ndarray | None,
                      predicted: np.ndarray, threshold: float | None) -> dict:
    """ECE and log loss before/after calibration; accuracy on the photos accepted at each coverage
    (most familiar first) and at the RUN's operating point."""
    from catsdogs.calibration import negative_log_likelihood
    from catsdogs.metrics import ece_if_calibrated, expected_calibration_error

    labels = np.asarray(labels)
    out = {}
    for name, p in (("before", raw), ("after", probabilities)):
        p = np.asarray(p)
        top, binary = p.argmax(axis=1), p.shape[1] == 2
        ece = (expected_calibration_error(labels, p[:, 1]) if binary else
               expected_calibration_error((top == labels).astype(int), p.max(axis=1)))
        out[f"ece_{name}_calibration"] = float(ece)
        out[f"log_loss_{name}_calibration"] = negative_log_likelihood(labels, p)
    # the ECE that sampling alone gives on this many photos, for a perfectly calibrated model (metrics.py)
    out["ece_if_calibrated"] = ece_if_calibrated(p[:, 1] if binary else p.max(axis=1))
    if novelty is None:
        return out
    correct = np.asarray(predicted) == labels
    order = np.argsort(novelty, kind="stable")
    curve = []
    for coverage in COVERAGES:
        kept = order[:max(1, int(round(coverage * len(order))))]
        curve.append({"coverage": float(coverage), "accuracy": float(correct[kept].mean())})
    accepted = np.asarray(novelty) <= threshold
    out["coverage_curve"] = curve
    out["operating_point"] = {"novelty_threshold": float(threshold), "coverage": float(accepted.mean()),
                              "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else None,
                              "unknown": int((~accepted).sum())}
    return out


def format_trust(trust: dict, split: str) -> str:
    """`evaluate`'s terminal lines for metrics.json's `trust`: calibration before/after, the operating point and
    the coverage curve at a few coverages."""
    lines = [f"calibration on the {split} split: ECE {trust['ece_before_calibration']:.4f} -> "
             f"{trust['ece_after_calibration']:.4f}, log loss {trust['log_loss_before_calibration']:.4f} -> "
             f"{trust['log_loss_after_calibration']:.4f}"
             + (f" (a perfectly calibrated model would show ECE ~{trust['ece_if_calibrated']:.4f} on this many "
                "photos)" if "ece_if_calibrated" in trust else "")]
    point = trust.get("operating_point")
    if point:
        accuracy = "-" if point["accuracy_accepted"] is None else f"{point['accuracy_accepted']:.4f}"
        lines.append(f"operating point (unknown above novelty {point['novelty_threshold']:.4g}): {point['coverage']:.1%}"
                     f" of {split} accepted, accuracy on them {accuracy}, {point['unknown']} labelled unknown")
        shown = [c for c in trust["coverage_curve"] if round(c["coverage"] * 100) in (50, 80, 90, 95, 100)]
        lines.append("accuracy at coverage (most familiar first): " + ", ".join(
            f"{c['coverage']:.0%} {c['accuracy']:.4f}" for c in shown) + " (plots/coverage.png)")
    return "\n".join(lines)


def save_trust_plots(labels, raw, probabilities, classes, threshold, metrics: dict, out_dir: Path) -> None:
    """plots/reliability-before.png, reliability-after.png and (with novelty) coverage.png."""
    from matplotlib.figure import Figure

    from catsdogs.plots import _save, reliability_figure

    out_dir = Path(out_dir)
    for name, p in (("before", raw), ("after", probabilities)):
        p = p if np.asarray(p).shape[1] > 2 else np.asarray(p)[:, 1]
        fig = reliability_figure(labels, p, classes, threshold if threshold is not None else 0.5)
        fig.suptitle(f"{name} calibration")
        _save(fig, out_dir / f"reliability-{name}.png")
    if "coverage_curve" in metrics:
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.subplots()
        curve = metrics["coverage_curve"]
        ax.plot([c["coverage"] for c in curve], [c["accuracy"] for c in curve], "o-", label="accepted photos")
        point = metrics["operating_point"]
        if point["accuracy_accepted"] is not None:
            ax.plot([point["coverage"]], [point["accuracy_accepted"]], "r*", markersize=14, label="operating point")
        ax.set_xlabel("coverage (share of photos accepted, most familiar first)")
        ax.set_ylabel("accuracy on the accepted photos")
        ax.set_title("Selective prediction")
        ax.legend(loc="lower left")
        _save(fig, out_dir / "coverage.png")


EXPORT_NOTE = ("The graph outputs probabilities, not logits. Clip p to [1e-7, 1 - 1e-7], then: two classes (one "
               "sigmoid output p1), method platt: p1 = sigmoid(slope * logit(p1) + intercept), logit(p) = log(p) - "
               "log(1 - p); N classes (a softmax), method temperature: p = softmax(log(p) / temperature) (the "
               "log-probabilities divided by T, then a softmax: softmax(logits / T)); identity or null: p as it is. "
               "decision_threshold applies to the calibrated p1. The unknown label needs the penultimate embeddings "
               "and novelty.npz, which the graph does not output: use catsdogs.Predictor for it.")
METADATA_PREFIX = "catsdogs."


def export_metadata(run: str | os.PathLike) -> dict[str, str]:
    """Text metadata for the exports of a RUN (values are JSON): classes, calibration, decision_threshold (on
    the calibrated p1; two classes), novelty (its threshold and settings) and how to apply them. calibration and
    novelty are null for a RUN that was never calibrated."""
    from catsdogs.run_files import json_text, read_run_classes, read_threshold

    run = Path(run)
    classes = read_run_classes(run)
    calibration, settings = read_calibration(run) if (run / CALIBRATION).exists() else (None, None)
    raw_threshold = read_threshold(run) or 0.5
    threshold = (calibration.map_threshold(raw_threshold) if calibration else raw_threshold) if len(classes) == 2 else None
    kept = ("method", "temperature", "slope", "intercept")
    novelty = {k: v for k, v in settings.items() if k in ("method", "k", "threshold", "accept", "stats")} \
        if settings else None
    values = {"classes": classes, "calibration": {k: calibration.to_dict()[k] for k in kept} if calibration else None,
              "decision_threshold": threshold, "novelty": novelty, "how_to_apply": EXPORT_NOTE}
    return {METADATA_PREFIX + key: value if key == "how_to_apply" else json_text(value, indent=None)
            for key, value in values.items()}


def write_export_metadata(run: str | os.PathLike, export: str | os.PathLike) -> Path | None:
    """EXPORT.calibration.json beside an export: the RUN's calibration and how to apply it; None without one."""
    if not (Path(run) / CALIBRATION).exists():
        return None
    values = {key[len(METADATA_PREFIX):]: value for key, value in export_metadata(run).items()}
    out = Path(f"{export}.calibration.json")
    write_json(out, {key: value if key == "how_to_apply" else json.loads(value) for key, value in values.items()})
    return out
