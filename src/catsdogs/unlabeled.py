"""The next photos to label: a RUN's predictive entropy over a folder of unlabeled photos, with diversity.

Photos are ranked by the entropy of the RUN's probabilities (the model's doubt), most doubted first; a photo
whose perceptual hash (`catsdogs.near_duplicates`, photo or mirror image) is within `NEAR_BITS` of one already
chosen goes to the end of the list, so that the top of the list is not a run of near-copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catsdogs.errors import UsageError
from catsdogs.images import ImageError, load_image
from catsdogs.near_duplicates import _signs, phash
from catsdogs.sources import iter_image_files

NEAR_BITS = 14  # of 64: the audit's hash distance for near-copies when embeddings agree


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1)
    return -(p * np.log(p)).sum(axis=1)


def diverse_order(scores: np.ndarray, hashes: np.ndarray, near_bits: int = NEAR_BITS) -> list[int]:
    """Indices by `scores` descending, each photo within `near_bits` of an already chosen one deferred to the
    end (in score order)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    plain, mirror = _signs(hashes[:, 0]), _signs(hashes[:, 1])
    bits = plain.shape[1]
    chosen: list[int] = []
    deferred: list[int] = []
    for i in order:
        if chosen:
            agree = np.maximum(plain[chosen] @ plain[i], plain[chosen] @ mirror[i])
            if ((bits - agree) / 2 <= near_bits).any():
                deferred.append(int(i))
                continue
        chosen.append(int(i))
    return chosen + deferred


def rank_folder(run: Path, folder: Path, *, predictor=None) -> list[tuple[Path, dict[str, float], str]]:
    """(path, probabilities, why) of the images under `folder`, best to label first; unreadable files are
    left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"unlabeled {folder}: not a folder", "unlabeled")
    if predictor is None:
        from catsdogs.predict import Predictor

        predictor = Predictor(run)
    paths, hashes, predictions = [], [], []
    for path in iter_image_files([folder]):
        try:
            pixels = load_image(path, 64)
        except ImageError:
            continue
        paths.append(path)
        hashes.append(phash(pixels))
    if not paths:
        raise UsageError(f"unlabeled {folder}: no readable images", "unlabeled")
    predictions = [p for p in predictor.predict_paths(paths)]
    classes = list(predictor.classes)
    probabilities = np.array([[p.probabilities.get(c, 0.0) for c in classes] for p in predictions])
    doubt = entropy(probabilities)
    order = diverse_order(doubt, np.stack(hashes))
    return [(paths[i].resolve(), dict(zip(classes, map(float, probabilities[i]))),
             f"entropy {doubt[i]:.2f} (max {np.log(len(classes)):.2f})"
             + ("; unknown to the model" if predictions[i].unknown else "")) for i in order]
