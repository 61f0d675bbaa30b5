"""`catsdogs train`: fit one model on a prepared DATA and write a RUN folder that survives `kill -9`."""

from __future__ import annotations

import csv
import inspect
import io
import math
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from catsdogs.callbacks import EpochTimer, ProgressLines
from catsdogs.compat import checkpoint_target, is_improvement
from catsdogs.data_files import manifest_sha256, read_classes, read_manifest
from catsdogs.dataset import SplitArrays, check_split_files, load_split, to_dataset
from catsdogs.errors import UsageError
from catsdogs.files import atomic_path, check_out_dir, write_text_atomic
from catsdogs.models import MODELS, ModelEntry, model_entry
from catsdogs.models.heads import output_classes
from catsdogs.options import TrainOptions
from catsdogs.precision import keras_precision, resolve_precision
from catsdogs.run_files import (
    CHECKPOINT_DIR,
    CLASSES,
    CONFIG,
    CURVES,
    HISTORY,
    MODEL,
    best_row,
    library_versions,
    load_keras_model,
    monitor_mode,
    read_config,
    read_history_csv,
    read_json,
    write_json,
)
from catsdogs.runs import Run
from catsdogs.tracking import Tracker
from catsdogs.verbosity import keras_verbose

STATE = "state.json"
LAST = "last.keras"  # the whole model after the last complete epoch (checkpoint/)
PART_LAST, PART_BEST = "part-last.keras", "part-best.keras"  # when a trainer fits only part of the model
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

    check_out_dir(options.out)  # a file in the way, a read-only folder: one line naming it, before any work

    distribution = Distribution(options.distribute)  # hook: catsdogs.distribute (no-op without it)
    run = distribution.run_folder(options.out)  # the chief writes RUN, other workers a temporary folder
    entry = model_entry(options.model)
    if not distribution.is_chief and not options.resume:
        shutil.rmtree(run, ignore_errors=True)  # a worker's own scratch RUN from an earlier run
    if options.overwrite:
        _clear_run_folder(run)
    state = _check_run_folder(run, options.resume, options.model)
    epochs = options.epochs or entry.default_epochs
    _check_schedule(entry, options)
    classes = read_classes(options.data)
    for split in ("train", "validation"):  # a photo deleted from DATA: named now, before RUN is written
        check_split_files(options.data, split)
    train_images = len(read_manifest(options.data, "train"))
    precision = resolve_precision(options.precision, bf16_friendly=_bf16_friendly(entry, options))
    builder = entry.load_builder()
    builder_options = _builder_options(entry, builder, options, len(classes))

    keras.utils.set_random_seed(options.seed)
    with keras_precision(precision), distribution.scope():
        model = builder(image_size=options.image_size, **builder_options)
        if state and (run / CHECKPOINT_DIR / LAST).exists():  # else the trainer resumes a part (features)
            model = load_keras_model(run / CHECKPOINT_DIR / LAST)
        elif options.schedule == "one-cycle":
            steps = math.ceil(train_images / distribution.global_batch(options.batch_size)) * epochs
            model.compile(optimizer=one_cycle_optimizer(options.learning_rate or ONE_CYCLE_PEAK_LEARNING_RATE, steps),
                          loss=model.loss, metrics=["accuracy"], jit_compile=model.jit_compile)
    if output_classes(model) != len(classes):
        raise UsageError(f"the model tells apart {output_classes(model)} classes, but {options.data} has "
                         f"{len(classes)} ({', '.join(classes)})", "data")
    image_size = int(model.input_shape[1])

    config = _run_config(options, model, entry, distribution, epochs=epochs, precision=precision, classes=classes,
                         train_images=train_images)
    created = not run.exists() or not any(run.iterdir())
    run.mkdir(parents=True, exist_ok=True)
    (run / CHECKPOINT_DIR).mkdir(exist_ok=True)
    write_json(run / CONFIG, config)
    write_json(run / CLASSES, classes)

    start = state["epoch"] + 1 if state else 0
    if state:  # epochs logged after the last checkpoint (a kill in between) are trained and logged again
        _write_history(run / HISTORY, [row for row in read_history_csv(run / HISTORY) if row["epoch"] < start])
    if distribution.strategy:
        distribution.check_same_start(start)
    tracker = Tracker(options.log if distribution.is_chief else None, run, config)
    if tracker.log == "mlflow":
        config.update(tracker.start())
        write_json(run / CONFIG, config)
    context = FitContext(options, run, epochs, start, image_size, options.patience or entry.default_patience,
                         config=dict(config), distribution=distribution, tracker=tracker)
    try:
        with keras_precision(precision), distribution.scope():
            config.update(entry.load_trainer()(model, context) or {})
    except BaseException:
        tracker.fail()
        if created and not (run / CHECKPOINT_DIR / STATE).exists():  # no epoch finished: no half RUN left
            shutil.rmtree(run, ignore_errors=True)  # to block the re-run (nothing to resume)
        raise
    _finish(run, config, options.monitor)
    if options.calibration and distribution.is_chief:  # hook: catsdogs.trust (RUN/calibration.json)
        from catsdogs.trust import calibrate

        calibrate(run, options.accept, cache_dir=options.cache_dir)
    tracker.finish(options.data)  # hook: catsdogs.tracking (log=)
    return Run(run)


def _run_config(options: TrainOptions, model, entry: ModelEntry, distribution, *, epochs: int, precision: str,
                classes: list[str], train_images: int) -> dict:
    """What RUN/config.json records at the start: the options, the data and its hash, sizes and versions."""
    config = {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
              "data": str(Path(options.data).resolve()), "epochs": epochs, "image_size": int(model.input_shape[1]),
              "precision": precision, "classes": classes, "manifest_sha256": manifest_sha256(options.data),
              "train_images": train_images,
              "validation_images": len(read_manifest(options.data, "validation")),
              "versions": library_versions(), "status": "running"}
    if distribution.strategy:
        config.update(distribute=distribution.kind, replicas=distribution.replicas, workers=distribution.workers,
                      global_batch_size=distribution.global_batch(options.batch_size))
    for key in ("resume", "out", "overwrite"):
        config.pop(key)
    if entry.uses_backbone:
        from catsdogs.models.pretrained import find_base

        config["backbone"] = find_base(model).name
    return config


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
    if options.schedule != "constant" and not entry.takes_schedule:
        scheduled = ", ".join(name for name, e in MODELS.items() if e.takes_schedule)
        raise UsageError(f"schedule {options.schedule} works with {scheduled}, not model {options.model}", "schedule")


def _bf16_friendly(entry: ModelEntry, options: TrainOptions) -> bool:
    """Whether `auto` precision should pick bf16 for this model (not for depthwise-separable backbones)."""
    if not entry.uses_backbone:
        return True
    from catsdogs.models.backbones import get_backbone

    backbone = options.backbone
    if backbone is None and options.model_options.get("from_run"):
        backbone = read_config(Path(options.model_options["from_run"])).get("backbone")  # UsageError: not a run
    return all(get_backbone(name).bf16_friendly for name in (backbone.split("+") if backbone else [None]))


def _builder_options(entry: ModelEntry, builder, options: TrainOptions, num_classes: int) -> dict:
    """The builder's keyword arguments; a UsageError naming options the model does not take."""
    if options.backbone is not None and not entry.uses_backbone:
        pretrained = ", ".join(name for name, e in MODELS.items() if e.uses_backbone)
        raise UsageError(f"backbone is only for the pretrained models ({pretrained}), not {options.model}", "backbone")
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
    """What a trainer (`ModelEntry.trainer`) works with: the run, its epochs and data. A trainer returns what
    it adds to RUN/config.json (or None)."""

    options: TrainOptions
    run: Path
    epochs: int
    initial_epoch: int  # the first epoch still to train (> 0 when resuming)
    image_size: int
    patience: int | None = None  # early stopping on validation, in epochs
    config: dict = field(default_factory=dict)  # the run's config (read: classes, manifest hash); not for writing
    splits: dict[str, SplitArrays] = field(default_factory=dict)
    distribution: object = None  # catsdogs.distribute.Distribution
    tracker: Tracker | None = None  # catsdogs.tracking (TensorBoard, MLflow): adds its callbacks to every fit

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

    def resumed_part(self):
        """The part a trainer fits (`fit(part_of=...)`) as saved after the last complete epoch, or None."""
        path = self.run / CHECKPOINT_DIR / PART_LAST
        return load_keras_model(path) if self.initial_epoch and path.exists() else None

    def fit(self, model, train: SplitArrays, validation: SplitArrays, *, epochs: int | None = None,
            initial_epoch: int | None = None, part_of=None, part="head", patience: int | None = None,
            patience_from: int = 0, train_batches=None) -> None:
        """`model.fit` from `initial_epoch` up to `epochs` (default: the run's) with the run's callbacks.

        `part_of`: the whole model (RUN/model.keras) when `model` has the weights of only its layer `part` (the
        features head), or of `part`, a model on some of `part_of`'s layers (catsdogs.trainers.transfer). Each
        epoch then saves only the part (checkpoint/part-*.keras, milliseconds instead of a second for a
        backbone); the whole model is saved once, with the best part's weights, at the end (unless no epoch
        beat an earlier stage's model.keras).
        `patience` (default: the run's) counts epochs without improvement from epoch `patience_from` on.
        `train_batches`: ready training batches (a keras PyDataset) instead of `train`'s, whose labels still
        give the class weights.
        """
        epochs = self.epochs if epochs is None else epochs
        start = self.initial_epoch if initial_epoch is None else initial_epoch
        stopping = ResumableEarlyStopping(read_history_csv(self.run / HISTORY), monitor=self.options.monitor,
                                          patience=self.patience if patience is None else patience,
                                          start_from_epoch=patience_from)
        earlier_best = best_row(read_history_csv(self.run / HISTORY), self.options.monitor)
        if not (start >= epochs or stopping.exhausted()):
            batches = (train_batches if train_batches is not None
                       else self.dataset(train, shuffle=True, seed=self.options.seed + start))
            model.fit(batches,
                      validation_data=self.dataset(validation), epochs=epochs, initial_epoch=start,
                      callbacks=self._callbacks(stopping, part=part_of is not None), shuffle=False,
                      verbose=keras_verbose(self._chief),
                      class_weight=class_weights(train.labels, len(train.classes)) if self.options.class_weight
                      else None)
        best_part = self.run / CHECKPOINT_DIR / PART_BEST
        if part_of is not None and (best_part.exists() or earlier_best is None):  # else no epoch of this part beat
            best = load_keras_model(best_part) if best_part.exists() else model  # an earlier stage's model.keras
            (part_of.get_layer(part) if isinstance(part, str) else part).set_weights(best.get_weights())
            optimizer = getattr(part_of, "optimizer", None)
            if optimizer is not None and not optimizer.built:  # a resumed part trained with its own optimizer
                optimizer.build(part_of.trainable_variables)  # (an unbuilt one makes Keras warn on loading)
            _save_model(part_of, self.run / MODEL)

    @property
    def _chief(self) -> bool:
        return self.distribution is None or self.distribution.is_chief

    def _callbacks(self, stopping: ResumableEarlyStopping, part: bool) -> list[keras.callbacks.Callback]:
        """Timer, history.csv, best-on-validation and last-epoch checkpoints, state.json, early stopping."""
        best = best_row(read_history_csv(self.run / HISTORY), self.options.monitor)
        best_path = self.run / CHECKPOINT_DIR / PART_BEST if part else self.run / MODEL
        callbacks = [
            EpochTimer(),
            keras.callbacks.CSVLogger(str(self.run / HISTORY), append=True),  # first: a kill after it is redone
            AtomicModelCheckpoint(best_path, monitor=self.options.monitor, mode=monitor_mode(self.options.monitor),
                                  save_best_only=True,
                                  initial_value_threshold=best[self.options.monitor] if best else None,
                                  best_loss=best.get("val_loss") if best else None),
            AtomicModelCheckpoint(self.run / CHECKPOINT_DIR / (PART_LAST if part else LAST)),
            LastEpoch(self.run / CHECKPOINT_DIR / STATE),  # last: the epoch is complete
        ]
        if keras_verbose(self._chief) == 2:  # not a terminal: Keras prints one line an epoch; lines inside it too
            callbacks.append(ProgressLines(self.epochs))
        tracking = self.tracker.callbacks() if self.tracker is not None and self._chief else []
        return callbacks + tracking + ([stopping] if stopping.patience else [])


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


def _check_run_folder(run: Path, resume: bool, model: str | None = None) -> dict | None:
    """Refuse to overwrite an existing RUN; with resume, return the saved training state (refused when the
    run trained another model)."""
    state_file = run / CHECKPOINT_DIR / STATE
    if resume:
        config = read_json(run / CONFIG) if (run / CONFIG).exists() else {}
        if config.get("status") == "complete":
            raise UsageError(f"{run} is already complete; train into a new out to train again", "resume")
        if model is not None and config.get("model") not in (None, model):
            raise UsageError(f"{run} trained model {config['model']}, not {model}; resume with "
                             f"model={config['model']!r}, or train {model} into a new out", "model")
        if not state_file.exists():
            raise UsageError(f"{run}: nothing to resume (no finished epoch saved)", "resume")
        return read_json(state_file)
    if run.exists() and any(run.iterdir()):
        hint = " (interrupted: continue with resume)" if state_file.exists() else ""
        raise UsageError(f"out {run} already exists and is not empty{hint}; choose another out, or overwrite",
                         "out")
    return None


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' ModelCheckpoint, written beside its place and renamed (a kill never leaves half a file). With
    `save_best_only` on an accuracy, an epoch that ties the best with a lower validation loss is kept too (as
    run_files.best_row reads the history); `best_loss`: that of the best so far, when resumed."""

    def __init__(self, filepath: Path, best_loss: float | None = None, **kwargs) -> None:
        super().__init__(str(filepath), **kwargs)
        self.best_loss = math.inf if best_loss is None else best_loss

    def _should_save_model(self, epoch, batch, logs, filepath) -> bool:  # compat.checkpoint_target calls it
        logs = logs or {}
        loss = float(logs.get("val_loss", math.inf))
        tie = self.save_best_only and monitor_mode(self.monitor) == "max" and self.best is not None and \
            logs.get(self.monitor) == self.best and loss < self.best_loss
        if super()._should_save_model(epoch, batch, logs, filepath) or tie:
            self.best_loss = loss
            return True
        return False

    def _save_model(self, epoch, batch, logs) -> None:  # compat.CHECKPOINT_SAVE_HOOK, called by Keras
        filepath = checkpoint_target(self, epoch, batch, logs)
        if filepath is not None:
            _save_model(self.model, Path(filepath))


class LastEpoch(keras.callbacks.Callback):
    """Records the last complete epoch (checkpoint/state.json), which `resume` continues after."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        write_json(self.path, {"epoch": epoch})


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping that continues counting from the epochs already in history.csv (after a resume)."""

    def __init__(self, history: list[dict], **kwargs) -> None:
        super().__init__(mode=monitor_mode(kwargs.get("monitor", "val_loss")), **kwargs)
        self.history = history

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        self._replay()

    def _replay(self) -> None:
        self.wait, self.best = 0, None
        for row in self.history:
            value = row.get(self.monitor)
            if row["epoch"] < self.start_from_epoch or not isinstance(value, float):
                continue
            if self.best is None or is_improvement(self, value, self.best):
                self.best, self.wait = value, 0
            else:
                self.wait += 1

    def exhausted(self) -> bool:
        """Whether the epochs already trained ran out of patience (training then has nothing left to do)."""
        if not self.patience:
            return False
        self._replay()
        return self.wait >= self.patience


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as partial:
        model.save(partial)


def _write_history(path: Path, rows: list[dict]) -> None:
    """Rewrite history.csv with `rows`, in the column order of Keras' CSVLogger (which appends to it)."""
    if not rows:
        path.unlink(missing_ok=True)  # CSVLogger writes the header itself
        return
    fields = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def read_history(run: Path) -> list[dict]:
    """A run's history.csv as a list of dicts (epoch is 0-based)."""
    return read_history_csv(Path(run) / HISTORY)


def _finish(run: Path, config: dict, monitor: str) -> None:
    """Curves, and the run's summary in config.json (status complete); the resumable checkpoint goes."""
    from catsdogs.plots import save_curves

    rows = read_history_csv(run / HISTORY)
    save_curves(rows, run / CURVES, title=f"{run.name}: {config['model']}")
    best = best_row(rows, monitor)
    seconds = sum(row.get("seconds", 0.0) for row in rows) + config.get("feature_extraction_s", 0.0)
    # best_epoch is 1-based, as the log and fit.json count (history.csv keeps Keras' 0-based column)
    config.update(status="complete", best_epoch=best["epoch"] + 1 if best else None, epochs_run=len(rows),
                  wall_time_s=round(seconds, 1), monitor_best=best[monitor] if best else None)
    write_json(run / CONFIG, config)
    shutil.rmtree(run / CHECKPOINT_DIR, ignore_errors=True)
