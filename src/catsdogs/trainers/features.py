"""The study's fast feature extraction: the frozen base runs once over each split, its pooled features are
cached on disk, and only the dense head trains on them (seconds per epoch instead of minutes).

The RUN still saves the whole image -> probability model (base and head share their layers).
The base runs through the fastest engine verified on the split's first batch (catsdogs.engines: ONNX Runtime
or OpenVINO within 1e-4 of Keras, 2x Keras' speed on EfficientNet-Lite here) when the split is large enough to
repay the export.
Cache files are keyed by backbone, image size, the base's actual weights, the compute dtype, the split and the
set of its photos (their content hashes, catsdogs.photo_keys), not by their labels: other photos, other weights
or another precision never reuse them, but a relabelled DATA (corrections) does. The photos' identities are
stored beside the features; labels always come from the current manifest, rows in its order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from catsdogs.data_files import read_manifest
from catsdogs.dataset import SplitArrays
from catsdogs.errors import CatsdogsError
from catsdogs.files import atomic_path
from catsdogs.images import batch_for
from catsdogs.models.pretrained import find_base
from catsdogs.photo_keys import in_order, photo_ids, read_cached_array, save_ids, set_digest, stored_order
from catsdogs.precision import jit_compile_setting
from catsdogs.progress import progress

CACHE_VERSION = 3  # 3: keyed by the split's photos (content hashes), their ids beside; 2: labels beside
CACHE_SUBDIR = "cache"  # inside RUN when TrainOptions.cache_dir is None
# below this many images Keras extracts: exporting and checking another engine takes ~10 s (EfficientNet-Lite2),
# about what it saves on 500 images
ENGINE_MIN_IMAGES = 1000


def feature_extractor(model: keras.Model) -> keras.Model:
    """Images -> pooled features: the `features` model up to its `pool` layer (same layers, no copy)."""
    return keras.Model(model.inputs, model.get_layer("pool").output, name="feature_extractor")


def weights_fingerprint(model: keras.Model) -> str:
    """A hash of a model's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for variable, value in zip(model.weights, model.get_weights()):
        value = np.ascontiguousarray(value)
        digest.update(f"{variable.path}:{value.shape}:{value.dtype};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cache_file(cache_dir: Path, extractor: keras.Model, ids: Sequence[str], split: str) -> Path:
    """Where the features of `split`, whose photos have identities `ids` (`photo_keys.photo_ids`), computed by
    `extractor` are cached (whatever the photos' labels and order)."""
    base = find_base(extractor)
    key = json.dumps({"version": CACHE_VERSION, "backbone": base.name, "input": list(extractor.input_shape),
                      "output": extractor.layers[-1].name,
                      "weights": weights_fingerprint(extractor), "dtype": base.compute_dtype,
                      "photos": set_digest(ids), "split": split}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"features-{base.name}-{extractor.input_shape[1]}-{digest}-{split}.npy"


def ids_file(features_file: Path) -> Path:
    """The photo identities stored beside a cached features file, one per row."""
    return features_file.with_name("ids-" + features_file.name.removeprefix("features-"))


def load_cached(features_file: Path, ids: Sequence[str]) -> np.ndarray | None:
    """A cached features file's rows in the order of `ids`, or None when it (or a photo in it) is missing."""
    order = stored_order(ids_file(features_file), ids) if features_file.exists() else None
    features = None if order is None else load_features(features_file)
    if features is None or len(features) <= int(order.max(initial=-1)):
        return None
    return in_order(features, order)


def save_cached(features_file: Path, features: np.ndarray, ids: Sequence[str]) -> None:
    """Write features (rows in the order of `ids`) and their identities into the cache, atomically."""
    features_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(features_file) as partial, open(partial, "wb") as handle:
        np.save(handle, np.asarray(features, np.float32))
    save_ids(ids_file(features_file), ids)


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int, label: str,
                     out: Path | None = None, *, engine_min_images: int = ENGINE_MIN_IMAGES, engine: str = "auto",
                     chosen: dict | None = None, dtype=np.float32) -> np.ndarray:
    """Pooled float32 features of uint8 images (an array or shards), batch by batch, with progress on
    stderr; with `out`, written into that .npy as they come (memory: one batch) and returned memory-mapped.
    From `engine_min_images` images on, the fastest verified engine runs the extractor; `chosen`, a dict
    shared by the calls on one extractor, keeps that engine for the next split (exported and checked once)."""
    if chosen is None or "forward" not in chosen:
        chosen = {} if chosen is None else chosen
        first = np.asarray(images[:batch_size]).astype(np.float32)
        chosen["forward"], chosen["engine"] = choose_forward(extractor, first, len(images), engine_min_images, engine)
    forward, engine = chosen["forward"], chosen["engine"]
    bar = progress(len(images), f"extracting {label} features ({engine})", unit="images")
    shape = (len(images), *extractor.output_shape[1:])
    features = (np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape) if out is not None
                else np.zeros(shape, dtype))
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size]).astype(np.float32)
        features[start:start + len(batch)] = keras.ops.convert_to_numpy(forward(batch))
        bar.update(len(batch))
    bar.close()
    if out is not None:
        features.flush()
    return features


def choose_forward(extractor: keras.Model, first_batch: np.ndarray, count: int,
                   engine_min_images: int = ENGINE_MIN_IMAGES, engine: str = "auto"):
    """(batch -> features, engine name) for extracting `count` images. Under a tf.distribute strategy
    (catsdogs.distribute) each worker extracts its own features in its own graph (Keras would run the batch on
    every replica and gather every worker's outputs); from `engine_min_images` images on, the fastest engine
    verified on `first_batch` (float32 images) when `engine` is "auto"; else Keras' compiled forward."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy():
            graph = tf.function(lambda batch: extractor(batch, training=False))
            return (lambda batch: graph(tf.constant(batch))), "keras"
    if engine == "auto" and count >= max(engine_min_images, 1):
        from catsdogs.engines import fastest_forward

        engine = fastest_forward(extractor, first_batch)
        return engine, engine.name
    return extractor.predict_on_batch, "keras"


def cached_features(extractor: keras.Model, context, split: str, cache_dir: Path,
                    chosen: dict | None = None, dtype=np.float32, companions: Sequence[tuple] = (),
                    joint: keras.Model | None = None) -> SplitArrays:
    """The features of a split as SplitArrays (features in `images`, labels from the current manifest), from the
    cache or computed and cached (`chosen`: see `extract_features`; `dtype`: as they are stored). `companions`,
    (extractor, dtype) pairs, are cached beside when the split is extracted, in one forward pass of `joint` (a
    Keras model whose outputs are the extractor's, then each companion's): what a later run will read (`heads`
    keeps the inputs of its base's top for `finetune-top`)."""
    rows = read_manifest(context.options.data, split)
    ids = photo_ids(rows)
    labels = np.array([context.config["classes"].index(row["class"]) for row in rows], dtype=np.int32)
    path = cache_file(cache_dir, extractor, ids, split)
    features = load_cached(path, ids)
    if features is None:
        images = context.split(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        batch = min(context.options.batch_size, batch_for(int(extractor.input_shape[1])))
        outputs = [(dtype, path)] + [(kind, cache_file(cache_dir, other, ids, split)) for other, kind in companions]
        with contextlib.ExitStack() as stack:
            partials = [(kind, stack.enter_context(atomic_path(out))) for kind, out in outputs]
            if companions:
                extract_jointly(joint, partials, images.images, batch, split)
            else:  # the map it returns is dropped (unmapped) before the rename
                extract_features(extractor, images.images, batch, split, out=partials[0][1], chosen=chosen,
                                 engine=context.options.engine, dtype=dtype)
        for _, out in outputs:
            save_ids(ids_file(out), ids)
        features = _written(path)
    return SplitArrays(features, labels, [], context.config["classes"])


def extract_jointly(joint: keras.Model, targets: Sequence[tuple], images: np.ndarray, batch_size: int,
                    label: str) -> None:
    """`joint`'s outputs over uint8 images (an array or shards) in one Keras forward pass, each into its
    (dtype, .npy path) of `targets` as they come (memory: one batch)."""
    maps = [np.lib.format.open_memmap(path, mode="w+", dtype=kind, shape=(len(images), *output.shape[1:]))
            for (kind, path), output in zip(targets, joint.outputs, strict=True)]
    bar = progress(len(images), f"extracting {label} features (keras)", unit="images")
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size]).astype(np.float32)
        for target, values in zip(maps, joint.predict_on_batch(batch)):
            target[start:start + len(batch)] = keras.ops.convert_to_numpy(values)
        bar.update(len(batch))
    bar.close()
    for target in maps:
        target.flush()


def load_features(path: Path) -> np.ndarray | None:
    """A cached features file: read into memory when it fits the in-memory budget, else memory-mapped
    (`dataset.to_dataset` then reads batches from the map; catsdogs.shards); None when unreadable."""
    from catsdogs.shards import in_memory_budget

    return read_cached_array(path, mmap=path.is_file() and path.stat().st_size > in_memory_budget())


def _written(path: Path) -> np.ndarray:
    """The features just extracted into `path`; an error if the model gave NaN or infinite values."""
    features = load_features(path)
    if features is None:
        raise CatsdogsError(f"the features extracted into {path} are not finite numbers: the model's weights are "
                            "broken (NaN); train it again")
    return features


def fit_features(model: keras.Model, context) -> dict:
    """Trainer of `features`: extract (or reuse) the features, fit the `head` on them, save the whole model."""
    cache_dir = Path(context.options.cache_dir) if context.options.cache_dir else context.run / CACHE_SUBDIR
    extractor = feature_extractor(model)
    started = time.perf_counter()
    chosen: dict = {}  # the engine picked for the train split extracts the validation split too
    train, validation = (cached_features(extractor, context, split, cache_dir, chosen)
                         for split in ("train", "validation"))
    extraction = time.perf_counter() - started  # the run's wall time includes it
    head = model.get_layer("head")
    # a new model over the head's layers (compiling `head` itself would file the optimizer under it); each
    # epoch checkpoints only this trainer, and the whole model is saved once, with the best head, at the end
    trainer = context.resumed_part()  # with its optimizer's state
    if trainer is None:
        trainer = keras.Model(head.input, head.output, name="head_trainer")
        trainer.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                        jit_compile=jit_compile_setting())
    context.fit(trainer, train, validation, part_of=model, part="head")
    return {"feature_extraction_s": round(extraction, 1)}


def cached_pool_features(model: keras.Model, backbone: str, data_dir: Path, split: str,
                         cache_dir: Path | None, images: np.ndarray | None = None) -> np.ndarray | None:
    """A `heads` model's `pool` features of a split (its bases' flip-averaged features side by side) from the
    features cache that training filled, rows in the current manifest order, or None when any is missing (other
    photos, other weights) and no `images` are given. With `images` (uint8, the split in manifest order), a
    missing base's features are extracted (Keras, bounded batches) and cached: evaluation fills the test split's
    cache once, and the audit after `fit` reads it."""
    from catsdogs.models.frozen import backbone_names, branch_extractor, flip_averaged_bases

    if cache_dir is None or not flip_averaged_bases(model):
        return None
    ids = photo_ids(read_manifest(data_dir, split))
    parts = []
    for name in backbone_names(backbone):
        extractor = branch_extractor(model, name)
        path = cache_file(Path(cache_dir), extractor, ids, split)
        part = load_cached(path, ids)
        if part is None:
            if images is None:
                return None
            _write_features(extractor, images, ids, path, split)
            part = _written(path)
        parts.append(np.asarray(part, np.float32))
    return np.concatenate(parts, axis=1)


def _write_features(extractor: keras.Model, images: np.ndarray, ids: Sequence[str], path: Path, label: str) -> None:
    """Extract (Keras) and cache the features of `images` (rows in the order of `ids`), as `cached_features` does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        keras_forward = {"forward": extractor.predict_on_batch, "engine": "keras"}
        features = extract_features(extractor, images, batch_for(int(extractor.input_shape[1])), label, out=partial,
                                    chosen=keras_forward)
        del features  # unmapped before the rename
    save_ids(ids_file(path), ids)
