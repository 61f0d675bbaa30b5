"""Optimizers the models save with them (registered for loading in Keras' safe mode)."""

from __future__ import annotations

import keras

HEAD_LAYERS = ("probability",)  # the classifier's last layer (catsdogs.models.heads)
BASE_FACTOR = 0.1


@keras.saving.register_keras_serializable(package="catsdogs")
class DiscriminativeAdamW(keras.optimizers.AdamW):
    """AdamW that updates the layers outside `head_layers` (the base's unfrozen top) at `base_factor` times the
    rate of the head: fastai's discriminative learning rates (`slice(lr / 10, lr)`) for two groups."""

    def __init__(self, *args, base_factor: float = BASE_FACTOR, head_layers=HEAD_LAYERS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.base_factor, self.head_layers = float(base_factor), tuple(head_layers)

    def update_step(self, gradient, variable, learning_rate):
        path = self._trainable_variables[self._get_variable_index(variable)].path  # (TF passes the tf.Variable)
        if not set(path.split("/")[:-1]) & set(self.head_layers):
            learning_rate = keras.ops.multiply(learning_rate, self.base_factor)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "base_factor": self.base_factor, "head_layers": list(self.head_layers)}
