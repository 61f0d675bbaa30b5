"""The `Run` object: a RUN folder (see `run_files`) with the model, evaluation, prediction and interpretation."""

from __future__ import annotations

import os
from pathlib import Path

from catsdogs.errors import UsageError
from catsdogs.run_files import (
    CLASSES,
    HISTORY,
    METRICS,
    best_row,
    load_run_model,
    read_config,
    read_history_csv,
    read_json,
    read_threshold,
    run_data,
)


class Run:
    """A RUN folder as an object, like fastai's `Learner`: `Run("runs/x")` opens one; `train` and `fit` return
    one. The model is loaded once, on first use. It is also a path (`run / "config.json"`, `Path(run)`).

        run = catsdogs.Run("runs/baseline")
        run.metrics["accuracy"]; run.evaluate("test"); run.predict(["cat.jpg"]); run.interpret().confusion_matrix()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        read_config(self.path)  # UsageError when PATH is not a run
        self._model = None
        self._predictor = None

    # ---- a path ----------------------------------------------------------------------------------
    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (Run, Path)) and Path(self).resolve() == Path(other).resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __repr__(self) -> str:
        accuracy = (self.metrics or {}).get("accuracy")
        scored = f", {self.metrics.get('split', 'test')} accuracy {accuracy:.4f}" if accuracy is not None else ""
        return f"Run({str(self.path)!r}: {self.model_name}, {len(self.classes)} classes, {self.status}{scored})"

    def _repr_html_(self) -> str:
        import html

        rows = [("model", self.recipe), ("classes", ", ".join(self.classes)), ("status", self.status),
                ("epochs", self.epochs_text)]
        rows += [(key, f"{self.metrics[key]:.4f}") for key in ("accuracy", "balanced_accuracy", "log_loss")
                 if self.metrics and isinstance(self.metrics.get(key), float)]
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return f"<table><caption>{html.escape(str(self.path))}</caption>{cells}</table>"

    # ---- what the folder holds (read fresh each time: training or evaluation may have changed it) -------
    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def config(self) -> dict:
        return read_config(self.path)

    @property
    def classes(self) -> list[str]:
        path = self.path / CLASSES
        return [str(c) for c in read_json(path)] if path.exists() else list(self.config.get("classes", []))

    @property
    def history(self) -> list[dict]:
        """history.csv as a list of dicts, one per epoch (epoch 0-based)."""
        return read_history_csv(self.path / HISTORY)

    @property
    def metrics(self) -> dict | None:
        """metrics.json (the last `evaluate`), or None before any."""
        path = self.path / METRICS
        return read_json(path) if path.exists() else None

    @property
    def threshold(self) -> float | None:
        """The threshold tuned on validation (two classes), else the one the metrics were computed at."""
        tuned = read_threshold(self.path)
        return tuned if tuned is not None else (self.metrics or {}).get("threshold")

    @property
    def status(self) -> str:
        return str(self.config.get("status", "unknown"))

    @property
    def model_name(self) -> str:
        """The registry name of the model this run trained (`baseline`, `features`, ...)."""
        return str(self.config.get("model") or "")

    @property
    def recipe(self) -> str:
        """The model's name, with its learning-rate schedule when not the model's own."""
        schedule = self.config.get("schedule", "constant")
        return self.model_name if schedule == "constant" else f"{self.model_name} ({schedule})"

    @property
    def final_train_acc(self) -> float | None:
        history = self.history
        return history[-1].get("accuracy") if history else None

    @property
    def saved_epoch(self) -> dict | None:
        """The history row of the epoch saved as model.keras: the best on the run's checkpoint monitor
        (`monitor`, val_loss by default), not the best validation accuracy."""
        return best_row(self.history, str(self.config.get("monitor") or "val_loss"))

    @property
    def best_val_acc(self) -> float | None:
        """The validation accuracy of the saved model (its epoch's, see `saved_epoch`)."""
        row = self.saved_epoch
        value = row.get("val_accuracy") if row else None
        return value if isinstance(value, float) else None

    @property
    def epochs_text(self) -> str:
        """Epochs trained, with the requested number when training stopped early."""
        requested, trained = self.config.get("epochs"), len(self.history)
        if not trained:
            return "" if requested is None else str(requested)
        return f"{trained} of {requested}" if requested not in (None, trained) else str(trained)

    @property
    def test_metrics(self) -> dict | None:
        """metrics.json when it was computed on the test split."""
        metrics = self.metrics
        return metrics if metrics and metrics.get("split", "test") == "test" else None

    # ---- the model -------------------------------------------------------------------------------
    @property
    def model(self):
        """The trained Keras model (RUN/model.keras), loaded once."""
        if self._model is None:
            self._model = load_run_model(self.path)
        return self._model

    def predictor(self, *, threshold: float | None = None, tta: bool = False):
        """A `Predictor` over this run's model (shared while the settings stay the same)."""
        from catsdogs.predict import Predictor

        cached = self._predictor
        if cached is None or cached.tta != tta or (threshold is not None and cached.threshold != threshold):
            cached = Predictor(self.path, threshold=threshold, tta=tta, model=self.model)
            if threshold is None and not tta:
                self._predictor = cached
        return cached

    def evaluate(self, split: str = "test", *, data: str | os.PathLike | None = None, tta: bool = False,
                 cache_dir: str | os.PathLike | None = None, explain: bool = True) -> dict:
        """Metrics on a split of the run's DATA (written to RUN/metrics.json, plots/, explain/); returns them."""
        from catsdogs.evaluation import evaluate

        return evaluate(self.path, data, split, tta=tta, cache_dir=cache_dir, explain=explain,
                        predictor=self.predictor(tta=tta))

    def calibrate(self, accept: float = 0.98, other: str | os.PathLike | None = None, **options):
        """Fit the calibration and the unknown-photo threshold on validation (catsdogs.trust.calibrate);
        returns its CalibrationSummary. The next predictions use them."""
        from catsdogs.trust import calibrate

        summary = calibrate(self.path, accept, other, **options)
        self._predictor = None
        return summary

    def predict(self, items, *, tta: bool = False) -> list:
        """Classify image files and folders (a path or a list of them), or an array of RGB images
        (n x H x W x 3, or one H x W x 3): a list of `Prediction` (path, label, probabilities, error)."""
        import numpy as np

        predictor = self.predictor(tta=tta)
        if isinstance(items, np.ndarray):
            return predictor.predict_images(items)
        paths = [items] if isinstance(items, (str, os.PathLike)) else list(items)
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)}", "items")
        return list(predictor.predict_paths(paths))

    def explain(self, image, *, target: str | int | None = None, layer: str | None = None):
        """The Grad-CAM overlay (H x W x 3 uint8) of an image path or array for a class (name or index;
        default: the predicted one)."""
        import numpy as np

        from catsdogs.explain import gradcam, overlay
        from catsdogs.images import load_image, resize

        predictor = self.predictor()
        pixels = load_image(image, predictor.image_size) if isinstance(image, (str, os.PathLike)) \
            else resize(np.asarray(image, np.uint8), predictor.image_size)
        if isinstance(target, str):
            if target not in predictor.classes:
                raise UsageError(f"target {target!r} is not a class of the run ({', '.join(predictor.classes)})",
                                 "target")
            target = predictor.classes.index(target)
        if target is None:
            target = int(predictor.predicted_index(predictor.probabilities(pixels[None]))[0])
        return overlay(pixels, gradcam(self.model, pixels, layer=layer, target=target).heatmap)

    def lr_find(self, *, data: str | os.PathLike | None = None, split: str = "train",
                cache_dir: str | os.PathLike | None = None, **options):
        """The learning-rate range test (fastai's `lr_find`) on this run's model and the photos of a split of its
        DATA: an `LrFind` (`.suggestion`, `.plot()`); writes RUN/plots/lr_find.png. The model's weights are left
        as they were. `options`: start, end, steps, batch_size, diverge (catsdogs.trainers.lr_find)."""
        from catsdogs.trainers.lr_find import run_lr_find

        return run_lr_find(self.path, data=data, split=split, cache_dir=cache_dir, **options)

    def interpret(self, split: str = "test", *, data: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None):
        """An `Interpretation` of the run on a split: methods that return matplotlib figures (curves, confusion
        matrix, most wrong, ROC, reliability), shown inline in Jupyter."""
        from catsdogs.evaluation import split_probabilities
        from catsdogs.interpret import Interpretation

        predictor = self.predictor()
        data = run_data(self.path, data)
        labels, probabilities, paths, _ = split_probabilities(predictor, data, split, cache_dir)
        return Interpretation(labels, probabilities, predictor.classes, paths=[str(p) for p in paths],
                              history=self.history, threshold=predictor.threshold)
