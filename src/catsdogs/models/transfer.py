"""Trainer of `transfer`: each batch of training images is augmented in Keras, its frozen base runs through the
fastest verified engine (catsdogs.engines), and only the head (Dropout, output layer) trains in Keras.

Keras would run the frozen base inside its training step, where TensorFlow's depthwise convolutions make
EfficientNet-Lite ~2x slower than ONNX Runtime here. The validation images are not augmented: their features
come from the features cache, shared with the `features` model on the same base. The RUN saves the whole
image -> probability model, as before. Under tf.distribute the whole model trains in Keras.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from catsdogs.dataset import SplitArrays
from catsdogs.models.features import CACHE_SUBDIR, cached_features, choose_forward
from catsdogs.precision import jit_compile_setting


class AugmentedFeatures(keras.utils.PyDataset):
    """(features, labels) batches of a split's images, shuffled and augmented afresh every epoch, then through
    the frozen base (`forward`: float32 images -> features)."""

    def __init__(self, split: SplitArrays, augment, forward, batch_size: int, *, seed: int, epoch: int = 0) -> None:
        super().__init__()
        import tensorflow as tf

        self.images, self.labels = split.images, split.labels.astype(np.float32)
        self.augment = tf.function(lambda batch: augment(batch, training=True))
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
    """Fit the head of a `transfer` model on augmented training images whose base runs through an engine."""
    distribution = context.distribution
    if distribution is not None and distribution.strategy is not None:
        from catsdogs.training import fit_images

        return fit_images(model, context)
    augment = model.get_layer("augmentation")
    extractor = keras.Model(augment.output, model.get_layer("pool").output, name="feature_extractor")
    train = context.split("train")
    batch_size = context.options.batch_size
    epochs_left = max(context.epochs - context.initial_epoch, 0)
    first = np.asarray(train.images[:batch_size], dtype=np.float32)
    forward, engine = choose_forward(extractor, first, len(train.labels) * epochs_left)
    chosen = {"forward": forward, "engine": engine}  # the validation split's features, when not cached yet
    cache_dir = Path(context.options.cache_dir) if context.options.cache_dir else context.run / CACHE_SUBDIR
    validation = cached_features(extractor, context, "validation", cache_dir, chosen)
    trainer = context.resumed_part()  # the head trainer saved after the last complete epoch, with its optimizer
    if trainer is None:
        features = keras.Input((extractor.output_shape[-1],), name="features")
        outputs = model.get_layer("probability")(model.get_layer("dropout")(features))
        trainer = keras.Model(features, outputs, name="head_trainer")  # the model's own layers: shared weights
        trainer.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                        jit_compile=jit_compile_setting())
    batches = AugmentedFeatures(train, augment, forward, batch_size, seed=context.options.seed,
                                epoch=context.initial_epoch)
    context.fit(trainer, train, validation, part_of=model, part="probability", train_batches=batches)
    return {"frozen_base_engine": engine}
