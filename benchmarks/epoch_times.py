"""Epoch times of the augmented convnet: tf.data's autotuner on and off, or Keras' four augmentation layers
against catsdogs' one fused warp (not a test).

    PYTHONPATH=src python benchmarks/epoch_times.py --data study/data [--epochs 7] [--cache-dir study/cache]
        [--compare autotune|augmentation]

The same seeded model and the same `catsdogs.dataset.to_dataset` pipeline, trained for N epochs per variant:
- autotune: once with `options.autotune.enabled = True` put back (tf.data's default), once as catsdogs ships it;
- augmentation: Keras' RandomFlip + RandomRotation + RandomZoom + RandomTranslation (+ RandomContrast), the
  same ranges as catsdogs' RandomAffine (+ RandomContrast), and no augmentation at all, in turns (twice each).
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
from catsdogs.models import convnet
from catsdogs.models.augmentation import augmentation
from catsdogs.precision import keras_precision, resolve_precision


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def keras_layers_augmentation(seed: int | None = None) -> keras.Sequential:
    """The study's augmentation as Keras' own layers, one resampling pass each (catsdogs before the fused warp)."""
    layers = keras.layers
    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(0.1, fill_mode="reflect", seed=seed),
        layers.RandomZoom(0.2, fill_mode="reflect", seed=seed),
        layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
        layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
    ], name="augmentation")


def epoch_seconds(train, epochs: int, precision: str, *, autotune: bool = False, augment=augmentation) -> list[float]:
    keras.utils.set_random_seed(1337)
    convnet.augmentation = augment or augmentation  # the builder's augmentation, swapped for the comparison
    with keras_precision(precision):
        model = convnet.study_convnet(augment=augment is not None, dropout=0.5, seed=1337, name="augmented")
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
    parser.add_argument("--compare", choices=("autotune", "augmentation"), default="autotune")
    args = parser.parse_args()
    train = load_split(args.data, "train", 150, cache_dir=args.cache_dir)
    precision = resolve_precision("auto")
    print(f"augmented convnet, {len(train.labels)} training images, {precision}, {args.epochs} epochs")
    if args.compare == "autotune":
        variants = [("tf.data autotune on (tf.data's default)", {"autotune": True}),
                    ("autotune off (catsdogs)", {})]
    else:
        variants = [("Keras' four augmentation layers", {"augment": keras_layers_augmentation}),
                    ("one RandomAffine warp (catsdogs)", {}), ("no augmentation", {"augment": None})] * 2
    for label, options in variants:
        seconds = epoch_seconds(train, args.epochs, precision, **options)
        print(f"{label}: {' '.join(f'{s:.1f}' for s in seconds)} s per epoch, mean {statistics.mean(seconds):.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
