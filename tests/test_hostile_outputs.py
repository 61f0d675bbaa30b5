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


@pytest.mark.parametrize("field, value", [("image_size", float("nan")), ("image_size", -5), ("image_size", "big"),
                                          ("image_size", True), ("data", 3), ("classes", "cat,dog"), ("epochs", 0)])
def test_a_config_field_of_the_wrong_kind_is_named(run_copy: Path, field: str, value, capsys):
    from catsdogs.cli import main

    path = run_copy / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))  # NaN as a hand edit writes it
    with pytest.raises(UsageError) as error:
        catsdogs.Run(run_copy)
    message = _one_line(error)
    assert message.startswith(f"{path}: {field} must be ") and f"got {value!r}" in message and "restore" in message
    assert main(["predict", str(run_copy), str(run_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err


def test_a_config_without_data_is_named_where_data_is_needed(run_copy: Path, capsys):
    from catsdogs.cli import main

    (run_copy / "config.json").write_text("{}")
    assert main(["evaluate", str(run_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "KeyError" not in err
    assert f"{run_copy / 'config.json'} does not say which DATA the run was trained on" in err and "--data" in err


def test_a_finished_run_without_its_model_says_the_file_is_missing(run_copy: Path):
    (run_copy / "model.keras").unlink()
    with pytest.raises(UsageError) as error:
        Predictor(run_copy)
    message = _one_line(error)
    assert message.startswith(f"{run_copy / 'model.keras'} is missing from a finished run") and "train" in message
    assert "has not finished an epoch" not in message
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**config, "status": "running"}))
    with pytest.raises(UsageError, match="no model.keras yet"):  # still training: no epoch saved yet
        Predictor(run_copy)


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
    graph = run / "engines" / f"model-{engines._model_key(run)}.onnx"  # (a CLI test's auto may have left others)
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


# ---- item 6: arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [2, -1, float("nan"), float("inf"), -float("inf")])
def test_thresholds_outside_0_1_are_refused(tiny_run: Path, threshold: float):
    from catsdogs.evaluation import evaluate

    with pytest.raises(UsageError, match="threshold must be a number between 0 and 1") as error:
        Predictor(tiny_run, threshold=threshold)
    assert error.value.parameter == "threshold"
    with pytest.raises(UsageError, match="threshold must be"):
        evaluate(tiny_run, threshold=threshold)


def test_json_written_is_strict_and_nan_becomes_null(tmp_path: Path):
    import numpy as np

    from catsdogs.run_files import json_text, write_json

    value = {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": np.float64(0.25)}
    write_json(tmp_path / "x.json", value)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": None, "d": 0.25}
    assert json.loads(json_text([1.0, float("-inf")])) == [1.0, None]


@pytest.mark.parametrize("megabytes", [float("nan"), float("inf"), 1e308, 0, -3])
def test_serve_refuses_bad_upload_limits_before_loading(tmp_path: Path, megabytes: float):
    serve = pytest.importorskip("catsdogs.serve")
    with pytest.raises(UsageError, match="max_upload_mb must be a number > 0"):
        serve.create_app(tmp_path / "not-a-run", max_upload_mb=megabytes)  # refused before reading the run


def _read_only_folder(tmp_path: Path, monkeypatch) -> Path:
    import os

    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permissions: say the folder is read-only as it would be
        real_access = os.access
        monkeypatch.setattr("catsdogs.files.os.access",
                            lambda path, mode: False if Path(path) == folder else real_access(path, mode))
    return folder


def test_out_paths_that_cannot_be_written_are_one_line(tmp_path: Path, monkeypatch):
    from catsdogs.files import check_out_dir, check_out_file

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match=f"out {a_file} is an existing file"):
        check_out_dir(a_file)
    with pytest.raises(UsageError, match=f"cannot write {a_file / 'sub' / 'r.html'}: {a_file} is a file"):
        check_out_file(a_file / "sub" / "r.html")
    with pytest.raises(UsageError, match="is a folder"):
        check_out_file(tmp_path)
    locked = _read_only_folder(tmp_path, monkeypatch)
    with pytest.raises(UsageError, match="read-only"):
        check_out_dir(locked / "run")
    with pytest.raises(UsageError, match="read-only"):
        check_out_file(locked / "report.html", "output")
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"


def test_each_command_checks_its_out(tiny_run: Path, tiny_data: Path, tmp_path: Path):
    import numpy as np

    from catsdogs.explain import save_explanation
    from catsdogs.export import export_model
    from catsdogs.fitting import fit
    from catsdogs.report import write_report
    from catsdogs.stream import stream_predictions

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is an existing file"):
        catsdogs.train(data=tiny_data, model="baseline", out=a_file, epochs=1)
    with pytest.raises(UsageError, match="is an existing file"):
        fit(None, a_file, data=tiny_data)
    with pytest.raises(UsageError, match="is a file, not a folder"):
        write_report([tiny_run], a_file / "report.html")
    predictor = Predictor(tiny_run)
    with pytest.raises(UsageError, match="is a file, not a folder"):
        stream_predictions(predictor, [tiny_data / "test"], a_file / "p.csv", progress=False)
    image = np.zeros((48, 48, 3), np.uint8)
    with pytest.raises(UsageError, match="is a file, not a folder"):
        save_explanation(predictor.model, image, predictor.classes, a_file / "x.png")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        export_model(predictor.model, "onnx", a_file / "m.onnx", image[None])
    assert a_file.read_text() == "x"


def test_commands_writing_several_files_refuse_somebody_elses_folder(tiny_data: Path, tmp_path: Path):
    """audit, reproduce and fit write fixed names (audit.html, report.html, data/...) into OUT: a folder of other
    files is refused before any work, and left as it was; their own folder (or an empty one) is taken."""
    from catsdogs.auditing import audit
    from catsdogs.files import check_own_out
    from catsdogs.fitting import fit
    from catsdogs.study import reproduce

    foreign = tmp_path / "Documents"
    foreign.mkdir()
    (foreign / "report.html").write_text("mine")
    calls = [lambda: audit(tiny_data, foreign, extractor=lambda x: x.reshape(len(x), -1), image_size=8),
             lambda: reproduce(tmp_path / "no-source.zip", foreign), lambda: fit(None, foreign, data=tiny_data)]
    for call, what in zip(calls, ("audit", "study", "fit")):
        with pytest.raises(UsageError, match=f"is not empty and is not a catsdogs {what} folder") as error:
            call()
        _one_line(error)
    assert sorted(p.name for p in foreign.iterdir()) == ["report.html"]
    assert (foreign / "report.html").read_text() == "mine"
    project = tmp_path / "project"  # a data/ folder is not enough to be a fit's: overwrite would empty it
    (project / "data").mkdir(parents=True)
    (project / "data" / "survey.csv").write_text("mine")
    with pytest.raises(UsageError, match="is not a catsdogs fit folder"):
        fit(None, project, data=tiny_data, overwrite=True)
    assert (project / "data" / "survey.csv").read_text() == "mine"
    (foreign / "audit.json").write_text("{}")
    assert check_own_out(foreign, ("audit.json",), "audit") == foreign
    assert check_own_out(tmp_path / "empty", ("audit.json",), "audit") == tmp_path / "empty"


def test_check_out_file_refuses_an_input_always_and_an_existing_file_unless_allowed(tmp_path: Path):
    from catsdogs.files import check_out_file

    photo = tmp_path / "mine.jpg"
    photo.write_bytes(b"jpeg")
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    for out in (photo, link, tmp_path / "." / "mine.jpg"):
        with pytest.raises(UsageError, match="is one of the inputs; choose another out"):
            check_out_file(out, inputs=[photo])
    with pytest.raises(UsageError, match="already exists; choose another out, remove it, or pass overwrite=True"):
        check_out_file(photo, overwrite=False)
    with pytest.raises(UsageError, match="already exists; choose another out or remove it"):
        check_out_file(link, overwrite=None)
    assert check_out_file(photo) == photo  # a library call with an explicit path may replace it
    assert check_out_file(tmp_path / "new.png", overwrite=False, inputs=[photo]) == tmp_path / "new.png"


def _refused(argv: list[str], words: str, capsys) -> None:
    from catsdogs.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_explain_report_lr_find_never_replace_their_inputs_and_need_overwrite(tiny_run: Path, tiny_data: Path,
                                                                               tmp_path: Path, capsys):
    from catsdogs.cli import main

    photo = tmp_path / "mine.jpg"
    photo.write_bytes(next((tiny_data / "test").rglob("*.jpg")).read_bytes())
    kept, old = photo.read_bytes(), tmp_path / "old.png"
    old.write_text("keep me")
    for overwrite in ([], ["--overwrite"]):
        _refused(["explain", str(tiny_run), str(photo), "--out", str(photo), *overwrite],
                 f"--out {photo} is one of the inputs; choose another --out", capsys)
        _refused(["report", str(tiny_run), "--out", str(tiny_run / "config.json"), *overwrite],
                 "is one of the inputs", capsys)
    _refused(["explain", str(tiny_run), str(photo), "--out", str(old)], "remove it, or pass --overwrite", capsys)
    _refused(["report", str(tiny_run), "--out", str(old)], f"{old} already exists; choose another --out", capsys)
    _refused(["lr-find", "--data", str(tiny_data), "--model", "baseline", "--plot", str(old)],
             "choose another --plot, remove it, or pass --overwrite", capsys)
    assert photo.read_bytes() == kept and old.read_text() == "keep me"
    assert main(["explain", str(tiny_run), str(photo), "--out", str(old), "--overwrite"]) == 0
    assert old.read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(tiny_run), "--out", str(old), "--overwrite"]) == 0
    assert old.read_text().startswith("<!DOCTYPE html>")


# ---- item 4: names that reach other languages ---------------------------------------------------------------
def test_predict_csv_cells_cannot_be_formulas(tiny_run: Path, tmp_path: Path):
    import csv

    from catsdogs.files import safe_cell
    from catsdogs.stream import stream_predictions

    assert [safe_cell(c) for c in ("=1+1", "+a", "-b", "@c", "\tx", "\ry", "cat.jpg", "a\x00b.jpg")] == \
        ["'=1+1", "'+a", "'-b", "'@c", "'\tx", "'\ry", "cat.jpg", "a\\x00b.jpg"]
    folder = tmp_path / "photos"
    folder.mkdir()
    from helpers import make_photo

    names = ["=HYPERLINK(1).jpg", "+1.jpg", "@x.jpg", "plain.jpg"]
    for i, name in enumerate(names):
        make_photo(folder / name, i % 2, i)
    (folder / "-2.jpg").write_bytes(b"broken")
    out = tmp_path / "out.csv"
    stream_predictions(Predictor(tiny_run), [folder], out, progress=False)
    rows = list(csv.reader(out.open()))[1:]
    cells = [Path(row[0].lstrip("'")).name for row in rows]
    assert sorted(cells) == sorted([*names, "-2.jpg"])
    for row in rows:
        assert not row[0].startswith(("=", "+", "-", "@")) or row[0].startswith("'")
    by_name = {Path(row[0]).name: row for row in rows}
    assert by_name["plain.jpg"][0] == str(folder / "plain.jpg")  # paths start with the folder: only names differ
    # a path whose whole text starts with a formula character is escaped
    assert safe_cell("=" + str(folder)) == "'=" + str(folder)
    # resume still finds its place with escaped rows
    summary = stream_predictions(Predictor(tiny_run), [folder], out, resume=True, progress=False)
    assert summary.skipped == 5 and summary.written == 0


def test_plots_and_report_take_names_with_dollars(tmp_path: Path):
    import numpy as np

    from catsdogs.plots import gallery_figure, render_plain, save_evaluation_plots

    y, p = np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.6, 0.1])
    written = save_evaluation_plots(y, p, ["$\\frac$", "a$b_{"], 0.5, tmp_path / "two")
    assert all(path.stat().st_size > 1000 for path in written.values())
    three = np.random.default_rng(0).dirichlet([1, 1, 1], 6)
    save_evaluation_plots(np.array([0, 1, 2, 0, 1, 2]), three, ["$x", "$\\frac$", "c$"], 0.5, tmp_path / "three")
    records = [{"path": str(tmp_path / "$\\frac$.jpg"), "label": 0, "predicted": 1, "p1": 0.9}]
    render_plain(gallery_figure(records, ["$\\frac$", "b"]), tmp_path / "g.png")


def test_serve_has_no_cdn_pages_escapes_names_and_sends_its_csp(run: Path):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from catsdogs.serve import create_app

    config = json.loads((run / "config.json").read_text())
    hostile = ["<img src=x onerror=alert(1)>", "dog"]
    for name in ("classes.json", "config.json"):
        value = hostile if name == "classes.json" else {**config, "classes": hostile}
        (run / name).write_text(json.dumps(value))
    client = TestClient(create_app(run))
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and "<img" not in schema.json()["info"]["description"]
    assert "&lt;img" in schema.json()["info"]["description"]
    for response in (schema, client.get("/healthz"), client.get("/nowhere"), client.get("/")):
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


# ---- item 10: saying the right thing ------------------------------------------------------------------------
def test_val_acc_is_the_saved_epochs_and_epochs_are_1_based(run: Path, tmp_path: Path):
    from catsdogs.report import write_results_markdown

    config = json.loads((run / "config.json").read_text())
    assert config["best_epoch"] in (1, 2) and config["monitor"] == "val_loss"
    (run / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                                     "0,0.8,0.5,0.9229,0.20\n1,0.9,0.4,0.9320,0.25\n")
    opened = catsdogs.Run(run)
    assert opened.saved_epoch["epoch"] == 0 and opened.best_val_acc == pytest.approx(0.9229)
    table = write_results_markdown([run], tmp_path / "results.md").read_text()
    assert "0.923" in table and "0.932" not in table
    (run / "config.json").write_text(json.dumps({**config, "monitor": "val_accuracy"}))
    assert catsdogs.Run(run).best_val_acc == pytest.approx(0.932)


# ---- item 8: DATA that changed ------------------------------------------------------------------------------
@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _first(data: Path, split: str) -> Path:
    from catsdogs.data_files import read_manifest

    return data / read_manifest(data, split)[0]["path"]


def test_a_deleted_photo_is_named_and_leaves_no_run(data: Path, tmp_path: Path):
    gone = _first(data, "train")
    gone.unlink()
    out = tmp_path / "runs" / "r"
    with pytest.raises(UsageError) as error:
        catsdogs.train(data=data, model="baseline", out=out, epochs=1, image_size=48, batch_size=8)
    assert _one_line(error) == f"{gone} is missing: DATA changed since it was prepared; prepare DATA again"
    assert not out.exists()


def test_a_photo_broken_after_the_check_leaves_no_half_run(data: Path, tmp_path: Path):
    broken = _first(data, "validation")
    broken.write_bytes(b"no longer a photo")
    out = tmp_path / "r"
    with pytest.raises(UsageError, match=f"{broken} cannot be used .*prepare DATA again"):
        catsdogs.train(data=data, model="baseline", out=out, epochs=1, image_size=48, batch_size=8)
    assert not out.exists()  # the re-run is not blocked


def test_evaluate_names_a_deleted_test_photo(run: Path, data: Path):
    from catsdogs.evaluation import evaluate

    gone = _first(data, "test")
    gone.unlink()
    with pytest.raises(UsageError, match=f"{gone} is missing: .*prepare DATA again"):
        evaluate(run, data, "test", explain=False)


# ---- item 5: serve's memory under huge-pixel uploads -----------------------------------------------------------
def test_huge_images_are_decoded_reduced_and_memory_is_returned():
    import io

    from PIL import Image

    from catsdogs.images import MAX_PIXELS, ImageError, decode_image
    from catsdogs.memory import release_memory

    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3100), (200, 10, 10)).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), at_least=150)
    assert decoded.original_pixels == 4000 * 3100
    assert 150 <= min(decoded.pixels.shape[:2]) < 300 and tuple(decoded.pixels[0, 0]) == (200, 10, 10)
    assert decode_image(buffer.getvalue()).pixels.shape == (3100, 4000, 3)  # without at_least: full size
    assert isinstance(release_memory(), bool)
    side = int(MAX_PIXELS ** 0.5) + 1
    header_only = io.BytesIO()
    Image.new("1", (side, side)).save(header_only, format="PNG")  # 1 bit a pixel: small to make
    with pytest.raises(ImageError, match="too large"):
        decode_image(header_only.getvalue(), at_least=150)


# ---- item 9: TF_CONFIG ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config, words", [
    ({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 2}}, "task index 2 is not between 0 and 1"),
    ({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": -1}}, "task index -1"),
    ({"cluster": {"worker": "h:1,h:2"}, "task": {"type": "worker", "index": 0}}, "cluster.worker must be a list"),
    ({"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}, "task type 'chief' is not in the cluster"),
    ({"cluster": {"worker": ["h:1", "h2"]}, "task": {"type": "worker", "index": 0}}, "address 'h2' in cluster.worker"),
    ({"cluster": {"worker": ["h:1", "h:99999"]}, "task": {"type": "worker", "index": 0}}, "has no port"),
    ({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": "0"}}, "task index '0'"),
    (["h:1"], "expected a JSON object"),
])
def test_tf_config_is_validated_up_front(config, words: str):
    from catsdogs.distribute import Distribution, read_tf_config

    environ = {"TF_CONFIG": json.dumps(config)}
    with pytest.raises(UsageError) as error:
        read_tf_config(environ)
    assert words in _one_line(error) and error.value.parameter == "distribute"
    with pytest.raises(UsageError, match="TF_CONFIG: "):
        Distribution(None, environ)  # before any strategy is made


def test_waiting_for_peers_says_who_and_times_out(caplog):
    import logging
    import socket

    from catsdogs.distribute import ClusterSpec, wait_for_peers

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = f"127.0.0.1:{listening.getsockname()[1]}"
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            down = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refuses connections
            cluster = ClusterSpec((up, "127.0.0.1:1", down), "worker", 1)
            with caplog.at_level(logging.INFO, logger="catsdogs.distribute"):
                with pytest.raises(CatsdogsError, match=f"peers {down} did not start within 0.3 s"):
                    wait_for_peers(cluster, timeout=0.3, interval=0.1)
            assert f"waiting for {down}" in caplog.text and up not in caplog.text.split("waiting for")[-1]
            wait_for_peers(ClusterSpec((up, "127.0.0.1:1"), "worker", 1), timeout=1)  # all up: returns
