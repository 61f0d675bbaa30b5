"""Grad-CAM heat maps for the project's Keras models, for any class.

The model maps a raw 0-255 RGB batch to ``p1 = P(classes[1])`` (two classes, one sigmoid) or a softmax
over N classes. Grad-CAM weights each channel of a 4D feature map by the spatial mean of
d(score)/d(feature) and keeps the positive part of the weighted sum. The score is the class's logit:
for a sigmoid ``z`` (class 1) or ``-z`` (class 0), for a softmax the class's pre-softmax value: the gradient
of ``p1`` is ``p1 (1 - p1)`` times the logit's, the same map after normalisation, except that it
vanishes once ``p1`` saturates (exactly 0 or 1 in float32, and already near 0.996 in bfloat16).

Feature maps inside a nested base model (``base(x, training=False)`` used as one layer) are
reached by splitting the forward pass at the target layer into two chained sub-models, lower
(input -> feature map) and upper (feature map -> output), built on the model's own graph, so the
layers and weights are the model's own and nothing is copied or re-initialised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from catsdogs.compat import graph_nodes, inbound_nodes
from catsdogs.decision import decide
from catsdogs.errors import CatsdogsError, UsageError
from catsdogs.models.frozen import single_view

__all__ = ["GradCam", "explanation_figure", "explanations", "find_last_conv_layer", "gradcam", "overlay",
           "save_explanation"]

# Layers that may output 4D tensors but are not feature maps worth explaining.
_SKIPPED_MODULES = (".preprocessing.", ".regularization.", ".pooling.", ".augmentation")


@dataclass(frozen=True)
class GradCam:
    """A Grad-CAM result: ``heatmap`` (h x w float32 in [0, 1], feature-map resolution), ``p1`` (two classes:
    the model's probability of class 1; more: the probability of ``target``), ``layer`` (path of the
    explained layer), ``target`` (the class the map argues for) and every class's ``probabilities``."""

    heatmap: np.ndarray
    p1: float
    layer: str
    target: int = 1
    probabilities: np.ndarray | None = None


# --------------------------------------------------------------------------- graph helpers


def _is_nested(layer: keras.layers.Layer) -> bool:
    """True for a functional/sequential model used as one layer of another model."""
    return isinstance(layer, keras.Model) and graph_nodes(layer) is not None


def _graph_nodes(model: keras.Model) -> set:
    """The nodes of ``model``'s own graph."""
    nodes = graph_nodes(model)
    if nodes is None:
        raise UsageError(
            f"model '{model.name}' is not a functional or sequential Keras model; "
            "Grad-CAM cannot follow its layers"
        )
    return nodes


def _node(model: keras.Model, layer: keras.layers.Layer):
    """The single node where ``layer`` is called inside ``model``'s graph."""
    graph = _graph_nodes(model)
    nodes = [n for n in inbound_nodes(layer) if n in graph]
    if len(nodes) != 1:
        raise UsageError(
            f"layer '{layer.name}' is called {len(nodes)} times in model '{model.name}'; "
            "Grad-CAM needs a layer used exactly once"
        )
    if len(nodes[0].outputs) != 1:
        raise UsageError(f"layer '{layer.name}' must have one output for Grad-CAM")
    return nodes[0]


def _is_4d(model: keras.Model, layer: keras.layers.Layer) -> bool:
    """A layer (not the input) whose output in ``model`` is a 4D tensor."""
    if isinstance(layer, keras.layers.InputLayer):
        return False
    try:
        return len(_node(model, layer).outputs[0].shape) == 4
    except UsageError:
        return False


def _is_feature_map(model: keras.Model, layer: keras.layers.Layer) -> bool:
    """A 4D layer that is not preprocessing, augmentation, dropout or pooling."""
    skipped = any(part in type(layer).__module__ for part in _SKIPPED_MODULES)
    return not skipped and _is_4d(model, layer)


def _feature_maps(model: keras.Model, prefix: str = "") -> list[str]:
    """Paths of the explainable 4D layers in graph order, descending into nested models."""
    paths = []
    for layer in model.layers:
        if _is_nested(layer):  # a nested model's own layers (none for the augmentation block)
            paths.extend(_feature_maps(layer, f"{prefix}{layer.name}/"))
        elif _is_feature_map(model, layer):
            paths.append(f"{prefix}{layer.name}")
    return paths


def _brief(names: Sequence[str], limit: int = 10) -> str:
    """``a, b, c, ... (N in all)`` for one-line error messages."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def find_last_conv_layer(model: keras.Model) -> str:
    """Path of the last layer with a 4D output, searching into nested base models.

    Input, preprocessing/augmentation, dropout and pooling layers are passed over (a pooled map
    only halves the resolution of the conv map before it). Returns e.g. ``"conv2d_3"`` or
    ``"mobilenetv2_1.00_160/out_relu"``; raises ``UsageError`` when there is none.
    """
    paths = _feature_maps(model)
    if not paths:
        raise UsageError(
            f"model '{model.name}' has no 4D feature-map layer to explain "
            f"(layers: {_brief([layer.name for layer in model.layers])})"
        )
    return paths[-1]


def _resolve(model: keras.Model, layer: str) -> list[str]:
    """``layer`` (a path ``"base/name"`` or a bare name, looked up in nested models too) as a
    list of names from the outer model down; ``UsageError`` if absent, ambiguous or not 4D."""
    candidates = _feature_maps(model)
    if "/" in layer:
        path = layer.split("/")
    else:
        found = _find_named(model, layer)
        if len(found) > 1:
            raise UsageError(f"layer name '{layer}' is ambiguous: {_brief(found)}")
        path = found[0].split("/") if found else [layer]
    current: keras.Model = model
    for i, name in enumerate(path):
        names = [lyr.name for lyr in current.layers]
        if name not in names:
            raise UsageError(
                f"no layer '{'/'.join(path[: i + 1])}' in model '{model.name}' "
                f"(feature-map layers: {_brief(candidates[::-1])})"
            )
        sub = current.get_layer(name)
        if i < len(path) - 1 and not _is_nested(sub):
            raise UsageError(f"layer '{'/'.join(path[: i + 1])}' is not a nested model")
        if i < len(path) - 1:
            current = sub
    if not _is_4d(current, current.get_layer(path[-1])):
        raise UsageError(
            f"layer '{'/'.join(path)}' has no 4D feature map to explain "
            f"(try one of: {_brief(candidates[::-1])})"
        )
    return path


def _find_named(model: keras.Model, name: str, prefix: str = "") -> list[str]:
    """All paths to layers called ``name`` in ``model`` and its nested models."""
    found = []
    for layer in model.layers:
        if layer.name == name:
            found.append(f"{prefix}{name}")
        if _is_nested(layer):
            found.extend(_find_named(layer, name, f"{prefix}{layer.name}/"))
    return found


Stage = Callable[[object], object]


def _chain(*stages: Stage | None) -> Stage:
    """Compose stages left to right, skipping ``None`` (identity)."""
    kept = [s for s in stages if s is not None]

    def run(x):
        for stage in kept:
            x = stage(x)
        return x

    return run


def _stage(inputs, outputs) -> Stage | None:
    """Inference-mode sub-model of an existing graph, or ``None`` when it is the identity."""
    if inputs is outputs:
        return None
    sub = keras.Model(inputs, outputs)
    return lambda x: sub(x, training=False)


def _split(model: keras.Model, path: list[str]) -> tuple[Stage, Stage]:
    """(lower, upper) stages: input -> feature map of ``path``, feature map -> output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UsageError(f"model '{model.name}' must have one input and one output for Grad-CAM")
    layer = model.get_layer(path[0])
    node = _node(model, layer)
    model_in, model_out = model.inputs[0], model.outputs[0]
    if len(path) == 1:
        feature = node.outputs[0]
        return _stage(model_in, feature), _stage(feature, model_out)
    if len(node.input_tensors) != 1:
        raise UsageError(f"nested model '{layer.name}' must have one input for Grad-CAM")
    lower, upper = _split(layer, path[1:])
    before = _stage(model_in, node.input_tensors[0])
    after = _stage(node.outputs[0], model_out)
    return _chain(before, lower), _chain(upper, after)


# --------------------------------------------------------------------------- Grad-CAM


def _batch(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """``image`` (H x W x 3, or a batch of one) as a float32 batch checked against the model."""
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[-1] != 3:
        raise UsageError(f"expected an H x W x 3 RGB image, got an array of shape {array.shape}")
    expected = tuple(model.inputs[0].shape[1:3])
    if any(e is not None and e != a for e, a in zip(expected, array.shape[:2])):
        raise UsageError(
            f"image is {array.shape[0]}x{array.shape[1]} but the model expects "
            f"{expected[0]}x{expected[1]}: resize it first"
        )
    return array[np.newaxis].astype(np.float32)


def _require_tensorflow():
    """The TensorFlow module, or a clear error on another Keras backend."""
    if keras.backend.backend() != "tensorflow":
        raise CatsdogsError(
            f"Grad-CAM needs the TensorFlow backend (KERAS_BACKEND={keras.backend.backend()}); "
            "set KERAS_BACKEND=tensorflow"
        )
    import tensorflow as tf

    return tf


def _forward(model: keras.Model, image: np.ndarray, layer: str | None, targets: Sequence[int] | None):
    """(feature map, {target: d score / d feature map}, class probabilities, layer path), float32 numpy.

    `targets` None: the predicted class (the most probable one; p1 >= 0.5 for a sigmoid).
    """
    tf = _require_tensorflow()
    model = single_view(model, _batch(model, image)[0])  # flip-averaged `heads`: Grad-CAM explains one view
    path = _resolve(model, layer) if layer else find_last_conv_layer(model).split("/")
    lower, upper = _split(model, path)
    feature = tf.cast(lower(_batch(model, image)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(feature)
        output = upper(feature)
        # Keras' TF sigmoid and softmax keep their input on the output tensor (used by from_logits losses).
        logits = getattr(output, "_keras_logits", None)
        prob = tf.cast(output, tf.float32)
        units = int(prob.shape[-1])
        if logits is None:  # not a Keras activation: recover the logits (flat once p saturates)
            clipped = tf.clip_by_value(prob, 1e-7, 1 - 1e-7)
            logits = tf.math.log(clipped) - (tf.math.log1p(-clipped) if units == 1 else 0.0)
        logits = tf.reshape(tf.cast(logits, tf.float32), (-1,))
        probabilities = np.asarray(prob).reshape(-1)
        if units == 1:
            probabilities = np.array([1.0 - probabilities[0], probabilities[0]], dtype=np.float32)
        if targets is None:
            targets = [int(decide(probabilities)[0])]
        for target in targets:
            _check_target(target, len(probabilities))
        # a sigmoid's one logit argues for class 1, its negation for class 0
        scores = {t: (logits[0] if t == 1 else -logits[0]) if units == 1 else logits[t] for t in targets}
    grads = {}
    for target, score in scores.items():
        grad = tape.gradient(score, feature)
        if grad is None:
            raise CatsdogsError(f"the model's output does not depend on layer '{'/'.join(path)}'")
        grads[target] = np.asarray(grad)[0]
    del tape
    return np.asarray(feature)[0], grads, probabilities, "/".join(path)


def _cam(feature: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Positive part of the gradient-weighted channel sum, scaled to [0, 1]."""
    weights = grads.mean(axis=(0, 1), dtype=np.float64)
    cam = np.maximum(feature.astype(np.float64) @ weights, 0.0)
    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    top = cam.max(initial=0.0)
    return (cam / top if top > 0 else np.zeros_like(cam)).astype(np.float32)


def _check_target(target: int, num_classes: int) -> int:
    """`target` as a class index of a model with `num_classes` classes; UsageError otherwise."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 0 <= target < num_classes:
        raise UsageError(f"target must be a class index from 0 to {num_classes - 1}, got {target!r}", "target")
    return int(target)


def gradcam(
    model: keras.Model, image: np.ndarray, layer: str | None = None, target: int | None = None
) -> GradCam:
    """Grad-CAM of ``image`` (H x W x 3, raw 0-255 RGB at the model's input size) for class ``target``.

    ``target`` defaults to the predicted class. The score is the class's logit (for a sigmoid: its logit
    for class 1, negated for class 0). ``layer`` defaults to ``find_last_conv_layer(model)``. An all-zero
    heatmap means no location argued for ``target``. Needs the TensorFlow backend.
    """
    feature, grads, probabilities, path = _forward(model, image, layer, None if target is None else [target])
    (chosen, grad), = grads.items()
    return GradCam(_cam(feature, grad), float(probabilities[-1] if len(probabilities) == 2 else probabilities[chosen]),
                   path, chosen, probabilities)


def explanations(model: keras.Model, image: np.ndarray, layer: str | None = None,
                 targets: Sequence[int] | None = None) -> list[GradCam]:
    """Grad-CAM maps of several classes (default: every class, at most 2 + the 2 most probable) from one
    forward pass, most probable class first."""
    _, _, probabilities, _ = _forward(model, image, layer, [])
    if targets is None:
        targets = list(np.argsort(-probabilities)[:2])
    feature, grads, probabilities, path = _forward(model, image, layer, [int(t) for t in targets])
    p1 = float(probabilities[-1] if len(probabilities) == 2 else 0.0)
    return [GradCam(_cam(feature, grads[t]), p1 if len(probabilities) == 2 else float(probabilities[t]), path, t,
                    probabilities) for t in grads]


# --------------------------------------------------------------------------- pictures


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """``image`` (H x W x 3 uint8) blended with ``heatmap`` resized to it (Pillow bilinear) and
    coloured with a matplotlib colormap; returns H x W x 3 uint8."""
    from matplotlib import colormaps
    from PIL import Image

    photo = np.asarray(image)
    if photo.ndim != 3 or photo.shape[-1] != 3:
        raise UsageError(f"expected an H x W x 3 RGB image, got an array of shape {photo.shape}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise UsageError(f"expected a 2D heatmap, got an array of shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be between 0 and 1, got {alpha}")
    try:
        cmap = colormaps[colormap]
    except KeyError:
        raise UsageError(f"unknown matplotlib colormap '{colormap}'") from None
    height, width = photo.shape[:2]
    resized = Image.fromarray(np.clip(np.nan_to_num(heat), 0, 1), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    colour = cmap(np.clip(np.asarray(resized), 0, 1))[..., :3] * 255.0
    blended = (1.0 - alpha) * photo.astype(np.float32) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def explanation_figure(model: keras.Model, image: np.ndarray, classes: Sequence[str], layer: str | None = None,
                       threshold: float = 0.5, target: int | None = None):
    """A matplotlib Figure: the photo, then the Grad-CAM of the predicted class (or ``target``) and of the
    next most probable class. ``classes`` are the class names in index order; for two classes the
    predicted class is ``classes[1]`` when ``p1 >= threshold``."""
    from matplotlib.figure import Figure

    photo = np.asarray(image)
    if photo.ndim == 4 and photo.shape[0] == 1:
        photo = photo[0]
    _, _, probabilities, _ = _forward(model, photo, layer, [])
    if len(classes) != len(probabilities):
        raise UsageError(f"classes has {len(classes)} names but the model has {len(probabilities)} classes", "classes")
    if target is None:
        target = int(decide(probabilities, threshold)[0])
    _check_target(target, len(classes))
    runner_up = int(next(i for i in np.argsort(-probabilities) if i != target))
    maps = explanations(model, photo, layer, [target, runner_up])
    picture = np.clip(photo, 0, 255).astype(np.uint8)

    fig = Figure(figsize=(12, 4.4), dpi=100)
    axes = fig.subplots(1, 3)
    panels = [(picture, f"photo: {classes[target]} ({probabilities[target]:.1%})")]
    panels += [(overlay(picture, cam.heatmap), f"evidence for {classes[cam.target]} "
                f"(p={probabilities[cam.target]:.3f})") for cam in maps]
    for ax, (pixels, title) in zip(axes, panels):
        ax.imshow(pixels)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.suptitle(f"Grad-CAM at layer {maps[0].layer}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def save_explanation(
    model: keras.Model,
    image: np.ndarray,
    classes: Sequence[str],
    out_png: Path,
    layer: str | None = None,
    threshold: float = 0.5,
    target: int | None = None,
) -> Path:
    """Write `explanation_figure` as a PNG; returns ``out_png``."""
    from catsdogs.files import check_out_file

    check_out_file(out_png)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = explanation_figure(model, image, classes, layer, threshold, target)
    FigureCanvasAgg(fig)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    from catsdogs.plots import render_plain

    render_plain(fig, out, format="png")  # class names with `$` are not TeX
    return out
