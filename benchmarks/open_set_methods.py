"""Compare novelty scores on the embeddings that benchmarks/open_set.py wrote (no image decoded).

    python benchmarks/open_set_methods.py WORK/pets-embeddings.npz [--run RUN] [--half a|b]

For each score: AUROC (validation vs the other subject's photos of the chosen half), the share of those photos
above the split-conformal 0.98 threshold on validation, the share of held-out own photos above it and the
accuracy on the accepted ones. Choose on half A (the default), report on half B.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

ACCEPT = 0.98


def _unit(e: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    e = np.asarray(e, np.float64) - (0 if centre is None else centre)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def knn(train, k: int, centred: bool):
    centre = train.mean(axis=0) if centred else None
    reference = _unit(train, centre)
    return lambda e: 1 - np.sort(_unit(e, centre) @ reference.T, axis=1)[:, -k]


def mahalanobis(train, labels, relative: bool, normalise: bool = False):
    train = _unit(train) if normalise else np.asarray(train, np.float64)
    classes = np.unique(labels)
    means = np.stack([train[labels == c].mean(axis=0) for c in classes])
    precision = LedoitWolf(assume_centered=True).fit(train - means[np.searchsorted(classes, labels)]).precision_
    mean0 = train.mean(axis=0)
    precision0 = LedoitWolf(assume_centered=True).fit(train - mean0).precision_

    def score(e):
        e = _unit(e) if normalise else np.asarray(e, np.float64)
        d = np.min([(((e - m) @ precision) * (e - m)).sum(axis=1) for m in means], axis=0)
        return d - (((e - mean0) @ precision0) * (e - mean0)).sum(axis=1) if relative else d
    return score


def threshold(scores: np.ndarray, accept: float = ACCEPT) -> float:
    s = np.sort(scores)
    rank = int(np.ceil((len(s) + 1) * accept))
    return float(s[rank - 1]) if rank <= len(s) else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("embeddings", type=Path)
    parser.add_argument("--run", type=Path, help="the RUN, for its calibration (default: the npz's folder/NAME-run)")
    parser.add_argument("--half", choices=("a", "b", "all"), default="a")
    args = parser.parse_args()
    from catsdogs.calibration import Calibration
    from catsdogs.run_files import read_json

    d = np.load(args.embeddings)
    run = args.run or args.embeddings.parent / args.embeddings.name.replace("-embeddings.npz", "-run")
    calibration = Calibration.from_dict(read_json(run / "calibration.json")["calibration"])
    b = d["other_b"]
    other_rows = {"a": ~b, "b": b, "all": np.ones_like(b)}[args.half]
    train, labels = d["train"], d["train_labels"]
    sets = {"val": (d["val"], d["val_raw"]), "held": (d["held"], d["held_raw"]),
            "other": (d["other"][other_rows], d["other_raw"][other_rows])}
    scorers = {f"knn{k}{'-centred' if c else ''}": knn(train, k, c) for k in (1, 5, 10, 50) for c in (False, True)}
    scorers |= {"mahalanobis": mahalanobis(train, labels, False),
                "relative-mahalanobis": mahalanobis(train, labels, True),
                "mahalanobis-l2": mahalanobis(train, labels, False, True),
                "relative-mahalanobis-l2": mahalanobis(train, labels, True, True)}
    scores = {name: {s: f(e) for s, (e, _) in sets.items()} for name, f in scorers.items()}
    confidence = {s: -np.log(np.clip(calibration.apply(p).max(axis=1), 1e-7, 1)) for s, (_, p) in sets.items()}
    scores["confidence"] = confidence
    for a, bb in (("knn10", "mahalanobis"), ("knn10-centred", "relative-mahalanobis"), ("knn10", "confidence"),
                  ("relative-mahalanobis", "confidence"), ("knn10-centred", "mahalanobis"),
                  ("knn1", "relative-mahalanobis")):
        stats = {n: (scores[n]["val"].mean(), scores[n]["val"].std() or 1.0) for n in (a, bb)}
        scores[f"{a}+{bb}"] = {s: np.mean([(scores[n][s] - stats[n][0]) / stats[n][1] for n in (a, bb)], axis=0)
                               for s in sets}
    predicted = calibration.apply(d["held_raw"]).argmax(axis=1)
    correct = predicted == d["held_labels"]
    print(f"{args.embeddings.name}: half {args.half}, {int(other_rows.sum())} other photos, {len(d['val'])} validation,"
          f" {len(d['held'])} held-out; accuracy on all held-out {correct.mean():.4f}")
    print(f"{'score':42s} {'AUROC':>7s} {'other unk':>9s} {'held unk':>8s} {'acc acc':>8s}")
    for name, s in scores.items():
        cut = threshold(s["val"])
        auroc = roc_auc_score(np.r_[np.zeros(len(s["val"])), np.ones(len(s["other"]))], np.r_[s["val"], s["other"]])
        accepted = s["held"] <= cut
        print(f"{name:42s} {auroc:7.4f} {np.mean(s['other'] > cut):9.1%} {1 - accepted.mean():8.1%} "
              f"{correct[accepted].mean():8.4f}")


if __name__ == "__main__":
    main()
