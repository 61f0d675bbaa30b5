"""Inference engines: ONNX Runtime and OpenVINO answer as Keras does (within 1e-4), for one sigmoid output and
for N softmax outputs; `auto` keeps the fastest verified one and falls back to Keras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import catsdogs
from catsdogs import engines
from catsdogs.errors import CatsdogsError, UsageError
from catsdogs.predict import Predictor

from helpers import make_class_folders

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
SIZE = 48


@pytest.fixture(scope="module", params=[2, 3])
def run(request, tmp_path_factory) -> catsdogs.Run:
    root = tmp_path_factory.mktemp(f"engines{request.param}")
    names = ("cat", "dog", "fox")[: request.param]
    catsdogs.prepare(make_class_folders(root / "photos", per_class=8, names=names), root / "data",
                     train=0.5, val=0.25, test=0.25)
    return catsdogs.train(data=root / "data", model="baseline", out=root / "run", epochs=1, image_size=SIZE,
                          batch_size=8, precision="float32")


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_exported_engines_match_keras(run: catsdogs.Run, name: str):
    if name not in engines.list_engines():
        pytest.skip(f"{name} is not installed")
    images = np.random.default_rng(1).integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.float32)
    engine = engines.create_engine(run.path, run.model, name)
    keras_out = engines.keras_engine(run.model)(images)
    assert engine.name == name and engine(images).shape == keras_out.shape
    assert np.max(np.abs(engine(images) - keras_out)) <= 1e-4
    assert (run / "engines" / f"model-{engines._model_key(run.path)}.onnx").is_file()  # exported once, kept


def test_auto_picks_a_verified_engine_and_remembers(run: catsdogs.Run):
    predictor = Predictor(run.path, engine="auto")
    choice = json.loads(next((run / "engines").glob("choice-*.json")).read_text())
    assert predictor.engine == choice["engine"] and choice["engine"] in engines.list_engines()
    assert set(choice["images_per_s"]) >= {"keras"}
    reference = Predictor(run.path, engine="keras")
    images = np.random.default_rng(2).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    assert np.allclose(predictor.probabilities(images), reference.probabilities(images), atol=1e-4)


@pytest.mark.parametrize("tta", [False, True])
def test_an_exported_engine_gives_the_embeddings_on_the_same_pass(run: catsdogs.Run, tta: bool, monkeypatch):
    """A calibrated RUN's unknown score needs the embeddings: the exported graph gives them beside the output, so
    ONNX Runtime answers (probabilities and novelty) as Keras does without a second, Keras, pass."""
    assert (run / "calibration.json").exists()
    predictor, reference = Predictor(run.path, engine="onnx", tta=tta), Predictor(run.path, engine="keras", tta=tta)
    assert predictor.joint is not None and predictor.joint.name == "onnx"
    assert list((run / "engines").glob("model-*-joint-*.onnx"))
    images = np.random.default_rng(3).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    monkeypatch.setattr(predictor.trust, "embed", lambda *a, **k: pytest.fail("a second, Keras, pass"))
    for ours, theirs in zip(predictor.assess(images), reference.assess(images)):
        assert np.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    assert np.allclose(predictor.raw_probabilities(images), reference.raw_probabilities(images), atol=1e-4)


def test_exporting_is_said_the_first_time_only(run: catsdogs.Run, tmp_path: Path, caplog):
    import shutil

    copy = Path(shutil.copytree(run.path, tmp_path / "run", ignore=shutil.ignore_patterns("engines")))
    with caplog.at_level("INFO", logger="catsdogs.engines"):
        Predictor(copy, engine="onnx")
        assert "engines: exporting the model to" in caplog.text and "checking it against Keras" in caplog.text
        caplog.clear()
        Predictor(copy, engine="onnx")
        assert "exporting" not in caplog.text


def test_a_joint_graph_that_fails_leaves_the_model_engine_and_keras_embeddings(run: catsdogs.Run, monkeypatch,
                                                                                  caplog):
    import catsdogs.predict

    def broken(joint):
        raise RuntimeError("tf2onnx cannot convert this layer")

    monkeypatch.setattr(catsdogs.predict, "create_engine", lambda run, model, name, samples=None, variant="":
                        broken(model) if variant else engines.create_engine(run, model, name, samples))
    predictor = Predictor(run.path, engine="onnx")
    assert predictor.engine == "onnx" and predictor.joint is None
    assert "the graph with the embeddings failed (tf2onnx cannot convert this layer)" in caplog.text
    images = np.random.default_rng(4).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    reference = Predictor(run.path, engine="keras").assess(images)
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(predictor.assess(images), reference))
    caplog.clear()  # the model alone failing too: its one error, without the warning before it
    monkeypatch.setattr(catsdogs.predict, "create_engine", lambda *args, **kwargs: broken(None))
    with pytest.raises(RuntimeError, match="tf2onnx cannot convert"):
        Predictor(run.path, engine="onnx")
    assert "graph with the embeddings failed" not in caplog.text


def test_auto_falls_back_to_keras_and_names_are_checked(run: catsdogs.Run, monkeypatch):
    monkeypatch.setattr(engines, "list_engines", lambda: ["keras"])
    assert engines.create_engine(run.path, run.model, "auto").name == "keras"
    with pytest.raises(CatsdogsError, match="engine onnx needs onnxruntime"):
        engines.create_engine(run.path, run.model, "onnx")
    with pytest.raises(UsageError, match="engine must be one of"):
        engines.create_engine(run.path, run.model, "tensorrt")


def test_a_model_that_differs_is_refused(tmp_path: Path, run_copy: Path):
    model = catsdogs.Run(run_copy).model  # trained with precision auto: bfloat16 on CPUs that have it
    if not any("bfloat16" in layer.dtype_policy.name for layer in model.layers):
        pytest.skip("this CPU trains the tiny run in float32")
    with pytest.raises(CatsdogsError, match="differs from Keras by"):
        engines.create_engine(run_copy, model, "onnx")


def test_a_refused_engine_says_why_in_plain_words_relative_to_large_outputs():
    expected = np.array([[50.0, 0.2], [-20.0, 0.8]], np.float32)  # an embedding column, then a probability
    close = engines.Engine("onnx", lambda batch: expected + np.array([2e-3, 5e-5], np.float32))
    assert engines._checked(close, expected, expected, per_column=True) is close  # 2e-3 of 50: within 1e-4 of it
    off = engines.Engine("onnx", lambda batch: expected + np.array([0, 2e-4], np.float32))
    with pytest.raises(CatsdogsError) as error:
        engines._checked(off, expected, expected, per_column=True)
    assert str(error.value).startswith("engine onnx differs from Keras by 0.0002 (> 0.0001; outputs above 1 relative")
    assert error.value.parameter == "engine"


def test_auto_survives_a_runtime_that_breaks(run: catsdogs.Run, monkeypatch):
    def broken(name, path):
        raise RuntimeError("the runtime crashed")

    monkeypatch.setattr(engines, "load_engine", broken)
    for choice in (run / "engines").glob("choice-*.json"):
        choice.unlink()
    engine = engines.create_engine(run.path, run.model, "auto")
    assert engine.name == "keras"
    refused = json.loads(next((run / "engines").glob("choice-*.json")).read_text())["refused"]
    assert all("the runtime crashed" in reason for reason in refused.values()) and refused


@pytest.fixture(scope="module")
def extractor():
    """A frozen MobileNetV2 base (random weights) to pooled features, as the `features` model extracts them."""
    from catsdogs.models.pretrained import build_features
    from catsdogs.trainers.features import feature_extractor

    return feature_extractor(build_features(64, backbone="mobilenetv2", weights=None, seed=0))


def test_fastest_forward_is_verified_and_leaves_no_graph(extractor, tmp_path: Path, monkeypatch):
    import tempfile

    made, mkdtemp, checked, check = [], tempfile.mkdtemp, [], engines._checked
    monkeypatch.setattr(tempfile, "mkdtemp",
                        lambda **kwargs: made.append(mkdtemp(**{"dir": tmp_path, **kwargs})) or made[-1])
    monkeypatch.setattr(engines, "_checked", lambda engine, *args: checked.append(check(engine, *args).name) or engine)
    images = np.random.default_rng(3).integers(0, 256, (6, 64, 64, 3)).astype(np.float32)
    engine = engines.fastest_forward(extractor, images[:4])
    installed = [name for name in engines.list_engines() if name in engines.VERIFIED]
    assert checked == installed and engine.name in ["keras", *installed]  # each runtime passed the 1e-4 check
    assert np.max(np.abs(engine(images) - engines.keras_engine(extractor)(images))) <= 1e-4
    assert made and not any(Path(folder).exists() for folder in made)  # the exported graph was deleted once loaded


def test_fastest_forward_checks_large_outputs_relative_to_their_scale(extractor, monkeypatch):
    """Activations inside a base reach tens; float32 rounding differences grow with them (the finetune split)."""
    import keras

    images = np.random.default_rng(6).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    scale = 1e5 / float(np.max(np.abs(engines.keras_engine(extractor)(images))))  # outputs up to 1e5
    large = keras.Model(extractor.inputs, keras.layers.Rescaling(scale)(extractor.outputs[0]))
    expected = engines.keras_engine(large)(images)
    checked, check = [], engines._checked
    monkeypatch.setattr(engines, "_checked", lambda engine, *args: checked.append(check(engine, *args).name) or engine)
    engine = engines.fastest_forward(large, images)
    assert checked == [name for name in engines.list_engines() if name in engines.VERIFIED]
    assert np.max(np.abs(engine(images) - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_fastest_forward_keeps_keras_when_export_fails_or_model_is_mixed(extractor, monkeypatch):
    images = np.random.default_rng(4).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)

    def broken(model, path, samples, *tolerance):
        raise RuntimeError("tf2onnx cannot convert this model")

    monkeypatch.setattr(engines, "_export_onnx", broken)
    assert engines.fastest_forward(extractor, images).name == "keras"

    def no_space(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tempfile.mkdtemp", no_space)
    assert engines.fastest_forward(extractor, images).name == "keras"  # no temporary folder: Keras still works
    monkeypatch.setattr("catsdogs.export.is_mixed", lambda model: True)
    monkeypatch.setattr(engines, "_export_onnx", lambda *args: pytest.fail("a mixed model is not exported"))
    assert engines.fastest_forward(extractor, images).name == "keras"


def test_feature_extraction_uses_an_engine_only_for_enough_images(extractor, monkeypatch):
    from catsdogs.trainers import features

    images = np.random.default_rng(5).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    expected = engines.keras_engine(extractor)(images.astype(np.float32))
    chosen = []
    real = engines.fastest_forward
    monkeypatch.setattr(engines, "fastest_forward", lambda model, samples: chosen.append(len(samples)) or real(model, samples))
    small = features.extract_features(extractor, images, 4, "train", engine_min_images=11)
    assert chosen == [] and np.max(np.abs(small - expected)) <= 1e-4  # 10 images: Keras
    shared: dict = {}
    large = features.extract_features(extractor, images, 4, "train", engine_min_images=10, chosen=shared)
    assert chosen == [4] and np.max(np.abs(large - expected)) <= 1e-4  # verified on the first batch
    again = features.extract_features(extractor, images[:6], 4, "validation", engine_min_images=10, chosen=shared)
    assert chosen == [4] and np.max(np.abs(again - expected[:6])) <= 1e-4  # the next split reuses the engine


def test_the_audit_embeds_many_photos_through_the_chosen_engine(extractor, monkeypatch):
    from catsdogs.auditing import _embedder
    from catsdogs.trainers.features import ENGINE_MIN_IMAGES

    images = np.random.default_rng(6).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    expected = engines.keras_engine(extractor)(images.astype(np.float32))
    chosen, real = [], engines.fastest_forward
    monkeypatch.setattr(engines, "fastest_forward", lambda model, samples: chosen.append(len(samples)) or real(model, samples))
    few = _embedder(extractor, extractor, ENGINE_MIN_IMAGES - 1)
    assert np.max(np.abs(few(images) - expected)) <= 1e-4 and chosen == []
    many = _embedder(extractor, extractor, ENGINE_MIN_IMAGES)
    for _ in range(2):  # chosen on the first batch, once
        assert np.max(np.abs(many(images) - expected)) <= 1e-4 and chosen == [4]


def test_auto_keeps_keras_for_a_flip_averaged_model_without_exporting(tmp_path: Path, monkeypatch):
    from catsdogs.models.frozen import build_heads

    model = build_heads(64, backbone="mobilenetv2", weights=None, seed=0, num_classes=3)

    def no_export(*args, **kwargs):
        raise AssertionError("exported a heads model for the auto engine")

    monkeypatch.setattr(engines, "_fastest", no_export)
    assert engines.create_engine(tmp_path, model, "auto").name == "keras"
    assert not (tmp_path / engines.ENGINE_DIR).exists()
