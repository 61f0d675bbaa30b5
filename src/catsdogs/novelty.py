"""How unlike the training photos a photo is: open-set scores from the model's embeddings.

The embedding is the pooled features of the pretrained base for the models that have one (features, heads,
transfer, finetune: the layer `pool`), else the input of the model's last Dense layer (the study's convnets:
`dense`), whatever the model in the registry. Scores (higher = more novel):
- knn: 1 - cosine similarity to the k-th nearest training embedding, both centred on the training mean and
  L2-normalised (Sun et al., 2022; pooled ReLU features all lie in the positive orthant, where uncentred cosines
  crowd near 1: centring made the TrashNet RUN reject 97% of cat and dog photos instead of 50%, docs/open_set.md);
- mahalanobis: the smallest class-conditional Mahalanobis distance, shared covariance with Ledoit-Wolf
  shrinkage (Lee et al., 2018);
- confidence: -log of the calibrated probability of the predicted class;
- "a+b": the mean of the components, each standardised on in-distribution validation photos.
The threshold is the `accept` quantile of the validation scores: that share of in-distribution photos passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from catsdogs.compat import output_input
from catsdogs.errors import UsageError

K_NEIGHBOURS = 10
MAX_REFERENCE = 5000  # training embeddings kept for k-NN (float16)
COMPONENTS = ("knn", "mahalanobis", "confidence")
METHODS = ("knn", "mahalanobis", "confidence", "knn+confidence", "mahalanobis+confidence", "knn+mahalanobis")


def embedding_model(model):
    """A Keras model: images -> [embeddings, the model's output], sharing the model's layers.

    A model on a pretrained base (features, heads, transfer, finetune): the base's pooled features (`pool`,
    flip-averaged in `heads`), where photos of other subjects lie far from the training photos (ImageNet's
    geometry, not squeezed by a head trained to tell the classes apart). Other models (the study's convnets): the
    input of the layer that makes the output; a nested model at the end is followed inside."""
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a bare tensor: no structure warning
    if "pool" in {layer.name for layer in model.layers}:  # a pretrained base: its pooled ImageNet features
        return keras.Model(inputs, [model.get_layer("pool").output, model.outputs[0]], name="embeddings")
    return keras.Model(inputs, [_penultimate(model, model.inputs), model.outputs[0]], name="embeddings")


def _penultimate(model, inputs):
    import keras

    last, called_on = output_input(model.outputs[0])  # the last layer, and its input in THIS graph
    if isinstance(last, keras.Model):
        inner = keras.Model(last.inputs, _penultimate(last, last.inputs))
        return inner(called_on)
    return called_on


def _normalised(embeddings: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float32)
    if centre is not None:
        e = e - np.asarray(centre, dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


@dataclass
class Novelty:
    """What a RUN stores to score new photos (RUN/novelty.npz + the numbers in calibration.json)."""

    reference: np.ndarray  # m x D centred, L2-normalised training embeddings (float16)
    means: np.ndarray  # N x D class means
    precision: np.ndarray  # D x D shared precision matrix
    centre: np.ndarray | None = None  # D: the training mean subtracted before normalising (None: zeros, old RUNs)
    method: str = "knn"
    k: int = K_NEIGHBOURS
    stats: dict = field(default_factory=dict)  # component -> [mean, std] on validation
    threshold: float = float("inf")
    accept: float = 1.0
    accepted: float | None = None  # share of validation accepted at the threshold

    # ---- scores -------------------------------------------------------------------------------------
    def knn(self, embeddings: np.ndarray) -> np.ndarray:
        reference = self.reference.astype(np.float32)
        k = min(self.k, len(reference))
        out = np.empty(len(embeddings), np.float32)
        for start in range(0, len(embeddings), 256):
            similarity = _normalised(embeddings[start:start + 256], self.centre) @ reference.T
            out[start:start + 256] = 1 - np.partition(similarity, -k, axis=1)[:, -k]
        return out

    def mahalanobis(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings, dtype=np.float64)
        distances = [(((e - mean) @ self.precision) * (e - mean)).sum(axis=1) for mean in self.means]  # BLAS
        return np.min(distances, axis=0).astype(np.float32)

    @staticmethod
    def confidence(probabilities: np.ndarray) -> np.ndarray:
        return (-np.log(np.clip(np.asarray(probabilities).max(axis=1), 1e-7, 1.0))).astype(np.float32)

    def components(self, embeddings: np.ndarray, probabilities: np.ndarray, names=COMPONENTS) -> dict:
        scorers = {"knn": lambda: self.knn(embeddings), "mahalanobis": lambda: self.mahalanobis(embeddings),
                   "confidence": lambda: self.confidence(probabilities)}
        return {name: scorers[name]() for name in names}

    def combine(self, components: dict, method: str | None = None) -> np.ndarray:
        """The score of `method` (default: the stored one) from component scores."""
        parts = (method or self.method).split("+")
        if len(parts) == 1:
            return np.asarray(components[parts[0]], dtype=np.float32)
        standardised = [(components[p] - self.stats[p][0]) / self.stats[p][1] for p in parts]
        return np.mean(standardised, axis=0).astype(np.float32)

    def score(self, embeddings: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """The novelty of each photo (higher = less like the training photos)."""
        return self.combine(self.components(embeddings, probabilities, self.method.split("+")))

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) <= self.threshold

    # ---- fitting and storage ------------------------------------------------------------------------
    def set_threshold(self, validation_scores: np.ndarray, accept: float) -> None:
        """The split-conformal `accept` quantile of in-distribution validation scores: the ceil((n + 1) x accept)-th
        smallest of n, so that a new in-distribution photo is accepted with probability >= `accept`. Too few
        validation photos for that rank (n < accept / (1 - accept), 49 at 0.98): no threshold, nothing is
        labelled unknown (a 98% cut can't be read off a handful of photos)."""
        check_accept(accept)
        scores = np.sort(np.asarray(validation_scores, dtype=np.float64))
        rank = int(np.ceil((len(scores) + 1) * accept))
        self.threshold = float(scores[rank - 1]) if 1 <= rank <= len(scores) else float("inf")
        self.accept = float(accept)
        self.accepted = float(np.mean(scores <= self.threshold)) if len(scores) else None

    def save_arrays(self, path) -> None:
        centre = np.zeros(self.reference.shape[1]) if self.centre is None else self.centre
        np.savez_compressed(path, reference=self.reference.astype(np.float16), means=self.means.astype(np.float32),
                            precision=self.precision.astype(np.float32), centre=np.asarray(centre, np.float32))

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "stats": self.stats, "threshold": self.threshold,
                "accept": self.accept, "accepted_validation": self.accepted, "reference": len(self.reference),
                "dimensions": int(self.reference.shape[1])}

    @classmethod
    def load(cls, arrays_path, data: dict) -> Novelty:
        with np.load(arrays_path) as arrays:
            centre = arrays["centre"] if "centre" in arrays.files else None  # a RUN calibrated before centring
            return cls(arrays["reference"], arrays["means"].astype(np.float64),
                       arrays["precision"].astype(np.float64), centre, method=data["method"], k=int(data["k"]),
                       stats={k: list(v) for k, v in data.get("stats", {}).items()},
                       threshold=float("inf") if data["threshold"] is None else float(data["threshold"]),
                       accept=float(data["accept"]),
                       accepted=data.get("accepted_validation"))


def check_accept(accept: float) -> float:
    if isinstance(accept, bool) or not isinstance(accept, (int, float)) or not 0 < accept <= 1:
        raise UsageError(f"accept must be in (0, 1] (the share of in-distribution photos to accept), got {accept!r}",
                         "accept")
    return float(accept)


def fit_novelty(train_embeddings: np.ndarray, train_labels: np.ndarray, num_classes: int, *, seed: int = 0,
                max_reference: int = MAX_REFERENCE, k: int = K_NEIGHBOURS, method: str = "knn") -> Novelty:
    """k-NN reference (a capped sample, centred on the training mean) and class means + shared Ledoit-Wolf
    precision of training embeddings."""
    from sklearn.covariance import LedoitWolf

    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}", "method")
    e = np.asarray(train_embeddings, dtype=np.float64)
    labels = np.asarray(train_labels)
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(e))[:max_reference] if len(e) > max_reference else np.arange(len(e))
    overall = e.mean(axis=0)
    means = np.stack([e[labels == c].mean(axis=0) if np.any(labels == c) else overall for c in range(num_classes)])
    centred = e - means[labels]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    centre = e.mean(axis=0).astype(np.float32)
    return Novelty(_normalised(e[keep], centre).astype(np.float16), means, precision, centre, method=method, k=k)


def fit_stats(novelty: Novelty, components: dict) -> None:
    """Each component's mean and std on in-distribution validation photos (to combine them)."""
    novelty.stats = {name: [float(np.mean(v)), float(np.std(v)) or 1.0] for name, v in components.items()}
