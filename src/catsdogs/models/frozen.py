"""`heads`: one or more frozen ImageNet bases whose pooled features are averaged over the photo and its mirror
image, and a head trained on those features (cached once, like `features`).

Layout: image -> per base: (the photo, its mirror) -> [resize] -> preprocess -> base -> pool -> mean of the two
views (`flipavg_<base>`) -> `pool` (the bases' features side by side) -> `head` (a model on the features: a
standardisation and a logistic-regression layer, or a dense head; `catsdogs.trainers.heads` picks on validation).
`backbone` names one base or several joined by `+` (`efficientnet_lite2+mobilenetv2`); the input size is the
largest base's, and the other bases see the photo resized to their own size inside the model.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from catsdogs.errors import UsageError
from catsdogs.models.augmentation import HorizontalFlip
from catsdogs.models.backbones import get_backbone
from catsdogs.models.heads import Standardize, probability_output
from catsdogs.models.pretrained import compile_classifier

HEADS_LEARNING_RATE = 1e-3
DENSE_UNITS, DENSE_DROPOUT = 256, 0.5


def backbone_names(backbone: str | None) -> list[str]:
    """The canonical names of the bases in `backbone` (`a+b`), in order; the default backbone when None."""
    parts = [part.strip() for part in (backbone or "").split("+")] if backbone else [None]
    if any(part == "" for part in parts):
        raise UsageError(f"backbone {backbone!r}: join backbone names with '+', e.g. efficientnet_lite2+mobilenetv2",
                         "backbone")
    names = [get_backbone(part).name for part in parts]
    if len(set(names)) != len(names):
        raise UsageError(f"backbone {backbone!r} names a base twice", "backbone")
    return names


def branch_layer(name: str) -> str:
    """The layer holding one base's flip-averaged features."""
    return f"flipavg_{name}"


def branch_extractor(model: keras.Model, name: str) -> keras.Model:
    """Images -> one base's flip-averaged features (the model's own layers)."""
    return keras.Model(model.inputs, model.get_layer(branch_layer(name)).output, name=f"extractor_{name}")


def split_base(base: keras.Model, layer: str) -> tuple[keras.Model, keras.Model]:
    """(bottom, top) of a functional base cut after `layer`: the same layers, no copy. The bottom is named after the
    base (the features cache keys it by that name, its input and its weights)."""
    cut = base.get_layer(layer).output
    return keras.Model(base.inputs, cut, name=base.name), keras.Model(cut, base.output, name=f"{base.name}_top")


def base_inputs(model: keras.Model, name: str) -> list[tuple[str, object]]:
    """[(view, tensor)]: what base `name` of a `heads` model receives for the photo and its mirror (after its
    preprocessing), as tensors of the model's own graph."""
    names = {item.name for item in model.layers}
    views = (("image", model.inputs[0]), ("mirror", model.get_layer("mirror").output))
    return [(tag, model.get_layer(f"preprocess_{name}_{tag}").output if f"preprocess_{name}_{tag}" in names else view)
            for tag, view in views]


def top_inputs_extractor(model: keras.Model, name: str, *, with_features: bool = False) -> keras.Model:
    """Images -> the inputs of base `name`'s top (`Backbone.tuned_from`) for the photo and its mirror, stacked:
    (batch, 2, h, w, c), the model's own layers. `finetune-top` tunes the top on them. `with_features`: two
    outputs, the base's flip-averaged features (its branch of `model`, computed on from the top's inputs) and the
    top's inputs: one forward pass for both (`heads` caches the second beside its features when asked,
    `TrainOptions.keep_top_inputs`, so that tuning extracts nothing again)."""
    layer = get_backbone(name).tuned_from(model.get_layer(name))
    bottom, top = split_base(model.get_layer(name), layer)
    views, pooled = [], []
    for tag, x in base_inputs(model, name):
        y = bottom(x)
        views.append(layers.Reshape((1, *y.shape[1:]), name=f"view_{tag}")(y))
        if with_features:
            pooled.append(model.get_layer(f"pool_{name}")(top(y)))
    stacked = layers.Concatenate(axis=1, name=f"top_inputs_{layer}")(views)
    if not with_features:
        return keras.Model(model.inputs, stacked, name=f"top_inputs_{name}")
    features = layers.Average(name=f"features_from_top_{name}")(pooled)
    return keras.Model(model.inputs, [features, stacked], name=f"features_and_top_inputs_{name}")


def tuned_top_base(model: keras.Model) -> str | None:
    """The base of a single-base `heads` model, whose top `finetune-top` may have tuned; None for other models."""
    bases = flip_averaged_bases(model)
    return bases[0] if len(bases) == 1 else None


def pretrained_top_weights(name: str, image_size: int, weights: str | None = "imagenet") -> list[np.ndarray]:
    """The weights of base `name`'s top (the layers `finetune-top` tunes) as `weights` gives them: what the top
    held before tuning."""
    spec = get_backbone(name)
    base = spec.build_base(image_size, weights)
    return split_base(base, spec.tuned_from(base))[1].get_weights()


def with_reference_top(model: keras.Model, reference_top: list[np.ndarray]) -> keras.Model:
    """Images -> [the flip-averaged pooled features of the base with its top set to `reference_top` (its pretrained
    weights), the model's output]. Both tops run on one pass of the shared, frozen bottom (about 8% more than
    the model alone). Fine-tuning the top squeezes its features onto the classes: novelty (catsdogs.novelty)
    reads these instead (a cats/dogs RUN scored on its tuned features accepted every TrashNet photo)."""
    name = tuned_top_base(model)
    if name is None:
        raise UsageError(f"model {model.name} has no single pretrained base whose top could be tuned", "model")
    spec, base = get_backbone(name), model.get_layer(name)
    layer = spec.tuned_from(base)
    bottom, top = split_base(base, layer)
    fresh = spec.build_base(int(base.input_shape[1]), None)
    reference = keras.Model(fresh.get_layer(layer).output, fresh.output, name=f"{name}_reference_top")
    shapes, given = [tuple(w.shape) for w in reference.get_weights()], [tuple(np.shape(w)) for w in reference_top]
    if given != shapes:
        wrong = next((i for i, (a, b) in enumerate(zip(given, shapes)) if a != b), None)
        detail = (f"{len(given)} arrays for its {len(shapes)}" if wrong is None else
                  f"top_{wrong:03d} has shape {given[wrong]}, not {shapes[wrong]}")
        raise UsageError(f"the pretrained top's weights do not fit {name}'s top: {detail}", "run")
    reference.set_weights(reference_top)
    pool, tuned, pretrained = model.get_layer(f"pool_{name}"), [], []
    for _, x in base_inputs(model, name):
        y = bottom(x)
        tuned.append(pool(top(y)))
        pretrained.append(pool(reference(y)))
    output = model.get_layer("head")(model.get_layer("pool")(model.get_layer(branch_layer(name))(tuned)))
    features = layers.Average(name="pretrained_features")(pretrained)
    return keras.Model(model.inputs, [features, output], name="embeddings")


def pretrained_twin(model: keras.Model, reference_top: list[np.ndarray]) -> keras.Model:
    """A `heads` model on `model`'s base with its top set back to `reference_top`: the model `fit`'s heads stage
    extracted with, whose cached features the features cache finds (it keys them by the weights)."""
    name = tuned_top_base(model)
    spec = get_backbone(name)
    twin = build_heads(int(model.input_shape[1]), backbone=name, weights=None)
    base = twin.get_layer(name)
    base.set_weights(model.get_layer(name).get_weights())
    split_base(base, spec.tuned_from(base))[1].set_weights(reference_top)
    return twin


def build_top(image_size: int | None = None, *, backbone: str | None = None, weights: str | None = "imagenet",
              from_run: str | None = None, seed: int | None = None, num_classes: int = 2) -> keras.Model:
    """`finetune-top`'s model: a fresh `heads` model (its trainer tunes the top on cached inputs), or with `from_run`
    the model of a completed `finetune-top` RUN, whose top the trainer tunes further on the augmented photos."""
    if from_run is None:
        return build_heads(image_size, backbone=backbone, weights=weights, seed=seed, num_classes=num_classes)
    from pathlib import Path

    from catsdogs.run_files import load_run_model, read_config

    config = read_config(Path(from_run))
    if config.get("model") != "finetune-top" or config.get("status") != "complete":
        raise UsageError(f"from_run {from_run}: not a completed finetune-top run (model {config.get('model')}, "
                         f"status {config.get('status')})", "from_run")
    for name, given, found in (("backbone", backbone and "+".join(backbone_names(backbone)), config.get("backbone")),
                               ("image_size", image_size, config.get("image_size")),
                               ("classes", num_classes, len(config.get("classes") or []))):
        if given and given != found:
            raise UsageError(f"{name} {given} differs from from_run's {found}", name)
    return load_run_model(Path(from_run))


def build_heads(image_size: int | None = None, *, backbone: str | None = None, weights: str | None = "imagenet",
                learning_rate: float = HEADS_LEARNING_RATE, seed: int | None = None, num_classes: int = 2) -> keras.Model:
    """Frozen base(s) with flip-averaged pooled features and a logistic-regression head (untrained)."""
    specs = [get_backbone(name) for name in backbone_names(backbone)]
    size = image_size or max(spec.image_size for spec in specs)
    inputs = keras.Input((size, size, 3), name="image")
    views = {"image": inputs, "mirror": HorizontalFlip(name="mirror")(inputs)}
    branches = []
    for spec in specs:
        base_size = size if len(specs) == 1 else spec.image_size
        base = spec.build_base(base_size, weights)
        base.trainable = False
        pool = layers.GlobalAveragePooling2D(name=f"pool_{spec.name}")
        pooled = []
        for tag, view in views.items():
            x = view if base_size == size else layers.Resizing(base_size, base_size, name=f"resize_{spec.name}_{tag}")(view)
            pooled.append(pool(base(spec.preprocess(x, name=f"preprocess_{spec.name}_{tag}"), training=False)))
        branches.append(layers.Average(name=branch_layer(spec.name))(pooled))
    features = layers.Concatenate(name="pool")(branches) if len(branches) > 1 else layers.Identity(name="pool")(branches[0])
    head = logistic_head(int(features.shape[-1]), num_classes)
    return compile_classifier(keras.Model(inputs, head(features), name="heads"), learning_rate)


def _standardize(dimension: int, mean: np.ndarray | None, variance: np.ndarray | None):
    inputs = keras.Input((dimension,), name="features")
    standardize = Standardize(dimension, name="standardize")
    if mean is not None:
        standardize.set_weights([np.asarray(mean, np.float32), np.asarray(variance, np.float32)])
    return inputs, standardize(inputs)


def logistic_head(dimension: int, num_classes: int, mean: np.ndarray | None = None, variance: np.ndarray | None = None,
                  coef: np.ndarray | None = None, intercept: np.ndarray | None = None) -> keras.Model:
    """Standardised features -> one linear layer (sigmoid for 2 classes, softmax for more), as scikit-learn's
    LogisticRegression on StandardScaler'd features (`coef`, `intercept`: its fitted values)."""
    inputs, x = _standardize(dimension, mean, variance)
    outputs = probability_output(x, num_classes)
    head = keras.Model(inputs, outputs, name="head")
    if coef is not None:
        head.layers[-1].set_weights([np.asarray(coef, np.float32).T, np.asarray(intercept, np.float32)])
    return head


def dense_head(dimension: int, num_classes: int, mean: np.ndarray, variance: np.ndarray, *,
               seed: int | None = None) -> keras.Model:
    """Standardised features -> Dense(256, relu) -> Dropout(0.5) -> the output layer."""
    inputs, x = _standardize(dimension, mean, variance)
    x = layers.Dense(DENSE_UNITS, activation="relu", name="dense")(x)
    outputs = probability_output(layers.Dropout(DENSE_DROPOUT, seed=seed, name="dropout")(x), num_classes)
    return keras.Model(inputs, outputs, name="head")


def with_head(model: keras.Model, head: keras.Model) -> keras.Model:
    """The same bases and features with another head, compiled."""
    whole = compile_classifier(keras.Model(model.inputs, head(model.get_layer("pool").output), name="heads"),
                               HEADS_LEARNING_RATE)
    whole.optimizer.build(whole.trainable_variables)  # saved built: loading then restores it without a warning
    return whole


@keras.saving.register_keras_serializable(package="catsdogs")
class Fixed(layers.Layer):
    """The same feature vector for every row of its input (the other bases' features while Grad-CAM explains one)."""

    def __init__(self, value=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.value = np.asarray(value if value is not None else [], np.float32)

    def call(self, images):
        return keras.ops.broadcast_to(keras.ops.convert_to_tensor(self.value)[None],
                                      (keras.ops.shape(images)[0], self.value.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.value.shape[-1])


def flip_averaged_bases(model) -> list[str]:
    """The bases of a `heads` model (each photo and its mirror through them, averaged), in order; [] for others."""
    return [layer.name.removeprefix("flipavg_") for layer in getattr(model, "layers", [])
            if layer.name.startswith("flipavg_")]


def single_view(model: keras.Model, image: np.ndarray | None = None) -> keras.Model:
    """A `heads` model without its mirror view, sharing its layers: what Grad-CAM explains. With several bases, the
    first is explained and the others' features are those of `image` (fixed), so the gradients are exact for the
    first base. Any other model is returned as it is."""
    names = {layer.name for layer in model.layers}
    if "mirror" not in names:
        return model
    bases = flip_averaged_bases(model)
    inputs = keras.Input(model.input_shape[1:], name="image")

    def branch(name: str):
        x = model.get_layer(f"resize_{name}_image")(inputs) if f"resize_{name}_image" in names else inputs
        x = model.get_layer(f"preprocess_{name}_image")(x) if f"preprocess_{name}_image" in names else x
        return model.get_layer(f"pool_{name}")(model.get_layer(name)(x, training=False))

    first = branch(bases[0])
    if len(bases) == 1:
        pooled = model.get_layer("pool")(first)
    else:
        if image is None:
            raise UsageError("explaining a model with several bases needs the image", "image")
        others = keras.Model(inputs, [branch(name) for name in bases[1:]])
        values = others.predict_on_batch(np.asarray(image, np.float32)[None])
        values = values if isinstance(values, list) else [values]
        fixed = [Fixed(np.asarray(v)[0], name=f"fixed_{name}")(first) for v, name in zip(values, bases[1:])]
        pooled = model.get_layer("pool")([first, *fixed])
    return keras.Model(inputs, model.get_layer("head")(pooled), name=f"{model.name}_single_view")
