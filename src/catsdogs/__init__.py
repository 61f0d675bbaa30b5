"""catsdogs: a folder of photos (two kinds or more) -> a trained, evaluated, explainable classifier.

The notebook API (each name is imported on first use, so `import catsdogs` stays fast)::

    import catsdogs
    run = catsdogs.fit("my_photos/", "runs/mine")            # prepare, pick a backbone, evaluate, report
    run = catsdogs.train(data="data", model="baseline", out="runs/baseline", epochs=30, overwrite=True)
    run.evaluate("test")                                     # metrics dict (and RUN/metrics.json, plots)
    run.predict(["my_cat.jpg"])                              # [Prediction(path, label, probabilities, error)]
    run.interpret().confusion_matrix()                       # matplotlib figures, inline in Jupyter
    catsdogs.Run("runs/baseline")                            # open a run folder again
    catsdogs.set_verbosity(1)                                # progress and Keras' epoch lines (default: quiet)
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "fit": "catsdogs.fitting",
    "Run": "catsdogs.runs",
    "list_models": "catsdogs.models",
    "prepare": "catsdogs.preparation",
    "audit": "catsdogs.auditing",
    "load_split": "catsdogs.dataset",
    "to_dataset": "catsdogs.dataset",
    "create_model": "catsdogs.models",
    "MODELS": "catsdogs.models",
    "TrainOptions": "catsdogs.options",
    "train": "catsdogs.training",
    "calibrate": "catsdogs.trust",
    "evaluate": "catsdogs.evaluation",
    "tune_run_threshold": "catsdogs.evaluation",
    "Predictor": "catsdogs.predict",
    "gradcam": "catsdogs.explain",
    "save_explanation": "catsdogs.explain",
    "write_report": "catsdogs.report",
    "reproduce": "catsdogs.study",
    "export_model": "catsdogs.export",
    "create_app": "catsdogs.serve",
    "set_verbosity": "catsdogs.verbosity",
    "get_verbosity": "catsdogs.verbosity",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'catsdogs' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (imported on first use) and the module's own names, for tab completion."""
    return sorted(set(__all__) | set(globals()))
