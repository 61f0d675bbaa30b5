"""How unlike the training photos a photo is: open-set scores from the model's embeddings.

The embedding is the pooled features of the pretrained base for the models that have one (features, heads,
transfer, finetune: the layer `pool`), else the input of the model's last Dense layer (the study's convnets:
`dense`), whatever the model in the registry. A `finetune-top` model's tuned top squeezes its features onto the
classes, so its RUN keeps the top's pretrained weights (`Novelty.reference_top`) and the embedding is the base's
features with them (catsdogs.models.frozen.with_reference_top). Scores (higher = more novel):
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

import math
from dataclasses import dataclass, field

import numpy as np

from catsdogs.compat import output_input
from catsdogs.errors import UsageError

K_NEIGHBOURS = 10
MAX_REFERENCE = 5000  # training embeddings kept for k-NN (float16)
COMPONENTS = ("knn", "mahalanobis", "confidence")
TOP_PREFIX = "top_"  # novelty.npz: a tuned top's pretrained weights, top_000, top_001, ...
METHODS = ("knn", "mahalanobis", "confidence", "knn+confidence", "mahalanobis+confidence", "knn+mahalanobis")


def embedding_model(model, reference_top: list[np.ndarray] | None = None):
    """A Keras model: images -> [embeddings, the model's output], sharing the model's layers.

    A model on a pretrained base (features, heads, transfer, finetune): the base's pooled features (`pool`,
    flip-averaged in `heads`), where photos of other subjects lie far from the training photos (ImageNet's
    geometry, not squeezed by a head trained to tell the classes apart). Other models (the study's convnets): the
    input of the layer that makes the output; a nested model at the end is followed inside."""
    import keras

    if reference_top is not None:  # a tuned top: the pretrained top's features, on the same pass
        from catsdogs.models.frozen import with_reference_top

        return with_reference_top(model, reference_top)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a bare tensor: no structure warning
    if "pool" in {layer.name for layer in model.layers}:  # a pretrained base: its pooled ImageNet features
        return keras.Model(inputs, [model.get_layer("pool").output, model.outputs[0]], name="embeddings")
    return keras.Model(inputs, [_penultimate(model, model.inputs), model.outputs[0]], name="embeddings")


def one_output(joint):
    """An `embedding_model` with one float32 output, n x (D + units): the embeddings, then the model's output;
    what an exported engine runs so that one pass gives both (catsdogs.predict)."""
    import keras

    embeddings, outputs = joint.outputs
    flat = keras.layers.Flatten()(embeddings) if len(embeddings.shape) > 2 else embeddings
    joined = keras.layers.Concatenate(dtype="float32", name="embeddings_then_output")([flat, outputs])
    return keras.Model(joint.inputs, joined, name="embeddings_and_output")


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
    reference_top: list[np.ndarray] | None = None  # a tuned top's pretrained weights: the embedding's (see above)

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
        tops = {f"{TOP_PREFIX}{i:03d}": np.asarray(w, np.float32) for i, w in enumerate(self.reference_top or [])}
        np.savez_compressed(path, reference=self.reference.astype(np.float16), means=self.means.astype(np.float32),
                            precision=self.precision.astype(np.float32), centre=np.asarray(centre, np.float32),
                            **tops)

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "stats": self.stats, "threshold": self.threshold,
                "accept": self.accept, "accepted_validation": self.accepted, "reference": len(self.reference),
                "dimensions": int(self.reference.shape[1]),
                "embedding": "pretrained top" if self.reference_top is not None else "model"}

    @classmethod
    def load(cls, arrays_path, data: dict) -> Novelty:
        """A RUN's scorer from novelty.npz and calibration.json's `novelty` entry (as `check_settings` returns it);
        UsageError saying what is wrong with the arrays (the caller names the file)."""
        data = check_settings(data)
        arrays = read_arrays(arrays_path)
        reference = arrays["reference"]
        stored = data.get("reference") or len(reference)
        if stored != len(reference):
            raise UsageError(f"{len(reference)} reference embeddings, but calibration.json's novelty.reference says "
                             f"{stored}", "run")
        if data["k"] > max(len(reference), K_NEIGHBOURS):  # up to K_NEIGHBOURS: fitted on fewer photos, clamped
            raise UsageError(f"{len(reference)} reference embeddings, fewer than calibration.json's novelty.k "
                             f"{data['k']}", "run")
        return cls(reference, arrays["means"].astype(np.float64), arrays["precision"].astype(np.float64),
                   arrays.get("centre"), method=data["method"], k=data["k"], stats=data["stats"],
                   threshold=data["threshold"], accept=data["accept"], accepted=data.get("accepted_validation"),
                   reference_top=reference_top(arrays))


def read_arrays(path) -> dict[str, np.ndarray]:
    """novelty.npz's arrays (never unpickled), their shapes and values checked: UsageError saying what is wrong."""
    import zipfile
    import zlib

    unreadable = UsageError("not a NumPy .npz archive of novelty arrays (corrupt or replaced)", "run")
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise unreadable
        with stored:
            arrays = {name: np.asarray(stored[name]) for name in stored.files
                      if name in ("reference", "means", "precision", "centre") or name.startswith(TOP_PREFIX)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if isinstance(error, UsageError):
            raise
        raise unreadable from None
    missing = [name for name in ("reference", "means", "precision") if name not in arrays]
    if missing:
        raise UsageError(f"no {', '.join(missing)} array", "run")
    reference = arrays["reference"]
    if reference.ndim != 2 or not reference.size:
        raise UsageError(f"reference has shape {reference.shape}, not m x D (m, D >= 1)", "run")
    dimensions = reference.shape[1]
    shapes = {"means": (None, dimensions), "precision": (dimensions, dimensions), "centre": (dimensions,)}
    for name, shape in shapes.items():
        array = arrays.get(name)
        if array is None:
            continue  # centre: a RUN calibrated before centring has none
        if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape)) \
                or not array.size:
            raise UsageError(f"{name} has shape {array.shape}, not {_shape_text(shape)} for {dimensions}-dimensional "
                             "reference embeddings", "run")
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
            raise UsageError(f"{name} holds values that are not finite numbers", "run")
    return arrays


def reference_top(arrays: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """The pretrained top's weights stored in novelty.npz, in order; None when it holds none."""
    names = sorted(name for name in arrays if name.startswith(TOP_PREFIX))
    return [arrays[name] for name in names] or None


def _shape_text(shape: tuple) -> str:
    return " x ".join("N" if size is None else str(size) for size in shape)


def check_settings(data) -> dict:
    """calibration.json's `novelty` entry, checked (the threshold as a float, inf for null): UsageError naming the
    field (`novelty.k`) that no calibration writes."""
    if not isinstance(data, dict):
        raise UsageError(f"novelty must be a JSON object, got {data!r}", "run")
    method, k, threshold, accept = (data.get(name) for name in ("method", "k", "threshold", "accept"))
    if method not in METHODS:
        raise UsageError(f"novelty.method must be one of {', '.join(METHODS)}, got {method!r}", "run")
    reference = data.get("reference")  # how many training embeddings novelty.npz holds
    if reference is not None and (isinstance(reference, bool) or not isinstance(reference, int) or reference < 1):
        raise UsageError(f"novelty.reference must be an integer >= 1, got {reference!r}", "run")
    most = max(reference or K_NEIGHBOURS, K_NEIGHBOURS)  # k > the reference (a tiny training split) is clamped
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= most:
        raise UsageError(f"novelty.k must be an integer between 1 and {most} (the reference embeddings), got {k!r}",
                         "run")
    if threshold is not None and not _finite(threshold) and threshold != float("inf"):  # inf: as null
        raise UsageError(f"novelty.threshold must be a finite number (or null: nothing unknown), got {threshold!r}",
                         "run")
    if threshold is not None and method in COMPONENTS and threshold < 0:  # these scores are never negative
        raise UsageError(f"novelty.threshold of {method} scores must be >= 0, got {threshold!r}", "run")
    if not _finite(accept) or not 0 < accept <= 1:
        raise UsageError(f"novelty.accept must be a number in (0, 1], got {accept!r}", "run")
    stats = data.get("stats") or {}
    if not isinstance(stats, dict):
        raise UsageError(f"novelty.stats must be a JSON object, got {stats!r}", "run")
    parts = method.split("+")
    for part in parts if len(parts) > 1 else ():  # a combined score standardises each part by its stats
        pair = stats.get(part)
        if not isinstance(pair, list) or len(pair) != 2 or not all(map(_finite, pair)) or pair[1] <= 0:
            raise UsageError(f"novelty.stats.{part} must be [mean, std] (finite, std > 0), got {pair!r}", "run")
    return {**data, "k": k, "stats": {name: list(pair) for name, pair in stats.items() if isinstance(pair, list)},
            "threshold": float("inf") if threshold is None else float(threshold), "accept": float(accept)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
