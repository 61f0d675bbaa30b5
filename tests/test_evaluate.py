"""Evaluation answers: which class is 1, file order (no shuffling), threshold tuned on validation only, TTA."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import catsdogs.evaluation as evaluate_module
from catsdogs.dataset import load_split
from catsdogs.evaluation import evaluate, tune_run_threshold
from catsdogs.images import load_image
from catsdogs.metrics import tune_threshold
from catsdogs.predict import Predictor

SIZE = 48


def oracle_model() -> keras.Model:
    """Knows the synthetic classes: p(dog) rises with (right half - left half) brightness."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    sign = np.where(np.arange(SIZE) < SIZE // 2, -1.0, 1.0)
    kernel = np.broadcast_to(sign[None, :, None], (SIZE, SIZE, 3)).reshape(-1, 1) * (8.0 / (SIZE * SIZE * 3))
    model.layers[-1].set_weights([kernel.astype(np.float32), np.zeros(1, np.float32)])
    return model


@pytest.fixture
def oracle_run(tiny_data: Path, tmp_path: Path) -> Path:
    """A RUN whose model is right about every synthetic photo (class 0 = cat bright left, 1 = dog bright right)."""
    run = tmp_path / "oracle"
    run.mkdir()
    oracle_model().save(run / "model.keras")
    (run / "classes.json").write_text(json.dumps(["cat", "dog"]))
    (run / "config.json").write_text(json.dumps({"model": "oracle", "data": str(tiny_data), "status": "complete"}))
    return run


def test_class_one_is_the_second_alphabetical_class(oracle_run: Path, tiny_data: Path):
    metrics = evaluate(oracle_run, tiny_data, "test", explain=False)
    assert metrics["accuracy"] == 1.0 and metrics["roc_auc"] == 1.0
    assert metrics["confusion_matrix"]["labels"] == ["cat", "dog"]
    assert metrics["confusion_matrix"]["matrix"] == [[6, 0], [0, 6]]
    assert metrics["per_class"]["dog"]["support"] == 6


def test_swapped_class_names_are_caught(oracle_run: Path, tiny_data: Path, tmp_path: Path):
    (oracle_run / "classes.json").write_text(json.dumps(["dog", "cat"]))
    with pytest.raises(Exception, match="differ from the run"):
        evaluate(oracle_run, tiny_data, "test", explain=False)


def test_confusion_matrix_matches_per_file_predictions(run_copy: Path, tiny_data: Path):
    metrics = evaluate(run_copy, tiny_data, "test", explain=False)
    predictor = Predictor(run_copy)
    rows = list(csv.DictReader(open(run_copy / "predictions-test.csv")))
    matrix = np.zeros((2, 2), int)
    for row in rows:  # each file classified on its own, then counted
        p1 = float(predictor.probabilities(load_image(row["path"], predictor.image_size)[None])[0, 1])
        assert abs(p1 - float(row["p_dog"])) < 1e-4, "evaluation order must follow the files"
        assert row["true_label"] == Path(row["path"]).parent.name
        matrix[predictor.classes.index(row["true_label"]), int(p1 >= metrics["threshold"])] += 1
    assert metrics["confusion_matrix"]["matrix"] == matrix.tolist()


def test_threshold_is_tuned_on_validation_only(run_copy: Path, tiny_data: Path, monkeypatch):
    loaded: list[str] = []
    real_load_split = evaluate_module.load_split

    def spy(data, split, *args, **kwargs):
        loaded.append(split)
        return real_load_split(data, split, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "load_split", spy)
    threshold = tune_run_threshold(run_copy, tiny_data)
    assert loaded == ["validation"]
    validation = load_split(tiny_data, "validation", SIZE)
    expected = tune_threshold(validation.labels, Predictor(run_copy).probabilities(validation.images)[:, 1])
    assert threshold == pytest.approx(expected)
    saved = json.loads((run_copy / "threshold.json").read_text())
    assert saved["split"] == "validation" and saved["threshold"] == pytest.approx(threshold)
    metrics = evaluate(run_copy, tiny_data, "test", explain=False)
    # the tuned threshold is on the model's raw p; the predictor maps it onto the calibrated p (same photos cross it)
    assert Predictor(run_copy, calibrated=False).threshold == pytest.approx(threshold)
    assert metrics["threshold"] == pytest.approx(Predictor(run_copy).threshold)
    assert metrics["threshold_origin"] == "tuned on validation"
    (run_copy / "threshold.json").unlink()


def test_tta_averages_the_photo_and_its_mirror(oracle_run: Path, tiny_data: Path):
    images = load_split(tiny_data, "test", SIZE).images
    plain = Predictor(oracle_run).probabilities(images)
    mirrored = Predictor(oracle_run).probabilities(images[:, :, ::-1].copy())
    assert np.allclose(Predictor(oracle_run, tta=True).probabilities(images), (plain + mirrored) / 2, atol=1e-6)


def test_evaluate_writes_plots_gallery_and_gradcam(tiny_run: Path, tiny_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    evaluate(run, tiny_data, "test")
    for name in ("confusion_matrix.png", "roc_curve.png", "reliability.png", "probability_histogram.png"):
        assert (run / "plots" / name).read_bytes()[:4] == b"\x89PNG", name
    assert len(list((run / "explain").glob("*.png"))) == 4
