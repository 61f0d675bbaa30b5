"""Data augmentation inside the model: one random affine warp per image instead of one per transform.

Keras' RandomFlip, RandomRotation, RandomZoom and RandomTranslation each resample the whole batch; composed,
they are four passes over the images (~40% of a training step of the study's convnet on a CPU).
`RandomAffine` draws the same transforms, multiplies them into one matrix per image and resamples once.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="catsdogs")
class RandomAffine(layers.Layer):
    """A random horizontal flip, rotation, zoom and shift of each image, as one bilinear warp; training only.

    The ranges are those of the Keras layers it replaces: `rotation` a fraction of a full turn
    (RandomRotation), `zoom` the largest relative change of size, the same for both axes (RandomZoom with
    `width_factor=None`; a scale above 1 zooms out), `translation` a fraction of the height and width
    (RandomTranslation). Pixels that come from outside the image are filled by `fill_mode` ("reflect",
    "wrap", "nearest" or "constant").
    """

    def __init__(self, rotation: float = 0.1, zoom: float = 0.2, translation: float = 0.1, flip: bool = True,
                 fill_mode: str = "reflect", seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        for name, value in (("rotation", rotation), ("zoom", zoom), ("translation", translation)):
            if not 0 <= value < (1 if name == "zoom" else math.inf):
                raise ValueError(f"RandomAffine {name} must be >= 0{' and < 1' if name == 'zoom' else ''}, got {value}")
        self.rotation, self.zoom, self.translation, self.flip = rotation, zoom, translation, flip
        self.fill_mode, self.seed = fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        if not training:
            return images
        return ops.image.affine_transform(images, self.random_transforms(ops.shape(images)),
                                          interpolation="bilinear", fill_mode=self.fill_mode)

    def random_transforms(self, shape) -> keras.KerasTensor:
        """One [a0, a1, a2, b0, b1, b2, 0, 0] per image: output pixel (x, y) reads input
        (a0 x + a1 y + a2, b0 x + b1 y + b2), i.e. zoom * rotation * flip about the centre, then the shift."""
        count = shape[0]
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        angle = self._uniform(count, self.rotation * 2 * math.pi)
        scale = 1.0 + self._uniform(count, self.zoom)
        shift_x, shift_y = self._uniform(count, self.translation) * width, self._uniform(count, self.translation) * height
        mirror = ops.where(self._uniform(count, 1.0) < 0, -1.0, 1.0) if self.flip else ops.ones((count,))
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        a2 = centre_x + shift_x - (a0 * centre_x + a1 * centre_y)
        b2 = centre_y + shift_y - (b0 * centre_x + b1 * centre_y)
        zeros = ops.zeros((count,))
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def _uniform(self, count, limit: float):
        return keras.random.uniform((count,), -limit, limit, seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom,
                "translation": self.translation, "flip": self.flip, "fill_mode": self.fill_mode, "seed": self.seed}


@keras.saving.register_keras_serializable(package="catsdogs")
class HorizontalFlip(layers.Layer):
    """Mirror images left-right, always (in training and inference): the second view of flip-averaged features."""

    def call(self, images):
        return keras.ops.flip(images, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


def augmentation(seed: int | None = None) -> keras.Sequential:
    """The study's augmentation: random flips, rotations (10% of a turn), zooms (20%), shifts (10%) as one
    warp, then contrast (20%); on batches in the graph, only in training."""
    return keras.Sequential([
        RandomAffine(rotation=0.1, zoom=0.2, translation=0.1, flip=True, fill_mode="reflect", seed=seed),
        layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
    ], name="augmentation")
