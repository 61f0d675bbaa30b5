"""`catsdogs bench`: the study's convnet trained and run the plain-Keras way and the catsdogs way, side by side.

Plain Keras: `keras.utils.image_dataset_from_directory` over the same prepared DATA, float32, default tf.data
settings. catsdogs: images decoded once into memory, batches cast in the graph, prefetch, and the precision
policy (`mixed_bfloat16` on CPUs with native bf16).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from catsdogs.dataset import load_split, to_dataset
from catsdogs.precision import keras_precision, resolve_precision
from catsdogs.preparation import manifest_sha256

T = TypeVar("T")


@dataclass
class Throughput:
    """Images per second of one way of doing one thing."""

    label: str
    images: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def model_flops(model) -> int:
    """Forward-pass FLOPs of a model's Conv2D and Dense layers for one image (2 per multiply-add)."""
    flops = 0
    for layer in model._flatten_layers(include_self=False):
        kind = layer.__class__.__name__
        if kind == "Conv2D":
            _, height, width, filters = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * height * width * filters * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)


def cpu_peak_gflops(precision: str, cores: int, ghz: float) -> float:
    """A rough peak: 2 AVX-512 FMA pipes per core; bf16 dot products do twice the fp32 work per instruction."""
    per_cycle = 64 if precision == "float32" else 128
    return cores * ghz * per_cycle


def _timed_fit(model, batches: Iterator, steps: int, warmup: int, batch_size: int) -> float:
    """Seconds for `steps` training steps after `warmup` steps (graph tracing excluded)."""
    model.fit(batches, steps_per_epoch=warmup, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - started


def _timed(function: Callable[[], T]) -> tuple[T, float]:
    """What `function` returns, and the seconds it took."""
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def run_bench(data: Path, *, steps: int = 40, warmup: int = 5, batch_size: int = 32, precision: str = "auto",
              ghz: float | None = None, out=sys.stdout) -> dict:
    """Measure and print training and prediction throughput, latency and FLOP/s; returns the numbers."""
    import keras
    import tensorflow as tf

    from catsdogs.engines import keras_engine
    from catsdogs.models.convnet import STUDY_IMAGE_SIZE, study_convnet

    manifest_sha256(data)  # a clear UsageError when DATA is not a prepared folder
    size = STUDY_IMAGE_SIZE
    precision = resolve_precision(precision)
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    say(f"data: {data}; {steps} timed training steps of {batch_size} images after {warmup} warm-up steps; "
        f"precision {precision}; {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} threads")

    # plain Keras: decode JPEGs every epoch with image_dataset_from_directory, float32
    keras.utils.set_random_seed(0)
    plain_train = keras.utils.image_dataset_from_directory(
        data / "train", image_size=(size, size), batch_size=batch_size, label_mode="binary", seed=0, verbose=False)
    plain_model = study_convnet(size, jit_compile="auto")  # Keras' default compile settings
    plain_seconds = _timed_fit(plain_model, plain_train.repeat(), steps, warmup, batch_size)
    plain = Throughput("plain Keras (float32, image_dataset_from_directory)", steps * batch_size, plain_seconds)

    # catsdogs: decode once (timed separately), in-memory uint8, precision policy
    (train, decode_seconds) = _timed(lambda: load_split(data, "train", size))
    with keras_precision(precision):
        ours_model = study_convnet(size)
    ours_seconds = _timed_fit(ours_model, to_dataset(train, batch_size, shuffle=True).repeat(), steps, warmup,
                              batch_size)
    ours = Throughput(f"catsdogs ({precision}, decoded once)", steps * batch_size, ours_seconds)

    # how much of an epoch is input: iterate each pipeline alone
    plain_input = Throughput("plain Keras input pipeline alone", *_timed(lambda: _drain(plain_train, steps)))
    ours_batches = to_dataset(train, batch_size, shuffle=True).repeat()  # built once, as in training
    _drain(ours_batches, 2)
    ours_input = Throughput("catsdogs input pipeline alone", *_timed(lambda: _drain(ours_batches, steps)))

    # prediction throughput over the test split
    test_folder = data / "test"
    plain_test = keras.utils.image_dataset_from_directory(test_folder, image_size=(size, size), batch_size=64,
                                                          label_mode="binary", shuffle=False, verbose=False)
    plain_model.predict(plain_test.take(1), verbose=0)
    plain_predict = Throughput("plain Keras predict (model.predict, decoding JPEGs)",
                               *_timed(lambda: len(plain_model.predict(plain_test, verbose=0))))
    test = load_split(data, "test", size)
    forward = keras_engine(ours_model)  # what `catsdogs predict` / evaluate / serve run
    forward(test.images[:64])
    ours_predict = Throughput("catsdogs predict (compiled forward, decoded once)", *_timed(
        lambda: sum(len(forward(test.images[i:i + 64])) for i in range(0, len(test.images), 64))))

    # single-image latency, warm, through the same path as `catsdogs predict` / serve
    latency_ms = _single_image_latency(ours_model, test.paths[:20], size)

    flops = model_flops(ours_model)
    achieved = 3 * flops * ours.rate / 1e9  # a training step costs about 3 forward passes
    ghz = ghz or _cpu_ghz()
    peak = cpu_peak_gflops(precision, _cores(), ghz)

    say("")
    for item in (plain, ours, plain_input, ours_input, plain_predict, ours_predict):
        say(f"{item.label:<55} {item.rate:8.1f} images/s")
    say(f"{'catsdogs one-time decode of the train split':<55} {decode_seconds:8.1f} s")
    say(f"{'input share of a plain-Keras training step':<55} {min(plain.rate / plain_input.rate, 1):8.0%}")
    say(f"{'input share of a catsdogs training step':<55} {min(ours.rate / ours_input.rate, 1):8.0%}")
    say(f"{'single-image predict latency, warm (median of 20)':<55} {latency_ms:8.1f} ms")
    say(f"{'model forward FLOPs per image':<55} {flops / 1e6:8.0f} MFLOP")
    say(f"{'achieved training FLOP/s (3 x forward)':<55} {achieved:8.0f} GFLOP/s")
    say(f"{f'estimated CPU peak ({_cores()} cores x {ghz:.2f} GHz, {precision})':<55} {peak:8.0f} GFLOP/s"
        f"  ({achieved / peak:.0%} of peak)")
    say(f"predict speedup vs plain Keras: {ours_predict.rate / plain_predict.rate:.1f}x")
    say(f"train speedup vs plain Keras: {ours.rate / plain.rate:.1f}x")
    return {"plain_train": plain.rate, "train": ours.rate, "plain_predict": plain_predict.rate,
            "predict": ours_predict.rate, "latency_ms": latency_ms, "achieved_gflops": achieved,
            "peak_gflops": peak, "decode_s": decode_seconds}


def _drain(dataset, steps: int) -> int:
    images = 0
    for x, _ in dataset.take(steps):
        images += int(x.shape[0])
    return images


def _single_image_latency(model, paths: list[Path], size: int) -> float:
    """Median ms to load, resize and classify one photo with a warm model."""
    from catsdogs.engines import keras_engine
    from catsdogs.images import load_image

    forward = keras_engine(model)
    forward(load_image(paths[0], size)[None])
    times = []
    for path in paths:
        started = time.perf_counter()
        forward(load_image(path, size)[None])
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _cpu_ghz() -> float:
    """The CPU's nominal clock from /proc/cpuinfo (BogoMIPS / 2 where MHz is not reported)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 2.5
    for key, scale in (("cpu MHz", 1000.0), ("bogomips", 2000.0)):
        for line in text.splitlines():
            if line.lower().startswith(key.lower()):
                return float(line.split(":")[1]) / scale
    return 2.5


def bench(data: Path | None, source: Path | None, **options) -> dict:
    """Run the benchmark on DATA, or on a temporary DATA prepared from SOURCE."""
    if data is not None:
        return run_bench(Path(data), **options)
    from catsdogs.preparation import prepare

    with tempfile.TemporaryDirectory(prefix="catsdogs-bench-") as folder:
        print(prepare(source, Path(folder) / "data").line(), file=sys.stderr)
        return run_bench(Path(folder) / "data", **options)
