"""Keras callbacks that report: each epoch's wall time in the logs, and progress lines inside long epochs."""

from __future__ import annotations

import logging
import time

import keras

from catsdogs.budget import format_seconds

logger = logging.getLogger(__name__)
EVERY_S = 10.0


class EpochTimer(keras.callbacks.Callback):
    """Adds each epoch's wall time to the logs (`seconds`), for history.csv and the run's wall time."""

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["seconds"] = round(time.perf_counter() - self.started, 2)


class ProgressLines(keras.callbacks.Callback):
    """A log line about every `every` seconds inside an epoch (batches done, loss, ETA of the whole run): what a
    terminal's progress bar shows, for logs and pipes (Keras then prints one line per epoch)."""

    def __init__(self, epochs: int, every: float = EVERY_S) -> None:
        super().__init__()
        self.epochs, self.every = epochs, every

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch, self.started = epoch, time.perf_counter()
        self.last = self.started

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        steps = self.params.get("steps") or 0
        per_batch = (now - self.started) / (batch + 1)
        left = per_batch * (max(steps - batch - 1, 0) + steps * max(self.epochs - self.epoch - 1, 0))
        loss = (logs or {}).get("loss")
        logger.info("epoch %d/%d: %d/%s batches%s; ETA %s", self.epoch + 1, self.epochs, batch + 1, steps or "?",
                    f", loss {float(loss):.4f}" if loss is not None else "", format_seconds(left))
