"""Stage (e) of `catsdogs fit`: fine-tuning on the photos, after stage (c) (`finetune-top`, which tunes the base's
top on the cached inputs of the photo and its mirror: catsdogs.trainers.top_tuning). Its plan is catsdogs.fit_plan's.

(e) continues from (c)'s model: its top tuned further on the training photos, each epoch a new random warp of
each (flip, rotation, zoom, shift), the rest of the base frozen and run forward only (`train --model finetune-top
--from-run`), at a third of (c)'s rate, one-cycle, the best epoch on validation (epoch 0 is (c)'s model, so it is
kept only when an epoch beats it). An epoch costs about PHOTO_COST forward passes of the base per training photo:
the plan gives it EPOCHS epochs, or one when only one fits the budget, and otherwise skips it, saying what budget
would hold it. (The previous form, a `transfer` head then `finetune` from it, scored 0.757 on TrashNet's validation in
8 minutes where (c) had 0.916: docs/fit.md.)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from catsdogs.budget import AFTER_ALL, Budget, format_seconds

EPOCHS, PATIENCE = 2, 2
TRAIN_SHARE, VALIDATION_SHARE = 0.7, 0.15  # of the photos, before they are split (prepare's default)
PHOTO_COST = 1.6  # forward passes of the base per training photo and epoch: the bottom forward, the top both
# ways, the warp (1.4-1.8 measured on TrashNet against measure_speed, docs/fit.md)
TOP_FORWARD = 0.08  # as fit_plan's: validation is scored from the top's cached inputs (two views)
OVERHEAD_S = 10.0  # loading and saving the model, the learning curve (8-19 s measured, docs/fit.md)
NAME = "fine-tuning"


def estimate_seconds(photos: int, speed: float, epochs: int | None = None) -> float:
    """Seconds of the stage over `epochs` (EPOCHS) for `photos` (all splits) at `speed` forward images per second
    of the base."""
    train, validation = TRAIN_SHARE * photos, VALIDATION_SHARE * photos
    per_epoch = train * PHOTO_COST + 2 * validation * TOP_FORWARD
    return OVERHEAD_S + ((epochs or EPOCHS) * per_epoch + 2 * 2 * (train + validation) * TOP_FORWARD) / speed


def skip_reason(estimate: float, before_s: float, limit: Budget) -> str | None:
    """Why the stage cannot run within `limit` after `before_s` seconds of earlier stages and fixed work, or
    None when it fits (or there is no budget: stage (a) only, the stage is not planned)."""
    if limit.unlimited or before_s + estimate <= limit.seconds:
        return None
    need = math.ceil((before_s + estimate) / 60)
    return (f"{NAME} skipped: it needs ~{format_seconds(estimate)} here, {format_seconds(max(0.0, limit.seconds - before_s))} "
            f"of the budget is left for it; give budget {need}m or more to run it ({AFTER_ALL})")


def run_stage(data_dir: Path, run: Path, top_run: Path, seed: int, class_weight: str | None, cache: Path,
              epochs: int | None = None) -> dict:
    """Tune (or reuse) stage (c)'s model `top_run` further on the photos into `run` over `epochs` (EPOCHS); its
    validation numbers (those of the saved epoch) and the peak learning rate."""
    from catsdogs.run_files import DAMAGED, run_status
    from catsdogs.runs import Run
    from catsdogs.training import TrainOptions, train

    status = run_status(run)
    if status == "damaged":
        _say(f"{run.name}: {DAMAGED}")
    if status != "complete":
        epochs = epochs or EPOCHS
        _say(f"{NAME}: {top_run.name}'s top tuned further on the augmented photos (up to {epochs} "
             f"epoch{'s' if epochs > 1 else ''})")
        train(TrainOptions(data=data_dir, model="finetune-top", out=run, epochs=epochs, patience=PATIENCE, seed=seed,
                           class_weight=class_weight, cache_dir=cache, overwrite=True, calibration=False,
                           monitor="val_accuracy", model_options={"from_run": str(top_run)}))
    saved = Run(run).saved_epoch
    return {"val_accuracy": float(saved["val_accuracy"]), "val_loss": float(saved["val_loss"]),
            "learning_rate": float(Run(run).config["peak_learning_rate"])}


def _say(message: str) -> None:
    logging.getLogger("catsdogs.fitting").info(f"[fit] {message}")
