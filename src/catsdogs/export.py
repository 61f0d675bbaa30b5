"""Export a trained classifier as a SavedModel, ONNX or TFLite file, and check the export's answers.

Every export has one input, ``image``: float32 ``[batch, H, W, 3]`` raw RGB 0-255 (all preprocessing
is inside the model), and one output, ``probability``: float32 ``[batch, 1]`` = p(class 1).

Decisions:
- The inference function is traced with ``training=False`` ourselves (``keras.export.ExportArchive``
  for SavedModel, ``tf2onnx.convert.from_function`` for ONNX, the SavedModel through
  ``tf.lite.TFLiteConverter`` for TFLite). Keras 3.15's ``model.export(format="tf_saved_model"|
  "onnx")`` traces ``model.__call__`` without ``training=False``, so Random* augmentation layers
  (whose ``call`` defaults to ``training=True``) would stay active in the exported graph.
- Mixed-precision models (``mixed_bfloat16``/``mixed_float16``) are exported as a float32 rebuild
  (same config with float32 policies, same weights): ONNX Runtime cannot load the bf16 graph and
  TFLite has no bf16 kernels, and float32 is the closest computation of the trained weights. The
  export is verified against the rebuild's ``predict`` at ``atol``; the rebuild itself is checked
  against the mixed-precision model at the looser ``mixed_atol`` (bf16 keeps ~3 digits).
- Everything is written in a hidden temporary folder beside ``out`` and renamed to ``out`` only
  after the verification passed: a failed export leaves nothing behind.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from catsdogs.errors import CatsdogsError, UsageError, one_line
from catsdogs.export_metadata import embed_metadata
from catsdogs.files import check_out_file
from catsdogs.memory import release_memory

if TYPE_CHECKING:
    import keras

Format = Literal["savedmodel", "onnx", "tflite"]
FORMATS: tuple[str, ...] = ("savedmodel", "onnx", "tflite")
INPUT_NAME = "image"
OUTPUT_NAME = "probability"
ONNX_OPSET = 17
_BATCH = 32
_MIXED = {"mixed_bfloat16", "mixed_float16", "bfloat16", "float16"}


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, what it expects, and how closely it matched Keras."""

    path: Path
    format: str
    input_signature: str
    max_abs_diff: float
    output_signature: str = f"{OUTPUT_NAME}: float32[batch,1] p(class 1)"
    float32_rebuild: bool = False
    mixed_precision_diff: float | None = None


def export_model(
    model: keras.Model,
    fmt: Format,
    out: Path,
    sample_images: np.ndarray,
    *,
    atol: float = 1e-4,
    mixed_atol: float = 0.1,
    metadata: Mapping[str, str] | None = None,
) -> ExportResult:
    """Write ``model`` to ``out`` in format ``fmt`` and verify it on ``sample_images``.

    ``metadata``: text carried inside the export (catsdogs.export_metadata: ONNX ``metadata_props``, a TFLite
    metadata entry, SavedModel ``assets.extra/catsdogs.json``), e.g. the RUN's calibration.

    ``sample_images``: uint8 or float 0-255 RGB, shape N x H x W x 3. The exported model's
    probabilities must be within ``atol`` of Keras' ``predict`` (of the float32 rebuild for a
    mixed-precision model), else ``CatsdogsError``. ``out`` must not exist (``UsageError``).
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_out_file(out, overwrite=None)
    height, width = _input_size(model)
    images = _check_images(sample_images, height, width)
    _check_runtime(fmt)
    model, reference, mixed_diff = _reference(model, images, mixed_atol)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    done = False
    try:
        target = work / out.name
        shape = (None, height, width, 3)
        diff = _write_and_verify(fmt, model, shape, target, images, reference, atol, metadata)
        if out.exists():
            raise UsageError(f"{out} appeared during the export; nothing was written")
        os.replace(target, out)
        done = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not done:
            _remove_empty(created)
        _release_conversion()
    return ExportResult(
        path=out,
        format=fmt,
        input_signature=input_signature(height, width),
        max_abs_diff=diff,
        output_signature=output_signature(int(model.outputs[0].shape[-1])),
        float32_rebuild=mixed_diff is not None,
        mixed_precision_diff=mixed_diff,
    )


def _release_conversion() -> None:
    """Give back what the converter freed: tf2onnx's conversion of EfficientNet-Lite2 leaves about 1.5 GB free but
    held by the allocator, which a predict or serve process would otherwise carry to its end."""
    gc.collect()
    release_memory()


def _reference(
    model: keras.Model, images: np.ndarray, mixed_atol: float
) -> tuple[keras.Model, np.ndarray, float | None]:
    """The model to export, its probabilities, and for a mixed-precision model the rebuild's gap."""
    probs = model.predict(images, batch_size=_BATCH, verbose=0).astype(np.float32)
    if not is_mixed(model):
        return model, probs, None
    twin = float32_rebuild(model)
    twin_probs = twin.predict(images, batch_size=_BATCH, verbose=0).astype(np.float32)
    gap = _max_diff(twin_probs, probs)
    if not gap <= mixed_atol:
        raise CatsdogsError(
            f"the float32 rebuild of the mixed-precision model differs from it by "
            f"{gap:.3g} (> {mixed_atol:g}); cannot export it faithfully"
        )
    return twin, twin_probs, gap


def _write_and_verify(
    fmt: str,
    model: keras.Model,
    shape: tuple,
    target: Path,
    images: np.ndarray,
    reference: np.ndarray,
    atol: float,
    metadata: Mapping[str, str] | None = None,
) -> float:
    """Write the export (with ``metadata``) to ``target``, run it on ``images`` and return its largest difference."""
    import keras

    try:
        _WRITERS[fmt](keras, model, shape, target, target.parent)
        if metadata:
            embed_metadata(fmt, target, metadata)
    except CatsdogsError:
        raise
    except Exception as exc:  # converters raise anything; keep it to one line
        raise CatsdogsError(f"{fmt} export failed: {one_line(exc)}") from exc
    try:
        got = _batched(_RUNNERS[fmt](target), images)
    except Exception as exc:
        raise CatsdogsError(f"the {fmt} export could not be run: {one_line(exc)}") from exc
    reference = np.asarray(reference).reshape(len(reference), -1)  # as `_batched` answers
    if got.shape != reference.shape:
        raise CatsdogsError(f"the {fmt} export answers shape {got.shape}, Keras {reference.shape}")
    diff = _max_diff(got, reference)
    if not diff <= atol:
        raise CatsdogsError(
            f"the {fmt} export differs from the Keras model by {diff:.3g} "
            f"(> {atol:g}) on {len(images)} sample images; nothing was written"
        )
    return diff


def output_signature(units: int) -> str:
    """The output as the CLI prints it: one sigmoid p(class 1), or a softmax over N classes."""
    meaning = "p(class 1)" if units == 1 else "a softmax over the classes, in classes.json order"
    return f"{OUTPUT_NAME}: float32[batch,{units}] {meaning}"


def input_signature(height: int | None, width: int | None) -> str:
    """Human-readable input of every export, e.g. ``image: float32[batch,150,150,3] raw RGB 0-255``."""
    return f"{INPUT_NAME}: float32[batch,{height or 'height'},{width or 'width'},3] raw RGB 0-255"


def float32_rebuild(model: keras.Model) -> keras.Model:
    """The same model (config and weights) with every mixed/bf16/fp16 dtype policy set to float32."""
    import keras

    config = _to_float32(keras.saving.serialize_keras_object(model))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # layers without an explicit policy
    try:
        twin = keras.saving.deserialize_keras_object(config)
    finally:
        keras.config.set_dtype_policy(previous)
    twin.set_weights(model.get_weights())
    return twin


# -- checks ---------------------------------------------------------------------------------


def _input_size(model: Any) -> tuple[int | None, int | None]:
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        shapes = [tuple(i.shape) for i in inputs]
        raise UsageError(f"expected a model with one (batch, H, W, 3) image input, got {shapes}")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or len(outputs[0].shape) < 2 or not outputs[0].shape[-1]:  # probabilities, or the
        shapes = [tuple(o.shape) for o in outputs]  # features / activations of a frozen part (catsdogs.engines)
        raise UsageError(f"expected a model with one (batch, N) probability output, got {shapes}")
    return inputs[0].shape[1], inputs[0].shape[2]


def _check_images(images: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise UsageError(f"sample images must be a non-empty N x H x W x 3 array, got {images.shape}")
    if (height and images.shape[1] != height) or (width and images.shape[2] != width):
        raise UsageError(
            f"sample images are {images.shape[1]}x{images.shape[2]}, the model takes {height}x{width}"
        )
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise UsageError(f"sample images must be uint8 or float 0-255, got {images.dtype}")
    return images.astype(np.float32)


def _check_runtime(fmt: str) -> None:
    needs = {"onnx": ("tf2onnx", "onnx", "onnxruntime")}.get(fmt, ())
    missing = [name for name in needs if not _importable(name)]
    if missing:
        raise CatsdogsError(
            f"{fmt} export needs {', '.join(missing)}: pip install 'catsdogs[export]'"
        )


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def is_mixed(model: Any) -> bool:
    """Whether any layer of `model` computes in bfloat16 or float16 (a mixed-precision policy)."""
    return any(_policy_name(layer) in _MIXED for layer in _walk(model))


def _policy_name(layer: Any) -> str:
    policy = getattr(layer, "dtype_policy", None)
    return str(getattr(policy, "name", "float32"))


def _walk(layer: Any) -> Iterator[Any]:
    yield layer
    for child in getattr(layer, "layers", None) or ():
        yield from _walk(child)


def _to_float32(node: Any) -> Any:
    """Copy of a serialized Keras config with mixed/half dtype policies made float32."""
    if isinstance(node, list):
        return [_to_float32(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _to_float32(value) for key, value in node.items()}
    config = node.get("config")
    if isinstance(config, dict):
        kind = node.get("class_name")
        if kind in ("DTypePolicy", "FloatDTypePolicy") and config.get("name") in _MIXED:
            node["config"] = {**config, "name": "float32"}
        elif kind == "__keras_tensor__" and config.get("dtype") in _MIXED:
            node["config"] = {**config, "dtype": "float32"}
    if isinstance(node.get("dtype"), str) and node["dtype"] in _MIXED:
        node["dtype"] = "float32"
    return node


def _remove_empty(folders: list[Path]) -> None:
    """Remove the (deepest first) folders this call created, where they stayed empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _max_diff(got: np.ndarray, want: np.ndarray) -> float:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    return float("inf") if not np.all(np.isfinite(diff)) else float(diff.max())


def _batched(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    parts = [run(images[i : i + _BATCH]) for i in range(0, len(images), _BATCH)]
    return np.concatenate([np.asarray(p, np.float32).reshape(len(p), -1) for p in parts])


# -- writers --------------------------------------------------------------------------------


def _serving_fn(model: Any) -> Callable[[Any], dict]:
    def serve(image: Any) -> dict:
        return {OUTPUT_NAME: model(image, training=False)}

    return serve


def _write_savedmodel(keras: Any, model: Any, shape: tuple, target: Path, work: Path) -> None:
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)
    archive.add_endpoint("serve", _serving_fn(model), input_signature=[spec])
    archive.write_out(str(target), verbose=False)


def _write_onnx(keras: Any, model: Any, shape: tuple, target: Path, work: Path) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)
    function = tf.function(_serving_fn(model), input_signature=[spec])
    with _quiet_logger("tf2onnx"):
        proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=ONNX_OPSET)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(proto, str(target))


def _write_tflite(keras: Any, model: Any, shape: tuple, target: Path, work: Path) -> None:
    import tensorflow as tf

    saved = work / "savedmodel-for-tflite"
    _write_savedmodel(keras, model, shape, saved, work)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), ["serving_default"])
    target.write_bytes(converter.convert())


_WRITERS: dict[str, Callable[[Any, Any, tuple, Path, Path], None]] = {
    "savedmodel": _write_savedmodel,
    "onnx": _write_onnx,
    "tflite": _write_tflite,
}


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- runners: load an export independently and return a function images -> probabilities --


def load_runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load an export with its own runtime; the result maps n x H x W x 3 float32 to n x 1 (two classes) or
    n x N."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _RUNNERS[fmt](Path(path))


def _run_savedmodel(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda x: serve(**{INPUT_NAME: tf.constant(x, tf.float32)})[OUTPUT_NAME].numpy()


def onnx_session(path: Path) -> Any:
    """The one way the package opens an ONNX model: an ONNX Runtime session on the CPU, every graph optimization on."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    session = onnx_session(path)
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(x, np.float32)})[0]


def _run_tflite(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    runner = _tflite_interpreter(path).get_signature_runner("serving_default")
    return lambda x: runner(**{INPUT_NAME: np.asarray(x, np.float32)})[OUTPUT_NAME]


def _tflite_interpreter(path: Path) -> Any:
    """TensorFlow's own TFLite interpreter (deprecated, still in TF 2.21), else ``ai-edge-litert``'s."""
    import tensorflow as tf

    legacy = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if legacy is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return legacy(model_path=str(path))
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise CatsdogsError(
            "this TensorFlow has no TFLite interpreter: pip install ai-edge-litert"
        ) from None
    return Interpreter(model_path=str(path))


_RUNNERS: dict[str, Callable[[Path], Callable[[np.ndarray], np.ndarray]]] = {
    "savedmodel": _run_savedmodel,
    "onnx": _run_onnx,
    "tflite": _run_tflite,
}
