"""Trainer of `finetune-top`: fine-tuning that a laptop CPU affords. The base's top (its last blocks and final
convolution, `Backbone.tuned_from`) is fine-tuned on cached inputs: the rest of the base runs once per photo and
view (the photo and its mirror), cached like `heads`' features, and every epoch runs only the top.

As fastai's `fine_tune`: the head first (the logistic regression on the top's pooled features, C chosen on
validation log loss), then the top and the head together: the peak rate from a range test
(catsdogs.trainers.lr_find) kept within MIN_RATE..MAX_RATE, one-cycle AdamW, each view a training example (the
mirror is the augmentation), BatchNorm statistics frozen, early stopping on validation (features averaged over
the two views, as the saved model predicts) and the best epoch kept (epoch 0 in history.csv is the head alone).
One rate for the top and the head: the head is fitted already, and on TrashNet a head at 3x the top's rate
undid it (validation 0.860 against 0.924 with one rate, docs/fit.md). The saved model is an ordinary
`heads` model whose base holds the tuned weights: predict, evaluate, export and serve take it as it is.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from catsdogs.errors import UsageError
from catsdogs.models.backbones import get_backbone
from catsdogs.models.frozen import backbone_names, branch_extractor, split_base, top_inputs_extractor, with_head
from catsdogs.run_files import HISTORY, best_row
from catsdogs.trainers.features import CACHE_SUBDIR, cache_file, cached_features, save_cached
from catsdogs.trainers.heads import fit_logistic, scores
from catsdogs.trainers.lr_find import lr_find

BATCH, DROPOUT, WEIGHT_DECAY = 32, 0.2, 0.01
# the range test's suggestion is kept inside these: with the head fitted first, the loss starts near zero and the
# test suggests far less (TrashNet: 6e-06 to 2e-05), at which the top does not move in 5 epochs
MIN_RATE, MAX_RATE = 3e-4, 1e-3
RANGE_STEPS, PATIENCE = 40, 3


def pooled_views(pool: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """`pool` (the top and a global average pooling) on each view's cached inputs: (n, 2, features), float32."""
    def view(index: int) -> np.ndarray:
        return np.concatenate([pool.predict_on_batch(np.asarray(inputs[start:start + 64, index], np.float32))
                               for start in range(0, len(inputs), 64)])

    return np.stack([view(0), view(1)], axis=1)


def fit_top(model: keras.Model, context) -> dict:
    """Cache the top's inputs, fit the head first, then tune the top and the head; save the model and history."""
    from catsdogs.learning_curve import write_learning_curve
    from catsdogs.training import _save_model, _write_history

    names = backbone_names(context.options.backbone or context.config.get("backbone"))
    if len(names) != 1:
        raise UsageError("finetune-top tunes one base; give one backbone", "backbone")
    spec = get_backbone(names[0])
    base = model.get_layer(spec.name)
    cut = spec.tuned_from(base)
    started = time.perf_counter()
    train, validation, top, cache_dir = _top_inputs(model, spec.name, cut, context)
    extraction = time.perf_counter() - started
    pool = keras.Sequential([top, layers.GlobalAveragePooling2D()], name="pooled_top")
    if context.options.model_options.get("from_run"):
        return _tune_on_photos(model, spec.name, cut, (train, validation, pool, cache_dir), context) | {
            "feature_extraction_s": round(extraction, 1)}
    features = [(pooled_views(pool, split.images).mean(axis=1), split.labels) for split in (train, validation)]
    classes = context.config["classes"]
    # the head first: the C with the best validation log loss (a head that fits the training photos perfectly, as a
    # weakly regularised one does, leaves the top no gradient to learn from)
    logistic = fit_logistic(features[0], features[1], len(classes), balanced=bool(context.options.class_weight),
                            seed=context.options.seed, on="loss")
    trainer = _trainer(base, top, logistic["head"], context.options.seed)
    x, y = np.asarray(train.images).reshape(-1, *train.images.shape[2:]), np.repeat(train.labels, 2)  # no copy
    rate, found = context.options.learning_rate, None
    if not rate:  # a rate given (learning_rate=) is taken as it is
        found = lr_find(trainer, x, y, steps=RANGE_STEPS, batch_size=BATCH, seed=context.options.seed)
        found.save_plot(context.run / "plots" / "lr_find.png")
        rate = min(MAX_RATE, max(MIN_RATE, found.suggestion))
    _one_cycle(trainer, rate, math.ceil(len(y) / BATCH) * context.epochs)
    rows = _tune(trainer, (x, y), lambda: scores(logistic["head"].predict(
        pooled_views(pool, validation.images).mean(axis=1), verbose=0), validation.labels), logistic, context)
    base.trainable = False
    _save_model(with_head(model, logistic["head"]), context.run / "model.keras")
    _write_history(context.run / HISTORY, rows)
    _cache_pooled(model, spec.name, context, cache_dir, pool, {"train": train, "validation": validation})
    curve = write_learning_curve(context.run, features[0], features[1], classes, c=logistic["C"],
                                 balanced=logistic["balanced"], seed=context.options.seed)
    return {"backbone": spec.name, "tuned_from": cut, "peak_learning_rate": rate,
            "range_test": found.line() if found else None, "logistic_C": logistic["C"],
            "logistic_balanced": logistic["balanced"], "feature_extraction_s": round(extraction, 1),
            "learning_curve": curve}


def _top_inputs(model: keras.Model, name: str, cut: str, context) -> tuple:
    """(train, validation) cached inputs of base `name`'s top (photo and mirror, float16: half the memory of the
    largest arrays; cached by the `heads` stage before it in `catsdogs fit`), the top, the cache folder."""
    _, top = split_base(model.get_layer(name), cut)
    extractor = top_inputs_extractor(model, name)
    cache_dir = Path(context.options.cache_dir) if context.options.cache_dir else context.run / CACHE_SUBDIR
    keras_forward = {"forward": extractor.predict_on_batch, "engine": "keras"}
    train, validation = (cached_features(extractor, context, split, cache_dir, keras_forward, dtype=np.float16)
                         for split in ("train", "validation"))
    return train, validation, top, cache_dir


def _tune_on_photos(model: keras.Model, name: str, cut: str, inputs: tuple, context) -> dict:
    """A finetune-top RUN's model (`from_run`) tuned further on the training photos, each epoch a new random warp
    of each (RandomAffine: flip, rotation, zoom, shift), the base below the top frozen and run forward only;
    validation scored from the top's cached inputs, as the saved model predicts (the two views averaged). One-cycle
    AdamW peaking at a third of the first tuning's rate (it continues from there), the best epoch kept (epoch 0:
    the model as it came)."""
    from catsdogs.learning_curve import write_learning_curve
    from catsdogs.run_files import read_config
    from catsdogs.runs import Run
    from catsdogs.training import _save_model, _write_history

    train, validation, pool, cache_dir = inputs
    start = read_config(Path(context.options.model_options["from_run"]))
    head, saved = model.get_layer("head"), Run(Path(context.options.model_options["from_run"])).saved_epoch or {}
    val_accuracy, val_loss = _view_scores(head, pool, validation)
    first = {"balanced": bool(start.get("logistic_balanced")), "accuracy": saved.get("accuracy"),
             "loss": saved.get("loss"), "val_accuracy": val_accuracy, "val_loss": val_loss}
    trainer = _photo_trainer(model, name, cut, context.options.seed)
    photos = context.split("train")
    rate = context.options.learning_rate or min(MAX_RATE, float(start.get("peak_learning_rate") or MIN_RATE) / 3)
    _one_cycle(trainer, rate, math.ceil(len(photos.labels) / BATCH) * context.epochs)
    rows = _tune(trainer, (photos.images, photos.labels), lambda: _view_scores(head, pool, validation), first,
                 context)
    model.get_layer(name).trainable = False
    _save_model(model, context.run / "model.keras")
    _write_history(context.run / HISTORY, rows)
    features = _cache_pooled(model, name, context, cache_dir, pool, {"train": train, "validation": validation})
    curve = write_learning_curve(context.run, features[0], features[1], context.config["classes"],
                                 c=start.get("logistic_C"), balanced=first["balanced"], seed=context.options.seed)
    return {"backbone": name, "tuned_from": cut, "from_run": str(context.options.model_options["from_run"]),
            "augmentation": "RandomAffine (flip, rotation 0.1, zoom 0.2, shift 0.1)", "peak_learning_rate": rate,
            "logistic_C": start.get("logistic_C"), "logistic_balanced": first["balanced"], "learning_curve": curve}


def _view_scores(head: keras.Model, pool: keras.Model, split) -> tuple[float, float]:
    """(accuracy, log loss) of the head on the top's pooled features of a split's cached inputs, views averaged."""
    return scores(head.predict(pooled_views(pool, split.images).mean(axis=1), verbose=0), split.labels)


def _photo_trainer(model: keras.Model, name: str, cut: str, seed: int) -> keras.Model:
    """image -> RandomAffine -> [resize] -> preprocess -> the frozen bottom (inference mode) -> the top -> pool ->
    dropout -> head: the layers of `model` (its single view), the top's trainable but for BatchNorm statistics."""
    from catsdogs.models.augmentation import RandomAffine
    from catsdogs.models.heads import classification_loss

    bottom, top = split_base(model.get_layer(name), cut)
    _train_only(model.get_layer(name), top)
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = RandomAffine(seed=seed, name="augment")(inputs)
    present = {layer.name: layer for layer in model.layers}
    for step in (f"resize_{name}_image", f"preprocess_{name}_image"):  # as the model's own view, when it has them
        x = present[step](x) if step in present else x
    x = top(bottom(x, training=False))
    x = layers.Dropout(DROPOUT, seed=seed, name="dropout")(layers.GlobalAveragePooling2D(name="pool")(x))
    trainer = keras.Model(inputs, model.get_layer("head")(x), name="photo_trainer")
    trainer.compile(optimizer=keras.optimizers.AdamW(MIN_RATE), loss=classification_loss(trainer), metrics=["accuracy"])
    return trainer


def _tune(trainer: keras.Model, data: tuple, validate, logistic: dict, context) -> list[dict]:
    """Up to the run's epochs over the views, scored on validation after each (`validate()`: accuracy, loss),
    early-stopped on the run's monitor; the best epoch's weights left in `trainer` (epoch 0: the head alone).
    The history rows."""
    from catsdogs.training import class_weights

    x, y = data
    weights = class_weights(y, int(y.max()) + 1) if logistic["balanced"] else None  # as the head chose
    monitor, patience = context.options.monitor, context.patience or PATIENCE
    rows = [{"epoch": 0, "accuracy": logistic["accuracy"], "loss": logistic["loss"],
             "val_accuracy": logistic["val_accuracy"], "val_loss": logistic["val_loss"], "seconds": 0.0}]
    best_weights = trainer.get_weights()
    for epoch in range(1, context.epochs + 1):
        began = time.perf_counter()
        fitted = _epoch(trainer, x, y, weights, np.random.default_rng(context.options.seed + epoch))
        accuracy, loss = validate()
        rows.append({"epoch": epoch, **fitted, "val_accuracy": accuracy, "val_loss": loss,
                     "seconds": round(time.perf_counter() - began, 2)})
        say(f"epoch {epoch}/{context.epochs}: validation accuracy {accuracy:.4f}, loss {loss:.4f}")
        best = best_row(rows, monitor)
        if best is rows[-1]:
            best_weights = trainer.get_weights()
        elif epoch - best["epoch"] >= patience:
            break
    trainer.set_weights(best_weights)
    return rows


def _trainer(base: keras.Model, top: keras.Model, head: keras.Model, seed: int) -> keras.Model:
    """top -> pool -> dropout -> head, the top's layers trainable but for their BatchNorm statistics."""
    from catsdogs.models.heads import classification_loss

    _train_only(base, top)
    inputs = keras.Input(top.input_shape[1:], name="top_inputs")
    x = layers.Dropout(DROPOUT, seed=seed, name="dropout")(layers.GlobalAveragePooling2D(name="pool")(top(inputs)))
    trainer = keras.Model(inputs, head(x), name="top_trainer")
    trainer.compile(optimizer=keras.optimizers.AdamW(MIN_RATE), loss=classification_loss(trainer), metrics=["accuracy"])
    return trainer


def _train_only(base: keras.Model, top: keras.Model) -> None:
    """Make the layers of `top` (a part of `base`) trainable, but for their BatchNorm statistics; the rest frozen."""
    base.trainable = True
    tuned = {id(layer) for layer in top.layers}
    for layer in base.layers:
        layer.trainable = id(layer) in tuned and not isinstance(layer, layers.BatchNormalization)


def _epoch(trainer: keras.Model, x: np.ndarray, y: np.ndarray, class_weight: dict | None,
           rng: np.random.Generator) -> dict:
    """One pass over the views in a random order, batch by batch (no copy of the cached inputs); the epoch's
    training loss and accuracy."""
    from catsdogs.progress import progress

    trainer.reset_metrics()
    order = rng.permutation(len(y))
    losses, hits = [], []
    bar = progress(len(y), "tuning the top", unit="examples")  # a line every few seconds, or none
    for start in range(0, len(order), BATCH):
        rows = np.sort(order[start:start + BATCH])  # sorted: a memory-mapped cache reads forward
        logs = trainer.train_on_batch(np.asarray(x[rows], np.float32), y[rows], class_weight=class_weight,
                                      return_dict=True)
        losses.append(float(logs["loss"]) * len(rows))
        hits.append(float(logs["accuracy"]) * len(rows))
        bar.update(len(rows))
    bar.close()
    return {"loss": sum(losses) / len(y), "accuracy": sum(hits) / len(y)}


def _one_cycle(trainer: keras.Model, peak: float, steps: int) -> None:
    """Recompile with fastai's one-cycle AdamW (catsdogs.training.one_cycle_optimizer)."""
    from catsdogs.training import one_cycle_optimizer

    trainer.compile(optimizer=one_cycle_optimizer(peak, steps, WEIGHT_DECAY), loss=trainer.loss, metrics=["accuracy"])


def _cache_pooled(model: keras.Model, name: str, context, cache_dir: Path, pool: keras.Model, splits: dict) -> list:
    """The tuned model's flip-averaged features of the train and validation splits, from their cached top inputs,
    into the features cache under the tuned weights: calibration and the audit read them there. [(features,
    labels)] of each split, in order."""
    from catsdogs.data_files import read_manifest
    from catsdogs.photo_keys import photo_ids

    extractor = branch_extractor(model, name)
    pooled = []
    for split, arrays in splits.items():
        ids = photo_ids(read_manifest(context.options.data, split))
        pooled.append((pooled_views(pool, arrays.images).mean(axis=1), arrays.labels))
        save_cached(cache_file(cache_dir, extractor, ids, split), pooled[-1][0], ids)
    return pooled


def say(message: str) -> None:
    import logging

    logging.getLogger("catsdogs.fitting").info(f"[fit] finetune-top: {message}")
