"""Calibrated probabilities: temperature scaling (N classes) or Platt scaling (two classes), fitted on validation.

Model outputs are probabilities (a sigmoid or a softmax), so the fit works in log space: log p for a softmax
(softmax(log p / T) is the temperature-scaled softmax), logit(p1) for a sigmoid (Platt: sigmoid(a logit + b)).
Probabilities are clipped to [EPS, 1 - EPS] first so that a saturated output never becomes an infinity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from catsdogs.errors import UsageError

EPS = 1e-7
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0
FOLDS, MIN_PER_FOLD = 5, 10  # the cross-validated check of a fitted map (fewer photos: no check)
METHODS = ("identity", "temperature", "platt")


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0)
    return np.log(p / p.sum(axis=1, keepdims=True))


def _logit(p1: np.ndarray) -> np.ndarray:
    p1 = np.clip(np.asarray(p1, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p1) - np.log1p(-p1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean -log p(true class) of n x N probabilities (clipped)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)], EPS, 1.0)
    return float(-np.log(p).mean())


@dataclass(frozen=True)
class Calibration:
    """A fitted map of n x N probabilities to calibrated ones. `method`: temperature, platt or identity."""

    method: str = "identity"
    temperature: float = 1.0  # temperature: softmax(log p / T)
    slope: float = 1.0  # platt: p1' = sigmoid(slope * logit(p1) + intercept)
    intercept: float = 0.0
    nll_before: float | None = None  # on the split it was fitted on
    nll_after: float | None = None
    n: int = 0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated n x N probabilities (rows sum to 1), float32."""
        probabilities = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
        if self.method == "temperature":
            out = _softmax(_log_probabilities(probabilities) / self.temperature)
        elif self.method == "platt":
            p1 = 1.0 / (1.0 + np.exp(-(self.slope * _logit(probabilities[:, 1]) + self.intercept)))
            out = np.stack([1 - p1, p1], axis=1)
        else:
            out = probabilities
        return out.astype(np.float32)

    def map_threshold(self, threshold: float) -> float:
        """The calibrated p1 of a raw two-class threshold (Platt is increasing: the same photos cross it)."""
        if self.method != "platt":
            return float(threshold)
        return float(self.apply(np.array([[1 - threshold, threshold]]))[0, 1])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """A stored calibration, checked: UsageError naming the field (`calibration.slope`) that no fit writes."""
        if not isinstance(data, dict):
            raise UsageError(f"calibration must be a JSON object, got {data!r}", "run")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        if known.get("method", "identity") not in METHODS:
            raise UsageError(f"calibration.method must be one of {', '.join(METHODS)}, got {known['method']!r}",
                             "run")
        for name, positive in (("temperature", True), ("slope", True), ("intercept", False)):
            value = known.get(name, 1.0)
            if not _finite(value) or (positive and value <= 0):
                kind = "a finite number > 0" if positive else "a finite number"
                raise UsageError(f"calibration.{name} must be {kind}, got {value!r}", "run")
        return cls(**known)


def _finite(value) -> bool:
    """A real number (not a bool), neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> Calibration:
    """The temperature T minimising the NLL of softmax(log p / T) on (labels, probabilities), over log T."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    logp = _log_probabilities(probabilities)

    def nll(log_t: float) -> float:
        return negative_log_likelihood(labels, _softmax(logp / np.exp(log_t)))

    result = minimize_scalar(nll, bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)), method="bounded")
    temperature = float(np.exp(result.x))
    before = negative_log_likelihood(labels, probabilities)
    if nll(result.x) >= before:  # never worse than no calibration on the fitting split
        return Calibration("identity", nll_before=before, nll_after=before, n=len(labels))
    return Calibration("temperature", temperature=temperature, nll_before=before, nll_after=nll(result.x),
                       n=len(labels))


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> Calibration:
    """Platt scaling of two classes: a logistic regression of the label on logit(p1)."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.atleast_2d(np.asarray(probabilities))
    before = negative_log_likelihood(labels, probabilities)
    if len(np.unique(labels)) < 2:
        return Calibration("identity", nll_before=before, nll_after=before, n=len(labels))
    model = LogisticRegression(C=1.0).fit(_logit(probabilities[:, 1])[:, None], labels)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    fitted = Calibration("platt", slope=slope, intercept=intercept, n=len(labels))
    after = negative_log_likelihood(labels, fitted.apply(probabilities))
    if slope <= 0 or after >= before:  # a decreasing or useless map: keep the model's own probabilities
        return Calibration("identity", nll_before=before, nll_after=before, n=len(labels))
    return Calibration("platt", slope=slope, intercept=intercept, nll_before=before, nll_after=after, n=len(labels))


def fit_calibration(labels: np.ndarray, probabilities: np.ndarray, folds: int = FOLDS) -> Calibration:
    """Platt scaling for two classes, a temperature for more; kept only when, fitted on `folds` - 1 parts of the
    split and applied to the part left out, it lowers the log loss there (else the identity): a map fitted on a
    well-calibrated model's few mistakes can make held-out log loss worse."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.atleast_2d(np.asarray(probabilities))
    fit = fit_platt if probabilities.shape[1] == 2 else fit_temperature
    fitted = fit(labels, probabilities)
    if fitted.method == "identity" or len(labels) < MIN_PER_FOLD * folds:
        return fitted
    parts = np.array_split(np.random.default_rng(0).permutation(len(labels)), folds)
    held_out = np.zeros(probabilities.shape, np.float64)
    for k, part in enumerate(parts):
        rest = np.concatenate([other for j, other in enumerate(parts) if j != k])
        held_out[part] = fit(labels[rest], probabilities[rest]).apply(probabilities[part])
    if negative_log_likelihood(labels, held_out) >= fitted.nll_before:
        return Calibration("identity", nll_before=fitted.nll_before, nll_after=fitted.nll_before, n=len(labels))
    return fitted
