"""Experiment tracking for `train(log=...)`: TensorBoard (RUN/logs/) or MLflow (its environment's tracking URI).

- tensorboard: Keras' TensorBoard callback (scalars per epoch: loss, accuracy and their validation values);
  after training, the curves, the validation confusion matrix and a few misclassified validation photos as
  images in the same folder (`tensorboard --logdir RUN/logs`).
- mlflow: one MLflow run per training: the options as params, every epoch's metrics (`mlflow_epoch_logger`),
  config/history/curves/calibration and model.keras as artifacts, the test metrics when the run is evaluated
  (`log_evaluation`, through the MLflow run id kept in RUN/config.json). MLflow reads its tracking URI and
  experiment from its own variables (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME); it is the optional
  `catsdogs[mlflow]` extra.
No Keras or MLflow import at module level.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import time
from pathlib import Path

import numpy as np

from catsdogs.options import check_log

LOGS_DIR = "logs"
MLFLOW_RUN_ID = "mlflow_run_id"  # the key in RUN/config.json
MISCLASSIFIED_SHOWN = 8
ARTIFACTS = ("config.json", "classes.json", "history.csv", "curves.png", "calibration.json", "model.keras")
logger = logging.getLogger(__name__)


class Tracker:
    """One training run's tracking: `start` before fitting, `callbacks` for each fit, `finish` after training
    (or `fail` when it stops with an error). With log=None every method does nothing."""

    def __init__(self, log: str | None, run: Path, config: dict) -> None:
        self.log, self.run, self.config = check_log(log), Path(run), config
        self.run_id: str | None = None

    def start(self) -> dict:
        """Open the MLflow run and record the options as its params; returns what RUN/config.json adds."""
        if self.log != "mlflow":
            return {}
        import mlflow

        client = mlflow.MlflowClient()
        experiment = _experiment_id(mlflow)
        created = client.create_run(experiment, run_name=self.run.name, tags={"catsdogs.run": str(self.run.resolve())})
        self.run_id = created.info.run_id
        params = {key: _param(value) for key, value in self.config.items()
                  if key not in ("versions", "classes", "status") and value is not None}
        params["classes"] = ",".join(self.config.get("classes", []))[:500]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            chunk = list(params.items())[start:start + 100]
            client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in chunk])
        logger.info("MLflow run %s (tracking URI %s)", self.run_id, mlflow.get_tracking_uri())
        return {MLFLOW_RUN_ID: self.run_id}

    def callbacks(self) -> list:
        """The Keras callbacks of this tracking (for every `model.fit` of the run)."""
        if self.log == "tensorboard":
            import keras

            return [keras.callbacks.TensorBoard(log_dir=str(self.run / LOGS_DIR), write_graph=False)]
        if self.log == "mlflow":
            return [mlflow_epoch_logger(self.run_id)]
        return []

    def finish(self, data: Path) -> None:
        """After training: the validation pictures (tensorboard) or the artifacts (mlflow), then close."""
        if self.log == "tensorboard":
            write_tensorboard_images(self.run, data)
        elif self.log == "mlflow":
            import mlflow

            client = mlflow.MlflowClient()
            for name in ARTIFACTS:
                if (self.run / name).exists():
                    client.log_artifact(self.run_id, str(self.run / name))
            client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        if self.log == "mlflow" and self.run_id:
            import mlflow

            mlflow.MlflowClient().set_terminated(self.run_id, "FAILED")


def _experiment_id(mlflow) -> str:
    """The experiment MLflow's environment names (MLFLOW_EXPERIMENT_ID or _NAME, created when new), else its default."""
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        found = mlflow.MlflowClient().get_experiment_by_name(name)
        return found.experiment_id if found else mlflow.MlflowClient().create_experiment(name)
    return "0"


def _param(value) -> str:
    return str(value)[:500]  # MLflow's limit on a param's value


def mlflow_epoch_logger(run_id: str):
    """A Keras callback that logs each epoch's numbers (loss, accuracy, val_*, seconds) to MLflow run `run_id`."""
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs=None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) and np.isfinite(float(v))}
            mlflow.MlflowClient().log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, _now_ms(), epoch)
                                                             for k, v in metrics.items()])

    return EpochLogger()


def _now_ms() -> int:
    return int(time.time() * 1000)


def write_tensorboard_images(run: Path, data: Path) -> None:
    """The curves, the validation confusion matrix and the worst misclassified validation photos, as images in
    RUN/logs/validation (TensorBoard's Images tab)."""
    import tensorflow as tf
    from PIL import Image

    from catsdogs.dataset import load_split
    from catsdogs.plots import confusion_matrix_figure, curves_figure, figure_png, most_wrong
    from catsdogs.predict import Predictor
    from catsdogs.run_files import read_history_csv

    predictor = Predictor(run)
    arrays = load_split(data, "validation", predictor.image_size)
    labels, paths, images = arrays.labels, arrays.paths, arrays.images
    probabilities = predictor.probabilities(images)
    pictures = {"confusion_matrix": confusion_matrix_figure(labels, probabilities, predictor.classes,
                                                            predictor.threshold),
                "curves": curves_figure(read_history_csv(run / "history.csv"), run.name)}
    wrong = most_wrong([str(p) for p in paths], labels, probabilities, n=MISCLASSIFIED_SHOWN,
                       threshold=predictor.threshold)
    index = {str(p): i for i, p in enumerate(paths)}
    writer = tf.summary.create_file_writer(str(run / LOGS_DIR / "validation"))
    with writer.as_default():
        for name, figure in pictures.items():
            png = np.asarray(Image.open(io.BytesIO(figure_png(figure))).convert("RGB"))
            tf.summary.image(name, png[None], step=0)
        if wrong:
            shown = np.stack([images[index[record["path"]]] for record in wrong]).astype(np.uint8)
            names = ", ".join(f"{Path(r['path']).name}: {predictor.classes[r['label']]} seen as "
                              f"{predictor.classes[r['predicted']]}" for r in wrong)
            tf.summary.image("misclassified", shown, step=0, max_outputs=len(wrong), description=names)
    writer.close()


def log_evaluation(run: Path, config: dict, metrics: dict) -> None:
    """A split's metrics (test_accuracy, ...) in the run's MLflow run, when it was trained with log='mlflow'."""
    run_id = config.get(MLFLOW_RUN_ID)
    if not run_id or config.get("log") != "mlflow" or importlib.util.find_spec("mlflow") is None:
        return
    import mlflow

    split = metrics.get("split", "test")
    numbers = {f"{split}_{k}": float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)}
    client = mlflow.MlflowClient()
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, _now_ms(), 0) for k, v in numbers.items()])
    if (run / "metrics.json").exists():
        client.log_artifact(run_id, str(run / "metrics.json"))
