"""Experiment tracking: `train(log="tensorboard")` writes event files TensorBoard reads, `log="mlflow"` records
params, per-epoch metrics and test metrics in a local MLflow store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from catsdogs.errors import UsageError
from catsdogs.training import TrainOptions, train


def events(folder: Path) -> dict[str, list]:
    """Every summary value in the event files under `folder`, by tag (TensorFlow's own event reader)."""
    import tensorflow as tf

    found: dict[str, list] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(value)
    return found


def test_tensorboard_event_files_read_back(tiny_data, tmp_path):
    run = train(TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "run", epochs=2, image_size=48,
                             batch_size=8, log="tensorboard", calibration=False))
    logs = run.path / "logs"
    found = events(logs / "train")
    assert len(found["epoch_loss"]) == 2 and "epoch_accuracy" in found, sorted(found)
    assert len(events(logs / "validation")["epoch_loss"]) == 2
    images = events(logs / "validation")
    assert {"confusion_matrix", "curves"} <= set(images), sorted(images)
    if "misclassified" in images:  # a tiny model may get all 12 right
        assert images["misclassified"][0].metadata.plugin_data.plugin_name == "images"


def test_log_choices_and_missing_mlflow(tiny_data, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="log must be one of"):
        TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "r", log="wandb")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UsageError, match=r"log='mlflow' needs mlflow: pip install 'catsdogs\[mlflow\]'") as caught:
        TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "r", log="mlflow")
    assert caught.value.parameter == "log"


def test_cli_names_the_flag_when_mlflow_is_missing(tiny_data, tmp_path, monkeypatch, capsys):
    from catsdogs.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code = main(["train", "--data", str(tiny_data), "--model", "baseline", "--out", str(tmp_path / "r"), "--log", "mlflow"])
    assert code == 2
    assert "--log mlflow needs mlflow: pip install 'catsdogs[mlflow]'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (pip install 'catsdogs[mlflow]')")
def test_mlflow_records_params_epoch_and_test_metrics(tiny_data, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "catsdogs-test")
    monkeypatch.chdir(tmp_path)  # the default artifact store (./mlruns) stays in tmp_path
    run = train(TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "run", epochs=2, image_size=48,
                             batch_size=8, log="mlflow", calibration=False))
    run.evaluate("test", explain=False)
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["catsdogs-test"])
    assert len(found) == 1
    row = found.iloc[0]
    assert row["params.model"] == "baseline" and row["params.epochs"] == "2" and row["status"] == "FINISHED"
    assert 0 <= row["metrics.val_accuracy"] <= 1 and 0 <= row["metrics.test_accuracy"] <= 1
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(row["run_id"], "loss")) == 2
    artifacts = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"config.json", "history.csv", "model.keras"} <= artifacts
