"""The study's small convnet, trained from scratch (Chollet, Deep Learning with Python, ch. 5)."""

from __future__ import annotations

import keras
from keras import layers

from catsdogs.errors import UsageError
from catsdogs.models.augmentation import augmentation
from catsdogs.models.heads import classification_loss, probability_output
from catsdogs.precision import jit_compile_setting

STUDY_IMAGE_SIZE = 150
MIN_IMAGE_SIZE = 46  # four 3x3 convolutions and 2x2 poolings must leave at least one pixel


def study_convnet(image_size: int = STUDY_IMAGE_SIZE, *, augment: bool = False, dropout: float = 0.0,
                  learning_rate: float = 1e-4, seed: int | None = None, name: str = "baseline",
                  num_classes: int = 2, jit_compile: bool | str | None = None) -> keras.Model:
    """Conv2D 32/64/128/128 + MaxPooling, Flatten, Dense 512 relu, then Dense 1 sigmoid (two classes) or
    Dense N softmax; RMSprop, cross-entropy.

    Input: raw RGB 0-255 images; the scaling to [0, 1] happens inside the model. `jit_compile=None`
    picks what is fastest here (see `jit_compile_setting`); "auto" is plain Keras' default.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise UsageError(f"the study's convnet needs image_size >= {MIN_IMAGE_SIZE}, got {image_size}", "image_size")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = augmentation(seed)(inputs) if augment else inputs
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    for block, filters in enumerate((32, 64, 128, 128), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    if dropout:
        x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    x = layers.Dense(512, activation="relu", name="dense")(x)
    model = keras.Model(inputs, probability_output(x, num_classes), name=name)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
                  loss=classification_loss(model), metrics=["accuracy"],
                  jit_compile=jit_compile_setting() if jit_compile is None else jit_compile)
    return model


def build_baseline(image_size: int | None = None, **options) -> keras.Model:
    """The study's first model: no augmentation, no dropout (it overfits, as the study shows)."""
    return study_convnet(image_size or STUDY_IMAGE_SIZE, name="baseline", **options)


def build_augmented(image_size: int | None = None, **options) -> keras.Model:
    """The study's second model: the same convnet with data augmentation and Dropout(0.5)."""
    return study_convnet(image_size or STUDY_IMAGE_SIZE, augment=True, dropout=0.5, name="augmented", **options)
