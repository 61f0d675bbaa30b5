"""Trainer of `finetune`: the transfer stage (head only), then the top of the base unfrozen at a low rate (constant,
or with `schedule="one-cycle"` one cycle over the fine-tuning epochs peaking at `learning_rate`, the base's top at a
tenth of the head's rate)."""

from __future__ import annotations

import keras

from catsdogs.models.finetune import start_finetune
from catsdogs.models.pretrained import TRANSFER_LEARNING_RATE, compile_classifier, find_base
from catsdogs.trainers.transfer import fit_trainable_part


def transfer_epochs(options) -> int:
    """Epochs of the transfer stage inside a finetune RUN: none when starting from a transfer RUN."""
    from catsdogs.models import MODELS

    return 0 if options.model_options.get("from_run") else MODELS["transfer"].default_epochs


def fit_finetune(model: keras.Model, context) -> dict:
    """Trainer of `finetune`: [transfer stage,] then fine-tuning with early stopping on validation.

    The stage is read from the model (its base is frozen until fine-tuning starts) and the epoch, so
    resuming works in either stage; RUN/model.keras is the best epoch of both. Fine-tuning runs the frozen
    bottom of the base through the fastest verified engine (catsdogs.trainers.transfer); the transfer stage
    trains the whole model in Keras.
    """
    options = context.options
    first = transfer_epochs(options)
    if not find_base(model).trainable or context.initial_epoch > first:
        # transfer stage still to finish, or resumed while fine-tuning: Keras loads a nested base that is
        # partly frozen as all trainable, so the freeze is applied again (and Adam's moments restart)
        if options.schedule == "one-cycle" and context.initial_epoch == 0:  # the cycle is fine-tuning's
            compile_classifier(model, TRANSFER_LEARNING_RATE)
        context.fit(model, context.split("train"), context.split("validation"), epochs=first, patience=0)
        start_finetune(model, options.model_options.get("unfreeze"), options.learning_rate)
    if options.schedule == "one-cycle":
        _one_cycle(model, context)
    engine = fit_trainable_part(model, context, epochs=first + context.epochs,
                                initial_epoch=max(context.initial_epoch, first), patience_from=first)
    return {"transfer_epochs": first, "epochs": first + context.epochs, "frozen_part_engine": engine}


def _one_cycle(model: keras.Model, context) -> None:
    """Recompile the unfrozen model with fastai's one-cycle AdamW over the fine-tuning epochs, the base's top at a
    tenth of the head's rate (discriminative rates, catsdogs.models.optimizers)."""
    import math

    from catsdogs.models.optimizers import BASE_FACTOR, DiscriminativeAdamW
    from catsdogs.training import ONE_CYCLE_PEAK_LEARNING_RATE, one_cycle_optimizer

    steps = math.ceil(len(context.split("train").labels) / context.options.batch_size) * context.epochs
    peak = context.options.learning_rate or ONE_CYCLE_PEAK_LEARNING_RATE
    optimizer = DiscriminativeAdamW.from_config({**one_cycle_optimizer(peak, steps).get_config(),
                                                 "base_factor": BASE_FACTOR})
    model.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=model.jit_compile)
