"""N = 2, 3 and 5 classes through prepare -> train (each model, 1 epoch; the pretrained ones at N = 3) ->
evaluate -> predict -> explain -> serve -> export, on tiny generated photos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import catsdogs
from catsdogs.cli import main
from catsdogs.models import list_models

from helpers import make_class_folders

pytestmark = pytest.mark.slow
NAMES = {2: ("cat", "dog"), 3: ("ants", "bees", "wasps"), 5: tuple("abcde")}
SIZE = 48


PRETRAINED = ("features", "transfer", "finetune")


def prepared(classes: int, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"n{classes}")
    source = make_class_folders(root / "photos", per_class=12, names=NAMES[classes])
    catsdogs.prepare(source, root / "data", train=0.5, val=0.25, test=0.25)
    return root / "data"


@pytest.fixture(scope="module", params=sorted(NAMES))
def data(request, tmp_path_factory) -> Path:
    return prepared(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    return prepared(3, tmp_path_factory)


def trained(data: Path, model: str, out: Path) -> catsdogs.Run:
    pretrained = model in PRETRAINED
    options = {"backbone": "mobilenetv2", "model_options": {"weights": None}} if pretrained else {}
    return catsdogs.train(data=data, model=model, out=out, epochs=1, image_size=SIZE if not pretrained else 32,
                          batch_size=8, precision="float32", **options)


@pytest.mark.parametrize("model", [name for name in list_models() if name not in PRETRAINED])
def test_every_convnet_trains_evaluates_and_predicts(data: Path, model: str, tmp_path: Path):
    check_trains_evaluates_and_predicts(data, model, tmp_path)


@pytest.mark.parametrize("model", PRETRAINED)
def test_every_pretrained_model_trains_evaluates_and_predicts(three_classes: Path, model: str, tmp_path: Path):
    """Three classes (softmax) here; two (sigmoid) in test_backbones, whose code is shared with the convnets."""
    check_trains_evaluates_and_predicts(three_classes, model, tmp_path)


def check_trains_evaluates_and_predicts(data: Path, model: str, tmp_path: Path) -> None:
    classes = json.loads((data / "classes.json").read_text())
    run = trained(data, model, tmp_path / model)
    assert run.classes == classes and run.model.output_shape[-1] == (1 if len(classes) == 2 else len(classes))
    metrics = run.evaluate("test", explain=False)
    assert metrics["n"] == 3 * len(classes) and len(metrics["confusion_matrix"]["matrix"]) == len(classes)
    assert set(metrics["per_class"]) == set(classes)
    predictions = run.predict(data / "test")
    assert len(predictions) == metrics["n"]
    for prediction in predictions:
        assert list(prediction.probabilities) == classes and prediction.label in classes
        assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-4)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get) \
            or len(classes) == 2


@pytest.fixture(scope="module")
def baseline(data: Path, tmp_path_factory) -> catsdogs.Run:
    return trained(data, "baseline", tmp_path_factory.mktemp("run") / "baseline")


def test_predict_csv_and_json_have_one_column_per_class(baseline, data: Path, capsys):
    classes = baseline.classes
    assert main(["predict", str(baseline), str(data / "test")]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["path", "label", *(f"p_{name}" for name in classes), "novelty", "error"]
    assert main(["predict", str(baseline), str(data / "test"), "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert list(first["probabilities"]) == classes
    assert (first["threshold"] is None) == (len(classes) > 2)


def test_explain_any_class(baseline, data: Path, tmp_path: Path):
    image = next((data / "test").rglob("*.jpg"))
    last = baseline.classes[-1]
    overlay = baseline.explain(image, target=last)
    assert overlay.shape == (SIZE, SIZE, 3) and overlay.dtype == np.uint8
    assert main(["explain", str(baseline), str(image), "--target", last, "--out", str(tmp_path / "cam.png")]) == 0
    assert (tmp_path / "cam.png").stat().st_size > 0
    assert main(["explain", str(baseline), str(image), "--target", "nope", "--out", str(tmp_path / "x.png")]) == 2


def test_threshold_tuning_only_for_two_classes(baseline, capsys):
    code = main(["evaluate", str(baseline), "--tune-threshold"])
    if len(baseline.classes) == 2:
        assert code == 0
    else:
        assert code == 2 and "threshold tuning needs 2 classes" in capsys.readouterr().err


def test_serve_returns_every_class(baseline, data: Path):
    from fastapi.testclient import TestClient

    from catsdogs.serve import create_app

    image = next((data / "test").rglob("*.jpg"))
    with TestClient(create_app(baseline.path)) as client:
        body = client.post("/predict", files=[("file", (image.name, image.read_bytes(), "image/jpeg"))]).json()
        assert client.get("/model").json()["classes"] == baseline.classes
    prediction = body["predictions"][0]
    assert list(prediction["probabilities"]) == baseline.classes
    expected = baseline.predict(image)[0]
    assert prediction["label"] == expected.label
    assert prediction["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)


def test_export_is_verified_with_every_output(baseline, data: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from catsdogs.export import export_model, load_runner

    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    result = export_model(baseline.model, "onnx", tmp_path / "model.onnx", images)
    outputs = load_runner("onnx", result.path)(images.astype(np.float32))
    assert outputs.shape == (4, 1 if len(baseline.classes) == 2 else len(baseline.classes))
    assert result.max_abs_diff <= 1e-4
