"""The one decision rule: model outputs -> class probabilities -> the predicted class.

Two classes: the model has one sigmoid unit p = p(classes[1]); the predicted class is classes[1] when
p >= threshold (0.5 unless tuned on validation). More classes: a softmax; the most probable class.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs -> n x N class probabilities: one sigmoid unit p becomes [1 - p, p]; a softmax stays."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    return np.concatenate([1 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs


def decide(probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The predicted class index of each row of n x N class probabilities (a 1-D row is one image)."""
    probabilities = np.atleast_2d(np.asarray(probabilities))
    if probabilities.shape[1] == 2:
        cut = DEFAULT_THRESHOLD if threshold is None else threshold
        return (probabilities[:, 1] >= cut).astype(np.int64)
    return np.argmax(probabilities, axis=1).astype(np.int64)
