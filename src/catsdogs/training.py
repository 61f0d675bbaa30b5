"""`catsdogs train`: fit one model on a prepared DATA and write a RUN folder that survives `kill -9`."""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from catsdogs.dataset import SplitArrays, load_split, read_classes, read_manifest, to_dataset
from catsdogs.errors import UsageError
from catsdogs.files import atomic_path, write_text_atomic
from catsdogs.models import DEFAULT_TRAINER, MODELS, ModelEntry, model_entry
from catsdogs.models.heads import output_classes
from catsdogs.options import TrainOptions
from catsdogs.precision import keras_precision, resolve_precision
from catsdogs.preparation import manifest_sha256
from catsdogs.runs import (CHECKPOINT_DIR, CLASSES, CONFIG, CURVES, HISTORY, MODEL, Run, library_versions,
                           read_history_csv, read_json, write_json)

STATE = "state.json"
ONE_CYCLE_PEAK_LEARNING_RATE = 1e-3


def train(options: TrainOptions | None = None, /, **kwargs) -> Run:
    """Train one experiment, keeping the best model on validation as RUN/model.keras; returns the Run.

    Either `train(TrainOptions(...))` or `train(data=..., model=..., out=..., **options)`.
    """
    if options is None:
        options = TrainOptions(**kwargs)
    elif kwargs:
        options = replace(options, **kwargs)
    from catsdogs.distribute import Distribution

    distribution = Distribution(options.distribute)  # hook: catsdogs.distribute (no-op without it)
    run = distribution.run_folder(options.out)  # the chief writes RUN, other workers a temporary folder
    entry = model_entry(options.model)
    if not distribution.is_chief and not options.resume:
        shutil.rmtree(run, ignore_errors=True)  # a worker's own scratch RUN from an earlier run
    if options.overwrite:
        _clear_run_folder(run)
    state = _check_run_folder(run, options.resume)
    epochs = options.epochs or entry.default_epochs
    _check_schedule(entry, options)
    classes = read_classes(options.data)
    train_images = len(read_manifest(options.data, "train"))
    precision = resolve_precision(options.precision, bf16_friendly=_bf16_friendly(entry, options))
    builder = entry.load_builder()
    builder_options = _builder_options(entry, builder, options, len(classes))

    keras.utils.set_random_seed(options.seed)
    with keras_precision(precision), distribution.scope():
        model = builder(image_size=options.image_size, **builder_options)
        if state:
            model = keras.models.load_model(run / CHECKPOINT_DIR / "last.keras", safe_mode=True)
        elif options.schedule == "one-cycle":
            steps = math.ceil(train_images / distribution.global_batch(options.batch_size)) * epochs
            model.compile(optimizer=one_cycle_optimizer(options.learning_rate or ONE_CYCLE_PEAK_LEARNING_RATE, steps),
                          loss=model.loss, metrics=["accuracy"], jit_compile=model.jit_compile)
    if output_classes(model) != len(classes):
        raise UsageError(f"the model tells apart {output_classes(model)} classes, but {options.data} has "
                         f"{len(classes)} ({', '.join(classes)})", "data")
    image_size = int(model.input_shape[1])

    config = {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
              "data": str(Path(options.data).resolve()), "epochs": epochs, "image_size": image_size,
              "precision": precision, "classes": classes, "manifest_sha256": manifest_sha256(options.data),
              "train_images": train_images,
              "validation_images": len(read_manifest(options.data, "validation")),
              "versions": library_versions(), "status": "running"}
    if distribution.strategy:
        config.update(distribute=distribution.kind, replicas=distribution.replicas, workers=distribution.workers,
                      global_batch_size=distribution.global_batch(options.batch_size))
    config.pop("resume"), config.pop("out"), config.pop("overwrite")
    if entry.uses_backbone:
        from catsdogs.models.pretrained import find_base
        config["backbone"] = find_base(model).name
    run.mkdir(parents=True, exist_ok=True)
    (run / CHECKPOINT_DIR).mkdir(exist_ok=True)
    write_json(run / CONFIG, config)
    write_json(run / CLASSES, classes)

    checkpoint = RunCheckpoint(run, options.monitor, state, patience=options.patience or entry.default_patience)
    if distribution.strategy:
        distribution.check_same_start(state["epoch"] + 1 if state else 0)
    context = FitContext(options, run, epochs, state["epoch"] + 1 if state else 0, image_size, checkpoint, config,
                         distribution=distribution)
    with keras_precision(precision), distribution.scope():
        entry.load_trainer()(model, context)
    _finish(run, config, checkpoint)
    return Run(run)


def one_cycle_optimizer(peak_learning_rate: float, total_steps: int,
                        weight_decay: float = 0.05) -> keras.optimizers.Optimizer:
    """fastai's `fit_one_cycle` in Keras: AdamW, the learning rate warmed up linearly from a tenth of the
    peak over the first fifth of the steps, then cosine-decayed to zero by the last step."""
    warmup_steps = max(1, total_steps // 5)
    schedule = keras.optimizers.schedules.CosineDecay(
        peak_learning_rate / 10, decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak_learning_rate, warmup_steps=warmup_steps)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)


def _check_schedule(entry: ModelEntry, options: TrainOptions) -> None:
    if options.schedule != "constant" and entry.trainer != DEFAULT_TRAINER:
        trained_on_images = ", ".join(name for name, e in MODELS.items() if e.trainer == DEFAULT_TRAINER)
        raise UsageError(f"schedule {options.schedule} works with {trained_on_images}, not model {options.model}",
                         "schedule")


def _bf16_friendly(entry: ModelEntry, options: TrainOptions) -> bool:
    """Whether `auto` precision should pick bf16 for this model (not for depthwise-separable backbones)."""
    if not entry.uses_backbone:
        return True
    from catsdogs.models.backbones import get_backbone

    backbone = options.backbone
    if backbone is None and options.model_options.get("from_run"):
        backbone = read_json(Path(options.model_options["from_run"]) / CONFIG).get("backbone")
    return get_backbone(backbone).bf16_friendly


def _builder_options(entry: ModelEntry, builder, options: TrainOptions, num_classes: int) -> dict:
    """The builder's keyword arguments; a UsageError naming options the model does not take."""
    builder_options = dict(options.model_options, seed=options.seed, num_classes=num_classes)
    if options.learning_rate and options.schedule == "constant":  # one-cycle: the peak, see train()
        builder_options["learning_rate"] = options.learning_rate
    if entry.uses_backbone:
        builder_options["backbone"] = options.backbone
    parameters = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(builder_options) - set(parameters))
        if unknown:
            raise UsageError(f"model {options.model} does not take {', '.join(unknown)}", unknown[0])
    return builder_options


@dataclass
class FitContext:
    """What a trainer (`ModelEntry.trainer`) works with: the run, its epochs, checkpoint and data."""

    options: TrainOptions
    run: Path
    epochs: int
    initial_epoch: int  # the first epoch still to train (> 0 when resuming)
    image_size: int
    checkpoint: RunCheckpoint
    config: dict  # RUN/config.json, rewritten when training finishes
    splits: dict[str, SplitArrays] = field(default_factory=dict)
    distribution: object = None  # catsdogs.distribute.Distribution

    def dataset(self, split: SplitArrays, *, shuffle: bool = False, seed: int = 0):
        """A split's batches for model.fit: `to_dataset`, or sharded per worker when distributed."""
        distribution = self.distribution
        if distribution is None or distribution.strategy is None:
            return to_dataset(split, self.options.batch_size, shuffle=shuffle, seed=seed)
        return distribution.dataset(split.images, split.labels, self.options.batch_size, shuffle=shuffle, seed=seed)

    def split(self, name: str) -> SplitArrays:
        """A split's images at the model's size, decoded on first use."""
        if name not in self.splits:
            self.splits[name] = load_split(self.options.data, name, self.image_size, cache_dir=self.options.cache_dir)
        return self.splits[name]

    def fit(self, model, train: SplitArrays, validation: SplitArrays, *, epochs: int | None = None,
            initial_epoch: int | None = None) -> None:
        """`model.fit` from `initial_epoch` up to `epochs` (default: the run's) with the RUN checkpoint."""
        epochs = self.epochs if epochs is None else epochs
        start = self.initial_epoch if initial_epoch is None else initial_epoch
        if start >= epochs or self.checkpoint.out_of_patience(start - 1):
            return
        chief = self.distribution is None or self.distribution.is_chief
        model.fit(self.dataset(train, shuffle=True, seed=self.options.seed + start),
                  validation_data=self.dataset(validation), epochs=epochs, initial_epoch=start,
                  callbacks=[self.checkpoint], shuffle=False, verbose=(1 if os.isatty(2) else 2) if chief else 0,
                  class_weight=class_weights(train.labels, len(train.classes)) if self.options.class_weight else None)


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced" weights: n / (classes x count of the class); absent classes get 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return {c: float(len(labels) / (num_classes * n)) if n else 1.0 for c, n in enumerate(counts)}


def fit_images(model, context: FitContext) -> None:
    """The default trainer: fit the whole model on the training images."""
    context.fit(model, context.split("train"), context.split("validation"))


def _clear_run_folder(run: Path) -> None:
    """Remove a previous RUN (overwrite=True); refuse to delete a folder that is not a catsdogs run."""
    if not run.exists() or not any(run.iterdir()):
        return
    if not (run / CONFIG).exists():
        raise UsageError(f"out {run} exists and is not a catsdogs run; overwrite only replaces runs", "out")
    shutil.rmtree(run)


def _check_run_folder(run: Path, resume: bool) -> dict | None:
    """Refuse to overwrite an existing RUN; with resume, return the saved training state."""
    state_file = run / CHECKPOINT_DIR / STATE
    if resume:
        if (run / CONFIG).exists() and read_json(run / CONFIG).get("status") == "complete":
            raise UsageError(f"{run} is already complete; train into a new out to train again", "resume")
        if not state_file.exists():
            raise UsageError(f"{run}: nothing to resume (no finished epoch saved)", "resume")
        return read_json(state_file)
    if run.exists() and any(run.iterdir()):
        hint = " (interrupted: continue with resume)" if state_file.exists() else ""
        raise UsageError(f"out {run} already exists and is not empty{hint}; choose another out, or overwrite",
                         "out")
    return None


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch: save history, the best model on `monitor`, and a resumable checkpoint."""

    def __init__(self, run: Path, monitor: str, state: dict | None, patience: int | None = None) -> None:
        super().__init__()
        self.run, self.monitor = run, monitor
        self.saved_model = None  # the model to save, when not the one being fit (a trainer may set it)
        self.patience, self.patience_start = patience, 0  # early stopping, counted from patience_start
        self.best = state["best"] if state else None
        self.best_epoch = state["best_epoch"] if state else None
        self.elapsed = state["elapsed"] if state else 0.0
        self.rows = [row for row in read_history_csv(run / HISTORY) if row["epoch"] <= state["epoch"]] if state else []
        self.higher_is_better = "acc" in monitor or "auc" in monitor

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        seconds = time.perf_counter() - self.epoch_started
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.rows.append({"epoch": epoch, **logs, "seconds": round(seconds, 2)})
        _write_history(self.run / HISTORY, self.rows)
        value = logs.get(self.monitor)
        if value is None:
            raise UsageError(f"monitor {self.monitor} is not a logged metric ({', '.join(logs)})", "monitor")
        model = self.saved_model or self.model
        if self.best is None or (value > self.best if self.higher_is_better else value < self.best):
            self.best, self.best_epoch = value, epoch
            _save_model(model, self.run / MODEL)
        _save_model(model, self.run / CHECKPOINT_DIR / "last.keras")
        self.elapsed += seconds
        write_json(self.run / CHECKPOINT_DIR / STATE, {"epoch": epoch, "best": self.best,
                                                       "best_epoch": self.best_epoch, "elapsed": self.elapsed})
        if self.out_of_patience(epoch):
            self.model.stop_training = True

    def out_of_patience(self, epoch: int) -> bool:
        """Whether `monitor` has not improved for `patience` epochs by the end of `epoch`."""
        if not self.patience or self.best_epoch is None:
            return False
        return epoch - max(self.best_epoch, self.patience_start - 1) >= self.patience


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as partial:
        model.save(partial)


HISTORY_FIELDS = ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]


def _write_history(path: Path, rows: list[dict]) -> None:
    fields = HISTORY_FIELDS + sorted({k for row in rows for k in row} - set(HISTORY_FIELDS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_history(run: Path) -> list[dict]:
    """A run's history.csv as a list of dicts (epoch is 0-based)."""
    return read_history_csv(Path(run) / HISTORY)


def _finish(run: Path, config: dict, checkpoint) -> None:
    from catsdogs.plots import save_curves

    save_curves(checkpoint.rows, run / CURVES, title=f"{run.name}: {config['model']}")
    config.update(status="complete", best_epoch=checkpoint.best_epoch, epochs_run=len(checkpoint.rows),
                  wall_time_s=round(checkpoint.elapsed, 1), monitor_best=checkpoint.best)
    write_json(run / CONFIG, config)
    shutil.rmtree(run / CHECKPOINT_DIR, ignore_errors=True)
