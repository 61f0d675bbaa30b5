"""Grad-CAM: layer search (flat and nested models), localisation, bfloat16, pictures."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from catsdogs.errors import UsageError
from catsdogs.explain import GradCam, find_last_conv_layer, gradcam, overlay, save_explanation

L = keras.layers


def scratch_convnet(size: int = 64) -> keras.Model:
    """The study's convnet (smaller input), with augmentation layers in front."""
    inputs = keras.Input((size, size, 3))
    x = L.RandomFlip("horizontal")(inputs)
    x = L.RandomRotation(0.1)(x)
    x = L.RandomZoom(0.2)(x)
    x = L.Rescaling(1 / 255)(x)
    for filters in (32, 64, 128, 128):
        x = L.Conv2D(filters, 3, activation="relu")(x)
        x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(512, activation="relu")(x)
    return keras.Model(inputs, L.Dense(1, activation="sigmoid")(x))


def colour_model(gain: float = 40.0, size: int = 32) -> keras.Model:
    """Hand-set convnet: channel 0 fires on red, channel 1 on blue; red argues for class 1."""
    inputs = keras.Input((size, size, 3))
    x = L.Rescaling(1 / 255)(inputs)
    detect = L.Conv2D(2, 3, padding="same", activation="relu", name="detect")
    decide = L.Dense(1, activation="sigmoid", name="decide")
    outputs = decide(L.GlobalAveragePooling2D()(detect(x)))
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[1, 1, :, 0] = [1, 0, -1]  # red - blue
    kernel[1, 1, :, 1] = [-1, 0, 1]  # blue - red
    detect.set_weights([kernel, np.zeros(2, np.float32)])
    decide.set_weights([np.array([[gain], [-gain]], np.float32), np.zeros(1, np.float32)])
    return model


def squares(red_left: bool = True, blue: bool = True, size: int = 32) -> np.ndarray:
    """Black image, an 8x8 red square in one half and (optionally) a 6x6 blue one in the other."""
    image = np.zeros((size, size, 3), np.uint8)
    red_cols, blue_cols = (slice(3, 11), slice(22, 28))
    if not red_left:
        red_cols, blue_cols = slice(21, 29), slice(4, 10)
    image[12:20, red_cols, 0] = 255
    if blue:
        image[13:19, blue_cols, 2] = 255
    return image


def left_share(heatmap: np.ndarray) -> float:
    """Fraction of the heatmap's mass in the left half."""
    half = heatmap.shape[1] // 2
    return float(heatmap[:, :half].sum() / heatmap.sum())


@pytest.fixture(scope="module")
def nested() -> tuple[keras.Model, keras.Model]:
    """A transfer model around a nested MobileNetV2 base, and the base (seeded random weights)."""
    keras.utils.set_random_seed(1234)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
    inputs = keras.Input((96, 96, 3))
    x = L.RandomFlip("horizontal")(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(x)
    outputs = L.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    dense = model.layers[-1]
    dense.set_weights([dense.get_weights()[0] * 20, np.array([0.3], np.float32)])
    return model, base


@pytest.fixture
def bfloat16():
    """Run a test under the mixed_bfloat16 global policy and restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def photo(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------ layer search


def test_last_conv_of_scratch_convnet_skips_augmentation_and_pooling():
    model = scratch_convnet()
    convs = [layer.name for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert find_last_conv_layer(model) == convs[-1]
    result = gradcam(model, photo(64))
    assert result.layer == convs[-1] and result.heatmap.shape == (4, 4)


def test_the_study_augmentation_is_not_a_feature_map():
    from catsdogs.explain import _feature_maps
    from catsdogs.models.convnet import build_augmented

    assert _feature_maps(build_augmented(64)) == ["conv1", "conv2", "conv3", "conv4"]


def test_last_conv_inside_nested_base(nested):
    model, base = nested
    assert find_last_conv_layer(model) == f"{base.name}/out_relu"


def test_nested_forward_pass_matches_predict(nested):
    model, _ = nested
    image = photo(96, seed=3)
    result = gradcam(model, image)
    expected = float(model.predict(image[None], verbose=0)[0, 0])
    assert 0.02 < expected < 0.98  # a meaningful comparison, not a constant 0.5
    assert result.p1 == pytest.approx(expected, abs=1e-4)
    other = gradcam(model, image, target=0)
    assert other.p1 == result.p1
    for heat in (result.heatmap, other.heatmap):
        assert heat.shape == (3, 3) and heat.dtype == np.float32 and np.isfinite(heat).all()
    # random weights: either class may have no positive evidence, but not both
    assert max(result.heatmap.max(), other.heatmap.max()) == pytest.approx(1.0)


def test_layer_choice_is_honoured(nested):
    model, base = nested
    image = photo(96)
    path = f"{base.name}/block_13_expand_relu"
    assert gradcam(model, image, layer=path).layer == path
    bare = gradcam(model, image, layer="block_13_expand_relu")  # found inside the base
    assert bare.layer == path and bare.heatmap.shape == (6, 6)
    scratch = scratch_convnet()
    first_conv = next(layer.name for layer in scratch.layers if isinstance(layer, L.Conv2D))
    assert gradcam(scratch, photo(64), layer=first_conv).heatmap.shape == (62, 62)


@pytest.mark.parametrize("layer", ["no_such_layer", "dense", "nope/out_relu", "dropout/x"])
def test_bad_layer_is_a_usage_error(nested, layer):
    model, _ = nested
    with pytest.raises(UsageError):
        gradcam(model, photo(96), layer=layer)


def test_model_without_feature_map_is_a_usage_error():
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 255)(inputs)
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid")(L.Flatten()(x)))
    with pytest.raises(UsageError, match="flatten"):
        find_last_conv_layer(model)


def test_wrong_image_size_is_a_usage_error():
    with pytest.raises(UsageError, match="resize"):
        gradcam(colour_model(), photo(40))


# ------------------------------------------------------------------ behaviour


@pytest.mark.parametrize("red_left", [True, False])
def test_heatmap_localises_the_evidence(red_left):
    model, image = colour_model(), squares(red_left=red_left)
    dog, cat = gradcam(model, image, target=1), gradcam(model, image, target=0)
    assert isinstance(dog, GradCam) and dog.p1 > 0.5 and dog.layer == "detect"
    assert dog.p1 == cat.p1
    red_share = left_share(dog.heatmap) if red_left else 1 - left_share(dog.heatmap)
    blue_share = 1 - left_share(cat.heatmap) if red_left else left_share(cat.heatmap)
    assert red_share > 0.95  # class 1's map sits on the red square
    assert blue_share > 0.95  # the flipped-sign map sits on the blue one


def test_flipped_map_is_empty_without_counter_evidence():
    model = colour_model()
    image = squares(blue=False)
    assert left_share(gradcam(model, image).heatmap) > 0.95
    assert gradcam(model, image, target=0).heatmap.max() == 0.0


def test_logit_gradient_survives_a_saturated_sigmoid():
    model = colour_model(gain=1e4)
    result = gradcam(model, squares())
    assert result.p1 == 1.0  # the probability's gradient would be exactly 0 here
    assert left_share(result.heatmap) > 0.95


def test_mixed_bfloat16(bfloat16):
    model = colour_model(gain=1e3)  # saturated in bfloat16
    result = gradcam(model, squares())
    assert result.heatmap.dtype == np.float32 and np.isfinite(result.heatmap).all()
    assert left_share(result.heatmap) > 0.95
    scratch = scratch_convnet()
    assert scratch.layers[-1].compute_dtype == "bfloat16"
    for target in (0, 1):
        heat = gradcam(scratch, photo(64), target=target).heatmap
        assert heat.dtype == np.float32 and np.isfinite(heat).all()
        assert heat.min() >= 0.0 and heat.max() <= 1.0


def test_target_must_be_a_class_index():
    with pytest.raises(UsageError):
        gradcam(colour_model(), squares(), target=2)


# ------------------------------------------------------------------ pictures


def test_overlay_shape_and_dtype():
    image = photo(96)
    heat = np.array([[0, 0.5, 1], [0, 1, 0], [1, 0, 0]], np.float32)
    blended = overlay(image, heat)
    assert blended.shape == (96, 96, 3) and blended.dtype == np.uint8
    assert np.array_equal(overlay(image, heat, alpha=0.0), image)
    with pytest.raises(UsageError):
        overlay(image, heat, colormap="no-such-map")


def test_save_explanation_writes_a_png(tmp_path):
    out = save_explanation(colour_model(), squares(), ["cat", "dog"], tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size == (1200, 440)
