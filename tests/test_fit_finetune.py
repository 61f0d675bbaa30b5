"""`catsdogs fit` stage (e): stage (c)'s model tuned further on the augmented photos, run when the budget holds it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import catsdogs
from catsdogs import fit_finetune
from catsdogs.budget import Budget
from catsdogs.errors import UsageError
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
    """Fine-tuning in a few seconds: one epoch on the photos."""
    monkeypatch.setattr(fit_finetune, "EPOCHS", 1)


def test_fine_tuning_continues_from_finetune_top_and_records_its_score(photos: Path, tmp_path: Path, quick, capsys,
                                                                      monkeypatch):
    # planned at just over the hour's budget: skipped at planning, then run after all when the stages before it
    # ran at half their estimates (the pace forced to 0.5)
    monkeypatch.setattr(fit_finetune, "estimate_seconds", lambda photos, speed, epochs=None: 3590.0)
    monkeypatch.setattr("catsdogs.fitting.MAX_PACE", 0.5)
    catsdogs.set_verbosity(1)  # the command line's level: the stages' lines go to stderr
    try:
        run = catsdogs.fit(photos, tmp_path / "run", backbones=["mobilenetv2"], budget="1h", report=False)
    finally:
        catsdogs.set_verbosity(0)
    printed = capsys.readouterr()
    assert printed.out == ""  # stdout is left to the command's result line
    assert "top-mobilenetv2's top tuned further on the augmented photos" in printed.err
    assert "fine-tuning skipped: it needs ~59 min 50 s" in printed.err
    assert "fine-tuning best backbone (1 epoch): " in printed.err and "holds it after all (~29 min 55 s" in printed.err
    assert "running it; the fit now ends in about 3" in printed.err  # 29 min 55 s and the finish
    record = json.loads((run / "fit.json").read_text())
    top = next(s for s in record["stages"] if s["model"] == "finetune-top")
    stage = next(s for s in record["stages"] if s["model"] == "finetune")
    assert stage["status"] == "done" and stage["backbone"] == "mobilenetv2" and stage["seconds"] > 0
    assert stage["if_time"] and "run after all" in stage["note"]
    assert stage["val_accuracy"] >= top["val_accuracy"]  # epoch 0 is (c)'s model: never worse on validation
    tuned = run / "candidates" / "finetune-mobilenetv2"
    config = json.loads((tuned / "config.json").read_text())
    assert config["model"] == "finetune-top" and config["from_run"].endswith("top-mobilenetv2")
    assert config["peak_learning_rate"] == stage["learning_rate"] and config["augmentation"].startswith("RandomAffine")
    history = catsdogs.Run(tuned).history
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[0]["val_accuracy"] == pytest.approx(top["val_accuracy"], abs=1e-6)  # the same model, rescored
    first, again = catsdogs.Run(run / "candidates" / "top-mobilenetv2").model, catsdogs.Run(tuned).model
    base = first.get_layer("mobilenetv2")
    bottom = base.layers[5].name  # an early layer, below the tuned top: frozen, unchanged
    for layer in (bottom, base.layers[-3].name):
        assert [w.shape for w in first.get_layer("mobilenetv2").get_layer(layer).get_weights()] == \
            [w.shape for w in again.get_layer("mobilenetv2").get_layer(layer).get_weights()]
    for a, b in zip(first.get_layer("mobilenetv2").get_layer(bottom).get_weights(),
                    again.get_layer("mobilenetv2").get_layer(bottom).get_weights()):
        assert (a == b).all()
    done = [s for s in record["stages"] if s["status"] == "done"]
    best = max(done, key=lambda s: (s["val_accuracy"], -s["val_loss"]))  # kept only when it beats the others
    assert record["chosen_stage"] == best["name"]
    assert run.metrics["split"] == "test" and (run / "audit" / "issues.csv").exists()


def test_finetune_top_from_run_refuses_another_kind_of_run(photos: Path, tmp_path: Path):
    from catsdogs.cli import main

    data = catsdogs.prepare(photos, tmp_path / "data").data_dir
    heads = catsdogs.train(data=data, model="heads", backbone="mobilenetv2", out=tmp_path / "heads", image_size=64,
                           model_options={"weights": None}, calibration=False)
    with pytest.raises(UsageError, match="not a completed finetune-top run .model heads"):
        catsdogs.train(data=data, model="finetune-top", out=tmp_path / "again", model_options={"from_run": str(heads)})
    assert not (tmp_path / "again").exists()
    assert main(["train", str(data), "--model", "finetune-top", "--from-run", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "x")]) == 2


def test_a_tight_budget_skips_fine_tuning_and_says_why(photos: Path, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(fit_finetune, "estimate_seconds", lambda photos, speed, epochs=None: 36000.0)  # ten hours
    caplog.set_level(logging.INFO, logger="catsdogs")
    run = catsdogs.fit(photos, tmp_path / "run", backbones=["mobilenetv2"], budget="1h", report=False, audit=False)
    stage = next(s for s in json.loads((run / "fit.json").read_text())["stages"] if s["model"] == "finetune")
    assert stage["status"] == "skipped" and stage["val_accuracy"] is None
    assert "fine-tuning skipped: it needs ~600 min 00 s" in caplog.text and "give budget 6" in caplog.text
    assert not (run / "candidates" / "finetune-mobilenetv2").exists() and run.config["model"] == "heads"


def test_the_plan_leaves_out_fine_tuning_that_cannot_fit():
    heads, top = Stage("heads a", "a", 60.0), Stage("finetune-top best backbone", "best", 60.0, model="finetune-top")
    limit = Budget(600)
    stage = finetune_stage([heads, top], {"a": 5.0}, 3000, limit, 30.0)  # ~3000 photos at 5 images/s: too long
    assert stage.status == "skipped" and stage.model == "finetune"
    assert "fine-tuning" not in plan_line([heads, top, stage], limit, 30.0)
    fast = finetune_stage([heads, top], {"a": 10000.0}, 3000, limit, 30.0)
    assert fast.status == "planned" and fast.estimate_s < 100
    assert "fine-tuning" in plan_line([heads, top, fast], limit, 30.0)
    alone = finetune_stage([heads], {"a": 10000.0}, 3000, limit, 30.0)  # it continues from finetune-top's model
    assert alone.status == "skipped" and "continues from finetune-top" in alone.note
    assert "give budget" in fit_finetune.skip_reason(stage.estimate_s, 90.0, limit)
    assert fit_finetune.estimate_seconds(3000, 10.0) > fit_finetune.estimate_seconds(3000, 50.0)


def test_fine_tuning_gets_one_epoch_or_the_optional_heads_time_when_the_budget_is_short():
    from catsdogs.fit_plan import add_finetune, plan, shorten

    speeds, photos = {"a": 20.0, "b": 20.0}, 3000
    full, one = (fit_finetune.estimate_seconds(photos, 20.0, n) for n in (fit_finetune.EPOCHS, 1))
    planned = plan(["a", "b"], speeds, photos, Budget(10_000))
    everything, pair = sum(s.estimate_s for s in planned), planned[2].estimate_s
    for budget, epochs, skipped in ((everything + full + 60, fit_finetune.EPOCHS, []),  # all of it fits
                                    (everything + one + 50, 1, []),  # one epoch fits after every stage
                                    (everything - pair + one + 40, 1, ["heads a+b"])):  # the pair's time: one epoch
        stages = plan(["a", "b"], speeds, photos, Budget(budget))
        room = add_finetune(stages, speeds, photos, Budget(budget), 30.0)
        assert [s.name for s in room] == skipped and stages[-1].status == "planned" and stages[-1].epochs == epochs
        assert all(s.status == "skipped" and s.note.endswith("time for fine-tuning") for s in room)
        assert f"fine-tuning best backbone ({epochs} epoch" in plan_line(stages, Budget(budget), 30.0)
    short = Budget(planned[0].estimate_s + planned[-1].estimate_s + one + 20)  # one epoch misses even alone
    hopeless = plan(["a", "b"], speeds, photos, short)
    assert add_finetune(hopeless, speeds, photos, short, 30.0) == [] and hopeless[-1].status == "skipped"
    assert all(s.status == "planned" for s in hopeless[:-1])  # nothing given up for a stage that cannot run
    stage = Stage("fine-tuning best backbone", "best", full, model="finetune", epochs=2, epoch_s=full - one)
    assert not shorten(stage, full) and stage.epochs == 2  # it still fits
    assert shorten(stage, one + 1) and stage.epochs == 1 and stage.estimate_s == pytest.approx(one)
    assert not shorten(Stage("heads a", "a", 100.0), 10.0)


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
