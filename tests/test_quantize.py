"""`export --quantize int8`: an int8 ONNX graph calibrated on train, measured on test, refused past 0.5 point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from catsdogs.cli import main  # noqa: E402
from catsdogs.dataset import load_split  # noqa: E402
from catsdogs.errors import CatsdogsError  # noqa: E402
from catsdogs.export import load_runner  # noqa: E402
from catsdogs.predict import Predictor  # noqa: E402
from catsdogs.quantize import quantize_int8, report_path  # noqa: E402

pytestmark = pytest.mark.slow


def test_int8_export_is_quantized_calibrated_and_measured(tiny_run: Path, tiny_data: Path, tmp_path: Path, capsys):
    import onnx

    out = tmp_path / "model-int8.onnx"
    assert main(["export", str(tiny_run), "--format", "onnx", "--quantize", "int8", "--out", str(out),
                 "--calibration-images", "24"]) == 0
    printed = capsys.readouterr().out
    assert "int8 accuracy" in printed and "calibrated on 24 train images" in printed
    operators = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators

    report = json.loads(report_path(out).read_text())
    predictor = Predictor(tiny_run)
    test = load_split(tiny_data, "test", predictor.image_size)
    outputs = load_runner("onnx", out)(test.images.astype(np.float32))
    int8_accuracy = np.mean(predictor.predicted_index(np.concatenate([1 - outputs, outputs], 1)) == test.labels)
    keras_accuracy = np.mean(predictor.predicted_index(predictor.probabilities(test.images)) == test.labels)
    assert report["test_images"] == len(test.labels) == 12 and report["calibration_images"] == 24
    assert report["accuracy_int8"] == pytest.approx(int8_accuracy)
    assert report["accuracy_float32"] == pytest.approx(keras_accuracy)
    assert report["change_points"] == pytest.approx(100 * (int8_accuracy - keras_accuracy))
    assert 0 < report["max_abs_diff"] < 0.2  # quantized: close to float32, not identical


def test_int8_export_refused_when_accuracy_drops_writes_nothing(tiny_run: Path, tiny_data: Path, tmp_path: Path):
    predictor = Predictor(tiny_run)
    test = load_split(tiny_data, "test", predictor.image_size)
    out = tmp_path / "exports" / "int8.onnx"
    with pytest.raises(CatsdogsError, match="int8 export refused: .* nothing was written"):
        # a tolerance no export can meet (a gain of 101 points) stands in for a real drop
        quantize_int8(predictor.model, out, test.images, test.images, test.labels,
                      lambda outputs: (outputs[:, 0] >= 0.5).astype(int), max_drop=-101)
    assert list(out.parent.iterdir()) == []


def test_quantize_needs_onnx_and_a_new_path(tiny_run: Path, tmp_path: Path, capsys):
    assert main(["export", str(tiny_run), "--format", "tflite", "--quantize", "int8", "--out",
                 str(tmp_path / "m.tflite")]) == 2
    assert "use --format onnx" in capsys.readouterr().err
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    assert main(["export", str(tiny_run), "--format", "onnx", "--quantize", "int8", "--out", str(taken)]) == 2
    assert taken.read_bytes() == b"keep me"


def test_int8_engine_quantizes_once_and_predicts(tiny_run: Path, tmp_path: Path, monkeypatch):
    import shutil

    import catsdogs.quantize as quantize_module
    from catsdogs.engines import create_engine

    run = Path(shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("engines")))
    predictor = Predictor(run, engine="int8")
    assert predictor.engine == "int8"
    graphs = list((run / "engines").glob("model-*-int8.onnx"))
    assert len(graphs) == 1 and report_path(graphs[0]).exists()  # measured on test, kept beside
    photos = sorted((Path(json.loads((run / "config.json").read_text())["data"]) / "test").rglob("*.jpg"))
    predictions = list(predictor.predict_paths(photos))
    keras_labels = [p.label for p in Predictor(run, engine="keras").predict_paths(photos)]
    assert len(predictions) == len(photos) and not any(p.error for p in predictions)
    assert np.mean([p.label == k for p, k in zip(predictions, keras_labels)]) >= 0.9

    def requantized(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize_module, "quantize_int8", requantized)
    assert create_engine(run, predictor.model, "int8").name == "int8"  # the kept graph is reused
    assert create_engine(run, predictor.model, "auto").name != "int8"  # auto: verified float32 engines only
