"""`finetune`: a trained `transfer` model with the top of its base unfrozen, at a low learning rate.

Either from a completed transfer RUN (`from_run`), or in one RUN: the transfer stage first (the
transfer model's default epochs, head only), then fine-tuning. BatchNormalization layers always stay
frozen and in inference mode (the base is called with training=False).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from catsdogs.errors import UsageError
from catsdogs.models.backbones import get_backbone
from catsdogs.models.pretrained import build_transfer, compile_classifier, find_base

FINETUNE_LEARNING_RATE = 1e-5


def unfreeze_top(model: keras.Model, count: int | None = None) -> int:
    """Make the top `count` layers of the model's base trainable (default: its last block), except
    BatchNormalization; returns how many layers were unfrozen."""
    base = find_base(model)
    count = get_backbone(base.name).top_layers(base) if count is None else count
    if count < 0:
        raise UsageError(f"unfreeze must be >= 0, got {count}", "unfreeze")
    base.trainable = True
    first = len(base.layers) - min(count, len(base.layers))
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, layers.BatchNormalization)
    return len(base.layers) - first


def start_finetune(model: keras.Model, unfreeze: int | None = None,
                   learning_rate: float | None = None) -> keras.Model:
    """Unfreeze the top of the base and recompile at a low learning rate."""
    unfreeze_top(model, unfreeze)
    return compile_classifier(model, learning_rate or FINETUNE_LEARNING_RATE)


def load_transfer_run(run: Path, backbone: str | None, image_size: int | None) -> keras.Model:
    """The model of a completed transfer RUN; a UsageError when it is not one or does not match."""
    from catsdogs.run_files import load_run_model, read_config

    config = read_config(run)
    if config.get("model") != "transfer" or config.get("status") != "complete":
        raise UsageError(f"from_run {run}: not a completed transfer run "
                         f"(model {config.get('model')}, status {config.get('status')})", "from_run")
    if backbone and get_backbone(backbone).name != config.get("backbone"):
        raise UsageError(f"backbone {backbone} differs from from_run's {config.get('backbone')}", "backbone")
    if image_size and image_size != config.get("image_size"):
        raise UsageError(f"image_size {image_size} differs from from_run's {config.get('image_size')}", "image_size")
    return load_run_model(run)


def build_finetune(image_size: int | None = None, *, backbone: str | None = None, from_run: str | None = None,
                   unfreeze: int | None = None, learning_rate: float | None = None,
                   weights: str | None = "imagenet", seed: int | None = None, num_classes: int = 2) -> keras.Model:
    """With `from_run`: that transfer model, ready to fine-tune. Without: a fresh transfer model, which
    `fit_finetune` trains first and then unfreezes (with `unfreeze` and `learning_rate` of TrainOptions)."""
    if from_run is None:
        return build_transfer(image_size, backbone=backbone, weights=weights, seed=seed, num_classes=num_classes)
    return start_finetune(load_transfer_run(Path(from_run), backbone, image_size), unfreeze, learning_rate)
