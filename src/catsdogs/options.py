"""The options of one training experiment, checked once when made; the `catsdogs train` flags are built from
them (no Keras import here, so the command line stays fast)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union, get_args, get_origin, get_type_hints

from catsdogs.errors import UsageError
from catsdogs.models import list_models, model_entry

Precision = Literal["auto", "float32", "bfloat16", "float16"]
Schedule = Literal["constant", "one-cycle"]
Monitor = Literal["val_loss", "val_accuracy"]
ClassWeight = Literal["balanced"]
Distribute = Literal["mirrored", "multi-worker"]
Log = Literal["tensorboard", "mlflow"]
Engine = Literal["keras", "auto"]
LOG_KINDS = get_args(Log)
DEFAULT_SEED = 1337  # of every split and training run
POSITIVE = ("epochs", "batch_size", "patience")
MAX_IMAGE_SIZE = 1024  # px a side: above every backbone's own size (EfficientNetB7's 600) and fit's 384


def option(default=None, help: str = "", metavar: str | None = None, **extra):
    """A dataclass field with the help text (and metavar) of its command-line flag."""
    return field(default=default, metadata={"help": help, "metavar": metavar, **extra})


@dataclass
class TrainOptions:
    """Everything that defines one experiment; saved in RUN/config.json. Checked when made: a bad value
    raises UsageError (a ValueError) naming the option."""

    data: Path = option(help="a prepared DATA folder", metavar="DATA")
    model: str = option(help=f"one of {', '.join(list_models())}", metavar="MODEL")
    out: Path = option(help="the RUN folder to write", metavar="RUN")
    epochs: int | None = option(help="default: the model's own")
    backbone: str | None = option(help="pretrained base for features/transfer/finetune: a keras.applications name "
                                  "lower-cased (mobilenetv2, vgg16, efficientnetb0, resnet50...) or "
                                  "efficientnet_lite0/1/2 (default: efficientnet_lite2 when installed)")
    image_size: int | None = option(help="default: the model's own (the study's 150 px, the backbone's size); "
                                    f"at most {MAX_IMAGE_SIZE}")
    batch_size: int = option(32, help="images per step (per replica when distributed)")
    seed: int = option(DEFAULT_SEED)
    precision: Precision = option("auto", help="auto: on a GPU bfloat16 (Ampere+) or float16 (Volta/Turing) "
                                  "mixed precision; on a CPU bfloat16 where it is faster; else float32")
    learning_rate: float | None = option(help="default: the model's own (one-cycle: the peak, 1e-3)")
    schedule: Schedule = option("constant", help="constant: the model's own optimizer (the study's); one-cycle: "
                                "AdamW warmed up to the peak learning rate, then cosine-decayed to zero (fastai's "
                                "fit_one_cycle; baseline, augmented, transfer, finetune: over its fine-tuning epochs)")
    monitor: Monitor = option("val_loss", help="which validation number picks the saved model.keras (and early "
                              "stopping); equal accuracies go to the lower loss")
    patience: int | None = option(help="stop after N epochs without improvement on validation (default: finetune "
                                  "3, others none)", metavar="N")
    class_weight: ClassWeight | None = option(help="balanced: weight each class by n / (classes x its count), for "
                                              "unbalanced classes")
    engine: Engine = option("keras", help="what runs the frozen base (feature extraction, transfer, finetune): keras; "
                            "auto: the fastest verified engine (ONNX Runtime, OpenVINO) from 1000 images on, up to "
                            "~1.2x faster on EfficientNet-Lite2 here but ~5 GB more memory (exporting, ONNX "
                            "Runtime's arena)")
    cache_dir: Path | None = option(help="keep decoded images (and the features model's features) here for the "
                                    "next runs")
    resume: bool = option(False, help="continue an interrupted RUN")
    overwrite: bool = option(False, help="replace an existing RUN (a notebook cell run again)")
    distribute: Distribute | None = option(help="mirrored: the local GPUs (or CPU devices); multi-worker: the hosts "
                                           "TF_CONFIG names (picked automatically when TF_CONFIG names several "
                                           "workers); batch_size is per replica")
    calibration: bool = option(True, help="leave out the calibration and the unknown-photo threshold fitted on "
                               "validation after training (RUN/calibration.json; catsdogs.trust)")
    accept: float = option(0.98, help="the share of in-distribution validation photos to accept (the rest of "
                           "the photos as unlike them are labelled unknown)", metavar="SHARE")
    log: Log | None = option(help="track the training: tensorboard (RUN/logs/: scalars per epoch, the confusion "
                             "matrix and misclassified validation photos) or mlflow (params, metrics, artifacts, "
                             "to the tracking URI in MLFLOW_TRACKING_URI; pip install 'catsdogs[mlflow]')")
    model_options: dict = field(default_factory=dict, metadata={"cli": False})  # the builder's own options
    # heads on one base: also cache the inputs of its top for `finetune-top` (catsdogs fit's stage a)
    keep_top_inputs: bool = field(default=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        for name in ("data", "model", "out"):
            if getattr(self, name) is None:
                raise UsageError(f"{name} is required", name)
        self.data, self.out = Path(self.data), Path(self.out)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        model_entry(self.model)
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name} must be an int >= 1, got {value!r}", name)
        check_image_size(self.image_size)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UsageError(f"learning_rate must be > 0, got {self.learning_rate!r}", "learning_rate")
        hints = get_type_hints(TrainOptions)
        for item in dataclasses.fields(self):
            choices = literal_choices(hints[item.name])
            value = getattr(self, item.name)
            if choices and value is not None and value not in choices:
                raise UsageError(f"{item.name} must be one of {', '.join(choices)}, got {value!r}", item.name)
        from catsdogs.novelty import check_accept  # hook: catsdogs.trust

        check_accept(self.accept)
        check_log(self.log)
        if self.resume and self.overwrite:
            raise UsageError("resume and overwrite exclude each other", "overwrite")


def check_image_size(image_size: int | None, parameter: str = "image_size") -> int | None:
    """None (the model's own size) or an int from 1 to MAX_IMAGE_SIZE; a UsageError naming `parameter` else."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or not 1 <= image_size <= MAX_IMAGE_SIZE):
        raise UsageError(f"{parameter} must be an int from 1 to {MAX_IMAGE_SIZE}, got {image_size!r}", parameter)
    return image_size


def check_log(log: str | None) -> str | None:
    """`log` when usable: None, "tensorboard", or "mlflow" with mlflow installed; UsageError naming `log` else."""
    if log is None:
        return None
    if log not in LOG_KINDS:
        raise UsageError(f"log must be one of {', '.join(LOG_KINDS)}, got {log!r}", "log")
    if log == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise UsageError("log='mlflow' needs mlflow: pip install 'catsdogs[mlflow]'", "log")
    return log


def literal_choices(annotation) -> tuple[str, ...]:
    """The values of a Literal (also inside `X | None`), else ()."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (Union, type(int | None)):
        return next((get_args(a) for a in get_args(annotation) if get_origin(a) is Literal), ())
    return ()


def add_option_arguments(parser: argparse.ArgumentParser, options: type, required: tuple[str, ...] = ()) -> None:
    """One flag per field of the `options` dataclass (`image_size` -> `--image-size`): its type, choices,
    default and help come from the field, so the command line cannot drift from the Python API."""
    hints = get_type_hints(options)
    for item in dataclasses.fields(options):
        if not item.metadata.get("cli", True):
            continue
        flag = "--" + item.name.replace("_", "-")
        annotation = hints[item.name]
        kind = next((a for a in get_args(annotation) if a is not type(None)), annotation)
        default = None if item.default is dataclasses.MISSING else item.default
        extra = {"help": item.metadata.get("help") or None, "default": default}
        if annotation is bool and default is True:  # a switch on by default: --no-NAME turns it off
            parser.add_argument("--no-" + item.name.replace("_", "-"), dest=item.name, action="store_false",
                                help=extra["help"])
            continue
        if annotation is bool:
            parser.add_argument(flag, action="store_true", help=extra["help"])
            continue
        if choices := literal_choices(annotation):
            extra["choices"] = list(choices)
        elif item.name in POSITIVE:
            extra["type"] = positive_int
        elif item.name == "image_size":
            extra["type"] = image_size_arg
        elif kind in (int, float, Path):
            extra["type"] = kind
        if item.metadata.get("metavar"):
            extra["metavar"] = item.metadata["metavar"]
        if item.name == "model":
            extra["choices"] = list_models()
        parser.add_argument(flag, required=item.name in required, **extra)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def image_size_arg(text: str) -> int:
    """--image-size: pixels a side, from 1 to MAX_IMAGE_SIZE."""
    value = int(text)
    if not 1 <= value <= MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_IMAGE_SIZE} px, got {value}")
    return value


def check_threshold(threshold: float | None, parameter: str = "threshold") -> float | None:
    """A decision threshold: None, or a finite number in [0, 1]; a UsageError otherwise (nan, inf, 2, -1)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 <= threshold <= 1:
        raise UsageError(f"{parameter} must be a number between 0 and 1, got {threshold!r}", parameter)
    return float(threshold)


def check_limit(value: float, parameter: str, maximum: float) -> float:
    """A positive finite limit no larger than `maximum` (nan, inf and 1e308 refused with a UsageError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= maximum:
        raise UsageError(f"{parameter} must be a number > 0 and at most {maximum:g}, got {value!r}", parameter)
    return float(value)
