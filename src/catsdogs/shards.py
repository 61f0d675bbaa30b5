"""Photo collections bigger than memory: decoded images in fixed-size uint8 shards on disk.

A split is decoded once, streaming, into `shard-NNNNN.npy` files of `shard_size` images each (plain `.npy`:
`np.load(path, mmap_mode="r")` maps one) and an `index.json` written last, so a folder without it is
incomplete and is rebuilt. Reading goes through `ShardedImages`, an array-like that reads the rows it is
asked for with `os.pread` (the kernel's page cache holds what fits; the process itself holds one batch), so
memory stays bounded whatever the collection's size. `sharded_dataset` gives exactly the batches of
`dataset.to_dataset` for the same seed: the same shuffled index order, the same batches, the images read
from the shards instead of gathered from an in-memory array.

`dataset.load_split` picks this storage automatically when a split's decoded size exceeds the in-memory
budget (`in_memory_budget()`: `CATSDOGS_IN_MEMORY_MB`, default an eighth of the available memory, at most
256 MiB) and says so on stderr.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from catsdogs.progress import progress

SHARD_SIZE = 1024
INDEX = "index.json"
FORMAT_VERSION = 1


def in_memory_budget() -> int:
    """Bytes of decoded images a split may take in memory before it goes to shards."""
    configured = os.environ.get("CATSDOGS_IN_MEMORY_MB")
    if configured:
        return int(float(configured) * 2**20)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 8 * 2**30
    # measured (benchmarks/scale.py): in memory, a split costs ~3x its decoded size in peak RSS (the array, its
    # tf.constant copy, the batch gathers); from shards, training is as fast and peak RSS stays ~1.2 GB. 256 MiB
    # (the study's 3000 photos at 150 px stay in memory): `fit` on 3670 photos peaked 0.4-0.5 GB lower from
    # shards than with its 2570 training photos (0.5 GiB at 260 px) in memory (docs/performance.md)
    return int(min(256 * 2**20, available // 8))


def decoded_bytes(count: int, image_size: int) -> int:
    return count * image_size * image_size * 3


class ShardedImages:
    """Read-only uint8 images N x S x S x 3 stored in shards; indexing returns new arrays (one batch)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / INDEX).read_text())
        self.image_size, self.shard_size = index["image_size"], index["shard_size"]
        self.counts = index["counts"]
        self.files = [self.folder / name for name in index["files"]]
        self.row_bytes = self.image_size * self.image_size * 3
        self.offsets = [_data_offset(path) for path in self.files]
        self._fds: list[int | None] = [None] * len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.image_size, self.image_size, 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return sum(self.counts)

    def _fd(self, shard: int) -> int:
        if self._fds[shard] is None:
            self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[shard]

    def take(self, indices) -> np.ndarray:
        """The images at `indices` (any order, repeats allowed), as one new array."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        flat = out.reshape(len(indices), self.row_bytes)
        row = 0
        while row < len(indices):  # one read per run of consecutive images in one shard (evaluation order)
            shard, within = divmod(int(indices[row]), self.shard_size)
            end = row + 1
            while (end < len(indices) and indices[end] == indices[end - 1] + 1
                   and within + (end - row) < self.counts[shard]):
                end += 1
            view = memoryview(flat[row:end]).cast("B")
            got = os.preadv(self._fd(shard), [view], self.offsets[shard] + within * self.row_bytes)
            if got != (end - row) * self.row_bytes:
                raise OSError(f"{self.files[shard]}: short read")
            row = end
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):  # e.g. images[a:b, :, ::-1]
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        if np.ndim(key) == 0:
            return self.take([int(key)])[0]
        return self.take(key)

    def __iter__(self):
        for start in range(0, len(self), self.shard_size):
            yield from self.take(np.arange(start, min(start + self.shard_size, len(self))))

    def close(self) -> None:
        for i, fd in enumerate(self._fds):
            if fd is not None:
                os.close(fd)
                self._fds[i] = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self):  # picklable (tf.data, multiprocessing): descriptors are reopened lazily
        state = dict(self.__dict__)
        state["_fds"] = [None] * len(self.files)
        return state


def _data_offset(path: Path) -> int:
    """Where the array data begins in a .npy file."""
    mapped = np.load(path, mmap_mode="r")
    offset = int(mapped.offset)
    del mapped
    return offset


def write_shards(paths: list[Path], image_size: int, folder: Path, *, shard_size: int = SHARD_SIZE,
                 workers: int | None = None, label: str = "decoding", decode=None) -> ShardedImages:
    """Decode and resize `paths` into shards in `folder`, one shard in memory at a time; reuse a complete
    folder (same count, size and shard size) and keep the finished shards of an interrupted one."""
    from catsdogs.images import decode_many

    folder = Path(folder)
    index_file = folder / INDEX
    if index_file.exists():
        index = json.loads(index_file.read_text())
        if (index.get("version"), sum(index["counts"]), index["image_size"], index["shard_size"]) == \
                (FORMAT_VERSION, len(paths), image_size, shard_size):
            return ShardedImages(folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bar = progress(len(paths), label, unit="images")
    files, counts = [], []
    for number, start in enumerate(range(0, len(paths), shard_size)):
        chunk = paths[start:start + shard_size]
        name = f"shard-{number:05d}.npy"
        target = folder / name
        if not (target.exists() and _shard_rows(target) == (len(chunk), image_size)):
            buffer = decode_many(chunk, image_size, workers, decode=decode, on_each=bar.update)
            partial = folder / f".partial-{name}"
            with open(partial, "wb") as handle:
                np.save(handle, buffer)
            os.replace(partial, target)
            del buffer
        else:
            bar.update(len(chunk))
        files.append(name)
        counts.append(len(chunk))
    bar.close()
    index = {"version": FORMAT_VERSION, "image_size": image_size, "shard_size": shard_size, "files": files,
             "counts": counts}
    partial = folder / f".partial-{INDEX}"
    partial.write_text(json.dumps(index))
    os.replace(partial, index_file)
    return ShardedImages(folder)


def _shard_rows(path: Path) -> tuple[int, int] | None:
    try:
        array = np.load(path, mmap_mode="r")
        return (array.shape[0], array.shape[1])
    except (OSError, ValueError):
        return None


_TEMP_FOLDERS: list[str] = []


def temporary_shard_folder() -> Path:
    """A folder for shards when no cache folder is given; removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="catsdogs-shards-")
    if not _TEMP_FOLDERS:
        atexit.register(lambda: [shutil.rmtree(f, ignore_errors=True) for f in _TEMP_FOLDERS])
    _TEMP_FOLDERS.append(folder)
    return Path(folder)


def batch_reader(images):
    """A graph function: int64 index vector -> uint8 batch of `images` (an in-memory array or shards)."""
    import tensorflow as tf

    if isinstance(images, np.ndarray) and not isinstance(images, np.memmap):
        table = tf.constant(images)
        return lambda i: tf.gather(table, i)
    shape = tuple(images.shape[1:])
    take = images.take if isinstance(images, ShardedImages) else (lambda i: np.asarray(images[i]))
    dtype = tf.as_dtype(images.dtype)

    def read(i):
        batch = tf.numpy_function(take, [i], dtype, stateful=False)
        return tf.ensure_shape(batch, (None, *shape))

    return read


def sharded_dataset(images: ShardedImages, labels: np.ndarray, batch_size: int = 32, *, shuffle: bool = False,
                    seed: int = 0, label_dtype="float32"):
    """`dataset.to_dataset` over shards: the same index order and batches, images read from disk."""
    import tensorflow as tf

    read = batch_reader(images)
    label_table = tf.constant(np.asarray(labels).astype(label_dtype))
    indices = tf.data.Dataset.range(len(labels))
    if shuffle:
        indices = indices.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(batch_size).map(lambda i: (tf.cast(read(i), tf.float32), tf.gather(label_table, i)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(2).with_options(options)
