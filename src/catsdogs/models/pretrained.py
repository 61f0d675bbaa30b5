"""Classifiers on a frozen ImageNet base (the study's transfer learning): raw RGB 0-255 in, class probabilities
out (two classes: p(classes[1]); more: a softmax).

Layout: image -> [augmentation] -> preprocess -> base (named after the backbone, called with
training=False so BatchNormalization stays in inference mode) -> pool (GlobalAveragePooling) -> head.
"""

from __future__ import annotations

import keras
from keras import layers

from catsdogs.errors import UsageError
from catsdogs.models.augmentation import augmentation
from catsdogs.models.backbones import backbones, get_backbone
from catsdogs.models.heads import classification_loss, probability_output
from catsdogs.precision import jit_compile_setting

TRANSFER_LEARNING_RATE = 1e-3
TRANSFER_DROPOUT = 0.2
FEATURES_LEARNING_RATE = 1e-4
FEATURES_UNITS, FEATURES_DROPOUT = 256, 0.5


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    """Adam at `learning_rate`, the cross-entropy that goes with the model's output, accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=classification_loss(model),
                  metrics=["accuracy"], jit_compile=jit_compile_setting())
    return model


def pooled_base(backbone: str | None, image_size: int | None, weights: str | None, *, augment: bool,
                seed: int | None):
    """(image input, pooled features tensor) of a frozen base; the pooling layer is named `pool`."""
    spec = get_backbone(backbone)
    size = image_size or spec.image_size
    base = spec.build_base(size, weights)
    base.trainable = False
    inputs = keras.Input((size, size, 3), name="image")
    x = augmentation(seed)(inputs) if augment else inputs
    x = base(spec.preprocess(x), training=False)
    return inputs, layers.GlobalAveragePooling2D(name="pool")(x)


def build_transfer(image_size: int | None = None, *, backbone: str | None = None, weights: str | None = "imagenet",
                   learning_rate: float = TRANSFER_LEARNING_RATE, dropout: float = TRANSFER_DROPOUT,
                   seed: int | None = None, num_classes: int = 2) -> keras.Model:
    """Augmentation, the frozen base, Dropout, the output layer: trained end to end on images (only the head
    learns)."""
    inputs, pooled = pooled_base(backbone, image_size, weights, augment=True, seed=seed)
    outputs = probability_output(layers.Dropout(dropout, seed=seed, name="dropout")(pooled), num_classes)
    return compile_classifier(keras.Model(inputs, outputs, name="transfer"), learning_rate)


def build_features(image_size: int | None = None, *, backbone: str | None = None, weights: str | None = "imagenet",
                   learning_rate: float = FEATURES_LEARNING_RATE, units: int = FEATURES_UNITS,
                   dropout: float = FEATURES_DROPOUT, seed: int | None = None, num_classes: int = 2) -> keras.Model:
    """The frozen base, then a `head` model (Dense relu, Dropout, output) that trains on cached pooled features.

    The whole model maps images to probabilities; `catsdogs.trainers.features.fit_features` trains only `head`.
    """
    inputs, pooled = pooled_base(backbone, image_size, weights, augment=False, seed=seed)
    features = keras.Input((pooled.shape[-1],), name="features")
    x = layers.Dense(units, activation="relu", name="dense")(features)
    head = keras.Model(features, probability_output(layers.Dropout(dropout, seed=seed, name="dropout")(x), num_classes),
                       name="head")
    return compile_classifier(keras.Model(inputs, head(pooled), name="features"), learning_rate)


def find_base(model: keras.Model) -> keras.Model:
    """The pretrained base inside `model` (the nested model named after its backbone)."""
    known = backbones()
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name in known:
            return layer
    raise UsageError(f"model {model.name!r} has no pretrained base")
