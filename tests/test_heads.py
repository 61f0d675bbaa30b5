"""The `heads` model (fit's stages): flip-averaged features of one or more bases and the better of two heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import catsdogs
from catsdogs.errors import UsageError
from catsdogs.learning_curve import advice, learning_curve
from catsdogs.models.frozen import backbone_names, build_heads
from catsdogs.trainers.heads import fit_logistic

from helpers import make_class_folders


def blobs(n: int, classes: int, seed: int, flip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian features, `flip` labels wrong."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(0, 1, (n, 16)).astype(np.float32) + 3 * np.eye(classes, 16, dtype=np.float32)[y]
    y = y.copy()
    y[:flip] = (y[:flip] + 1) % classes
    return x, y


def test_logistic_head_matches_scikit_learn_and_picks_c_on_validation():
    train, validation = blobs(120, 3, 0), blobs(60, 3, 1)
    fitted = fit_logistic(train, validation, 3, balanced=False)
    expected = fitted["model"].predict_proba((validation[0] - train[0].mean(0)) / (train[0].std(0) + 1e-6))
    np.testing.assert_allclose(fitted["head"].predict(validation[0], verbose=0), expected, atol=1e-4)
    assert fitted["val_accuracy"] > 0.9 and fitted["C"] in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def test_logistic_head_two_classes_is_one_sigmoid_unit():
    fitted = fit_logistic(blobs(80, 2, 0), blobs(40, 2, 1), 2, balanced=True)
    assert fitted["head"].output_shape[-1] == 1 and fitted["val_accuracy"] > 0.9


def test_learning_curve_grows_with_photos_and_names_the_weakest_class():
    curve = learning_curve(blobs(200, 3, 0), blobs(90, 3, 1), ["ants", "bees", "wasps"], c=0.1)
    assert curve["train_photos"][-1] == 200 and curve["train_photos"] == sorted(curve["train_photos"])
    assert len(curve["val_accuracy"]) == 4
    assert set(curve["recall"]) == {"ants", "bees", "wasps"} and curve["advice"].split(":")[0] in curve["recall"]
    rising = {"fractions": [0.5, 1.0], "train_photos": [10, 20], "val_accuracy": [0.7, 0.8],
              "recall": {"a": [0.5, 0.7], "b": [0.9, 0.9]}}
    assert advice(rising) == "a: 0.700 recall; the curve is still rising: more photos of a should help most"


def test_backbone_names_join_and_refuse_repeats():
    assert backbone_names("mobilenetv2+efficientnet_lite0") == ["mobilenetv2", "efficientnet_lite0"]
    for bad in ("mobilenetv2+", "mobilenetv2+mobilenetv2"):
        with pytest.raises(UsageError):
            backbone_names(bad)


def test_two_bases_flip_averaged_model_is_mirror_invariant_and_explainable(tmp_path: Path):
    model = build_heads(64, backbone="mobilenetv2+efficientnet_lite0", weights=None, seed=0, num_classes=3)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0), model.predict(images[:, :, ::-1], verbose=0),
                               atol=1e-5)
    from catsdogs.explain import gradcam

    heatmap = gradcam(model, images[0].astype(np.uint8), target=1).heatmap
    assert heatmap.ndim == 2 and np.all(np.isfinite(heatmap)) and heatmap.max() <= 1.0


@pytest.mark.slow
def test_heads_run_trains_loads_and_predicts(tmp_path: Path):
    data = tmp_path / "data"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=10, names=("ants", "bees", "wasps")), data)
    run = catsdogs.train(data=data, model="heads", out=tmp_path / "run", backbone="mobilenetv2", image_size=64,
                         model_options={"weights": None}, calibration=False)
    assert run.config["head"] in ("logistic", "dense") and run.config["backbone"] == "mobilenetv2"
    assert set(run.config["heads"]) == {"logistic", "dense"} and len(run.history) == 1
    assert (run / "learning_curve.png").exists()
    again = catsdogs.Run(run.path)
    assert [p.label for p in again.predict(data / "test")] == [p.label for p in run.predict(data / "test")]


@pytest.mark.slow
def test_calibrating_a_heads_run_reuses_its_cached_features(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=10, names=("ants", "bees", "wasps")), data)
    run = catsdogs.train(data=data, model="heads", out=tmp_path / "run", backbone="mobilenetv2", image_size=64,
                         model_options={"weights": None}, calibration=False)
    def no_decoding(*args, **kwargs):
        raise AssertionError("calibrate decoded photos instead of reading the features cache")

    monkeypatch.setattr("catsdogs.dataset.load_split", no_decoding)
    summary = catsdogs.calibrate(run.path, accept=0.9)
    assert (run / "calibration.json").exists() and (run / "novelty.npz").exists()
    assert summary.novelty.accepted is not None and summary.novelty.accepted >= 0.8


@pytest.mark.slow
def test_evaluating_a_heads_run_caches_the_test_features_once_and_matches_the_whole_model(tmp_path: Path,
                                                                                         monkeypatch):
    from catsdogs.evaluation import evaluate
    from catsdogs.predict import Predictor

    data = tmp_path / "data"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=10, names=("ants", "bees", "wasps")), data)
    run = catsdogs.train(data=data, model="heads", out=tmp_path / "run", backbone="mobilenetv2", image_size=64,
                         model_options={"weights": None})
    cache = run.path / "cache"
    before = set(cache.glob("features-*-test.npy"))
    whole = evaluate(run.path, data, "test", explain=False)  # no cache: the whole model
    through_cache = evaluate(run.path, data, "test", cache_dir=cache, explain=False)
    assert len(set(cache.glob("features-*-test.npy")) - before) == 1
    assert through_cache["accuracy"] == whole["accuracy"] and through_cache["n"] == whole["n"]
    assert abs(through_cache["trust"]["log_loss_after_calibration"] - whole["trust"]["log_loss_after_calibration"]) < 1e-3

    def no_base(*args, **kwargs):
        raise AssertionError("the base ran although the test features are cached")

    monkeypatch.setattr(Predictor, "assess", no_base)
    assert evaluate(run.path, data, "test", cache_dir=cache, explain=False)["accuracy"] == whole["accuracy"]


@pytest.mark.slow
def test_a_heads_run_exports_to_onnx_and_matches_keras(tmp_path: Path):
    """The heads' standardisation is held in weights: tf2onnx once made its constants missing graph inputs."""
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    from catsdogs.export import export_model
    from catsdogs.run_files import load_run_model

    data = tmp_path / "data"
    catsdogs.prepare(make_class_folders(tmp_path / "photos", per_class=10, names=("ants", "bees", "wasps")), data)
    run = catsdogs.train(data=data, model="heads", out=tmp_path / "run", backbone="mobilenetv2", image_size=64,
                         model_options={"weights": None}, calibration=False)
    model = load_run_model(run.path)
    images = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3)).astype(np.float32)
    export_model(model, "onnx", tmp_path / "model.onnx", images)  # verified against Keras, or raises
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, model.predict(images, verbose=0), atol=1e-4)
