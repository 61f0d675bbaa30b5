"""Trainer of `heads`: flip-averaged features of each base (cached per base and DATA), then two heads fitted on
them, a logistic regression (C chosen on validation) and a dense head (early-stopped on validation); the one with
the better validation accuracy (then log loss) becomes the model's head.

Seconds once the features are cached: `catsdogs fit` trains several of these (one base each, then the two best
together) and refits them from the cache. The learning curve (the logistic head refitted on 25-100% of the
training photos) is written beside the run (`catsdogs.learning_curve`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import keras
import numpy as np

from catsdogs.decision import class_probabilities
from catsdogs.errors import UsageError
from catsdogs.models.frozen import backbone_names, branch_extractor, dense_head, logistic_head, top_inputs_extractor, with_head
from catsdogs.run_files import HISTORY
from catsdogs.timing import timed
from catsdogs.trainers.features import CACHE_SUBDIR, cached_features

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
DENSE_EPOCHS, DENSE_PATIENCE = 100, 10


def split_features(model: keras.Model, context, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features side by side over the model's bases, labels) of a split, from the cache or extracted."""
    cache_dir = Path(context.options.cache_dir) if context.options.cache_dir else context.run / CACHE_SUBDIR
    extractors = [branch_extractor(model, name) for name in backbone_names(context.options.backbone)]
    # Keras extracts: ONNX Runtime is as fast here only with its memory arena, which holds ~2 GB more for
    # EfficientNet-Lite2's two views (and exporting peaks ~1.8 GB higher): docs/performance.md
    distributed = context.distribution is not None and context.distribution.strategy is not None
    keep = () if distributed or len(extractors) > 1 else _top_inputs(model, context)
    parts = [cached_features(extractor, context, split, cache_dir,  # distributed: each worker its own graph
                             None if distributed else {"forward": extractor.predict_on_batch, "engine": "keras"},
                             *keep)
             for extractor in extractors]
    return np.concatenate([np.asarray(part.images, np.float32) for part in parts], axis=1), np.asarray(parts[0].labels)


def _top_inputs(model: keras.Model, context) -> tuple:
    """(dtype, companions, joint) for `cached_features` when the run keeps the inputs of its base's top (float16,
    one forward pass with the features), or () (not asked, or a family whose blocks finetune-top does not know)."""
    if not context.options.keep_top_inputs:
        return ()
    name = backbone_names(context.options.backbone)[0]
    try:
        companion = top_inputs_extractor(model, name)
    except UsageError:
        return ()
    return np.float32, [(companion, np.float16)], top_inputs_extractor(model, name, with_features=True)


def scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of class probabilities."""
    probabilities = class_probabilities(probabilities)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(np.mean(probabilities.argmax(1) == labels)), float(-np.mean(np.log(picked)))


def fit_logistic(train: tuple, validation: tuple, num_classes: int, *, balanced: bool, grid=C_GRID,
                 seed: int = 0, on: str = "accuracy") -> dict:
    """Logistic regression on standardised features for each C (warm-started along the path); the best on
    validation: its accuracy, then log loss (`on="loss"`: its log loss alone, the better probabilities).
    `balanced`: the path with balanced class weights too, and the better of the two kept ("balanced" in the
    result says which): weighting trades the large classes' accuracy for the small ones' recall, and validation
    says whether that pays here."""
    from sklearn.linear_model import LogisticRegression

    (x, y), (vx, vy) = train, validation
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    key = (lambda r: (-r["val_loss"],)) if on == "loss" else (lambda r: (r["val_accuracy"], -r["val_loss"]))
    best = None
    for weighted in (True, False) if balanced else (False,):
        # the regularisation path, weakest last, each fit starting from the previous one's weights (half the time)
        model = LogisticRegression(max_iter=2000, class_weight="balanced" if weighted else None, random_state=seed,
                                   warm_start=True)
        for c in sorted(grid):
            model.set_params(C=c).fit((x - mean) / std, y)
            accuracy, loss = scores(model.predict_proba((vx - mean) / std), vy)
            candidate = {"C": c, "balanced": weighted, "val_accuracy": accuracy, "val_loss": loss}
            if best is None or key(candidate) > key(best):
                best = {**candidate, "model": copy.deepcopy(model)}
    coef, intercept = best["model"].coef_, best["model"].intercept_
    best["head"] = logistic_head(x.shape[1], num_classes, mean, std ** 2, coef, intercept)
    accuracy, loss = scores(best["head"].predict(x, verbose=0), y)
    best.update(accuracy=accuracy, loss=loss)
    return best


def fit_dense(train: tuple, validation: tuple, num_classes: int, *, class_weight: dict | None, seed: int) -> dict:
    """The dense head, Adam at 1e-3, early-stopped on validation loss (best weights kept)."""
    from catsdogs.models.pretrained import compile_classifier

    (x, y), (vx, vy) = train, validation
    keras.utils.set_random_seed(seed)
    head = compile_classifier(dense_head(x.shape[1], num_classes, x.mean(axis=0), x.var(axis=0) + 1e-12, seed=seed),
                              1e-3)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=DENSE_PATIENCE, restore_best_weights=True)
    head.fit(x, y, validation_data=(vx, vy), epochs=DENSE_EPOCHS, batch_size=64, callbacks=[stop], verbose=0,
             class_weight=class_weight)
    accuracy, loss = scores(head.predict(x, verbose=0), y)
    val_accuracy, val_loss = scores(head.predict(vx, verbose=0), vy)
    return {"head": head, "accuracy": accuracy, "loss": loss, "val_accuracy": val_accuracy, "val_loss": val_loss}


def fit_heads(model: keras.Model, context) -> dict:
    """Extract (or reuse) the features, fit both heads, keep the better; save the whole model and one history row."""
    from catsdogs.learning_curve import write_learning_curve
    from catsdogs.training import _save_model, _write_history, class_weights

    (train, validation), extraction = timed(lambda: (split_features(model, context, "train"),
                                                     split_features(model, context, "validation")))
    num_classes = len(context.config["classes"])
    balanced = bool(context.options.class_weight)
    fitted = time.perf_counter()
    logistic = fit_logistic(train, validation, num_classes, balanced=balanced, seed=context.options.seed)
    dense = fit_dense(train, validation, num_classes, seed=context.options.seed,
                      class_weight=class_weights(train[1], num_classes) if balanced else None)
    chosen_name, chosen = max((("logistic", logistic), ("dense", dense)),
                              key=lambda item: (item[1]["val_accuracy"], -item[1]["val_loss"]))
    _save_model(with_head(model, chosen["head"]), context.run / "model.keras")
    seconds = time.perf_counter() - fitted
    _write_history(context.run / HISTORY, [{"epoch": 0, "accuracy": chosen["accuracy"], "loss": chosen["loss"],
                                            "val_accuracy": chosen["val_accuracy"], "val_loss": chosen["val_loss"],
                                            "seconds": round(seconds, 2)}])
    curve = write_learning_curve(context.run, train, validation, context.config["classes"], c=logistic["C"],
                                 balanced=logistic["balanced"], seed=context.options.seed)
    return {"backbone": "+".join(backbone_names(context.options.backbone)),
            "head": chosen_name, "logistic_C": logistic["C"], "logistic_balanced": logistic["balanced"],
            "feature_extraction_s": round(extraction, 1),
            "heads": {name: {"val_accuracy": round(r["val_accuracy"], 4), "val_loss": round(r["val_loss"], 4)}
                      for name, r in (("logistic", logistic), ("dense", dense))},
            "learning_curve": curve}
