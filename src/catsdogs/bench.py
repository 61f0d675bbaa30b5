"""`catsdogs bench`: training and inference speed, each side by side with plain Keras, in one run.

Training: the study's convnet fed by `keras.utils.image_dataset_from_directory` in float32 (plain Keras)
against catsdogs (images decoded once into memory, batches cast in the graph, prefetch, `mixed_bfloat16` on
CPUs with native bf16); the achieved FLOP/s against a peak measured by a matmul in the same run.
Inference: catsdogs.bench_inference (engines side by side, end to end over full-size JPEGs).
The last three lines are the headline numbers.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.compat import flat_layers
from catsdogs.data_files import manifest_sha256
from catsdogs.dataset import load_split, to_dataset
from catsdogs.models.convnet import STUDY_IMAGE_SIZE
from catsdogs.precision import device_name, keras_precision, resolve_precision
from catsdogs.timing import timed

logger = logging.getLogger(__name__)


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
    for layer in flat_layers(model):
        kind = layer.__class__.__name__
        if kind == "Conv2D":
            _, height, width, filters = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * height * width * filters * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)


def matmul_gflops(precision: str, size: int = 2048, repeats: int = 10) -> float:
    """The measured peak: GFLOP/s of a `size` x `size` TensorFlow matmul in `precision` (float32 or bfloat16),
    the median of `repeats` after a warm-up (this VM's timings are noisy)."""
    import tensorflow as tf

    dtype = {"bfloat16": tf.bfloat16, "float16": tf.float16}.get(precision, tf.float32)
    a = tf.random.stateless_uniform((size, size), (1, 2), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    # the whole product is summed: a slice of it would let the graph optimizer skip most of the work
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y), tf.float32)))
    matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        seconds.append(timed(lambda: matmul(a, b).numpy())[1])
    return 2 * size**3 / float(np.median(seconds)) / 1e9


def _timed_fit(model, batches: Iterator, steps: int, warmup: int, batch_size: int) -> float:
    """Seconds for `steps` training steps after `warmup` steps (graph tracing excluded)."""
    model.fit(batches, steps_per_epoch=warmup, epochs=1, verbose=0)
    return timed(lambda: model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0))[1]


@dataclass
class BenchResult:
    """What `bench` measured; `lines()` is the table the command line prints (the last three: the headline)."""

    header: str
    training: list[Throughput]  # plain Keras, catsdogs, plain Keras input alone, catsdogs input alone
    decode_seconds: float
    flops: float  # forward FLOPs of one image
    peak: dict[str, float]  # GFLOP/s of a matmul, by precision
    precision: str
    latency_ms: float
    speeds: list  # catsdogs.bench_inference.EngineSpeed
    endings: list  # catsdogs.bench_inference end-to-end results
    backbone: str
    photos: int
    trained: bool  # a trained RUN given: the end-to-end labels agree meaningfully
    device: str = ""  # precision.device_name(): the GPU, else the CPU

    @property
    def achieved(self) -> float:
        """Achieved training GFLOP/s: a training step costs about 3 forward passes."""
        return 3 * self.flops * self.training[1].rate / 1e9

    def numbers(self) -> dict:
        plain, ours = self.training[:2]
        return {"device": self.device, "plain_train": plain.rate, "train": ours.rate, "achieved_gflops": self.achieved,
                "peak_gflops": self.peak, "decode_s": self.decode_seconds, "latency_ms": self.latency_ms,
                "engines": [vars(speed) for speed in self.speeds], "end_to_end": [vars(item) for item in self.endings]}

    def lines(self) -> list[str]:
        plain, ours, plain_input, ours_input = self.training
        lines = [self.header, "", "training"]
        lines += [f"  {item.label:<55} {item.rate:8.1f} images/s" for item in self.training]
        lines += [f"  {'catsdogs one-time decode of the train split':<55} {self.decode_seconds:8.1f} s",
                  f"  {'input share of a plain-Keras training step':<55} {min(plain.rate / plain_input.rate, 1):8.0%}",
                  f"  {'input share of a catsdogs training step':<55} {min(ours.rate / ours_input.rate, 1):8.0%}",
                  f"  {'model forward FLOPs per image':<55} {self.flops / 1e6:8.0f} MFLOP",
                  f"  {'achieved training FLOP/s (3 x forward)':<55} {self.achieved:8.0f} GFLOP/s"]
        lines += [f"  {f'measured peak: 2048x2048 matmul, {name}':<55} {value:8.0f} GFLOP/s"
                  for name, value in self.peak.items()]
        lines += ["", "inference engines (batch of 32 test images; int8: ONNX Runtime static quantization, QDQ)"]
        lines += [f"  {speed.line()}" for speed in self.speeds]
        lines += ["", f"end to end over {self.photos} full-size JPEGs of the test split, decoding included "
                  f"({self.backbone} backbone)"]
        for item in self.endings:
            agreement = f"  same label as plain Keras: {item.agreement:.1%}" if self.trained else ""  # else coin flips
            accuracy = f", accuracy {item.accuracy:.3f}" if item.accuracy is not None else ""
            lines.append(f"  {item.label:<58} {item.rate:8.1f} images/s{agreement}{accuracy}")
        lines += [f"  single-image predict latency, study convnet, warm (median of 20): {self.latency_ms:.1f} ms", "",
                  f"train speedup vs plain Keras: {ours.rate / plain.rate:.1f}x",
                  f"inference speedup vs Keras: {self.endings[2].rate / self.endings[0].rate:.1f}x",
                  f"training FLOP/s vs measured peak: {self.achieved / self.peak[self.precision]:.0%}"]
        return lines


def run_bench(data: Path, *, steps: int = 40, warmup: int = 5, batch_size: int = 32, precision: str = "auto",
              run: Path | None = None, photos: int = 200) -> BenchResult:
    """Measure training speed against plain Keras and a measured matmul peak, the inference engines side by
    side, and end-to-end prediction over full-size JPEGs (each part announced on the `catsdogs` logger).

    `run`: a trained RUN with a pretrained backbone for the engine table and the end-to-end check (default: the
    default backbone with ImageNet weights and an untrained head; speed does not depend on the head).
    """
    import tensorflow as tf

    manifest_sha256(data)  # a clear UsageError when DATA is not a prepared folder
    if run is not None:
        from catsdogs.run_files import load_run_model

        load_run_model(run)  # a clear UsageError now, not after minutes of training
    precision = resolve_precision(precision)
    device = device_name()
    header = (f"device: {device}; data: {data}; {steps} timed training steps of {batch_size} images after "
              f"{warmup} warm-up steps; "
              f"precision {precision}; {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} threads")
    peak = {name: matmul_gflops(name) for name in dict.fromkeys(("float32", "bfloat16", precision))}  # the measured peak
    logger.info("bench: training, plain Keras and catsdogs")
    training, decode_seconds, ours_model, train = _training_side(data, steps, warmup, batch_size, precision)
    logger.info("bench: inference engines and end to end")
    speeds, endings, backbone, files = _inference_side(data, ours_model, train, precision, run, photos)
    return BenchResult(header, training, decode_seconds, model_flops(ours_model), peak, precision,
                       _single_image_latency(ours_model, train.paths[:20], STUDY_IMAGE_SIZE), speeds, endings,
                       backbone, files, run is not None, device)


def _training_side(data: Path, steps: int, warmup: int, batch_size: int, precision: str):
    """Plain Keras (JPEGs decoded every epoch by image_dataset_from_directory, float32) against catsdogs
    (decoded once, timed apart; the precision policy), and each input pipeline alone."""
    import keras

    from catsdogs.models.convnet import study_convnet

    size = STUDY_IMAGE_SIZE
    keras.utils.set_random_seed(0)
    plain_train = keras.utils.image_dataset_from_directory(
        data / "train", image_size=(size, size), batch_size=batch_size, label_mode="binary", seed=0, verbose=False)
    plain_model = study_convnet(size, jit_compile="auto")  # Keras' default compile settings
    plain_seconds = _timed_fit(plain_model, plain_train.repeat(), steps, warmup, batch_size)
    plain = Throughput("plain Keras (float32, image_dataset_from_directory)", steps * batch_size, plain_seconds)

    (train, decode_seconds) = timed(lambda: load_split(data, "train", size))
    with keras_precision(precision):
        ours_model = study_convnet(size)
    ours_seconds = _timed_fit(ours_model, to_dataset(train, batch_size, shuffle=True).repeat(), steps, warmup,
                              batch_size)
    ours = Throughput(f"catsdogs ({precision}, decoded once)", steps * batch_size, ours_seconds)

    # how much of an epoch is input: iterate each pipeline alone
    plain_input = Throughput("plain Keras input pipeline alone", *timed(lambda: _drain(plain_train, steps)))
    ours_batches = to_dataset(train, batch_size, shuffle=True).repeat()  # built once, as in training
    _drain(ours_batches, 2)
    ours_input = Throughput("catsdogs input pipeline alone", *timed(lambda: _drain(ours_batches, steps)))
    return [plain, ours, plain_input, ours_input], decode_seconds, ours_model, train


def _inference_side(data: Path, ours_model, train, precision: str, run: Path | None, photos: int):
    """The engines side by side (the study's convnet, its float32 twin where trained in bf16, and a backbone),
    then end to end over full-size JPEGs: (speeds, endings, backbone name, number of photos)."""
    from catsdogs.bench_inference import end_to_end, engine_speeds
    from catsdogs.export import float32_rebuild
    from catsdogs.predict import Predictor

    test = load_split(data, "test", STUDY_IMAGE_SIZE)
    convnet = float32_rebuild(ours_model) if precision != "float32" else ours_model
    speeds = engine_speeds("study convnet", convnet, test.images, train.images[:64])
    with tempfile.TemporaryDirectory(prefix="catsdogs-bench-run-") as folder:
        run_folder, backbone = (Path(run), _run_backbone(Path(run))) if run else _backbone_run(Path(folder))
        model = Predictor(run_folder).model
        backbone_size = int(model.input_shape[1])
        backbone_test = load_split(data, "test", backbone_size)
        calibration = load_split(data, "validation", backbone_size)  # any images but the timed test ones
        int8 = Path(folder) / "backbone-int8.onnx"
        speeds += engine_speeds(f"{backbone} backbone", model, backbone_test.images, calibration.images[:64],
                                keep_int8=int8)
        files = test.paths[:photos]
        same_classes = run is not None and Predictor(run_folder, model=model).classes == test.classes
        endings = end_to_end(run_folder, files, int8 if int8.exists() else None,
                             test.labels[:photos] if same_classes else None)
    return speeds, endings, backbone, len(files)


def _run_backbone(run: Path) -> str:
    from catsdogs.run_files import read_config

    return str(read_config(run).get("backbone") or "pretrained")


def _backbone_run(folder: Path) -> tuple[Path, str]:
    """A RUN folder holding the default backbone (ImageNet weights, offline copies when available) under an
    untrained two-class head: what the engines and end-to-end timings need."""
    from catsdogs.models import create_model
    from catsdogs.models.backbones import default_backbone
    from catsdogs.models.weights import weights_cache
    from catsdogs.run_files import CLASSES, CONFIG, MODEL, write_json

    backbone = default_backbone()
    with weights_cache(folder / "keras"):
        model = create_model("features", backbone=backbone, num_classes=2)
    model.optimizer.build(model.trainable_variables)  # saved as a trained run's would be
    run = folder / "run"
    run.mkdir()
    model.save(run / MODEL)
    write_json(run / CLASSES, ["cat", "dog"])
    write_json(run / CONFIG, {"model": "features", "backbone": backbone, "image_size": int(model.input_shape[1]),
                              "status": "complete"})
    return run, backbone


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
        times.append(timed(lambda path=path: forward(load_image(path, size)[None]))[1])
    return float(np.median(times) * 1000)


def bench(data: Path | None, source: Path | None, **options) -> BenchResult:
    """Run the benchmark on DATA, or on a temporary DATA prepared from SOURCE; `.lines()` of the result is
    its table, `.numbers()` its numbers."""
    if data is not None:
        return run_bench(Path(data), **options)
    from catsdogs.preparation import prepare
    from catsdogs.run_files import run_model_path

    if options.get("run") is not None:
        run_model_path(options["run"])  # a bad --run is said before minutes of preparing

    with tempfile.TemporaryDirectory(prefix="catsdogs-bench-") as folder:
        logger.info(prepare(source, Path(folder) / "data").line())
        return run_bench(Path(folder) / "data", **options)
