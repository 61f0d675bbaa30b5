"""Training a model with a frozen pretrained base (`transfer`, and `finetune` with the top of its base unfrozen):
each batch of training images is augmented in Keras, its frozen part runs through the fastest verified engine
(catsdogs.engines), and only the layers after it train in Keras.

Keras would run the frozen part inside its training step, where TensorFlow's depthwise convolutions make
EfficientNet-Lite ~2-3x slower than ONNX Runtime here. The validation images are not augmented: the frozen
part's outputs on them are computed once and cached (for `transfer`, the `features` model's cache on the same
base). The RUN saves the whole image -> probability model, as before. Under tf.distribute the whole model
trains in Keras.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from catsdogs.dataset import SplitArrays
from catsdogs.models.pretrained import find_base
from catsdogs.precision import jit_compile_setting
from catsdogs.trainers.features import CACHE_SUBDIR, cached_features, choose_forward


class AugmentedFeatures(keras.utils.PyDataset):
    """(features, labels) batches of a split's images, shuffled and augmented afresh every epoch, then through
    the frozen base (`forward`: float32 images -> features)."""

    def __init__(self, split: SplitArrays, augment, forward, batch_size: int, *, seed: int, epoch: int = 0) -> None:
        super().__init__()
        import tensorflow as tf

        self.images, self.labels = split.images, split.labels.astype(np.float32)
        self.augment = tf.function(lambda batch: augment(batch, training=True), reduce_retracing=True)
        self.forward, self.batch_size, self.seed, self.epoch = forward, batch_size, seed, epoch
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        images = self.augment(np.asarray(self.images[rows], dtype=np.float32))
        return np.asarray(self.forward(np.asarray(images)), dtype=np.float32), self.labels[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


def fit_transfer(model: keras.Model, context) -> dict | None:
    """Trainer of `transfer`: the head fits on augmented images whose frozen base runs through an engine."""
    engine = fit_trainable_part(model, context)
    return {"frozen_part_engine": engine} if engine else None


def fit_trainable_part(model: keras.Model, context, **fit_options) -> str | None:
    """Fit the layers of a transfer/finetune `model` that follow its frozen part, on training images augmented
    in Keras whose frozen part runs through the fastest verified engine; returns that engine's name.

    `fit_options` go to `FitContext.fit` (epochs, initial_epoch, patience, patience_from). Keras fits the whole
    model instead (and this returns None) under tf.distribute, or when the model does not split (see `split`).
    """
    distribution = context.distribution
    parts = None if distribution is not None and distribution.strategy is not None else split(model)
    train = context.split("train")
    if parts is not None:
        first = np.asarray(train.images[:context.options.batch_size], dtype=np.float32)
        parts = parts if _same_outputs(model, *parts, first) else None
    if parts is None:
        context.fit(model, train, context.split("validation"), **fit_options)
        return None
    frozen, trainable = parts
    epochs = fit_options.get("epochs", context.epochs)
    start = max(fit_options.get("initial_epoch", context.initial_epoch), context.initial_epoch)
    forward, engine = choose_forward(frozen, first, len(train.labels) * max(epochs - start, 0),
                                     engine=context.options.engine)
    cache_dir = Path(context.options.cache_dir) if context.options.cache_dir else context.run / CACHE_SUBDIR
    validation = cached_features(frozen, context, "validation", cache_dir, {"forward": forward, "engine": engine})
    trainer = context.resumed_part()  # saved after the last complete epoch, with its optimizer
    if trainer is None or trainer.input_shape != trainable.input_shape:  # (not another stage's part)
        trainer = trainable
        trainer.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                        jit_compile=jit_compile_setting())
    batches = AugmentedFeatures(train, model.get_layer("augmentation"), forward, context.options.batch_size,
                                seed=context.options.seed, epoch=start)
    context.fit(trainer, train, validation, part_of=model, part=trainable, train_batches=batches, **fit_options)
    return engine


def split(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """(frozen part: augmented images -> the tensor entering the base's first trainable layer, or the pooled
    features when the whole base is frozen; trainable part: that tensor -> probabilities), on the model's own
    layers (shared weights). None when that tensor is not a single one that all later layers grow from (an
    `--unfreeze` count that cuts a residual block), or when nothing before it has weights."""
    base = find_base(model)
    augment = model.get_layer("augmentation")
    first = next((i for i, layer in enumerate(base.layers) if layer.trainable), None)
    if first is None:  # the base is frozen: the cut is the pooled features (the `features` model's cache)
        frozen = keras.Model(augment.output, model.get_layer("pool").output, name="frozen_part")
        inputs = keras.Input(frozen.output_shape[1:], name="features")
        pooled = inputs
    else:
        cut = base.layers[first].input
        if isinstance(cut, (list, tuple)) or not any(layer.weights for layer in base.layers[:first]):
            return None
        try:  # the nested models keep the base's name: `find_base` and the features cache key see a base
            bottom, top = keras.Model(base.input, cut, name=base.name), keras.Model(cut, base.output, name=base.name)
        except ValueError:  # graph disconnected: layers after the cut also read tensors before it
            return None
        images = x = keras.Input(augment.output.shape[1:], name="image")
        for layer in model.layers[model.layers.index(augment) + 1:model.layers.index(base)]:  # preprocessing
            x = layer(x)
        frozen = keras.Model(images, bottom(x), name="frozen_part")
        inputs = keras.Input(frozen.output_shape[1:], name="activations")
        pooled = model.get_layer("pool")(top(inputs, training=False))
    outputs = model.get_layer("probability")(model.get_layer("dropout")(pooled))
    return frozen, keras.Model(inputs, outputs, name="trainable_part")


def _same_outputs(model: keras.Model, frozen: keras.Model, trainable: keras.Model, images: np.ndarray) -> bool:
    """Whether the two parts, one after the other, compute what the model computes (checks `split`'s cut), on a
    few images through Keras' compiled predict (an eager call on 32 photos at 260 px peaked at ~6 GB)."""
    images = images[:4]
    expected = np.asarray(model.predict_on_batch(images))
    found = np.asarray(trainable.predict_on_batch(frozen.predict_on_batch(images)))
    return bool(np.allclose(found, expected, atol=1e-4))
