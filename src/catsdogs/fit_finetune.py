"""Stage (e) of `catsdogs fit`, fine-tuning on the photos as fastai's `fine_tune` does, on the best single backbone
(stage (c), `finetune-top`, tunes the base's last stage on cached inputs: catsdogs.trainers.top_tuning; its plan
is catsdogs.fit_plan's).

(e) the top of the base tuned on the photos with augmentation: the head first (a `transfer` run: frozen base,
augmentation, `HEAD_EPOCHS` epochs), then the base's top block unfrozen (a `finetune` run from it, `--from-run`):
its peak learning rate from the range test (catsdogs.trainers.lr_find, `valley`) on the unfrozen model, a
one-cycle schedule, early stopping on validation. An epoch costs about 3x a forward pass over the training photos
plus one over validation: on a laptop CPU it rarely fits the default budget, and is then skipped, saying what
budget would hold it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from catsdogs.budget import Budget, format_seconds

HEAD_EPOCHS, FINETUNE_EPOCHS, PATIENCE = 2, 5, 2
TRAIN_SHARE, VALIDATION_SHARE = 0.7, 0.15  # of the photos, before they are split (prepare's default)
BATCH, RANGE_STEPS = 32, 100
MIN_RATE, MAX_RATE = 1e-5, 1e-3  # the range test's suggestion is kept inside these
OVERHEAD_S = 30.0  # building and saving the models twice, checking the engine
NAME = "fine-tuning"
def estimate_seconds(photos: int, speed: float) -> float:
    """Seconds of the stage for `photos` (all splits) at `speed` forward images per second of the base."""
    train, validation = TRAIN_SHARE * photos / speed, VALIDATION_SHARE * photos / speed
    range_test = 3 * min(TRAIN_SHARE * photos, RANGE_STEPS * BATCH) / speed
    return OVERHEAD_S + HEAD_EPOCHS * train + validation + range_test + FINETUNE_EPOCHS * (3 * train + validation)


def skip_reason(estimate: float, before_s: float, limit: Budget) -> str | None:
    """Why the stage cannot run within `limit` after `before_s` seconds of earlier stages and fixed work, or
    None when it fits (or there is no budget: stage (a) only, the stage is not planned)."""
    if limit.unlimited or before_s + estimate <= limit.seconds:
        return None
    need = math.ceil((before_s + estimate) / 60)
    return (f"{NAME} skipped: it needs ~{format_seconds(estimate)} here, {format_seconds(max(0.0, limit.seconds - before_s))} "
            f"of the budget is left for it; give budget {need}m or more to run it")


def run_stage(data_dir: Path, run: Path, backbone: str, seed: int, class_weight: str | None, cache: Path,
              distribute: str | None) -> dict:
    """Train (or reuse) the head's transfer run beside `run`, run the range test, fine-tune into `run`; its
    validation numbers (those of the saved epoch) and the learning rate used."""
    from catsdogs.runs import Run
    from catsdogs.training import TrainOptions, train

    head = run.with_name(run.name + "-head")
    common = dict(data=data_dir, backbone=backbone, seed=seed, class_weight=class_weight, cache_dir=cache,
                  overwrite=True, distribute=distribute, calibration=False)
    if _status(head) != "complete":
        _say(f"{NAME} {backbone}: the head first ({HEAD_EPOCHS} epochs, frozen base, augmentation)")
        train(TrainOptions(model="transfer", out=head, epochs=HEAD_EPOCHS, **common))
    if _status(run) != "complete":
        found = range_test(head, data_dir, cache, seed)
        rate = min(MAX_RATE, max(MIN_RATE, found.suggestion))
        _say(f"{NAME} {backbone}: {found.line()}; peak rate {rate:.1e}, one-cycle, up to {FINETUNE_EPOCHS} epochs")
        train(TrainOptions(model="finetune", out=run, epochs=FINETUNE_EPOCHS, patience=PATIENCE, learning_rate=rate,
                           schedule="one-cycle", model_options={"from_run": str(head)}, **common))
        found.save_plot(run / "plots" / "lr_find.png")
    saved = Run(run).saved_epoch
    return {"val_accuracy": float(saved["val_accuracy"]), "val_loss": float(saved["val_loss"]),
            "learning_rate": float(Run(run).config["learning_rate"])}


def range_test(head: Path, data_dir: Path, cache: Path, seed: int):
    """The range test on the head's model with the base's top unfrozen (what fine-tuning trains): an LrFind."""
    from catsdogs.dataset import load_split
    from catsdogs.models.finetune import load_transfer_run, start_finetune
    from catsdogs.trainers.lr_find import MIN_STEPS, lr_find

    model = start_finetune(load_transfer_run(head, None, None))
    images = load_split(data_dir, "train", int(model.input_shape[1]), cache_dir=cache)
    steps = min(RANGE_STEPS, max(MIN_STEPS, math.ceil(len(images.labels) / BATCH)))
    return lr_find(model, images, steps=steps, batch_size=BATCH, seed=seed)


def _status(run: Path) -> str | None:
    from catsdogs.run_files import CONFIG, read_json

    return read_json(run / CONFIG).get("status") if (run / CONFIG).exists() else None


def _say(message: str) -> None:
    logging.getLogger("catsdogs.fitting").info(f"[fit] {message}")
