"""The learning-rate range test (Leslie Smith's, as fastai's `Learner.lr_find`): train a few batches while the
rate grows exponentially from `start` to `end`, record the smoothed loss, stop once it diverges, and suggest a
rate where the loss falls. The model's weights and optimizer are as before afterwards.

Suggestions as fastai's: `valley` (the default: the middle of the longest stretch of falling loss), `steep` (the
steepest descent) and `minimum` (a tenth of the rate at the lowest loss). The first tenth of the points and the
last five (divergence) are left out of them, as fastai does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from catsdogs.errors import UsageError

START, END, STEPS, MIN_STEPS = 1e-7, 10.0, 100, 30
DIVERGE = 4.0  # stop when the smoothed loss exceeds this many times its minimum
SMOOTHING = 0.98  # fastai's exponential moving average of the loss (less for short tests, see `_smoothing`)
SUGGESTIONS = ("valley", "steep", "minimum")


@dataclass
class LrFind:
    """The range test's result: the rates tried, the smoothed (and raw) losses, the suggested rates."""

    lrs: list[float]
    losses: list[float]  # smoothed (debiased exponential moving average)
    raw_losses: list[float]
    suggestions: dict[str, float] = field(default_factory=dict)
    method: str = "valley"
    diverged: bool = False  # stopped before `end` because the loss diverged
    plot_path: Path | None = None  # where `run_lr_find` / `data_lr_find` wrote the plot

    @property
    def suggestion(self) -> float:
        """The suggested rate (by `method`: valley, like fastai's default)."""
        return self.suggestions[self.method]

    def line(self) -> str:
        others = ", ".join(f"{name} {value:.2e}" for name, value in self.suggestions.items() if name != self.method)
        return (f"suggested learning rate {self.suggestion:.2e} ({self.method}; {others}), {len(self.lrs)} steps "
                f"from {self.lrs[0]:.0e} to {self.lrs[-1]:.1e}{', stopped where the loss diverged' if self.diverged else ''}")

    def plot(self):
        """The smoothed loss against the rate (log scale), the suggestions marked: a matplotlib Figure."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, NullFormatter

        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(self.lrs, self.losses, "b", label="smoothed loss")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))  # plain text (plots.render_plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        for (name, value), marker in zip(self.suggestions.items(), ("ro", "g^", "kx")):
            index = int(np.argmin(np.abs(np.log(self.lrs) - math.log(value))))
            ax.plot([value], [self.losses[index]], marker, label=f"{name} {value:.1e}")
        shown = [value for value in self.losses[:max(len(self.losses) - 5, 2)] if math.isfinite(value)]
        if shown:  # the divergence at the end (left out of the suggestions) does not squash the curve
            low, high = min(shown), max(shown)
            ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.15 * (high - low + 1e-9))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("Learning-rate range test")
        ax.legend()
        fig.tight_layout()
        return fig

    def save_plot(self, path: str | Path) -> Path:
        """Write `plot()` as a PNG; returns the path."""
        from catsdogs.plots import _save

        return _save(self.plot(), Path(path))


def lr_find(model, data, labels=None, *, start: float = START, end: float = END, steps: int | None = None,
            batch_size: int = 32, diverge: float = DIVERGE, seed: int = 0) -> LrFind:
    """Run the range test on a compiled Keras `model`; its weights and optimizer are restored afterwards.

    `data`: images with `labels` (arrays), a `SplitArrays`, or batches of (x, y) (a tf.data.Dataset or any
    iterable, cycled when shorter than the test). `steps`: default 100, or fewer for small data (one pass over
    the images, at least 30). The rates are swept with a fresh optimizer of the model's class and settings.
    """
    _check(start, end, steps, batch_size, diverge)
    batches, count = _batches(data, labels, batch_size, seed)
    steps = steps or min(STEPS, max(MIN_STEPS, count or STEPS))
    if getattr(model, "optimizer", None) is None or not hasattr(model, "_compile_config"):
        raise UsageError("lr_find needs a compiled model (model.compile(...) first)", "model")
    compiled = dict(model._compile_config.config)
    weights = model.get_weights()
    model.compile(**{**compiled, "optimizer": _constant_copy(model.optimizer, start)})
    rates = start * (end / start) ** (np.arange(steps) / max(steps - 1, 1))
    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    beta, average, diverged = _smoothing(steps), 0.0, False
    try:
        for rate, (x, y) in zip(rates, batches):
            model.optimizer.learning_rate = float(rate)
            model.reset_metrics()
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            average = beta * average + (1 - beta) * loss
            lrs.append(float(rate))
            raw.append(loss)
            smooth.append(average / (1 - beta ** len(raw)))
            if not math.isfinite(loss) or (len(smooth) > 2 and smooth[-1] > diverge * min(smooth)):
                diverged = True
                break
    finally:
        model.set_weights(weights)
        model.compile(**compiled)  # the original optimizer (its state untouched)
    if len(lrs) < 2:
        raise UsageError(f"lr_find needs at least 2 batches of data; got {len(lrs)}", "data")
    smooth = [value if math.isfinite(value) else float("inf") for value in smooth]
    return LrFind(lrs, smooth, raw, suggest(lrs, smooth), diverged=diverged)


def suggest(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """fastai's suggestions from the rates and smoothed losses (the first tenth and the last five left out when
    enough points remain), each inside the swept range."""
    lrs_a, losses_a = np.asarray(lrs, float), np.asarray(losses, float)
    skip_start, skip_end = len(lrs) // 10, 5
    if len(lrs) - skip_start - skip_end >= 3:
        lrs_a, losses_a = lrs_a[skip_start:len(lrs) - skip_end], losses_a[skip_start:len(lrs) - skip_end]
    finite = np.isfinite(losses_a)
    lrs_a, losses_a = lrs_a[finite], losses_a[finite]
    if len(lrs_a) < 2:
        return {name: float(lrs[0]) for name in SUGGESTIONS}
    slopes = np.diff(losses_a) / np.diff(np.log(lrs_a))
    found = {"valley": float(lrs_a[_valley(losses_a)]), "steep": float(lrs_a[int(np.argmin(slopes))]),
             "minimum": float(lrs_a[int(np.argmin(losses_a))]) / 10}
    return {name: float(np.clip(value, lrs[0], lrs[-1])) for name, value in found.items()}


def _valley(losses: np.ndarray) -> int:
    """fastai's `valley`: the longest decreasing run of losses, and a point a half of the way into it."""
    n = len(losses)
    longest = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return min(n - 1, max(0, start + int(third) + int(third / 2)))


def _smoothing(steps: int) -> float:
    """fastai's 0.98 for 100 steps and more; a shorter memory for shorter tests (about a twentieth of them)."""
    return min(SMOOTHING, max(0.5, 1 - 4 / steps))


def _constant_copy(optimizer, learning_rate: float):
    """A new optimizer of the same class and settings, with a constant rate (a schedule would set its own)."""
    config = {**optimizer.get_config(), "learning_rate": learning_rate}
    return type(optimizer).from_config(config)


def _check_options(options: dict) -> None:
    _check(options.get("start", START), options.get("end", END), options.get("steps"), options.get("batch_size", 32),
           options.get("diverge", DIVERGE))


def _check(start: float, end: float, steps: int | None, batch_size: int, diverge: float) -> None:
    for name, value in (("start", start), ("end", end), ("diverge", diverge)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UsageError(f"{name} must be a positive number, got {value}", name)
    if start >= end:
        raise UsageError(f"start ({start:g}) must be below end ({end:g})", "start", others=("end",))
    if diverge <= 1:
        raise UsageError(f"diverge must be above 1, got {diverge:g}", "diverge")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value < (2 if name == "steps" else 1)):
            raise UsageError(f"{name} must be an integer >= {2 if name == 'steps' else 1}, got {value}", name)


def _batches(data, labels, batch_size: int, seed: int) -> tuple[Iterable, int | None]:
    """(an endless iterator of (x, y) batches, batches in one pass or None when unknown)."""
    if labels is None and hasattr(data, "images") and hasattr(data, "labels"):  # SplitArrays
        data, labels = data.images, data.labels
    if labels is not None:
        if len(data) != len(labels) or not len(labels):
            raise UsageError(f"data and labels must be as many and not empty; got {len(data)} and {len(labels)}",
                             "labels")
        return _array_batches(data, np.asarray(labels), batch_size, seed), math.ceil(len(labels) / batch_size)
    cardinality = None
    if hasattr(data, "cardinality"):
        known = int(data.cardinality())
        cardinality = known if known > 0 else None
    return _cycled(data), cardinality


def _array_batches(images, labels: np.ndarray, batch_size: int, seed: int):
    """Shuffled batches of float32 images, a new order each pass, without end."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(labels))
        for begin in range(0, len(order), batch_size):
            rows = np.sort(order[begin:begin + batch_size])
            yield np.asarray(images[rows], dtype=np.float32), labels[rows].astype(np.float32)


def _cycled(batches):
    while True:
        empty = True
        for x, y in batches:
            empty = False
            yield x, y
        if empty:
            raise UsageError("data gave no batches", "data")


def run_lr_find(run: str | Path, *, data: str | Path | None = None, split: str = "train",
                cache_dir: str | Path | None = None, **options) -> LrFind:
    """The range test on a RUN's model (its trainable layers as saved) and the images of a split of its DATA (or
    `data`); writes RUN/plots/lr_find.png. `options` go to `lr_find` (start, end, steps, batch_size, ...)."""
    from catsdogs.run_files import load_run_model, read_config, run_data

    _check_options(options)  # bad numbers: one line before any work
    config = read_config(Path(run))  # a UsageError when RUN is not a run
    model = _compiled(load_run_model(Path(run)))
    options.setdefault("batch_size", int(config.get("batch_size") or 32))
    options.setdefault("seed", int(config.get("seed") or 0))
    images = _split(run_data(Path(run), data), split, int(model.input_shape[1]), cache_dir)
    result = lr_find(model, images, **options)
    result.plot_path = result.save_plot(Path(run) / "plots" / "lr_find.png")
    return result


def data_lr_find(data: str | Path, model: str, plot: str | Path, *, backbone: str | None = None,
                 image_size: int | None = None, weights: str | None = "imagenet", seed: int = 0,
                 cache_dir: str | Path | None = None, **options) -> LrFind:
    """The range test before any training, as `train` would start: `model` (a registry name, with `backbone`
    and `image_size` as in TrainOptions) built afresh on DATA's classes and its training images; writes `plot`."""
    import keras

    from catsdogs.data_files import read_classes
    from catsdogs.models import create_model, model_entry
    from catsdogs.options import check_image_size

    _check_options(options)
    check_image_size(image_size)
    entry = model_entry(model)
    if backbone is not None and not entry.uses_backbone:
        raise UsageError(f"backbone is only for the pretrained models, not {model}", "backbone")
    classes = read_classes(Path(data))
    keras.utils.set_random_seed(seed)
    built = create_model(model, image_size=image_size, num_classes=len(classes), seed=seed,
                         **({"backbone": backbone, "weights": weights} if entry.uses_backbone else {}))
    images = _split(Path(data), "train", int(built.input_shape[1]), cache_dir)
    result = lr_find(_compiled(built), images, seed=seed, **options)
    result.plot_path = result.save_plot(Path(plot))
    return result


def _compiled(model):
    """The model, compiled as the pretrained classifiers are (Adam, accuracy) when it was saved without."""
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        from catsdogs.models.pretrained import compile_classifier

        compile_classifier(model, 1e-3)
    return model


def _split(data: Path, split: str, image_size: int, cache_dir):
    from catsdogs.dataset import load_split

    if split not in ("train", "validation", "test"):
        raise UsageError(f"split must be train, validation or test, got {split!r}", "split")
    return load_split(data, split, image_size, cache_dir=Path(cache_dir) if cache_dir else None)
