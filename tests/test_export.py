"""catsdogs.export: SavedModel, ONNX and TFLite exports of tiny models, verified and reloaded."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from keras import layers  # noqa: E402

from catsdogs.errors import CatsdogsError, UsageError  # noqa: E402
from catsdogs.export import FORMATS, export_model, float32_rebuild  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 32


def _tiny(policy: str = "float32", nested: bool = False) -> keras.Model:
    """Raw 0-255 input -> RandomFlip, Rescaling, conv block (maybe a sub-model), Dropout, sigmoid."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(1)
        inputs = keras.Input((SIZE, SIZE, 3))
        x = layers.RandomFlip("horizontal")(inputs)
        x = layers.Rescaling(1 / 255)(x)
        conv = [layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D()]
        if nested:
            x = keras.Sequential([keras.Input(x.shape[1:]), *conv], name="base")(x)
        else:
            for layer in conv:
                x = layer(x)
        x = layers.Flatten()(layers.Dropout(0.5)(x))
        outputs = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
        return keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(previous)


VARIANTS = {
    "plain": lambda: _tiny(),
    "bf16": lambda: _tiny("mixed_bfloat16"),
    "nested": lambda: _tiny(nested=True),
}
SUFFIX = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models() -> dict[str, keras.Model]:
    return {name: build() for name, build in VARIANTS.items()}


def _load_and_run(fmt: str, path, x: np.ndarray) -> np.ndarray:
    """Run an export with its own runtime only (no catsdogs code)."""
    x = x.astype(np.float32)
    if fmt == "savedmodel":
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return serve(image=tf.constant(x))["probability"].numpy()
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    return interpreter.get_signature_runner("serving_default")(image=x)["probability"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_verifies_and_reloads(tmp_path, models, images, variant, fmt):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx")
        pytest.importorskip("onnxruntime")
    model = models[variant]
    out = tmp_path / f"model{SUFFIX[fmt]}"
    result = export_model(model, fmt, out, images)
    assert result.path == out and out.exists() and result.format == fmt
    assert result.input_signature == f"image: float32[batch,{SIZE},{SIZE},3] raw RGB 0-255"
    assert 0 <= result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp leftovers

    keras_probs = model.predict(images.astype(np.float32), verbose=0)
    assert keras_probs.shape == (len(images), 1) and keras_probs.std() > 1e-3
    exported = _load_and_run(fmt, out, images.astype(np.float32))
    assert exported.shape == keras_probs.shape
    if variant == "bf16":
        assert result.float32_rebuild and 0 < result.mixed_precision_diff < 0.05
        reference = float32_rebuild(model).predict(images.astype(np.float32), verbose=0)
        np.testing.assert_allclose(exported, keras_probs, atol=0.05)
    else:
        assert not result.float32_rebuild and result.mixed_precision_diff is None
        reference = keras_probs
    np.testing.assert_allclose(exported, reference, atol=1e-4)


def test_float32_rebuild_has_no_mixed_layers(models):
    twin = float32_rebuild(models["bf16"])
    policies = {layer.dtype_policy.name for layer in twin.layers}
    assert policies == {"float32"}
    assert all(w.dtype == np.float32 for w in twin.get_weights())


def test_existing_out_is_refused(tmp_path, models, images):
    out = tmp_path / "model.tflite"
    out.write_bytes(b"keep")
    with pytest.raises(UsageError, match="already exists"):
        export_model(models["plain"], "tflite", out, images)
    assert out.read_bytes() == b"keep"


def test_failed_verification_leaves_nothing(tmp_path, models, images):
    out = tmp_path / "new" / "folder" / "model"
    with pytest.raises(CatsdogsError, match="differs from the Keras model by") as err:
        export_model(models["plain"], "savedmodel", out, images, atol=-1.0)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_usage_error(tmp_path, models, images):
    with pytest.raises(UsageError, match="unknown export format"):
        export_model(models["plain"], "pickle", tmp_path / "m", images)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="the model takes 32x32"):
        export_model(models["plain"], "savedmodel", tmp_path / "m", images[:, :16, :16])
    with pytest.raises(UsageError, match="N x H x W x 3"):
        export_model(models["plain"], "savedmodel", tmp_path / "m", images[0])
    assert list(tmp_path.iterdir()) == []
