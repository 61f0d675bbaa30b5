"""Training: every RUN file, no silent overwrite, resume after `kill -9`, evaluation in file order."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from catsdogs.dataset import load_split
from catsdogs.errors import UsageError
from catsdogs.evaluation import evaluate
from catsdogs.models import create_model
from catsdogs.precision import resolve_precision
from catsdogs.training import TrainOptions, train


def test_baseline_is_the_studys_convnet():
    model = create_model("baseline")
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 64, 128, 128]
    assert model.input_shape == (None, 150, 150, 3) and model.output_shape == (None, 1)
    assert model.get_layer("dense").units == 512
    assert model.optimizer.__class__.__name__ == "RMSprop"
    assert np.isclose(float(model.optimizer.learning_rate), 1e-4)
    assert model.count_params() == 3_453_121


def test_one_epoch_run_writes_every_file(tiny_run: Path):
    for name in ("model.keras", "config.json", "history.csv", "curves.png", "classes.json"):
        assert (tiny_run / name).stat().st_size > 0, name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["status"] == "complete" and config["seed"] == 1337
    assert config["classes"] == ["cat", "dog"] and len(config["manifest_sha256"]) == 64
    assert {"keras", "tensorflow", "numpy"} <= set(config["versions"])
    rows = list(csv.DictReader(open(tiny_run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"accuracy", "loss", "val_accuracy", "val_loss"} <= set(rows[0])
    assert not (tiny_run / "checkpoint").exists()


def test_existing_run_is_never_overwritten(tiny_data: Path, tiny_run: Path):
    before = (tiny_run / "model.keras").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        train(TrainOptions(data=tiny_data, model="baseline", out=tiny_run, epochs=1, image_size=48))
    with pytest.raises(UsageError, match="already complete"):
        train(TrainOptions(data=tiny_data, model="baseline", out=tiny_run, epochs=1, image_size=48, resume=True))
    assert (tiny_run / "model.keras").read_bytes() == before


@pytest.mark.slow  # a training process started, killed and resumed: ~25 s
def test_resume_after_kill_9(tiny_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "catsdogs.cli", "train", "--data", str(tiny_data), "--model", "baseline",
               "--epochs", "40", "--image-size", "64", "--batch-size", "4", "--out", str(run)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1) and time.time() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["epoch"]
    assert done < 39
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run(command + ["--resume", "--epochs", str(done + 3)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]
    assert epochs == list(range(done + 3)), "history must continue where the killed run stopped"
    assert json.loads((run / "config.json").read_text())["status"] == "complete"


def test_evaluation_is_in_file_order(run_copy: Path, tiny_data: Path):
    metrics = evaluate(run_copy, tiny_data, "test")
    rows = list(csv.DictReader(open(run_copy / "predictions-test.csv")))
    split = load_split(tiny_data, "test", 48)
    assert [r["path"] for r in rows] == [str(p) for p in split.paths]
    assert [r["true_label"] for r in rows] == [split.classes[y] for y in split.labels]
    predicted = np.array([float(r["p_dog"]) >= metrics["threshold"] for r in rows])
    assert np.isclose(metrics["accuracy"], np.mean(predicted == split.labels))


def test_precision_policy_follows_cpu_flags():
    assert resolve_precision("auto", {"avx2", "avx512_bf16"}) == "bfloat16"
    assert resolve_precision("auto", {"amx_bf16", "amx_tile"}) == "bfloat16"
    assert resolve_precision("auto", {"avx2", "avx512f"}) == "float32"
    assert resolve_precision("auto", set()) == "float32"
    assert resolve_precision("float32", {"avx512_bf16"}) == "float32"
    assert resolve_precision("auto", {"avx512_bf16"}, bf16_friendly=False) == "float32"  # depthwise bases
    with pytest.raises(UsageError):
        resolve_precision("fp8")


def test_augmented_model_augments_only_in_training(tiny_data: Path, tmp_path: Path):
    import keras

    run = train(TrainOptions(data=tiny_data, model="augmented", out=tmp_path / "aug", epochs=1, image_size=48,
                             batch_size=8))
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    assert model.get_layer("dropout").rate == 0.5
    assert [layer.__class__.__name__ for layer in model.get_layer("augmentation").layers] == [
        "RandomAffine", "RandomContrast"]
    images = load_split(tiny_data, "test", 48).images[:4].astype("float32")
    first, second = model(images, training=False), model(images, training=False)
    assert np.array_equal(np.asarray(first), np.asarray(second)), "inference must be deterministic"
    augmented = model.get_layer("augmentation")(images, training=True)
    assert not np.allclose(np.asarray(augmented), images), "training must augment"


def test_bench_counts_the_convnets_flops():
    from catsdogs.bench import matmul_gflops, model_flops

    convs = [(148, 32, 27), (72, 64, 288), (34, 128, 576), (15, 128, 1152)]  # (side, filters, kernel inputs)
    expected = sum(2 * side * side * filters * k for side, filters, k in convs) + 2 * (6272 * 512 + 512)
    assert model_flops(create_model("baseline")) == expected
    assert all(0 < matmul_gflops(precision, size=128, repeats=2) < 1e6 for precision in ("float32", "bfloat16"))


def test_one_cycle_schedule_warms_up_then_decays_to_zero():
    from catsdogs.training import one_cycle_optimizer

    optimizer = one_cycle_optimizer(1e-3, total_steps=100)
    rates = []
    for step in (0, 10, 20, 60, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))  # the schedule at the optimizer's current step
    assert optimizer.__class__.__name__ == "AdamW"
    assert np.isclose(rates[0], 1e-4) and rates[0] < rates[1] < rates[2]  # warm-up over the first fifth
    assert np.isclose(rates[2], 1e-3) and rates[2] > rates[3] > rates[4]  # then cosine decay
    assert rates[4] < 1e-9


def test_one_cycle_run_trains_with_adamw_and_records_it(tiny_data: Path, tmp_path: Path):
    run = train(TrainOptions(data=tiny_data, model="augmented", out=tmp_path / "run", epochs=2, image_size=48,
                             schedule="one-cycle", learning_rate=3e-3))
    config = json.loads((run / "config.json").read_text())
    assert config["schedule"] == "one-cycle" and config["learning_rate"] == 3e-3
    import keras

    model = keras.models.load_model(run / "model.keras")
    assert model.optimizer.__class__.__name__ == "AdamW"
    steps_per_epoch = int(np.ceil(config["train_images"] / 32))
    # model.keras is the best epoch's model, saved with its optimizer's step count
    assert int(model.optimizer.iterations) == steps_per_epoch * config["best_epoch"]  # 1-based
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    assert float(schedule(0)) == pytest.approx(3e-4)  # saved with the model, so --resume continues it


def test_transfer_trains_its_head_with_the_one_cycle_schedule(tiny_data: Path, tmp_path: Path):
    run = train(TrainOptions(data=tiny_data, model="transfer", backbone="mobilenetv2", image_size=32, epochs=2,
                             batch_size=8, precision="float32", model_options={"weights": None},
                             schedule="one-cycle", out=tmp_path / "run"))
    optimizer = run.model.optimizer
    assert optimizer.__class__.__name__ == "AdamW"
    # the head's optimizer went through every step of the schedule (model.keras keeps the best head's weights)
    assert int(optimizer.iterations) == int(np.ceil(run.config["train_images"] / 8)) * 2


def test_one_cycle_is_refused_where_it_does_not_apply(tiny_data: Path, tmp_path: Path):
    with pytest.raises(UsageError, match="schedule one-cycle works with baseline, augmented, transfer"):
        train(TrainOptions(data=tiny_data, model="features", backbone="mobilenetv2", out=tmp_path / "run",
                           schedule="one-cycle"))
    with pytest.raises(UsageError, match="schedule must be one of"):
        train(TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "run", schedule="linear"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size", [100000, 1025, 0])
def test_image_size_is_bounded_in_the_options_and_on_the_command_line(tiny_data: Path, tmp_path: Path, capsys,
                                                                      size: int):
    """A size no backbone uses (EfficientNetB7's 600 px is the largest) would end in an out-of-memory traceback."""
    from catsdogs.cli import main
    from catsdogs.trainers.lr_find import data_lr_find

    with pytest.raises(UsageError, match=f"image_size must be an int from 1 to 1024, got {size}"):
        TrainOptions(data=tiny_data, model="baseline", out=tmp_path / "t", image_size=size)
    with pytest.raises(UsageError, match="image_size must be an int from 1 to 1024"):
        data_lr_find(tiny_data, "baseline", tmp_path / "p.png", image_size=size)
    for argv in (["train", "--data", str(tiny_data), "--model", "baseline", "--out", str(tmp_path / "t")],
                 ["lr-find", "--data", str(tiny_data), "--model", "baseline"]):
        assert main([*argv, "--image-size", str(size)]) == 2
        err = capsys.readouterr().err
        assert "--image-size" in err and "1024" in err and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()
