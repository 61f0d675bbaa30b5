"""The learning-rate range test (fastai's lr_find): the library function, `Run.lr_find` and `catsdogs lr-find`."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from catsdogs import Run
from catsdogs.cli import main
from catsdogs.errors import UsageError
from catsdogs.trainers.lr_find import lr_find, suggest


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_arrays(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0, 0.3, (n, 8, 8, 3)).astype(np.float32)
    images[labels == 1, :, :4] += 0.6  # class 1 bright on the left
    labels[rng.random(n) < 0.25] ^= 1  # a quarter mislabelled: no rate reaches a zero loss, a huge one diverges
    return images, labels


def test_lr_find_sweeps_the_rates_restores_the_model_and_suggests_a_rate_inside(tmp_path: Path):
    model = tiny_model()
    images, labels = tiny_arrays()
    before = [w.copy() for w in model.get_weights()]
    optimizer = model.optimizer
    result = lr_find(model, images, labels, steps=40, batch_size=8, end=1e4)
    assert 2 < len(result.lrs) <= 40 and len(result.losses) == len(result.lrs) == len(result.raw_losses)
    assert result.lrs[0] == pytest.approx(1e-7) and np.all(np.diff(result.lrs) > 0)
    assert result.diverged and len(result.lrs) < 40  # a rate of 1e4 blows the loss up: stopped early
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer is optimizer and float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert set(result.suggestions) == {"valley", "steep", "minimum"} and result.method == "valley"
    assert all(result.lrs[0] <= value <= result.lrs[-1] for value in result.suggestions.values())
    assert result.suggestion == result.suggestions["valley"]
    model.fit(images, labels, epochs=1, verbose=0)  # still trains with its own optimizer
    assert result.save_plot(tmp_path / "lr.png").stat().st_size > 1000


def test_lr_find_requests_the_points_and_takes_a_dataset():
    import tensorflow as tf

    images, labels = tiny_arrays(16)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # 2 batches, cycled
    result = lr_find(tiny_model(), dataset, steps=12, end=1e-2)
    assert len(result.lrs) == 12 and result.lrs[-1] == pytest.approx(1e-2)


def test_suggest_finds_the_falling_stretch():
    lrs = list(np.logspace(-6, 0, 50))
    losses = [1.0] * 15 + list(np.linspace(1.0, 0.2, 20)) + list(np.linspace(0.2, 3.0, 15))
    found = suggest(lrs, losses)
    assert lrs[15] <= found["valley"] <= lrs[35] and lrs[15] <= found["steep"] <= lrs[35]


@pytest.mark.parametrize("options, parameter", [({"start": -1}, "start"), ({"end": float("nan")}, "end"),
                                                ({"start": 1.0, "end": 0.1}, "start"), ({"steps": 1}, "steps"),
                                                ({"diverge": 0.5}, "diverge")])
def test_lr_find_refuses_bad_numbers(options: dict, parameter: str):
    images, labels = tiny_arrays(8)
    with pytest.raises(UsageError) as error:
        lr_find(tiny_model(), images, labels, **options)
    assert error.value.parameter == parameter and "\n" not in str(error.value)


def test_run_lr_find_writes_the_plot_and_leaves_the_run_alone(run_copy: Path):
    before = (run_copy / "model.keras").read_bytes()
    result = Run(run_copy).lr_find(steps=10, batch_size=8)
    assert len(result.lrs) <= 10 and result.lrs[0] <= result.suggestion <= result.lrs[-1]
    assert result.plot_path == run_copy / "plots" / "lr_find.png" and result.plot_path.exists()
    assert (run_copy / "model.keras").read_bytes() == before


def test_cli_prints_the_rate_alone_on_stdout(run_copy: Path, tiny_data: Path, tmp_path: Path, capsys):
    assert main(["lr-find", str(run_copy), "--steps", "8", "--batch-size", "8"]) == 0
    out, err = capsys.readouterr()
    assert float(out.strip()) > 0 and len(out.strip().splitlines()) == 1
    assert str(run_copy / "plots" / "lr_find.png") in err
    plot = tmp_path / "before.png"
    assert main(["lr-find", "--data", str(tiny_data), "--model", "baseline", "--image-size", "48", "--steps", "8",
                 "--plot", str(plot)]) == 0
    assert float(capsys.readouterr().out.strip()) > 0 and plot.exists()


@pytest.mark.parametrize("argv, message", [(["lr-find", "missing-run"], "not a catsdogs run"),
                                           (["lr-find", "RUN", "--start", "-5"], "--start must be a positive number"),
                                           (["lr-find", "RUN", "--start", "1", "--end", "0.1"],
                                            "--start (1) must be below --end (0.1)"),
                                           (["lr-find"], "give a trained RUN"),
                                           (["lr-find", "RUN", "--steps", "abc"], "invalid int value")])
def test_cli_bad_input_is_one_line(argv: list[str], message: str, run_copy: Path, capsys):
    argv = [str(run_copy) if arg == "RUN" else arg for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
