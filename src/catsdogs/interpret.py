"""What a trained classifier gets right and wrong, as figures: fastai's `ClassificationInterpretation` for
catsdogs. Every method returns a matplotlib Figure (shown inline in Jupyter); no Keras here.

    interp = run.interpret()            # or Interpretation(labels, probabilities, classes, paths, history)
    interp.confusion_matrix(); interp.most_wrong(9); interp.most_confused()
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from catsdogs.decision import class_probabilities, decide
from catsdogs.errors import UsageError
from catsdogs.metrics import check_multiclass_inputs, compute_metrics, is_multiclass, positive_probability
from catsdogs.plots import (
    confusion_matrix_figure,
    curves_figure,
    gallery_figure,
    most_wrong,
    probability_histogram_figure,
    reliability_figure,
    roc_figure,
)


class Interpretation:
    """A classifier's results on one split: true labels, n x N class probabilities, class names, and
    optionally the image paths (for galleries) and the training history (for curves)."""

    def __init__(self, y_true, probabilities, classes: Sequence[str], *, paths: Sequence[str] | None = None,
                 history: Sequence[dict] | None = None, threshold: float = 0.5) -> None:
        self.classes = [str(c) for c in classes]
        self.probabilities = class_probabilities(np.asarray(probabilities, dtype=np.float64))
        self.y_true = np.asarray(y_true, dtype=np.int64)
        if is_multiclass(self.probabilities):
            check_multiclass_inputs(self.y_true, self.probabilities)
        if self.probabilities.shape[1] != len(self.classes):
            raise UsageError(f"probabilities have {self.probabilities.shape[1]} columns for {len(self.classes)} "
                             "classes", "probabilities")
        if paths is not None and len(paths) != len(self.y_true):
            raise UsageError(f"paths and y_true have inconsistent numbers of samples: [{len(paths)}, "
                             f"{len(self.y_true)}]", "paths")
        self.paths = list(paths) if paths is not None else None
        self.history = list(history or [])
        self.threshold = threshold

    @property
    def _scores(self):
        """What the figure functions take: p(classes[1]) for two classes, the probabilities for more."""
        return self.probabilities if is_multiclass(self.probabilities) else positive_probability(self.probabilities)

    @property
    def predicted(self) -> np.ndarray:
        """The predicted class index of every image."""
        return decide(self.probabilities, self.threshold)

    def metrics(self) -> dict:
        """Every metric of `catsdogs evaluate`, as a dict."""
        return compute_metrics(self.y_true, self._scores, self.classes, threshold=self.threshold)

    def most_confused(self, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(true class, predicted class, count) of the off-diagonal cells, most frequent first."""
        matrix = np.zeros((len(self.classes),) * 2, dtype=np.int64)
        np.add.at(matrix, (self.y_true, self.predicted), 1)
        cells = [(self.classes[i], self.classes[j], int(matrix[i, j])) for i in range(len(self.classes))
                 for j in range(len(self.classes)) if i != j and matrix[i, j] >= min_count]
        return sorted(cells, key=lambda cell: -cell[2])

    def confusion_matrix(self) -> Figure:
        return confusion_matrix_figure(self.y_true, self._scores, self.classes, self.threshold)

    def roc(self) -> Figure:
        return roc_figure(self.y_true, self._scores, self.classes, self.threshold)

    def reliability(self) -> Figure:
        return reliability_figure(self.y_true, self._scores, self.classes, self.threshold)

    def probability_histogram(self) -> Figure:
        return probability_histogram_figure(self.y_true, self._scores, self.classes, self.threshold)

    def curves(self) -> Figure:
        """Training and validation accuracy and loss by epoch."""
        if not self.history:
            raise UsageError("no training history to plot (pass history=, or use Run.interpret())", "history")
        return curves_figure(self.history)

    def most_wrong(self, n: int = 9) -> Figure:
        """Thumbnails of the `n` mistakes that gave the true class the lowest probability."""
        if self.paths is None:
            raise UsageError("no image paths to show (pass paths=, or use Run.interpret())", "paths")
        records = most_wrong(self.paths, self.y_true, self._scores, n=n, threshold=self.threshold)
        return gallery_figure(records, self.classes, cols=min(3, max(len(records), 1)))
