"""RandomAffine: the study's flip, rotation, zoom and shift as one warp per image."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from catsdogs.models.augmentation import RandomAffine, augmentation
from catsdogs.run_files import load_keras_model


def _images(count: int = 16, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype("float32")


def _matrices(layer: RandomAffine, count: int, height: int = 30, width: int = 40) -> np.ndarray:
    """The layer's transforms as 3 x 3 matrices mapping output (x, y, 1) to input coordinates."""
    rows = np.asarray(layer.random_transforms((count, height, width, 3)))
    return np.concatenate([rows[:, :6], np.ones((count, 1)) * [0, 0, 1]], axis=1).reshape(count, 3, 3)


def test_inference_passes_images_through_unchanged():
    images = _images()
    assert np.array_equal(np.asarray(augmentation(seed=1)(images, training=False)), images)
    assert np.array_equal(np.asarray(RandomAffine(seed=1)(images, training=False)), images)


def test_training_changes_images_and_keeps_their_shape():
    images = _images()
    warped = np.asarray(RandomAffine(seed=1)(images, training=True))
    assert warped.shape == images.shape
    assert not np.allclose(warped, images)


def test_without_ranges_it_is_the_identity_or_an_exact_mirror():
    images = _images(count=64)
    still = RandomAffine(rotation=0, zoom=0, translation=0, flip=False, seed=3)
    np.testing.assert_allclose(np.asarray(still(images, training=True)), images, atol=1e-3)
    flipped = np.asarray(RandomAffine(rotation=0, zoom=0, translation=0, flip=True, seed=3)(images, training=True))
    mirrored = [np.allclose(out, image[:, ::-1], atol=1e-3) for out, image in zip(flipped, images)]
    kept = [np.allclose(out, image, atol=1e-3) for out, image in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept)), "each image is either kept or mirrored, nothing else"
    assert 16 < sum(mirrored) < 48, "about half the images are mirrored"


def test_transforms_stay_within_the_rotation_zoom_and_shift_ranges():
    layer = RandomAffine(rotation=0.1, zoom=0.2, translation=0.1, flip=True, seed=7)
    matrices = _matrices(layer, 500)
    linear = matrices[:, :2, :2]
    scales = np.sqrt(np.abs(np.linalg.det(linear)))
    assert scales.min() >= 0.8 - 1e-5 and scales.max() <= 1.2 + 1e-5
    assert scales.max() - scales.min() > 0.3, "zooms spread over the range"
    angles = np.arctan2(linear[:, 1, 0], linear[:, 1, 1])  # the y row is unaffected by the horizontal mirror
    assert np.abs(angles).max() <= 0.1 * 2 * math.pi + 1e-5 and np.abs(angles).max() > 0.5
    centre = np.array([(40 - 1) / 2, (30 - 1) / 2, 1])
    shifts = matrices @ centre - centre  # where the output's centre reads from, relative to the input's centre
    assert np.abs(shifts[:, 0]).max() <= 0.1 * 40 + 1e-4 and np.abs(shifts[:, 1]).max() <= 0.1 * 30 + 1e-4
    mirrored = np.linalg.det(linear) < 0
    assert 150 < mirrored.sum() < 350


def test_each_image_gets_its_own_transform_and_seeds_repeat():
    first = _matrices(RandomAffine(seed=11), 8)
    assert len({tuple(np.round(m.ravel(), 5)) for m in first}) == 8
    np.testing.assert_array_equal(first, _matrices(RandomAffine(seed=11), 8))


@pytest.mark.parametrize("name, value", [("rotation", -0.1), ("zoom", 1.0), ("translation", -1)])
def test_bad_ranges_are_refused(name: str, value: float):
    with pytest.raises(ValueError, match=f"RandomAffine {name} must be >= 0"):
        RandomAffine(**{name: value})


def test_a_model_with_the_layer_saves_and_loads(tmp_path: Path):
    inputs = keras.Input((24, 24, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(augmentation(seed=5)(inputs)))
    model.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")
    layer = loaded.get_layer("augmentation").layers[0]
    assert isinstance(layer, RandomAffine)
    assert layer.get_config() == model.get_layer("augmentation").layers[0].get_config()
    images = _images()
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False)))
