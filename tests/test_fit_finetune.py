"""`catsdogs fit` stage (c): fine-tuning the best backbone (head, range test, one-cycle), run when the budget holds it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import catsdogs
from catsdogs import fit_finetune
from catsdogs.budget import Budget
from catsdogs.fit_plan import Stage, finetune_stage, plan_line

from helpers import make_photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit") / "photos"
    for split, n in (("train", 16), ("val", 4)):
        for kind, name in enumerate(("ants", "bees")):
            for i in range(n):
                make_photo(root / split / name / f"{i}.jpg", kind, i + (100 if split == "val" else 0))
    return root


@pytest.fixture
def quick(monkeypatch):
    """Fine-tuning in a few seconds: one head epoch, two fine-tuning epochs, a 10-step range test."""
    monkeypatch.setattr(fit_finetune, "HEAD_EPOCHS", 1)
    monkeypatch.setattr(fit_finetune, "FINETUNE_EPOCHS", 2)
    monkeypatch.setattr(fit_finetune, "RANGE_STEPS", 10)


def test_fine_tuning_runs_within_a_generous_budget_and_records_its_score(photos: Path, tmp_path: Path, quick,
                                                                        capsys):
    catsdogs.set_verbosity(1)  # the command line's level: Keras prints its epoch lines, to stderr inside fit
    try:
        run = catsdogs.fit(photos, tmp_path / "run", backbones=["mobilenetv2"], budget="1h", report=False)
    finally:
        catsdogs.set_verbosity(0)
    printed = capsys.readouterr()
    assert printed.out == "" and "Epoch" in printed.err  # stdout is left to the command's result line
    record = json.loads((run / "fit.json").read_text())
    stage = next(s for s in record["stages"] if s["model"] == "finetune")
    assert stage["status"] == "done" and stage["backbone"] == "mobilenetv2" and stage["seconds"] > 0
    assert 0 <= stage["val_accuracy"] <= 1 and stage["val_loss"] > 0
    assert fit_finetune.MIN_RATE <= stage["learning_rate"] <= fit_finetune.MAX_RATE
    tuned = run / "candidates" / "finetune-mobilenetv2"
    config = json.loads((tuned / "config.json").read_text())
    assert config["model"] == "finetune" and config["schedule"] == "one-cycle" and config["patience"] == 2
    assert config["learning_rate"] == stage["learning_rate"] and (tuned / "plots" / "lr_find.png").exists()
    optimizer = catsdogs.Run(tuned).model.optimizer  # one cycle, the base's top at a tenth of the head's rate
    assert type(optimizer).__name__ == "DiscriminativeAdamW" and optimizer.base_factor == 0.1
    assert json.loads((run / "candidates" / "finetune-mobilenetv2-head" / "config.json").read_text())["epochs"] == 1
    done = [s for s in record["stages"] if s["status"] == "done"]
    best = max(done, key=lambda s: (s["val_accuracy"], -s["val_loss"]))  # kept only when it beats the heads
    assert record["chosen_stage"] == best["name"] and run.config["model"] == best["model"]
    assert run.metrics["split"] == "test" and (run / "audit" / "issues.csv").exists()


def test_a_tight_budget_skips_fine_tuning_and_says_why(photos: Path, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(fit_finetune, "estimate_seconds", lambda photos, speed: 36000.0)  # ten hours
    caplog.set_level(logging.INFO, logger="catsdogs")
    run = catsdogs.fit(photos, tmp_path / "run", backbones=["mobilenetv2"], budget="1h", report=False, audit=False)
    stage = next(s for s in json.loads((run / "fit.json").read_text())["stages"] if s["model"] == "finetune")
    assert stage["status"] == "skipped" and stage["val_accuracy"] is None
    assert "fine-tuning skipped: it needs ~600 min 00 s" in caplog.text and "give budget 6" in caplog.text
    assert not (run / "candidates" / "finetune-mobilenetv2").exists() and run.config["model"] == "heads"


def test_the_plan_leaves_out_fine_tuning_that_cannot_fit():
    heads = Stage("heads a", "a", 60.0)
    limit = Budget(600)
    stage = finetune_stage([heads], {"a": 10.0}, 3000, limit, 30.0)  # ~3000 photos at 10 images/s: an hour or more
    assert stage.status == "skipped" and stage.model == "finetune"
    assert "fine-tuning" not in plan_line([heads, stage], limit, 30.0)
    fast = finetune_stage([heads], {"a": 10000.0}, 3000, limit, 30.0)
    assert fast.status == "planned" and fast.estimate_s < 100 and "fine-tuning" in plan_line([heads, fast], limit, 30.0)
    assert "give budget" in fit_finetune.skip_reason(stage.estimate_s, 90.0, limit)
    assert fit_finetune.estimate_seconds(3000, 10.0) > fit_finetune.estimate_seconds(3000, 50.0)


def test_discriminative_adamw_updates_the_base_at_a_fraction_of_the_heads_rate(tmp_path: Path):
    import keras
    import numpy as np

    from catsdogs.models.optimizers import DiscriminativeAdamW
    from catsdogs.run_files import load_keras_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="top"),
                              keras.layers.Dense(1, activation="sigmoid", name="probability")])
    model.compile(optimizer=DiscriminativeAdamW(learning_rate=1e-2, base_factor=0.1, weight_decay=0.0),
                  loss="binary_crossentropy")
    before = model.get_weights()
    model.train_on_batch(np.random.default_rng(0).random((8, 4)), np.array([[0], [1]] * 4, np.float32))
    steps = [float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), before)]  # Adam: ~ the rate
    assert steps[0] == pytest.approx(1e-3, rel=0.01) and steps[2] == pytest.approx(1e-2, rel=0.01)
    model.save(tmp_path / "m.keras")
    assert load_keras_model(tmp_path / "m.keras").optimizer.get_config()["base_factor"] == 0.1
