"""Hostile and careless inputs that reach outputs: tampered run folders, bad thresholds and out paths, names that
other languages read (spreadsheets, TeX, HTML), changed DATA, TF_CONFIG. Each ends in a one-line error naming the
file and the fix, or a correct answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import catsdogs
from catsdogs.errors import CatsdogsError, UsageError
from catsdogs.predict import Predictor


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run, to tamper with."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---- item 7: run folders that do not match themselves -------------------------------------------------------
@pytest.mark.parametrize("classes, words", [
    (["cat", "dog", "fox"], "lists 3 classes but the model has 2 outputs"),
    (["cat"], "lists 1 classes but the model has 2 outputs"),
    ({"0": "cat", "1": "dog"}, "must be a JSON list of class names"),
    (["cat", "cat"], "lists a class twice"),
    ([1, 2], "must be a JSON list of class names"),
])
def test_classes_json_that_does_not_fit_the_model_is_refused(run: Path, classes, words: str):
    (run / "classes.json").write_text(json.dumps(classes))
    with pytest.raises(UsageError) as error:
        Predictor(run)
    message = _one_line(error)
    assert words in message and str(run / "classes.json") in message and "restore" in message


def test_swapped_classes_are_caught_through_config(run: Path):
    config = json.loads((run / "config.json").read_text())
    (run / "classes.json").write_text(json.dumps(list(reversed(config["classes"]))))
    with pytest.raises(UsageError, match="does not match .*config.json"):
        catsdogs.Run(run).predict(sorted((Path(config["data"]) / "test").rglob("*.jpg"))[:1])


def test_a_truncated_model_is_named_not_reported_missing(run: Path):
    model = run / "model.keras"
    model.write_bytes(model.read_bytes()[:2000])
    with pytest.raises(UsageError) as error:
        Predictor(run)
    message = _one_line(error)
    assert message.startswith(f"cannot load {model}") and "not found" not in message.lower()


def test_resume_with_another_model_is_refused(run: Path):
    from catsdogs.training import _check_run_folder

    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "status": "running"}))
    (run / "checkpoint").mkdir(exist_ok=True)
    (run / "checkpoint" / "state.json").write_text('{"epoch": 0}')
    with pytest.raises(UsageError, match="trained model baseline, not features; resume with model='baseline'"):
        catsdogs.train(data=config["data"], model="features", out=run, resume=True, epochs=2)
    assert json.loads((run / "config.json").read_text())["model"] == "baseline"  # untouched
    assert _check_run_folder(run, True, "baseline") == {"epoch": 0}


def test_engine_files_are_hashed_and_a_replaced_one_is_exported_again(run: Path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from catsdogs import engines

    monkeypatch.setattr(engines, "_checked", lambda engine, *args, **kwargs: engine)  # the tiny run may be bf16

    model = catsdogs.Run(run).model
    engines.create_engine(run, model, "onnx")
    (graph,) = (run / "engines").glob("model-*.onnx")
    assert (graph.parent / (graph.name + ".sha256")).read_text().strip() == engines._sha256(graph)
    graph.write_bytes(b"not an onnx graph")  # another model's graph, or a corrupt one: never used
    engine = engines.create_engine(run, model, "onnx")
    assert engine.name == "onnx" and engines.intact(graph) and graph.stat().st_size > 1000


def test_a_corrupt_onnx_file_is_one_line_naming_it(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from catsdogs.engines import load_engine

    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x00garbage")
    with pytest.raises(CatsdogsError) as error:
        load_engine("onnx", graph)
    assert _one_line(error).startswith(f"cannot load {graph}: ")
