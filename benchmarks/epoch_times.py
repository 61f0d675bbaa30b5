"""Epoch times of the augmented convnet with tf.data's autotuner on and off (not a test).

    PYTHONPATH=src python benchmarks/epoch_times.py --data study/data [--epochs 7] [--cache-dir study/cache]

The same seeded model and the same `catsdogs.dataset.to_dataset` pipeline, trained for N epochs twice:
once with `options.autotune.enabled = True` put back (tf.data's default), once as catsdogs ships it.
Prints each epoch's seconds (training only, no validation) and the mean of each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import keras
import tensorflow as tf

from catsdogs.dataset import load_split, to_dataset
from catsdogs.models import create_model
from catsdogs.precision import keras_precision, resolve_precision


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def epoch_seconds(train, epochs: int, autotune: bool, precision: str) -> list[float]:
    keras.utils.set_random_seed(1337)
    with keras_precision(precision):
        model = create_model("augmented", seed=1337)
    dataset = to_dataset(train, 32, shuffle=True, seed=1337)
    if autotune:
        options = tf.data.Options()
        options.autotune.enabled = True
        dataset = dataset.with_options(options)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA (catsdogs prepare)")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args()
    train = load_split(args.data, "train", 150, cache_dir=args.cache_dir)
    precision = resolve_precision("auto")
    print(f"augmented convnet, {len(train.labels)} training images, {precision}, {args.epochs} epochs")
    for label, autotune in (("tf.data autotune on (tf.data's default)", True), ("autotune off (catsdogs)", False)):
        seconds = epoch_seconds(train, args.epochs, autotune, precision)
        print(f"{label}: {' '.join(f'{s:.1f}' for s in seconds)} s per epoch, mean {statistics.mean(seconds):.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
