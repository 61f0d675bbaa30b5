"""Models by name, timm-style: `create_model("baseline")`, `create_model("transfer", backbone=...)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from catsdogs.errors import UsageError

DEFAULT_TRAINER = "catsdogs.training:fit_images"


@dataclass(frozen=True)
class ModelEntry:
    """A model the registry can build: where its builder lives and its training defaults."""

    builder: str  # "module:function", imported only when used (keeps `catsdogs --help` fast)
    description: str
    default_epochs: int
    uses_backbone: bool = False
    trainer: str = DEFAULT_TRAINER  # "module:function(model, FitContext)": how it trains
    default_patience: int | None = None  # early stopping on validation, in epochs
    takes_schedule: bool = True  # --schedule one-cycle (its trainer fits with the model's compiled optimizer)

    def load_builder(self) -> Callable:
        return _load(self.builder)

    def load_trainer(self) -> Callable:
        return _load(self.trainer)


def _load(reference: str) -> Callable:
    module, function = reference.split(":")
    return getattr(import_module(module), function)


MODELS: dict[str, ModelEntry] = {
    "baseline": ModelEntry("catsdogs.models.convnet:build_baseline",
                           "the study's convnet from scratch", default_epochs=30),
    "augmented": ModelEntry("catsdogs.models.convnet:build_augmented",
                            "the study's convnet + augmentation + Dropout(0.5)", default_epochs=100),
    "features": ModelEntry("catsdogs.models.pretrained:build_features",
                           "frozen pretrained base run once (features cached on disk), dense head trained on them",
                           default_epochs=30, uses_backbone=True, trainer="catsdogs.trainers.features:fit_features",
                           takes_schedule=False),
    "transfer": ModelEntry("catsdogs.models.pretrained:build_transfer",
                           "augmentation + frozen pretrained base (run by the fastest verified engine) + head",
                           default_epochs=8, uses_backbone=True, trainer="catsdogs.trainers.transfer:fit_transfer"),
    "heads": ModelEntry("catsdogs.models.frozen:build_heads",
                        "frozen pretrained base(s) (backbone a+b for two), flip-averaged features cached on disk, the "
                        "better on validation of a logistic-regression head (C tuned) and a dense head",
                        default_epochs=1, uses_backbone=True, trainer="catsdogs.trainers.heads:fit_heads",
                        takes_schedule=False),
    "finetune-top": ModelEntry("catsdogs.models.frozen:build_top",
                               "heads, then the base's last two blocks fine-tuned on their cached inputs (the photo and its "
                               "mirror): the head first, a range test, one-cycle, the best epoch on validation; "
                               "--from-run a finetune-top RUN: its top tuned further on the augmented photos",
                               default_epochs=5, uses_backbone=True, trainer="catsdogs.trainers.top_tuning:fit_top",
                               default_patience=3, takes_schedule=False),
    "finetune": ModelEntry("catsdogs.models.finetune:build_finetune",
                           "transfer (or --from-run a transfer RUN), then the base's top unfrozen at a low rate",
                           default_epochs=10, uses_backbone=True, trainer="catsdogs.trainers.finetune:fit_finetune",
                           default_patience=3),
}


def list_models() -> list[str]:
    """The names `create_model` and `catsdogs train --model` take, in the study's order."""
    return list(MODELS)


def model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or a UsageError listing the known models."""
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose from {', '.join(MODELS)}", "model") from None


def create_model(name: str, *, image_size: int | None = None, **options):
    """Build and compile the model called `name` (input: raw RGB 0-255; output: p(classes[1]))."""
    return model_entry(name).load_builder()(image_size=image_size, **options)
