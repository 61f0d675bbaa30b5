"""Inference engines for a trained RUN: Keras (compiled TensorFlow graph), ONNX Runtime and OpenVINO.

An engine maps a batch of raw 0-255 RGB images (n x S x S x 3) to the model's raw outputs (n x 1 for two
classes, n x N for more). The ONNX graph is exported once per model file into RUN/engines/ and kept only
when its answers match Keras' within 1e-4 on sample images (OpenVINO runs the same verified graph, checked
again); `auto` times the verified engines on a few batches and uses the fastest (the choice is cached
beside the graph). `fastest_forward` does the same for a model without a RUN (a frozen base extracting
features), with the graph in a temporary folder. A missing runtime or a failed check means the engine is not
offered: `auto` falls back to Keras, and asking for it by name is a one-line error. `int8` (only on request)
runs the run's int8 graph (catsdogs.quantize), kept only when it lost at most 0.5 point of test accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.errors import CatsdogsError, UsageError, one_line
from catsdogs.files import write_text_atomic
from catsdogs.memory import release_memory
from catsdogs.timing import images_per_second

logger = logging.getLogger(__name__)

ENGINES = ("keras", "onnx", "openvino", "int8")
VERIFIED = ("onnx", "openvino")  # float32, checked within ATOL of Keras: what `auto` chooses among
ENGINE_DIR = "engines"
ATOL = 1e-4
RUNTIMES = {"onnx": ("onnxruntime", "tf2onnx"), "openvino": ("openvino", "onnxruntime", "tf2onnx"),
            "int8": ("onnxruntime", "tf2onnx")}
TIMING_BATCH, TIMING_REPEATS = 16, 3


@dataclass
class Engine:
    """A named forward pass: `engine(batch)` -> raw model outputs, float32 n x units."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.forward(np.asarray(batch, np.float32)), np.float32)


def list_engines() -> list[str]:
    """The engines whose runtimes are installed here (keras always)."""
    return ["keras"] + [name for name, modules in RUNTIMES.items()
                        if all(importlib.util.find_spec(module) for module in modules)]


def keras_engine(model) -> Engine:
    """The model as one compiled graph (TF backend): much faster than `model.predict` on small batches."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return Engine("keras", lambda batch: np.asarray(model.predict(batch, verbose=0)))
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]
    graph = tf.function(lambda batch: model(batch, training=False), input_signature=signature)
    return Engine("keras", lambda batch: graph(tf.constant(batch)).numpy())


def create_engine(run: Path | None, model, name: str = "keras", samples: np.ndarray | None = None, *,
                  variant: str = "") -> Engine:
    """The engine `name` (keras, onnx, openvino or auto) for `model`, the model of RUN.

    `samples`: images to verify exported graphs on (default: seeded random images). `variant`: names a graph
    made from the RUN's model (e.g. with its embeddings as outputs too: catsdogs.predict), kept beside its own.
    """
    if name not in (*ENGINES, "auto"):
        raise UsageError(f"engine must be one of {', '.join((*ENGINES, 'auto'))}, got {name!r}", "engine")
    reference = keras_engine(model)
    if name == "keras" or (name == "auto" and len(list_engines()) == 1) or run is None:
        if name not in ("keras", "auto"):
            raise UsageError(f"engine {name} needs a RUN folder to keep its graph in", "engine")
        return reference
    from catsdogs.models.frozen import flip_averaged_bases

    if name == "auto" and flip_averaged_bases(model):
        logger.info("engines: using keras for this flip-averaged model (ONNX Runtime is faster on it only with its "
                    "memory arena, about 2 GB more, and exporting peaks 1.5 GB higher; engine='onnx' chooses it)")
        return reference
    if name != "auto" and name not in list_engines():
        modules = " and ".join(RUNTIMES[name])
        raise CatsdogsError(f"engine {name} needs {modules}: pip install 'catsdogs[engines]'")
    folder = Path(run) / ENGINE_DIR
    key = _model_key(Path(run)) + (f"-{variant}" if variant else "")
    if name == "int8":
        return _int8(Path(run), model, folder / f"model-{key}-int8.onnx")
    samples = _samples(model, samples)
    if name != "auto":
        return _verified(name, model, folder, key, samples, reference)
    return _fastest(model, folder, key, samples, reference)


def _model_key(run: Path) -> str:
    """A short hash of RUN/model.keras: exported graphs and choices are kept per model file."""
    return hashlib.sha256((run / "model.keras").read_bytes()).hexdigest()[:16]


def _samples(model, samples: np.ndarray | None) -> np.ndarray:
    if samples is not None:
        return np.asarray(samples, np.float32)
    size = int(model.input_shape[1])
    return np.random.default_rng(0).integers(0, 256, (8, size, size, 3)).astype(np.float32)


def _verified(name: str, model, folder: Path, key: str, samples: np.ndarray, reference: Engine) -> Engine:
    """Export (once) and load engine `name`; CatsdogsError when it does not match Keras within ATOL."""
    onnx_path = folder / f"model-{key}.onnx"
    expected = reference(samples)
    if not intact(onnx_path):  # missing, or changed since written (another model's, corrupt): exported again
        logger.info("engines: exporting the model to %s and checking it against Keras (once per model file)",
                    onnx_path)
        discard(onnx_path)
        _export_onnx(model, onnx_path, samples, ATOL * max(1.0, float(np.max(np.abs(expected)))))
        record_sha256(onnx_path)
    return _checked(load_engine(name, onnx_path), samples, expected, per_column=True)


def _checked(engine: Engine, samples: np.ndarray, expected: np.ndarray, tolerance: float = ATOL, *,
             per_column: bool = False) -> Engine:
    """`engine`, once its answers on `samples` are within `tolerance` of Keras' (`expected`); else CatsdogsError.
    `per_column`: columns above 1 (embeddings beside the probabilities) are compared relative to their scale."""
    scale = np.maximum(1.0, np.max(np.abs(expected), axis=0)) if per_column and len(expected) else np.ones(1)
    diff = float(np.max(np.abs(engine(samples) - expected) / scale))
    if not diff <= tolerance:
        relative = "; outputs above 1 relative to their scale" if np.max(scale) > 1 else ""
        raise CatsdogsError(f"engine {engine.name} differs from Keras by {diff:.2g} (> {tolerance:g}{relative}) on this "
                            "model (a mixed-precision model computes in bfloat16 under Keras); use engine='keras'",
                            "engine")
    return engine


def _int8(run: Path, model, path: Path) -> Engine:
    """The run's int8 graph, quantized on first use (catsdogs.quantize: refused past a 0.5-point accuracy drop on
    the test split), run by OpenVINO when installed (the faster on int8 here), else ONNX Runtime."""
    if not intact(path):  # missing, or changed since written: quantized again, never used unchecked
        from catsdogs.quantize import quantize_run

        discard(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        quantize_run(run, path, model=model)
        record_sha256(path)
    runtime = "openvino" if "openvino" in list_engines() else "onnx"
    return Engine("int8", load_engine(runtime, path).forward)


def _sha256_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(path: Path) -> None:
    """Write PATH.sha256 beside an engine file just written: `intact` checks it before each use."""
    write_text_atomic(_sha256_path(path), _sha256(path) + "\n")


def intact(path: Path) -> bool:
    """Whether an engine file exists and still has the sha256 recorded when it was written."""
    recorded = _sha256_path(path)
    if not (path.is_file() and recorded.is_file()):
        return False
    return recorded.read_text().strip() == _sha256(path)


def discard(path: Path) -> None:
    """Remove an engine file, its recorded hash and its quantization report (to write it again)."""
    for stale in (path, _sha256_path(path), path.with_name(path.name + ".quantization.json")):
        stale.unlink(missing_ok=True)


def _export_onnx(model, path: Path, samples: np.ndarray, tolerance: float = ATOL) -> None:
    from catsdogs.export import export_model

    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, "onnx", path, samples, atol=tolerance)  # written beside, verified, then renamed


def load_engine(name: str, onnx_path: Path) -> Engine:
    """An ONNX graph run by ONNX Runtime (`onnx`) or OpenVINO (`openvino`), in float32; a one-line CatsdogsError
    naming the file when it cannot be loaded (corrupt, not ONNX)."""
    try:
        return _load_engine(name, onnx_path)
    except ImportError:
        raise
    except Exception as error:  # noqa: BLE001 - runtimes raise their own types (InvalidProtobuf, RuntimeError)
        reason = one_line(error)
        raise CatsdogsError(f"cannot load {onnx_path}: {reason}") from None


def _load_engine(name: str, onnx_path: Path) -> Engine:
    if name == "onnx":
        from catsdogs.export import onnx_session

        session = onnx_session(onnx_path)
        input_name = session.get_inputs()[0].name
        return Engine("onnx", lambda batch: session.run(None, {input_name: batch})[0])
    import openvino

    # float32 inference: on CPUs with bfloat16 units OpenVINO would otherwise compute in bf16
    compiled = openvino.Core().compile_model(str(onnx_path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                     "INFERENCE_PRECISION_HINT": "f32"})
    return Engine("openvino", lambda batch: compiled(batch)[0])


def _fastest(model, folder: Path, key: str, samples: np.ndarray, reference: Engine) -> Engine:
    """The fastest verified engine (timed once per model file; the choice is kept in RUN/engines/)."""
    choice_file = folder / f"choice-{key}.json"
    if choice_file.exists():
        chosen = json.loads(choice_file.read_text()).get("engine", "keras")
        if chosen == "keras":
            return reference
        try:
            return _verified(chosen, model, folder, key, samples, reference)
        except Exception:  # noqa: BLE001 - auto never fails where Keras works: time them again
            pass
    candidates, refused = {"keras": reference}, {}
    logger.info("engines: checking each engine against Keras and timing it (once per model file; the choice is "
                "kept in %s)", folder)
    for name in [name for name in list_engines() if name in VERIFIED]:
        try:
            candidates[name] = _verified(name, model, folder, key, samples, reference)
        except Exception as error:  # noqa: BLE001 - a converter or runtime failure only rules the engine out
            refused[name] = one_line(error)
    timings = _images_per_second(candidates, samples)
    chosen = max(timings, key=timings.get)
    engine = candidates.pop(chosen)
    candidates.clear()  # the engines not chosen (an ONNX Runtime session and its arena): freed, and given back
    release_memory()
    logger.info("engines: using %s (%s images/s%s)", chosen,
                ", ".join(f"{name} {rate:.0f}" for name, rate in timings.items()),
                "".join(f"; {name} refused: {why[:80]}" for name, why in refused.items()))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(choice_file, json.dumps({"engine": chosen, "images_per_s": timings, "refused": refused},
                                                  indent=2) + "\n")
    except OSError:  # a read-only RUN: the choice is made again next time
        pass
    return engine


def _images_per_second(candidates: dict[str, Engine], samples: np.ndarray, batch_size: int = TIMING_BATCH,
                       repeats: int = TIMING_REPEATS) -> dict[str, float]:
    """Each engine's images/s on batches of `batch_size` made from `samples`, after one warm-up call."""
    batch = np.resize(samples, (batch_size, *samples.shape[1:])).astype(np.float32)
    return {name: images_per_second(engine, batch, repeats) for name, engine in candidates.items()}


def fastest_forward(model, samples: np.ndarray) -> Engine:
    """The fastest float32 engine for a model that has no RUN (e.g. a frozen base extracting features):
    Keras, or ONNX Runtime / OpenVINO when installed and within ATOL of Keras on `samples` (real inputs),
    relative to the outputs' scale where they exceed 1 (features, activations: float32 rounding grows with them;
    activations of EfficientNet-Lite2 up to 53 differ by 1.1e-4).

    The graph is exported into a temporary folder and deleted once loaded. A mixed-precision model, a
    converter or runtime failure, or a failed check leaves Keras: this never fails where Keras works.
    """
    from catsdogs.export import is_mixed

    reference = keras_engine(model)
    installed = [name for name in list_engines() if name in VERIFIED]
    if not installed or is_mixed(model):
        return reference
    samples = np.asarray(samples, np.float32)
    expected = reference(samples)  # Keras' answers, computed once for every check
    tolerance = ATOL * max(1.0, float(np.max(np.abs(expected))))
    candidates, folder = {"keras": reference}, None
    try:
        folder = Path(tempfile.mkdtemp(prefix="catsdogs-engine-"))
        _export_onnx(model, folder / "model.onnx", samples, tolerance)
        for name in installed:
            try:
                candidates[name] = _checked(load_engine(name, folder / "model.onnx"), samples, expected, tolerance)
            except Exception:  # noqa: BLE001 - a runtime failure only rules this engine out
                pass
    except Exception:  # noqa: BLE001 - no temporary folder, or a model the converter cannot export: Keras
        return reference
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    timings = _images_per_second(candidates, samples, batch_size=len(samples), repeats=2)
    chosen = max(timings, key=timings.get)
    refused = sorted(set(installed) - set(candidates))
    logger.info("engines: %s runs the frozen part (%s images/s%s)", chosen,
                ", ".join(f"{name} {rate:.0f}" for name, rate in timings.items()),
                f"; not within {tolerance:.1g} of Keras or failed: {', '.join(refused)}" if refused else "")
    return candidates[chosen]
