"""catsdogs.metrics against hand-computed values and scikit-learn."""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from catsdogs.errors import UsageError
from catsdogs.metrics import (
    calibration_bins,
    compute_metrics,
    expected_calibration_error,
    format_metrics_table,
    tune_threshold,
)

CLASSES = ["cat", "dog"]
# Hand example: at 0.5 the predictions are [0, 1, 0, 1, 1] -> one cat called dog, one dog called cat.
Y = np.array([0, 0, 1, 1, 1])
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_metrics_match_hand_computed_values():
    m = compute_metrics(Y, P, CLASSES)
    assert m["n"] == 5 and m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["cat"] == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2})
    assert m["per_class"]["dog"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["macro"] == pytest.approx({"precision": 7 / 12, "recall": 7 / 12, "f1": 7 / 12})
    assert m["balanced_accuracy"] == pytest.approx(7 / 12)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 (dog, cat) pairs are ranked right
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.04 + 0.01) / 5)
    expected_log_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.8) + math.log(0.9)) / 5
    assert m["log_loss"] == pytest.approx(expected_log_loss)
    assert m["confusion_matrix"] == {"labels": CLASSES, "matrix": [[1, 1], [1, 2]]}
    assert json.loads(json.dumps(m)) == m


def test_confusion_matrix_rows_are_true_classes_and_columns_predicted():
    # Three cats (two called "dog"), one dog (found): swapping rows/columns or names changes everything.
    m = compute_metrics([0, 0, 0, 1], [0.9, 0.8, 0.1, 0.7], ["apple", "banana"])
    assert m["confusion_matrix"] == {"labels": ["apple", "banana"], "matrix": [[1, 2], [0, 1]]}
    assert m["per_class"]["apple"]["support"] == 3 and m["per_class"]["banana"]["support"] == 1
    assert m["per_class"]["apple"]["recall"] == pytest.approx(1 / 3)
    assert m["per_class"]["banana"]["recall"] == 1.0
    assert m["per_class"]["banana"]["precision"] == pytest.approx(1 / 3)
    assert m["positive_class"] == "banana"


def test_threshold_changes_predictions():
    assert compute_metrics(Y, P, CLASSES, threshold=0.85)["confusion_matrix"]["matrix"] == [[2, 0], [2, 1]]
    assert compute_metrics(Y, P, CLASSES, threshold=0.6)["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]  # p >= t


def test_ece_hand_computed_and_matches_bins():
    y = [0, 1, 1, 1, 1]
    p = [0.12, 0.18, 0.92, 0.96, 0.94]  # bin [0.1, 0.2): mean 0.15, 1/2 dogs; bin [0.9, 1]: mean 0.94, all dogs
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.35 + 3 * 0.06) / 5)
    assert compute_metrics(y, p, CLASSES)["ece"] == pytest.approx(0.176)
    bins = calibration_bins(y, p)
    assert bins["counts"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 3]
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0


def test_single_class_gives_null_auc_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics([0, 0, 0], [0.1, 0.7, 0.2], CLASSES)
    assert m["roc_auc"] is None
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"]["matrix"] == [[2, 1], [0, 0]]
    assert "n/a" in format_metrics_table(m)
    json.dumps(m)


def test_accepts_column_vector_probabilities():
    assert compute_metrics(Y, P.reshape(-1, 1), CLASSES) == compute_metrics(Y, P, CLASSES)


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "message"),
    [
        ([0, 1, 1], [0.2, 0.9], {}, r"inconsistent numbers of samples: \[3, 2\]"),
        ([], [], {}, "empty"),
        ([0, 1], [0.2, 1.3], {}, r"probabilities in \[0, 1\].*1\.3"),
        ([0, 1], [-0.1, 0.3], {}, r"probabilities in \[0, 1\].*-0\.1"),
        ([0, 1], [0.2, float("nan")], {}, "NaN"),
        ([0, 2], [0.2, 0.3], {}, "only 0 and 1.*2"),
        (["cat", "dog"], [0.2, 0.3], {}, "only 0 and 1"),
        ([0, 1], [[[0.2]], [[0.3]]], {}, r"p1 must be 1-D.*\(2, 1, 1\)"),
        ([0, 1], [0.2, 0.3], {"classes": ["a", "b", "c"]}, "2 distinct names"),
        ([0, 1], [0.2, 0.3], {"classes": ["a", "a"]}, "2 distinct names"),
        ([0, 1], [0.2, 0.3], {"threshold": 1.5}, r"threshold must be in \[0, 1\]"),
    ],
)
def test_bad_inputs_raise_precise_usage_errors(y, p, kwargs, message):
    with pytest.raises(UsageError, match=message):
        compute_metrics(y, p, kwargs.pop("classes", CLASSES), **kwargs)


def test_tune_threshold_on_hand_example():
    assert tune_threshold(Y, P) == pytest.approx(0.7)  # ties with 0.25 (4/5 right), 0.7 is nearer 0.5
    assert tune_threshold(Y, P, "f1") == pytest.approx(0.25)
    assert tune_threshold(Y, P, "balanced_accuracy") == pytest.approx(0.7)


def test_tuned_threshold_changes_predictions():
    y, p = [0, 0, 1, 1], [0.55, 0.6, 0.7, 0.8]  # a model biased towards "dog"
    t = tune_threshold(y, p)
    assert 0.6 < t <= 0.7
    assert compute_metrics(y, p, CLASSES)["accuracy"] == 0.5
    assert compute_metrics(y, p, CLASSES, t)["accuracy"] == 1.0


def test_ties_go_to_the_threshold_closest_to_half():
    assert tune_threshold([0, 1], [0.2, 0.8]) == 0.5  # 0.5 already separates perfectly
    # (0.1, 0.2] and (0.7, 0.8] both give 3/4 right: their middles are 0.15 and 0.75
    assert tune_threshold([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.8]) == pytest.approx(0.75)
    # reversed scores: "all cat" (t in (0.8, 1], middle 0.9) ties "all dog" (t in [0, 0.1], middle 0.05)
    assert tune_threshold([1, 1, 0, 0], [0.1, 0.2, 0.7, 0.8]) == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("metric", "score"),
    [("accuracy", accuracy_score), ("f1", f1_score), ("balanced_accuracy", balanced_accuracy_score)],
)
def test_tuned_threshold_is_optimal_on_the_data_it_is_given(metric, score):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 60), 0, 1), 2)  # rounded: repeated scores
    t = tune_threshold(y, p, metric)
    every_split = np.append(np.unique(p), 1.01)  # p >= each score, and "nothing positive"
    best = max(score(y, (p >= g).astype(int)) for g in every_split)
    assert score(y, (p >= t).astype(int)) == pytest.approx(best)
    # only the data passed in matters: other data gives another threshold, the same data the same one
    assert tune_threshold(y, p, metric) == t
    assert tune_threshold(y, np.clip(p + 0.2, 0, 1), metric) != t


def test_tune_threshold_rejects_bad_metric_and_single_class():
    with pytest.raises(UsageError, match="unknown metric 'auc'.*accuracy, f1, balanced_accuracy"):
        tune_threshold(Y, P, "auc")
    with pytest.raises(UsageError, match="both classes"):
        tune_threshold([1, 1], [0.3, 0.9])


def test_format_metrics_table():
    table = format_metrics_table(compute_metrics([0, 0, 0, 1], [0.9, 0.8, 0.1, 0.7], CLASSES))
    assert "accuracy 0.5000" in table and "n=4" in table
    lines = table.splitlines()
    header = lines.index("confusion matrix (rows: true, columns: predicted)")
    assert lines[header + 1].split() == ["cat", "dog"]
    assert lines[header + 2].split() == ["cat", "1", "2"]
    assert lines[header + 3].split() == ["dog", "0", "1"]
    assert any(line.split()[:2] == ["macro", "avg"] for line in lines)


@pytest.mark.parametrize("n_classes", [3, 5])
def test_multiclass_metrics_match_scikit_learn(n_classes):
    from sklearn import metrics as skm

    rng = np.random.default_rng(n_classes)
    y = np.tile(np.arange(n_classes), 12)
    logits = rng.normal(size=(len(y), n_classes))
    logits[np.arange(len(y)), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = [f"c{i}" for i in range(n_classes)]
    m = compute_metrics(y, p, names)
    pred = p.argmax(axis=1)
    assert m["threshold"] is None and m["classes"] == names
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted"]["precision"] == pytest.approx(skm.precision_score(y, pred, average="weighted"))
    assert m["per_class"]["c1"]["recall"] == pytest.approx(skm.recall_score(y, pred, average=None)[1])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))
    assert m["roc_auc_per_class"]["c0"] == pytest.approx(skm.roc_auc_score(y == 0, p[:, 0]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["top_k_accuracy"]["2"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=2))
    assert ("5" in m["top_k_accuracy"]) is (n_classes > 5)
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert m["brier"] == pytest.approx(np.mean(np.sum((p - np.eye(n_classes)[y]) ** 2, axis=1)))
    table = format_metrics_table(m)
    assert "weighted avg" in table and "threshold" not in table


def test_multiclass_inputs_are_checked():
    p = np.full((3, 3), 1 / 3)
    with pytest.raises(UsageError, match="must sum to 1"):
        compute_metrics([0, 1, 2], p * 0.5, ["a", "b", "c"])
    with pytest.raises(UsageError, match="class indices from 0 to 2"):
        compute_metrics([0, 1, 3], p, ["a", "b", "c"])
    with pytest.raises(UsageError, match="3 distinct names"):
        compute_metrics([0, 1, 2], p, ["a", "b"])
