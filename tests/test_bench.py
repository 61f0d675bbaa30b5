"""catsdogs.bench_inference: the engine table (float32 and int8) and the end-to-end comparison, on a tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest

from catsdogs.bench_inference import end_to_end, engine_speeds
from catsdogs.dataset import load_split
from catsdogs.engines import VERIFIED, list_engines
from catsdogs.export import float32_rebuild
from catsdogs.runs import Run

pytestmark = pytest.mark.slow


def test_engine_table_lists_every_engine_in_both_precisions(tiny_run: Path, tiny_data: Path, tmp_path: Path):
    runtimes = [name for name in list_engines() if name in VERIFIED]
    if not runtimes:
        pytest.skip("no ONNX Runtime / OpenVINO here")
    model = float32_rebuild(Run(tiny_run).model)
    test = load_split(tiny_data, "test", 48)
    int8 = tmp_path / "int8.onnx"
    speeds = engine_speeds("tiny", model, test.images, load_split(tiny_data, "train", 48).images, keep_int8=int8)
    table = {(s.engine, s.precision): s for s in speeds}
    assert set(table) == {("keras", "float32")} | {(name, p) for name in runtimes for p in ("float32", "int8")}
    assert all(s.rate > 0 for s in speeds)
    assert all(table[name, "float32"].max_abs_diff <= 1e-4 for name in runtimes)  # the same computation
    assert all(0 < table[name, "int8"].max_abs_diff < 0.2 for name in runtimes)  # quantized: close, not equal
    assert int8.exists()
    if "openvino" in runtimes:
        results = end_to_end(tiny_run, sorted((tiny_data / "test").rglob("*.jpg")), int8)
        assert results[-1].label == "catsdogs predict, int8 graph on openvino (no unknown score)" and results[-1].rate > 0
        assert results[-1].agreement >= 0.9


def test_end_to_end_compares_plain_keras_with_catsdogs_predict(tiny_run: Path, tiny_data: Path):
    files = sorted((tiny_data / "test").rglob("*.jpg"))
    results = end_to_end(tiny_run, files)
    assert [r.label.split(",")[0] for r in results] == ["plain Keras (load_img one by one", "catsdogs predict",
                                                         "catsdogs predict"]
    assert results[0].agreement == 1.0 and all(r.rate > 0 for r in results)
    assert results[1].agreement >= 0.9  # other resizing, same photos: nearly always the same label
