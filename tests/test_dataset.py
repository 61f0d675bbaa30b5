"""The input pipeline: decode once, cache hit/miss, identical results cached or not, no shuffling at evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import catsdogs.dataset as dataset_module
from catsdogs.dataset import load_split, to_dataset
from catsdogs.images import load_image
from catsdogs.predict import Predictor


def test_cache_hit_skips_decoding_and_gives_the_same_arrays(tiny_data: Path, tmp_path: Path, monkeypatch):
    first = load_split(tiny_data, "train", 48, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("images-*-train-48.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images")

    monkeypatch.setattr(dataset_module, "load_image", no_decoding)
    second = load_split(tiny_data, "train", 48, cache_dir=tmp_path)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    with pytest.raises(AssertionError, match="must not decode"):  # another size is a miss
        load_split(tiny_data, "train", 64, cache_dir=tmp_path)


def test_cached_and_uncached_predictions_are_identical(tiny_run: Path, tiny_data: Path, tmp_path: Path):
    predictor = Predictor(tiny_run)
    cached = load_split(tiny_data, "test", predictor.image_size, cache_dir=tmp_path)
    cached = load_split(tiny_data, "test", predictor.image_size, cache_dir=tmp_path)  # from the cache file
    from_arrays = predictor.probabilities(cached.images)[:, 1]
    from_files = [p.probabilities["dog"] for p in predictor.predict_paths(cached.paths)]
    one_by_one = [float(predictor.probabilities(load_image(p, predictor.image_size)[None])[0, 1]) for p in cached.paths]
    assert np.allclose(from_arrays, from_files, atol=1e-6) and np.allclose(from_arrays, one_by_one, atol=1e-5)


def test_evaluation_batches_keep_file_order_and_training_batches_shuffle(tiny_data: Path):
    split = load_split(tiny_data, "train", 48)
    ordered = np.concatenate([y.numpy() for _, y in to_dataset(split, 8)])
    assert np.array_equal(ordered, split.labels)
    images = np.concatenate([x.numpy() for x, _ in to_dataset(split, 8)])
    assert images.dtype == np.float32 and np.array_equal(images, split.images.astype(np.float32))
    shuffled = np.concatenate([y.numpy() for _, y in to_dataset(split, 8, shuffle=True, seed=3)])
    assert sorted(shuffled) == sorted(split.labels) and not np.array_equal(shuffled, split.labels)
