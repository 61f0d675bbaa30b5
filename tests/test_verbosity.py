"""catsdogs.set_verbosity: 0 is silence (Keras' epoch lines included), 1 the command line's progress; a quiet
library (no print outside the command line), tab completion, and no global RNG reset as a side effect."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import catsdogs
from catsdogs.errors import UsageError
from catsdogs.progress import NoProgress, Progress, progress
from catsdogs.verbosity import get_verbosity, keras_verbose, set_verbosity

PACKAGE = Path(catsdogs.__file__).parent


def _train(tiny_data: Path, out: Path):
    return catsdogs.train(data=tiny_data, model="baseline", out=out, epochs=1, image_size=48, batch_size=8)


def test_verbosity_zero_silences_train_and_evaluate(tiny_data: Path, tmp_path: Path, capfd):
    import keras  # noqa: F401  (TensorFlow's import chatter is not the library's)

    catsdogs.set_verbosity(0)
    capfd.readouterr()
    run = _train(tiny_data, tmp_path / "quiet")
    metrics = catsdogs.Run(run).evaluate("test")
    out, err = capfd.readouterr()
    assert 0 <= metrics["accuracy"] <= 1
    assert (out, err) == ("", "")


def test_verbosity_one_shows_keras_epoch_lines(tiny_data: Path, tmp_path: Path, capfd):
    set_verbosity(1)
    capfd.readouterr()
    _train(tiny_data, tmp_path / "talking")
    out, err = capfd.readouterr()
    assert re.search(r"loss: \d", out)  # Keras' one line per epoch (not a terminal here)


def test_level_zero_keeps_tensorflow_warnings_off_stderr():
    """TensorFlow's Python logger (e.g. its tf.function retracing warning) is quiet at level 0 and in the
    command line without --debug (both call import_tensorflow_quietly)."""
    import logging

    import keras  # noqa: F401  (TensorFlow's logger and its handler exist)

    set_verbosity(0)
    assert not logging.getLogger("tensorflow").isEnabledFor(logging.WARNING)
    set_verbosity(1)


def test_levels_and_keras_verbose():
    set_verbosity(0)
    assert get_verbosity() == 0 and keras_verbose() == 0 and isinstance(progress(10, "x"), NoProgress)
    set_verbosity(2)
    assert get_verbosity() == 2 and keras_verbose() == 2 and keras_verbose(chief=False) == 0
    set_verbosity(1)
    assert get_verbosity() == 1 and isinstance(progress(10, "x"), Progress)
    with pytest.raises(UsageError, match="level must be 0, 1 or 2") as raised:
        set_verbosity(3)
    assert raised.value.parameter == "level"


def test_messages_go_to_stderr_from_level_one_only(capsys):
    import logging

    log = logging.getLogger("catsdogs.fitting")
    set_verbosity(0)
    log.warning("not shown")
    set_verbosity(1)
    log.info("shown")
    log.debug("detail")
    set_verbosity(2)
    log.debug("detail shown")
    assert capsys.readouterr() == ("", "shown\ndetail shown\n")


def test_no_print_in_library_modules():
    """Only the command line prints (and the progress line it draws); the library logs or returns objects."""
    allowed = {PACKAGE / "cli.py", PACKAGE / "progress.py"}
    offenders = [f"{path.relative_to(PACKAGE)}:{number}" for path in PACKAGE.rglob("*.py")
                 if path not in allowed and "cli" not in path.relative_to(PACKAGE).parts[:-1]
                 for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\bprint\(", line)]
    assert offenders == []


def test_dir_lists_the_lazy_api():
    names = dir(catsdogs)
    assert {"set_verbosity", "get_verbosity", "train", "Run", "__version__"} <= set(names)


def test_audit_extractor_leaves_the_global_rng_alone(tmp_path: Path, monkeypatch):
    """Building the audit's extractor used to call keras.utils.set_random_seed(0)."""
    import keras

    from catsdogs import auditing

    calls = []
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed: calls.append(seed))
    np.random.seed(1234)
    expected = np.random.random()
    np.random.seed(1234)
    try:
        auditing.build_extractor("mobilenetv2", tmp_path)
    except Exception as error:  # noqa: BLE001 - no ImageNet weights here: the seed is what this test checks
        pytest.skip(f"mobilenetv2 not buildable here: {error}")
    assert calls == [] and np.random.random() == expected


def test_bench_result_is_returned_and_printed_by_its_caller():
    """bench no longer prints: its result's lines are the table, the last three the headline."""
    from catsdogs.bench import BenchResult, Throughput
    from catsdogs.bench_inference import EndToEnd, EngineSpeed

    training = [Throughput("plain", 100, 10.0), Throughput("ours", 100, 2.0), Throughput("plain input", 100, 5.0),
                Throughput("ours input", 100, 1.0)]
    endings = [EndToEnd("plain Keras", 10.0, 1.0), EndToEnd("keras", 20.0, 1.0), EndToEnd("auto", 40.0, 0.99, 0.9)]
    result = BenchResult("data: d", training, 1.5, 2e8, {"float32": 100.0, "bfloat16": 200.0}, "float32", 3.0,
                         [EngineSpeed("convnet", "keras", "float32", 50.0)], endings, "mobilenetv2", 3, trained=True)
    lines = result.lines()
    assert lines[0] == "data: d" and "same label as plain Keras: 99.0%, accuracy 0.900" in lines[-6]
    assert lines[-3:] == ["train speedup vs plain Keras: 5.0x", "inference speedup vs Keras: 4.0x",
                          "training FLOP/s vs measured peak: 30%"]
    assert result.numbers()["train"] == 50.0 and result.numbers()["achieved_gflops"] == pytest.approx(30.0)
