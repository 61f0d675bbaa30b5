"""The output layer and loss of every catsdogs model, for two classes or more.

Two classes: one sigmoid unit, p(classes[1]), binary cross-entropy (the study's models, unchanged).
N > 2 classes: a softmax over N units, sparse categorical cross-entropy on integer labels.
"""

from __future__ import annotations

import keras
from keras import layers

from catsdogs.errors import UsageError


def check_num_classes(num_classes: int) -> int:
    """`num_classes` as an int >= 2; UsageError otherwise."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(f"num_classes must be an int >= 2, got {num_classes!r}", "num_classes")
    return num_classes


def probability_output(x, num_classes: int = 2, name: str = "probability"):
    """Dense(1, sigmoid) for two classes, Dense(N, softmax) for more; always float32 (mixed precision)."""
    if check_num_classes(num_classes) == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name=name)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


def classification_loss(model_or_units: keras.Model | int) -> str:
    """The loss that goes with a model's output (or its number of output units)."""
    units = model_or_units if isinstance(model_or_units, int) else int(model_or_units.output_shape[-1])
    return "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"


def output_classes(model: keras.Model) -> int:
    """How many classes a catsdogs model tells apart (one sigmoid unit: two)."""
    units = int(model.output_shape[-1])
    return 2 if units == 1 else units


@keras.saving.register_keras_serializable(package="catsdogs")
class Standardize(layers.Layer):
    """(x - mean) / max(sqrt(variance), epsilon), as keras' `Normalization` computes it, with the statistics
    held as (non-trainable) weights: `Normalization(mean=..., variance=...)` keeps them as constant tensors,
    which the ONNX export (tf2onnx) turned into missing graph inputs."""

    def __init__(self, dimension: int, **kwargs):
        super().__init__(**kwargs)
        self.dimension = dimension
        self.mean = self.add_weight(name="mean", shape=(dimension,), initializer="zeros", trainable=False)
        self.variance = self.add_weight(name="variance", shape=(dimension,), initializer="ones", trainable=False)

    def call(self, inputs):
        scale = keras.ops.maximum(keras.ops.sqrt(self.variance), keras.backend.epsilon())
        return (inputs - keras.ops.cast(self.mean, inputs.dtype)) / keras.ops.cast(scale, inputs.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "dimension": self.dimension}
