"""`catsdogs bench`, inference half: the engines side by side (float32 and int8) on one model, and end-to-end
prediction over a folder of full-size JPEGs (decoding included), plain Keras against `catsdogs predict`.

Plain Keras end to end is what a Keras user writes: `keras.utils.load_img(path, target_size=...)` one file
after the other, then `model.predict` per batch. `catsdogs predict` decodes each batch in parallel with JPEG
draft mode and runs the fastest engine verified on the model (catsdogs.engines).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catsdogs.timing import images_per_second, timed

BATCH = 32


@dataclass
class EngineSpeed:
    """One engine's images/s on one model, and how far its outputs are from Keras'."""

    model: str
    engine: str
    precision: str
    rate: float | None  # None: not available here
    max_abs_diff: float | None = None
    note: str = ""

    def line(self) -> str:
        if self.rate is None:
            return f"{self.model:<28} {self.engine:<9} {self.precision:<8} {'-':>8}             {self.note}"
        diff = f"max |diff| vs Keras {self.max_abs_diff:.1e}" if self.max_abs_diff is not None else ""
        return f"{self.model:<28} {self.engine:<9} {self.precision:<8} {self.rate:8.1f} images/s  {diff}"


def engine_speeds(label: str, model, images: np.ndarray, calibration: np.ndarray,
                  keep_int8: Path | None = None) -> list[EngineSpeed]:
    """Keras, ONNX Runtime and OpenVINO, float32 and int8 (calibrated on `calibration`), on a batch of
    `images` (uint8, at the model's size). Engines whose runtime is missing are listed as such. `keep_int8`:
    where to keep the int8 graph."""
    from catsdogs.engines import keras_engine, list_engines, load_engine
    from catsdogs.errors import CatsdogsError
    from catsdogs.export import export_model, is_mixed
    from catsdogs.quantize import quantize_graph

    batch = np.asarray(images[:BATCH], np.float32)
    keras_forward = keras_engine(model)
    reference = keras_forward(batch)
    precision = "bfloat16" if is_mixed(model) else "float32"
    speeds = [EngineSpeed(label, "keras", precision, images_per_second(keras_forward, batch), 0.0)]
    runtimes = [name for name in ("onnx", "openvino") if name in list_engines()]
    if not runtimes:
        return speeds + [EngineSpeed(label, "onnx/openvino", "-", None, note="pip install 'catsdogs[engines]'")]
    with tempfile.TemporaryDirectory(prefix="catsdogs-bench-") as folder:
        graphs = {"float32": Path(folder) / "float32.onnx", "int8": Path(folder) / "int8.onnx"}
        export_model(model, "onnx", graphs["float32"], batch[:8], mixed_atol=0.1)
        try:
            quantize_graph(graphs["float32"], graphs["int8"], np.asarray(calibration, np.float32), Path(folder))
        except CatsdogsError as error:
            graphs.pop("int8")
            speeds.append(EngineSpeed(label, "int8", "int8", None, note=str(error)))
        for precision, graph in graphs.items():
            for name in runtimes:
                engine = load_engine(name, graph)
                diff = float(np.max(np.abs(engine(batch) - reference)))
                speeds.append(EngineSpeed(label, name, precision, images_per_second(engine, batch), diff))
        if keep_int8 is not None and "int8" in graphs:
            shutil.copyfile(graphs["int8"], keep_int8)
    return speeds


@dataclass
class EndToEnd:
    """Images/s over a folder of full-size JPEGs, decoding included, and the share of agreement with Keras."""

    label: str
    rate: float
    agreement: float
    accuracy: float | None = None  # against the photos' labels, when given


def end_to_end(run: Path, paths: list[Path], int8: Path | None = None,
               labels: np.ndarray | None = None) -> list[EndToEnd]:
    """Plain Keras (load_img one by one, model.predict), then `catsdogs predict` with engine keras, with the
    fastest verified engine (auto) and, given an `int8` ONNX graph of the model, with it on OpenVINO; each
    timed once after a warm-up over the same files. Keras and auto give a calibrated RUN's unknown score too (the
    embeddings on the same pass), the int8 graph only the probabilities."""
    import keras

    from catsdogs.decision import class_probabilities
    from catsdogs.engines import list_engines, load_engine
    from catsdogs.predict import Predictor

    auto = Predictor(run, engine="auto")
    model, size = auto.model, auto.image_size
    quantized = None
    if int8 is not None and "openvino" in list_engines():
        quantized = Predictor(run, engine="keras", model=model, calibrated=False)  # else Keras gives the outputs
        quantized.forward = load_engine("openvino", int8)  # with the embeddings of a calibrated RUN

    def plain() -> np.ndarray:
        outputs = []
        for start in range(0, len(paths), BATCH):
            batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(size, size)))
                              for p in paths[start:start + BATCH]])
            outputs.append(model.predict(batch, verbose=0))
        return class_probabilities(np.concatenate(outputs)).argmax(1)

    def predictor(chosen: Predictor) -> Callable[[], np.ndarray]:
        return lambda: np.array([np.argmax(list(p.probabilities.values())) for p in chosen.predict_paths(paths)])

    ways = [("plain Keras (load_img one by one, model.predict)", plain),
            ("catsdogs predict, engine keras (draft decode, parallel)",
             predictor(Predictor(run, engine="keras", model=model))),
            (f"catsdogs predict, engine auto = {auto.engine}", predictor(auto))]
    if quantized is not None:
        ways.append(("catsdogs predict, int8 graph on openvino (no unknown score)", predictor(quantized)))
    results, baseline = [], None
    for label, way in ways:
        way()  # warm-up: graphs traced, files in the page cache
        predicted, seconds = timed(way)
        rate = len(paths) / seconds
        baseline = predicted if baseline is None else baseline
        results.append(EndToEnd(label, rate, float(np.mean(predicted == baseline)),
                                None if labels is None else float(np.mean(predicted == labels))))
    return results
