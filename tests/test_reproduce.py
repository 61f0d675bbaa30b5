"""`reproduce --quick` end to end on small synthetic data, and resuming a finished or half-finished STUDY."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import catsdogs.study as reproduce_module
from catsdogs import evaluation
from catsdogs.study import STUDY, reproduce

from helpers import make_class_folders

pytestmark = pytest.mark.slow

SPLIT = {"train": 40, "val": 20, "test": 20}  # a tenth of the quick study's: the same code path, in seconds


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    source = make_class_folders(root / "source", per_class=40)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce_module, "QUICK_SPLIT", SPLIT)
        patch.setattr(evaluation, "EXPLAIN_EXAMPLES", 2)  # Grad-CAM figures take a second each
        return reproduce(source, root / "study", quick=True, backbone="efficientnet_lite0")


def test_quick_study_runs_every_experiment(quick_study: Path):
    for experiment in STUDY:
        run = quick_study / "runs" / experiment.name
        config = json.loads((run / "config.json").read_text())
        assert config["status"] == "complete" and config["model"] == experiment.model
        assert config["schedule"] == experiment.schedule
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["n"] == SPLIT["test"]
    assert json.loads((quick_study / "runs" / "finetune" / "config.json").read_text())["backbone"] == "efficientnet_lite0"
    results = (quick_study / "results.md").read_text()
    assert all(f"| {experiment.name} |" in results for experiment in STUDY)
    assert "| augmented | augmented (one-cycle) |" in results  # the recipe is on show, not only in config.json
    html = (quick_study / "report.html").read_text()
    assert html.count("<section") >= len(STUDY) and 'src="http' not in html


def test_rerun_resumes_without_retraining(quick_study: Path, monkeypatch):
    trained: list[str] = []
    real_train = reproduce_module.train

    def spy(options):
        trained.append(options.model)
        return real_train(options)

    monkeypatch.setattr(reproduce_module, "train", spy)
    monkeypatch.setattr(reproduce_module, "QUICK_SPLIT", SPLIT)
    monkeypatch.setattr(evaluation, "EXPLAIN_EXAMPLES", 2)
    shutil.rmtree(quick_study / "runs" / "augmented")
    (quick_study / "runs" / "baseline" / "metrics.json").unlink()
    (quick_study / "runs" / "features" / "config.json").write_text('{"status": "compl')  # torn by a crash
    reproduce(quick_study.parent / "source", quick_study, quick=True, backbone="efficientnet_lite0")
    assert trained == ["augmented", "features"]  # the damaged run trained again, not a failure at every rerun
    assert (quick_study / "runs" / "baseline" / "metrics.json").exists()
    assert json.loads((quick_study / "runs" / "features" / "config.json").read_text())["status"] == "complete"
