""""How many more photos?": the logistic head refitted on 25, 50, 75 and 100% of the training photos (stratified),
scored on validation, overall and per class. A curve still rising at 100% says more photos should help; the
classes whose recall is lowest and still rising are the ones to photograph first.

Writes RUN/learning_curve.json and RUN/learning_curve.png; `advice(curve)` is the report's line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from catsdogs.files import write_text_atomic

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RISING = 0.01  # a gain of at least one point from 75% to 100% of the photos: still rising


def learning_curve(train: tuple, validation: tuple, classes: list[str], *, c: float, balanced: bool = False,
                   seed: int = 0, fractions=FRACTIONS) -> dict:
    """{fractions, train_photos, val_accuracy, recall: {class: [...]}} of the logistic head at each fraction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score

    (x, y), (vx, vy) = train, validation
    rng = np.random.default_rng(seed)
    order = {label: rng.permutation(np.flatnonzero(y == label)) for label in np.unique(y)}
    curve: dict = {"fractions": list(fractions), "train_photos": [], "val_accuracy": [],
                   "recall": {name: [] for name in classes}}
    for fraction in fractions:
        chosen = np.concatenate([idx[:max(1, round(fraction * len(idx)))] for idx in order.values()])
        mean, std = x[chosen].mean(axis=0), x[chosen].std(axis=0) + 1e-6
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced" if balanced else None, random_state=seed)
        model.fit((x[chosen] - mean) / std, y[chosen])
        predicted = model.predict((vx - mean) / std)
        recalls = recall_score(vy, predicted, labels=list(range(len(classes))), average=None, zero_division=0)
        curve["train_photos"].append(int(len(chosen)))
        curve["val_accuracy"].append(round(float(np.mean(predicted == vy)), 4))
        for name, value in zip(classes, recalls):
            curve["recall"][name].append(round(float(value), 4))
    curve["advice"] = advice(curve)
    return curve


def advice(curve: dict) -> str:
    """One line: the weakest classes and whether more photos of them should help."""
    recall = {name: values[-1] for name, values in curve["recall"].items()}
    rising = {name for name, values in curve["recall"].items() if len(values) > 1 and values[-1] - values[-2] >= RISING}
    weakest = sorted(recall, key=recall.get)[:2]
    overall = curve["val_accuracy"]
    trend = "still rising" if len(overall) > 1 and overall[-1] - overall[-2] >= RISING else "flat"
    first = f"{weakest[0]}: {recall[weakest[0]]:.3f} recall"
    helped = [name for name in weakest if name in rising]
    if helped:
        return (f"{first}; the curve is {trend}: more photos of {' and '.join(helped)} should help most")
    return f"{first}; the curve is {trend}: more photos of the same kind should help little"


def write_learning_curve(run: Path, train: tuple, validation: tuple, classes: list[str], **options) -> dict:
    """Compute the curve, write RUN/learning_curve.json and .png; returns the curve."""
    from catsdogs.plots import save_learning_curve

    curve = learning_curve(train, validation, classes, **options)
    write_text_atomic(Path(run) / "learning_curve.json", json.dumps(curve, indent=2) + "\n")
    save_learning_curve(curve, Path(run) / "learning_curve.png")
    return {"val_accuracy": curve["val_accuracy"], "advice": curve["advice"]}
