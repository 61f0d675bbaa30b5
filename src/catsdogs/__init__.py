"""catsdogs: a folder of two kinds of photos -> a trained, evaluated, explainable classifier.

The notebook API, step by step (each name is imported on first use, so `import catsdogs` stays fast)::

    from catsdogs import prepare, train, TrainOptions, evaluate, Predictor, save_explanation
    prepare("train.zip", "data")
    run = train(TrainOptions(data="data", model="baseline", out="runs/baseline", epochs=30))
    evaluate(run)                                  # RUN/metrics.json, plots, gallery, Grad-CAM examples
    Predictor(run).predict_paths(["my_cat.jpg"])   # labels and probabilities
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "prepare": "catsdogs.prepare",
    "load_split": "catsdogs.dataset",
    "to_dataset": "catsdogs.dataset",
    "create_model": "catsdogs.models",
    "MODELS": "catsdogs.models",
    "TrainOptions": "catsdogs.train",
    "train": "catsdogs.train",
    "evaluate": "catsdogs.evaluate",
    "tune_run_threshold": "catsdogs.evaluate",
    "Predictor": "catsdogs.predict",
    "gradcam": "catsdogs.explain",
    "save_explanation": "catsdogs.explain",
    "write_report": "catsdogs.report",
    "reproduce": "catsdogs.reproduce",
    "export_model": "catsdogs.export",
    "create_app": "catsdogs.serve",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'catsdogs' has no attribute {name!r}")
