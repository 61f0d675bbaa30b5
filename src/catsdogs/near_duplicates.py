"""Perceptual hashes and near-duplicate pairs, with NumPy and Pillow only (no TensorFlow, no optional extras).

`phash` is imagehash's `phash` (grayscale, 32 x 32 Lanczos, 2-D DCT-II, the 8 x 8 lowest frequencies
compared with their median: 64 bits), computed with a DCT matrix instead of SciPy, plus the hash of the
mirror image, taken from the same DCT (mirroring multiplies horizontal frequency v by (-1)^v), so that
mirrored copies are found without decoding twice. `catsdogs prepare` uses it for its summary line and for
`--dedupe near`; `catsdogs audit` combines it with backbone embeddings.

Threshold: two unrelated photos differ in about half of the 64 bits, but the bits are correlated, so the
lower tail is long: among the 12.5 million pairs of the 5000 Kaggle photos, 2 pairs (both true copies) are
at most 8 bits apart and 9 at most 10. `HASH_DISTANCE` = 8 keeps hash-only decisions free of false pairs
there, and is above what re-encoding (JPEG 60), resizing, mirroring and +20% brightness cause (0-6 bits
measured); crops move more bits (6-16), which is why `audit` adds embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

HASH_SIZE, HASH_SOURCE = 8, 32
HASH_BYTES = HASH_SIZE * HASH_SIZE // 8
HASH_DISTANCE = 8  # at most this many of 64 bits differ: a near-duplicate (see the module docstring)
BLOCK = 1024  # rows compared at a time: memory stays O(BLOCK x N)


def _dct_matrix(n: int = HASH_SOURCE) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix()
_MIRROR = (-1.0) ** np.arange(HASH_SIZE)[None, :]


def phash(pixels: np.ndarray) -> np.ndarray:
    """uint8 array (2, 8): the 64-bit perceptual hash of an RGB image and that of its mirror image."""
    gray = Image.fromarray(pixels).convert("L").resize((HASH_SOURCE, HASH_SOURCE), Image.Resampling.LANCZOS)
    low = (_DCT @ np.asarray(gray, dtype=np.float64) @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]
    mirrored = low * _MIRROR
    bits = np.stack([(low > np.median(low)).ravel(), (mirrored > np.median(mirrored)).ravel()])
    return np.packbits(bits, axis=1)


def _signs(hashes: np.ndarray) -> np.ndarray:
    """Packed hashes (n, 8) -> float32 (n, 64) of +-1, so that hamming = (64 - a . b) / 2."""
    return np.unpackbits(hashes, axis=1).astype(np.float32) * 2 - 1


def hash_pairs(hashes: np.ndarray, max_distance: int = HASH_DISTANCE) -> Iterator[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose hashes (n, 2, 8 from `phash`) differ in at most `max_distance` bits,
    the photo or its mirror image. O(n^2) comparisons, done as matrix products in blocks."""
    if len(hashes) < 2:
        return
    plain, mirror = _signs(hashes[:, 0]), _signs(hashes[:, 1])
    bits = plain.shape[1]
    for start in range(0, len(plain), BLOCK):
        block = plain[start:start + BLOCK]
        same = block @ plain.T
        flipped = block @ mirror.T
        distance = (bits - np.maximum(same, flipped)) / 2
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if int(c) > i:
                yield i, int(c), int(distance[r, c])


def groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Union-find: the group (its smallest member) of each of n items linked by `pairs`."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]


def drop_near_duplicates(items: Sequence, hashes: np.ndarray, name: Callable[[object], str],
                         max_distance: int = HASH_DISTANCE) -> tuple[list, list[tuple[str, str]]]:
    """Keep the first of `items` (in the order given) of each group of near-duplicates; the others come back as
    (name, "near-duplicate of KEPT") for rejected.csv."""
    leader = groups(len(items), [(i, j) for i, j, _ in hash_pairs(hashes, max_distance)])
    kept, dropped = [], []
    for i, item in enumerate(items):
        if leader[i] == i:
            kept.append(item)
        else:
            dropped.append((name(item), f"near-duplicate of {name(items[leader[i]])}"))
    return kept, dropped


def cross_split_pairs(hashes: np.ndarray, splits: Sequence[str], max_distance: int = HASH_DISTANCE) -> int:
    """How many near-duplicate pairs (by hash) have their two photos in different splits."""
    return sum(1 for i, j, _ in hash_pairs(hashes, max_distance) if splits[i] != splits[j])
