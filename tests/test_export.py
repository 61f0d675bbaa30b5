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


def test_metadata_is_carried_by_every_format(tmp_path, models, images):
    from catsdogs.export_metadata import read_metadata

    metadata = {"catsdogs.calibration": '{"method": "platt", "slope": 1.5}', "note": "<&> \u00e9"}
    for fmt in FORMATS:
        if fmt == "onnx" and not (_has("tf2onnx") and _has("onnxruntime")):
            continue
        out = tmp_path / f"model{SUFFIX[fmt]}"
        export_model(models["plain"], fmt, out, images, metadata=metadata)
        assert read_metadata(fmt, out) == metadata, fmt
        assert _load_and_run(fmt, out, images).shape == (len(images), 1)  # the graph still runs on its own


def _has(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def apply_calibration(p: np.ndarray, meta: dict[str, str]) -> np.ndarray:
    """docs/serving-and-export.md's recipe: an export's probabilities -> calibrated n x N probabilities."""
    import json

    calibration = json.loads(meta["catsdogs.calibration"])
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    if p.shape[1] == 1:  # one sigmoid output: p(class 1)
        p = np.concatenate([1 - p, p], axis=1)
    if calibration and calibration["method"] == "platt":
        p1 = 1 / (1 + np.exp(-(calibration["slope"] * np.log(p[:, 1] / (1 - p[:, 1])) + calibration["intercept"])))
        p = np.stack([1 - p1, p1], axis=1)
    elif calibration and calibration["method"] == "temperature":
        z = np.log(p / p.sum(axis=1, keepdims=True)) / calibration["temperature"]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    return p


def test_run_export_carries_calibration_and_threshold(run_copy, tiny_data, tmp_path, capsys):
    import json

    import catsdogs.calibration
    from catsdogs.cli import main
    from catsdogs.dataset import sample_images
    from catsdogs.export_metadata import read_metadata
    from catsdogs.predict import Predictor

    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    catsdogs.calibrate(run_copy, accept=0.5)
    stored = json.loads((run_copy / "calibration.json").read_text())
    for fmt in ("onnx", "tflite"):
        out = tmp_path / f"model{SUFFIX[fmt]}"
        assert main(["export", str(run_copy), "--format", fmt, "--out", str(out)]) == 0
        meta = read_metadata(fmt, out)
        calibration, novelty = json.loads(meta["catsdogs.calibration"]), json.loads(meta["catsdogs.novelty"])
        assert calibration == {k: stored["calibration"][k] for k in ("method", "temperature", "slope", "intercept")}
        assert novelty["threshold"] == stored["novelty"]["threshold"] and novelty["accept"] == 0.5
        assert json.loads(meta["catsdogs.classes"]) == json.loads((run_copy / "classes.json").read_text())
        assert 0 < json.loads(meta["catsdogs.decision_threshold"]) < 1
        assert "softmax(log(p) / temperature)" in meta["catsdogs.how_to_apply"]
    assert "in the file's metadata" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map  # what a runtime sees, without catsdogs
    x = sample_images(tiny_data, "test", 48, 8).astype(np.float32)
    exported = session.run(None, {"image": x})[0]
    calibration = catsdogs.calibration.Calibration.from_dict(stored["calibration"])
    np.testing.assert_allclose(apply_calibration(exported, meta), calibration.apply(np.c_[1 - exported, exported]),
                               atol=1e-6)  # the documented recipe is the library's calibration
    # and close to what catsdogs predicts (the tiny model's float32 outputs differ by ~1e-4 from call to call)
    np.testing.assert_allclose(apply_calibration(exported, meta), Predictor(run_copy).probabilities(x), atol=2e-3)

    (run_copy / "calibration.json").unlink()
    out = tmp_path / "uncalibrated.onnx"
    assert main(["export", str(run_copy), "--format", "onnx", "--out", str(out)]) == 0
    meta = read_metadata("onnx", out)
    assert meta["catsdogs.calibration"] == "null" and meta["catsdogs.novelty"] == "null"
    assert not (tmp_path / "uncalibrated.onnx.calibration.json").exists()
