"""Compare calibration maps on a RUN's validation split alone (the test split is not read).

    python benchmarks/calibration_maps.py RUN [--shuffles 10]

Each map is fitted on four fifths of the validation photos and applied to the fifth, over `--shuffles` seeded
shuffles: the mean ECE (10 bins, top label), log loss and accuracy of the maps' outputs on photos they were not
fitted on. Maps: none; temperature (catsdogs' own); the class weights' prior taken out first (p / w,
renormalised; a RUN trained with balanced weights), then temperature; temperature and a bias per class.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from catsdogs.calibration import _log_probabilities, _softmax, fit_calibration, negative_log_likelihood
from catsdogs.data_files import read_manifest
from catsdogs.evaluation import split_probabilities
from catsdogs.metrics import expected_calibration_error
from catsdogs.predict import Predictor


def temperature(labels, probabilities):
    return fit_calibration(labels, probabilities).apply


def without_prior(weights: np.ndarray):
    def fitted(labels, probabilities):
        unweighted = lambda p: _softmax(_log_probabilities(p) - np.log(weights))  # noqa: E731
        scaled = temperature(labels, unweighted(probabilities))
        return lambda p: scaled(unweighted(p))
    return fitted


def temperature_and_bias(labels, probabilities, penalty: float = 0.01):
    logs = _log_probabilities(probabilities)

    def loss(params):
        z = logs / np.exp(params[0]) + params[1:]
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(axis=1))) + penalty * np.sum(params[1:] ** 2)

    x = minimize(loss, np.zeros(logs.shape[1] + 1), method="L-BFGS-B").x
    return lambda p: _softmax(_log_probabilities(p) / np.exp(x[0]) + x[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--shuffles", type=int, default=10)
    args = parser.parse_args()
    data = args.run / "data"
    if not (args.run / "config.json").is_file() or not data.is_dir():
        sys.exit(f"{args.run}: not a catsdogs fit RUN (needs config.json and data/)")
    labels, probabilities, *_ = split_probabilities(Predictor(args.run, calibrated=False), data, "validation",
                                                    cache_dir=args.run / "cache")
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, np.float64)
    counts = Counter(row["class"] for row in read_manifest(data, "train"))
    classes = sorted(counts)
    weights = np.array([sum(counts.values()) / (len(classes) * counts[name]) for name in classes])
    maps = {"none": lambda y, p: (lambda q: q), "temperature": temperature,
            "prior out, then temperature": without_prior(weights), "temperature and class biases": temperature_and_bias}
    for name, fit_map in maps.items():
        scores = []
        for seed in range(args.shuffles):
            folds = np.array_split(np.random.default_rng(seed).permutation(len(labels)), 5)
            held = np.zeros_like(probabilities)
            for k, fold in enumerate(folds):
                rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
                held[fold] = fit_map(labels[rest], probabilities[rest])(probabilities[fold])
            correct = (held.argmax(axis=1) == labels).astype(int)
            scores.append((expected_calibration_error(correct, held.max(axis=1)),
                           negative_log_likelihood(labels, held), correct.mean()))
        ece, loss, accuracy = np.mean(scores, axis=0)
        print(f"{name}: ECE {ece:.4f}, log loss {loss:.4f}, accuracy {accuracy:.4f} ({len(labels)} validation photos)")


if __name__ == "__main__":
    main()
