"""Prepared DATA -> arrays and tf.data pipelines: each image decoded and resized once, then cached."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.data_files import manifest_sha256, read_classes, read_manifest
from catsdogs.errors import UsageError
from catsdogs.files import atomic_path
from catsdogs.images import ImageError, decode_many, load_image
from catsdogs.photo_keys import read_cached_array
from catsdogs.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class SplitArrays:
    """One split in memory, in manifest order (never shuffled): uint8 images, int labels, file paths."""

    images: np.ndarray  # N x S x S x 3, uint8 (or catsdogs.shards.ShardedImages for big splits)
    labels: np.ndarray  # N, int32 (index into classes)
    paths: list[Path]
    classes: list[str]


def check_split_files(data_dir: Path, split: str) -> list[Path]:
    """The files of a split, once each is found (a `stat`, no read); a UsageError naming the first missing one
    and the fix otherwise (DATA changed since it was prepared)."""
    data_dir = Path(data_dir)
    paths = [data_dir / row["path"] for row in read_manifest(data_dir, split)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]} is missing{more}: DATA changed since it was prepared; prepare DATA "
                         "again", "data")
    return paths


def load_data_image(path: Path, image_size: int) -> np.ndarray:
    """One image of a prepared DATA; a UsageError naming it and the fix when it cannot be read any more."""
    try:
        return load_image(path, image_size)
    except ImageError as error:
        raise UsageError(f"{path} cannot be used ({error}): DATA changed since it was prepared; prepare DATA "
                         "again", "data") from None


def load_split(data_dir: Path, split: str, image_size: int, *, cache_dir: Path | None = None,
               workers: int | None = None, storage: str = "auto") -> SplitArrays:
    """Decode and resize every image of a split once; with `cache_dir`, reuse the result across runs.

    storage: "memory" (one array), "shards" (catsdogs.shards, bounded memory) or "auto": shards when the
    decoded split is bigger than `shards.in_memory_budget()`, said on stderr.
    """
    data_dir = Path(data_dir)
    classes = read_classes(data_dir)
    rows = read_manifest(data_dir, split)
    paths = check_split_files(data_dir, split)  # a deleted photo: named, before any decoding
    labels = np.array([classes.index(row["class"]) for row in rows], dtype=np.int32)
    storage = choose_storage(len(rows), image_size, storage, split)
    if storage == "shards":
        from catsdogs import shards

        folder = (Path(cache_dir) / f"images-{manifest_sha256(data_dir)[:16]}-{split}-{image_size}.shards"
                  if cache_dir is not None else shards.temporary_shard_folder())
        images = shards.write_shards(paths, image_size, folder, workers=workers, label=f"decoding {split}",
                                     decode=load_data_image)
        return SplitArrays(images, labels, paths, classes)
    cache_file = None
    if cache_dir is not None:
        key = manifest_sha256(data_dir)[:16]
        cache_file = Path(cache_dir) / f"images-{key}-{split}-{image_size}.npy"
        images = read_cached_array(cache_file)
        if images is not None and images.shape == (len(rows), image_size, image_size, 3) and images.dtype == np.uint8:
            return SplitArrays(images, labels, paths, classes)
    bar = progress(len(rows), f"decoding {split}", unit="images")
    images = decode_many(paths, image_size, workers, decode=load_data_image, on_each=bar.update)
    bar.close()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as partial:
            np.save(partial, images)
    return SplitArrays(images, labels, paths, classes)


def sample_images(data_dir: Path, split: str, image_size: int, count: int) -> np.ndarray:
    """`count` images spread evenly over a split (manifest order), decoded at `image_size`."""
    rows = read_manifest(data_dir, split)
    if not rows:
        raise UsageError(f"{data_dir}: the {split} split is empty")
    rows = rows[:: max(1, len(rows) // count)][:count]
    return decode_many([Path(data_dir) / row["path"] for row in rows], image_size, decode=load_data_image)


def choose_storage(count: int, image_size: int, storage: str = "auto", split: str = "") -> str:
    """"memory" or "shards" for a split of `count` images at `image_size` (see load_split)."""
    if storage not in ("auto", "memory", "shards"):
        raise UsageError(f"storage must be auto, memory or shards, got {storage!r}", "storage")
    if storage != "auto":
        return storage
    from catsdogs.shards import decoded_bytes, in_memory_budget

    size, budget = decoded_bytes(count, image_size), in_memory_budget()
    if size <= budget:
        return "memory"
    logger.info(f"{split or 'split'}: {count} images at {image_size} px = {size / 2**30:.1f} GiB decoded, over "
                f"the {budget / 2**30:.1f} GiB in-memory budget: memory-mapped shards on disk")
    return "shards"


def to_dataset(split: SplitArrays, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0):
    """A tf.data pipeline of (float32 0-255 images, float32 labels) batches, prefetched.

    Shuffling permutes indices and gathers whole batches from the in-memory images in the graph:
    no per-image Python work and no shuffle buffer full of image copies.
    """
    import tensorflow as tf

    if isinstance(split.images, np.memmap) or not isinstance(split.images, np.ndarray):  # on disk: the same
        # batches, read from the shards (or a memory-mapped features cache) one batch at a time
        from catsdogs.shards import sharded_dataset
        return sharded_dataset(split.images, split.labels, batch_size, shuffle=shuffle, seed=seed)
    images = tf.constant(split.images)
    labels = tf.constant(split.labels.astype(np.float32))
    indices = tf.data.Dataset.range(len(split.labels))
    if shuffle:
        indices = indices.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size).map(  # a gather and a cast per batch: one thread is plenty
        lambda i: (tf.cast(tf.gather(images, i), tf.float32), tf.gather(labels, i)))
    # tf.data's autotuner runs threads of its own; on a 2-core CPU they slowed every other epoch of the
    # augmented convnet from ~11 s to ~20 s. A fixed two-batch prefetch keeps the model fed without them.
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(2).with_options(options)
