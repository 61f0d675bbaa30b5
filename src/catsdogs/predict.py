"""Classify images with a trained RUN: arrays, files and folders, in batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.images import ImageError, load_image
from catsdogs.runs import load_run_model, read_run_classes, read_threshold
from catsdogs.sources import iter_image_files


@dataclass
class Prediction:
    """One image's result: the label and each class's probability, or the reason it failed."""

    path: str
    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str = ""


def compiled_forward(model):
    """A function uint8/float batch -> p1 array that runs the model as one compiled graph (TF backend),
    much faster than `model.predict` for the small batches of interactive use."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return lambda batch: model.predict(np.asarray(batch, np.float32), verbose=0)[:, 0]
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
    graph = tf.function(lambda batch: model(batch, training=False), input_signature=signature)
    return lambda batch: graph(tf.constant(np.asarray(batch, np.float32))).numpy()[:, 0]


class Predictor:
    """A loaded RUN, ready to classify raw uint8 RGB images (resized to the model's input size)."""

    def __init__(self, run: Path, *, threshold: float | None = None, tta: bool = False, batch_size: int = 64):
        self.run = Path(run)
        self.model = load_run_model(self.run)
        self.classes = read_run_classes(self.run)
        self.tuned_threshold = read_threshold(self.run)
        self.threshold = threshold if threshold is not None else (self.tuned_threshold or 0.5)
        self.image_size = int(self.model.input_shape[1])
        self.tta, self.batch_size = tta, batch_size
        self.forward = compiled_forward(self.model)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """p(classes[1]) for a batch of uint8 images (N x S x S x 3); with TTA, averaged with the mirror."""
        if len(images) == 0:
            return np.zeros(0, dtype=np.float32)
        chunks = range(0, len(images), self.batch_size)
        p1 = np.concatenate([self.forward(images[i:i + self.batch_size]) for i in chunks])
        if self.tta:
            mirrored = np.concatenate([self.forward(images[i:i + self.batch_size, :, ::-1]) for i in chunks])
            p1 = (p1 + mirrored) / 2
        return p1.astype(np.float32)

    def label_of(self, p1: float) -> str:
        return self.classes[int(p1 >= self.threshold)]

    def as_prediction(self, path: str, p1: float) -> Prediction:
        probabilities = {self.classes[0]: float(1 - p1), self.classes[1]: float(p1)}
        return Prediction(path, self.label_of(p1), probabilities)

    def predict_paths(self, paths: Iterable[Path]) -> Iterator[Prediction]:
        """Classify files (folders expanded recursively) in order; unreadable files get an `error` row."""
        pending: list[tuple[str, np.ndarray | str]] = []  # (path, image or error reason)
        for path in iter_image_files([Path(p) for p in paths]):
            try:
                pending.append((str(path), load_image(path, self.image_size)))
            except ImageError as error:
                pending.append((str(path), str(error)))
            if len(pending) == self.batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, np.ndarray | str]]) -> Iterator[Prediction]:
        images = [item for _, item in pending if not isinstance(item, str)]
        p1 = iter(self.probabilities(np.stack(images)) if images else [])
        for path, item in pending:
            yield Prediction(path, "error", error=item) if isinstance(item, str) else self.as_prediction(path, float(next(p1)))
