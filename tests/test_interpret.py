"""`Interpretation` and `Run.interpret()`: figures and the most confused classes, for 2 classes and more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import catsdogs
from catsdogs.errors import UsageError
from catsdogs.interpret import Interpretation


def test_most_confused_counts_the_off_diagonal_cells():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.eye(3)[[0, 1, 1, 1, 0, 0, 2]] * 0.8 + 0.2 / 3
    interp = Interpretation(y, p, ["a", "b", "c"])
    assert interp.most_confused() == [("c", "a", 2), ("a", "b", 1)]
    assert interp.most_confused(min_count=2) == [("c", "a", 2)]
    for figure in (interp.confusion_matrix(), interp.roc(), interp.reliability(), interp.probability_histogram()):
        assert isinstance(figure, Figure)
    assert interp.metrics()["accuracy"] == pytest.approx(4 / 7)
    with pytest.raises(UsageError, match="no image paths"):
        interp.most_wrong()


def test_two_classes_use_the_threshold():
    interp = Interpretation([0, 1, 1], [0.2, 0.6, 0.7], ["cat", "dog"], threshold=0.65)
    assert interp.predicted.tolist() == [0, 0, 1]
    assert interp.most_confused() == [("dog", "cat", 1)]


def test_run_interpret_shows_curves_and_mistakes(run_copy: Path):
    interp = catsdogs.Run(run_copy).interpret("test")
    assert len(interp.y_true) == 12 and interp.classes == ["cat", "dog"]
    assert isinstance(interp.curves(), Figure) and isinstance(interp.most_wrong(4), Figure)
    assert interp.metrics()["accuracy"] == pytest.approx(catsdogs.Run(run_copy).evaluate("test", explain=False)
                                                         ["accuracy"])
