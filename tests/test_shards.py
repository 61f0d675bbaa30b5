"""Sharded storage: bounded-memory splits give exactly the in-memory path's arrays and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catsdogs.dataset import choose_storage, load_split, to_dataset
from catsdogs.shards import ShardedImages, write_shards


def test_sharded_split_equals_the_in_memory_one(tiny_data: Path, tmp_path: Path):
    memory = load_split(tiny_data, "train", 48, storage="memory")
    sharded = load_split(tiny_data, "train", 48, storage="shards", cache_dir=tmp_path)
    assert isinstance(sharded.images, ShardedImages) and sharded.images.shape == memory.images.shape
    assert np.array_equal(sharded.images[:], memory.images)
    assert np.array_equal(sharded.images[[5, 0, 39, 5]], memory.images[[5, 0, 39, 5]])
    assert np.array_equal(sharded.labels, memory.labels)


def test_sharded_batches_equal_in_memory_batches_same_seed(tiny_data: Path, tmp_path: Path):
    memory = load_split(tiny_data, "train", 48, storage="memory")
    sharded = load_split(tiny_data, "train", 48, storage="shards", cache_dir=tmp_path)
    for shuffle, seed in ((False, 0), (True, 7)):
        a = list(to_dataset(memory, 8, shuffle=shuffle, seed=seed).take(6))
        b = list(to_dataset(sharded, 8, shuffle=shuffle, seed=seed).take(6))
        assert len(a) == len(b) == 5  # 40 images, two epochs' worth asked: one epoch of 5 batches
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == xb.dtype and np.array_equal(xa.numpy(), xb.numpy())
            assert np.array_equal(ya.numpy(), yb.numpy())


def test_shards_are_written_once_and_resume_an_interrupted_write(tiny_data: Path, tmp_path: Path):
    paths = load_split(tiny_data, "train", 48, storage="memory").paths
    calls = []

    def counting(path, size):
        from catsdogs.images import load_image
        calls.append(path)
        return load_image(path, size)

    images = write_shards(paths, 48, tmp_path / "s", shard_size=16, decode=counting)
    assert images.counts == [16, 16, 8] and len(calls) == 40
    write_shards(paths, 48, tmp_path / "s", shard_size=16, decode=counting)
    assert len(calls) == 40  # complete: reused
    (tmp_path / "s" / "index.json").unlink()  # interrupted before the index: finished shards are kept
    (tmp_path / "s" / "shard-00002.npy").unlink()
    again = write_shards(paths, 48, tmp_path / "s", shard_size=16, decode=counting)
    assert len(calls) == 48 and np.array_equal(again[:], images[:])


def test_storage_is_chosen_by_size(monkeypatch, capsys):
    from catsdogs.verbosity import set_verbosity

    set_verbosity(1)  # the choice is said from verbosity 1 on
    monkeypatch.setenv("CATSDOGS_IN_MEMORY_MB", "100")
    assert choose_storage(1000, 160, split="train") == "memory"  # 77 MB
    assert choose_storage(10_000, 160, split="train") == "shards"  # 768 MB
    assert "shards" in capsys.readouterr().err
    assert choose_storage(10_000, 160, "memory") == "memory"


def test_memory_mapped_features_give_the_same_batches(tmp_path: Path):
    features = np.random.default_rng(0).normal(size=(37, 5)).astype(np.float32)
    np.save(tmp_path / "f.npy", features)
    labels = np.arange(37) % 2
    from catsdogs.dataset import SplitArrays

    mapped = SplitArrays(np.load(tmp_path / "f.npy", mmap_mode="r"), labels, [], ["a", "b"])
    memory = SplitArrays(features, labels, [], ["a", "b"])
    for (xa, ya), (xb, yb) in zip(to_dataset(memory, 8, shuffle=True, seed=2), to_dataset(mapped, 8, shuffle=True, seed=2)):
        assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(), yb.numpy())


def test_reads_across_shard_boundaries(tiny_data: Path, tmp_path: Path):
    memory = load_split(tiny_data, "train", 48, storage="memory")
    images = write_shards(memory.paths, 48, tmp_path / "s", shard_size=7)
    for rows in ([5, 6, 7, 8], list(range(40)), [13, 14, 0, 1, 2, 39], [20]):
        assert np.array_equal(images.take(rows), memory.images[rows])
