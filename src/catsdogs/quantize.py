"""Post-training int8 quantization of a trained classifier: an ONNX graph with int8 weights and activations.

The model is exported to float32 ONNX (verified against Keras, `catsdogs.export`), then quantized by ONNX
Runtime's static quantizer (QDQ format, per-channel int8 weights, uint8 activations whose ranges are
calibrated on images of the train split). Both graphs then classify the test split; the export is kept only
when the int8 graph's accuracy is at most `max_drop` points below the float32 one. The measurement is written
beside the export (`PATH.quantization.json`). ONNX Runtime and OpenVINO both run the int8 graph.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from catsdogs.decision import class_probabilities, decide
from catsdogs.errors import CatsdogsError, UsageError, one_line
from catsdogs.files import write_text_atomic

MAX_DROP_POINTS = 0.5
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class QuantizationReport:
    """What the int8 export cost in accuracy, measured on held-out images."""

    path: str
    calibration_images: int
    test_images: int
    accuracy_float32: float
    accuracy_int8: float
    max_abs_diff: float  # largest |output_int8 - output_float32| on the test images

    @property
    def change_points(self) -> float:
        """The accuracy change in percentage points (negative: int8 is worse)."""
        return 100 * (self.accuracy_int8 - self.accuracy_float32)

    def line(self) -> str:
        return (f"int8 accuracy {self.accuracy_int8:.4f} vs float32 {self.accuracy_float32:.4f} "
                f"({self.change_points:+.2f} points) on {self.test_images} test images; "
                f"calibrated on {self.calibration_images} train images")


def report_path(path: Path) -> Path:
    """Where the accuracy measurement of an int8 export is written: beside it."""
    return Path(path).with_name(Path(path).name + ".quantization.json")


def _refuse_existing(out: Path) -> None:
    """An int8 export never replaces a file: a UsageError when PATH or its report exists."""
    from catsdogs.files import check_out_file

    for path in (out, report_path(out)):
        check_out_file(path, overwrite=None)


def quantize_int8(model, out: Path, calibration: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                  decide: Callable[[np.ndarray], np.ndarray], *, max_drop: float = MAX_DROP_POINTS,
                  ) -> QuantizationReport:
    """Write `model` as an int8 ONNX graph to `out` (and its report beside it), or refuse.

    `calibration`: train images (uint8 or float 0-255, N x H x W x 3) for the activation ranges; `test_images`
    and `test_labels`: where the accuracy change is measured; `decide`: raw model outputs -> class indices (the
    run's own rule, e.g. its tuned threshold). Raises CatsdogsError, writing nothing, when int8 loses more than
    `max_drop` accuracy points.
    """
    from catsdogs.export import _check_runtime, export_model, load_runner

    out = Path(out)
    _refuse_existing(out)
    if len(calibration) == 0 or len(test_images) == 0:
        raise UsageError("int8 quantization needs train images to calibrate on and test images to measure on")
    if len(test_images) != len(test_labels):
        raise UsageError(f"{len(test_images)} test images but {len(test_labels)} labels")
    _check_runtime("onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        float32_path, int8_path = work / "float32.onnx", work / out.name
        export_model(model, "onnx", float32_path, np.asarray(test_images[:8]))
        quantize_graph(float32_path, int8_path, np.asarray(calibration, np.float32), work)
        float32_outputs = _outputs(load_runner("onnx", float32_path), test_images)
        int8_outputs = _outputs(load_runner("onnx", int8_path), test_images)
        labels = np.asarray(test_labels)
        report = QuantizationReport(
            path=str(out), calibration_images=len(calibration), test_images=len(test_images),
            accuracy_float32=float(np.mean(decide(float32_outputs) == labels)),
            accuracy_int8=float(np.mean(decide(int8_outputs) == labels)),
            max_abs_diff=float(np.max(np.abs(int8_outputs - float32_outputs))))
        if report.change_points < -max_drop:
            raise CatsdogsError(f"int8 export refused: {report.line()}, a drop of more than {max_drop:g} points; "
                                "nothing was written")
        if out.exists():
            raise UsageError(f"{out} appeared during the export; nothing was written", "out")
        os.replace(int8_path, out)
        write_text_atomic(report_path(out), json.dumps({**asdict(report), "change_points": report.change_points,
                                                        "max_drop_points": max_drop}, indent=2) + "\n")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def quantize_run(run: Path, out: Path, *, model, calibration_images: int = 200,
                 max_drop: float = MAX_DROP_POINTS) -> QuantizationReport:
    """`quantize_int8` for a trained RUN's `model`: calibrated on images spread over its DATA's train split,
    measured on its whole test split with the run's own decision rule (its tuned threshold, or the most probable
    class)."""
    from catsdogs.dataset import load_split, sample_images
    from catsdogs.run_files import read_threshold, run_data

    _refuse_existing(out)  # before decoding anything
    threshold = read_threshold(run)
    image_size = int(model.input_shape[1])
    data = run_data(run)
    try:
        calibration = sample_images(data, "train", image_size, calibration_images)
        test = load_split(data, "test", image_size)
    except (OSError, ValueError) as error:  # UsageError is a ValueError
        raise CatsdogsError(f"{run}: int8 needs the train and test splits of its DATA {data}: {error}") from None
    return quantize_int8(model, out, calibration, test.images, test.labels,
                         lambda outputs: decide(class_probabilities(outputs), threshold), max_drop=max_drop)


def quantize_graph(float32_path: Path, int8_path: Path, calibration: np.ndarray, work: Path) -> None:
    """ONNX Runtime's static quantization of a float32 ONNX graph: QDQ, per-channel int8 weights, uint8
    activations with MinMax ranges over `calibration` (float32 images); scratch files go to `work`."""
    from onnxruntime import quantization as q

    prepared = work / "prepared.onnx"
    try:
        q.quant_pre_process(str(float32_path), str(prepared), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - the pre-pass only helps; quantize the graph as it is
        shutil.copyfile(float32_path, prepared)
    input_name = _input_name(prepared)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = (calibration[i:i + CALIBRATION_BATCH]
                                                  for i in range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    try:
        q.quantize_static(str(prepared), str(int8_path), Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
    except Exception as error:  # the quantizer raises anything; keep it to one line
        raise CatsdogsError(f"int8 quantization failed: {one_line(error)}") from error


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _outputs(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 64) -> np.ndarray:
    parts = [np.asarray(run(np.asarray(images[i:i + batch], np.float32)), np.float32)
             for i in range(0, len(images), batch)]
    return np.concatenate([p.reshape(len(p), -1) for p in parts])
