"""The command line: exit codes, one-line errors, the predict CSV with an error row."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from catsdogs.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "catsdogs.cli", *args], capture_output=True, text=True)


def test_help_and_version():
    assert run_cli("--help").returncode == 0
    result = run_cli("--version")
    assert result.returncode == 0 and "catsdogs" in result.stdout
    for command in ("prepare", "train", "evaluate", "predict", "reproduce"):
        assert run_cli(command, "--help").returncode == 0, command


@pytest.mark.parametrize("args, message", [
    (["prepare", "/no/such/source", "--out", "x"], "no such file or folder"),
    (["train", "--data", "/no/such/data", "--model", "baseline", "--out", "x"], "not a prepared DATA"),
    (["evaluate", "/no/such/run"], "not a catsdogs run"),
    (["report", "/no/such/run", "--out", "x"], "not a catsdogs run"),
    (["bench", "--data", "/no/such/data"], "not a prepared DATA"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_bad_usage_exit_2():
    result = run_cli("train", "--data", "d", "--model", "baseline", "--out", "x", "--epochs", "0")
    assert result.returncode == 2 and "must be >= 1" in result.stderr
    result = run_cli("train", "--data", "d", "--model", "augmented", "--out", "x", "--schedule", "linear")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "catsdogs train: error: argument --schedule: invalid choice: 'linear' (choose from 'constant', 'one-cycle')"
        " (see catsdogs train --help)"]
    assert run_cli("no-such-command").returncode == 2


def test_unknown_model_lists_the_known_ones(tiny_data, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data), "--model", "resnet9000", "--out", str(tmp_path / "r")]) == 2
    assert "baseline" in capsys.readouterr().err


def test_predict_csv_with_an_error_row(run_copy: Path, tiny_data: Path, tmp_path: Path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    folder = tiny_data / "test"
    assert main(["predict", str(run_copy), str(folder), str(bad)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "label", "p_cat", "p_dog", "novelty", "error"]
    images = sorted(p for p in folder.rglob("*.jpg"))
    assert [r[0] for r in rows[1:-1]] == [str(p) for p in images]
    for _path, label, p_cat, p_dog, novelty, error in rows[1:-1]:
        assert label in ("cat", "dog", "unknown") and not error and float(novelty) == float(novelty)
        assert abs(float(p_cat) + float(p_dog) - 1) < 1e-5
        assert label == "unknown" or label == ("dog" if float(p_dog) >= 0.5 else "cat")
    assert rows[-1][:2] == [str(bad), "error"] and "cannot decode" in rows[-1][5]


def test_predict_json_and_missing_path(tiny_run: Path, tiny_data: Path, capsys):
    photo = next((tiny_data / "test" / "dog").glob("*.jpg"))
    assert main(["predict", str(tiny_run), str(photo), "--format", "json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert set(result["probabilities"]) == {"cat", "dog"} and result["threshold"] == 0.5
    assert main(["predict", str(tiny_run), "/no/such.jpg"]) == 2


def test_default_source_message_when_absent(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CATSDOGS_DEFAULT_SOURCE", str(tmp_path / "absent.zip"))
    assert main(["prepare", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "train.zip" in err and "catsdogs download" in err


def test_explain_writes_a_png(tiny_run: Path, tiny_data: Path, tmp_path: Path, capsys, monkeypatch):
    photo = next((tiny_data / "test" / "cat").glob("*.jpg"))
    out = tmp_path / "cam.png"
    assert main(["explain", str(tiny_run), str(photo), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Grad-CAM saved" in capsys.readouterr().out
    assert main(["explain", str(tiny_run), str(photo), "--out", str(out), "--layer", "nope"]) == 2
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # its own default name (IMAGE-gradcam.png) is replaced when run again
        assert main(["explain", str(tiny_run), str(photo)]) == 0
    assert (tmp_path / f"{photo.stem}-gradcam.png").exists()


def test_export_from_the_command_line(tiny_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "model.tflite"
    assert main(["export", str(tiny_run), "--format", "tflite", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.exists() and "float32[batch,48,48,3]" in printed and "verified on 8 images" in printed
    assert main(["export", str(tiny_run), "--format", "tflite", "--out", str(out)]) == 2  # never overwritten


def test_download_without_network_is_one_line(tmp_path: Path, capsys):
    import socket

    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["download", "--url", f"http://127.0.0.1:{port}/PetImages.zip", "--out", str(tmp_path / "p.zip")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "network is unreachable" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "p.zip").exists()


def test_train_one_cycle_keeping_the_best_validation_accuracy(tiny_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--model", "augmented", "--image-size", "48", "--epochs", "3",
                 "--schedule", "one-cycle", "--monitor", "val_accuracy", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["schedule"] == "one-cycle" and config["monitor"] == "val_accuracy"
    val_accuracy = [float(row["val_accuracy"]) for row in csv.DictReader(open(run / "history.csv"))]
    assert config["monitor_best"] == pytest.approx(max(val_accuracy))


def test_train_flags_come_from_train_options(capsys):
    import dataclasses

    from catsdogs.options import TrainOptions

    assert main(["train", "--help"]) == 0
    shown = capsys.readouterr().out
    for item in dataclasses.fields(TrainOptions):
        if item.metadata.get("cli", True):
            flag = item.name.replace("_", "-")
            assert f"--{flag}" in shown or (item.default is True and f"--no-{flag}" in shown), item.name
    assert main(["train", "--data", "d", "--model", "baseline", "--out", "r", "--monitor", "loss"]) == 2
    assert "invalid choice: 'loss'" in capsys.readouterr().err


def test_version_is_the_package_version_and_python_m_catsdogs_runs():
    import catsdogs

    result = subprocess.run([sys.executable, "-m", "catsdogs", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"catsdogs {catsdogs.__version__}"


def test_top_level_debug_shows_the_traceback(tmp_path, capsys):
    from catsdogs.errors import CatsdogsError

    for args in (["--debug", "report", str(tmp_path), "--out", "x"], ["report", str(tmp_path), "--out", "x", "--debug"]):
        with pytest.raises(CatsdogsError, match="not a catsdogs run"):
            main(args)
    assert main(["report", str(tmp_path), "--out", "x"]) == 2  # without --debug: one line
    result = subprocess.run([sys.executable, "-m", "catsdogs", "--debug", "report", str(tmp_path), "--out", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_overwrite_everywhere_and_force_as_its_alias(class_folders, tmp_path, capsys):
    from helpers import make_class_folders

    data = tmp_path / "data"
    assert main(["prepare", str(class_folders), "--out", str(data), "--val", "4", "--test", "4"]) == 0
    other = make_class_folders(tmp_path / "other", per_class=10)
    assert main(["prepare", str(other), "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and "--force" not in err
    assert main(["prepare", str(other), "--out", str(data), "--force", "--val", "3", "--test", "3"]) == 0
    assert main(["prepare", "--source", str(class_folders), "--out", str(data), "--overwrite"]) == 0  # SOURCE as a flag
    for command in ("prepare", "fit", "train", "download"):
        assert main([command, "--help"]) == 0
        shown = capsys.readouterr().out
        assert "--overwrite" in shown and "--force" not in shown, command


def test_data_positional_or_as_a_flag(tmp_path, capsys):
    for args in (["audit", "--data", "/no/such/data", "--out", "a"], ["audit", "/no/such/data", "--out", "a"],
                 ["train", "/no/such/data", "--model", "baseline", "--out", "x"]):
        assert main(args) == 2
        assert "not a prepared DATA" in capsys.readouterr().err, args
    assert main(["audit", "--out", "a"]) == 2
    assert "required: DATA (or --data)" in capsys.readouterr().err
    assert main(["audit", "d1", "--data", "d2", "--out", "a"]) == 2
    assert "DATA given twice" in capsys.readouterr().err


def test_default_source_from_the_variable_else_the_working_folder(class_folders, tmp_path, monkeypatch, capsys):
    from catsdogs.cli.common import default_source
    from catsdogs.errors import UsageError

    monkeypatch.setenv("CATSDOGS_DEFAULT_SOURCE", str(class_folders))
    assert main(["prepare", "--out", str(tmp_path / "data"), "--val", "4", "--test", "4"]) == 0
    assert (tmp_path / "data" / "manifest.csv").exists()
    monkeypatch.delenv("CATSDOGS_DEFAULT_SOURCE")
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    with pytest.raises(UsageError, match="train.zip"):
        default_source()
    zip_path = tmp_path / "project" / "shared" / "data" / "dogs-vs-cats-train-5000.zip"
    zip_path.parent.mkdir(parents=True)
    zip_path.write_bytes(b"")
    assert default_source() == zip_path.resolve()


def test_bench_checks_run_before_preparing_the_default_data(tmp_path, monkeypatch, capsys):
    import catsdogs.preparation

    def never(*args, **kwargs):
        raise AssertionError("prepared the photos before checking --run")

    monkeypatch.setattr(catsdogs.preparation, "prepare", never)
    assert main(["bench", "--run", str(tmp_path / "nonexist")]) == 2
    err = capsys.readouterr().err
    assert "not a catsdogs" in err and "--run" in err and err.count("\n") == 1, err


def test_a_folder_that_is_not_empty_is_named_by_its_flag(class_folders, tmp_path, capsys):
    out = tmp_path / "d1"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    assert main(["prepare", str(class_folders), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err and "--overwrite replaces it" in err and err.count("\n") == 1, err
