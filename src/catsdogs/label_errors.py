"""Likely wrong labels: out-of-fold probabilities of a logistic regression on photo embeddings, ranked by cleanlab.

`out_of_fold_probabilities` gives each photo the probabilities of a model that never saw it (stratified K-fold,
the regularisation chosen by out-of-fold log loss); `label_issues` ranks the photos whose given label those
probabilities doubt: cleanlab's confident issues (and confident disagreements) first, then every other photo
whose most probable class is not its label, most doubted first, so a reviewer reading further sees more.
"""

from __future__ import annotations

import numpy as np

from catsdogs.errors import CatsdogsError, UsageError

C_GRID = (0.001, 0.01, 0.1)  # logistic regression's C, picked by out-of-fold log loss
FOLDS = 5
CONFIDENT = 0.9  # out-of-fold probability of another class at which a label is an issue even if cleanlab passes it


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, *, folds: int = FOLDS,
                              seed: int = 0) -> np.ndarray:
    """(n, num_classes) probabilities of each photo from a logistic regression that never saw it (stratified
    K-fold; K lowered to the smallest class's count, at least 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    k = int(min(folds, present.min())) if len(present) else 2
    if k < 2 or len(present) < 2:
        raise UsageError("label issues need at least 2 photos in each of 2 classes", "data")
    folds_ = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(features, labels))
    best, best_loss = None, np.inf
    for c in C_GRID:  # the regularisation with the lowest out-of-fold log loss: chosen without knowing any error
        probabilities = np.full((len(labels), num_classes), 1e-6, np.float64)
        for train, held in folds_:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            model.fit(features[train], labels[train])
            probabilities[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1)))
        if loss < best_loss:
            best, best_loss = probabilities, loss
    return best


def require_cleanlab():
    """cleanlab's find_label_issues, or a one-line CatsdogsError saying how to install it."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise CatsdogsError("catsdogs audit needs cleanlab (not installed): pip install 'catsdogs[audit]'") from None
    return find_label_issues


def label_issues(probabilities: np.ndarray, labels: np.ndarray) -> list[tuple[int, float, int, bool]]:
    """(index, 1 - p(given label), suggested class, confident) of the likely label errors: cleanlab's (and
    confident disagreements, `confident` True) most certain first, then every other photo whose most probable
    class disagrees with its label (`confident` False), by 1 - p(given label) descending."""
    find_label_issues = require_cleanlab()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence")
    # cleanlab's per-class thresholds are the class's mean self-confidence: on a very clean small collection
    # (every photo ~0.99) a photo given 0.95 for another class passes them; such a confident disagreement is
    # an issue too
    suggested = np.argmax(probabilities, axis=1)
    confident = np.flatnonzero((suggested != labels) & (probabilities.max(axis=1) >= CONFIDENT))
    sure = set(int(i) for i in found) | set(int(i) for i in confident)
    doubted = set(int(i) for i in np.flatnonzero(suggested != labels)) - sure
    ranked = [(i, True) for i in sorted(sure, key=lambda i: (probabilities[i, labels[i]], i))]
    ranked += [(i, False) for i in sorted(doubted, key=lambda i: (probabilities[i, labels[i]], i))]
    return [(i, float(1 - probabilities[i, labels[i]]), int(suggested[i]), flag) for i, flag in ranked]
