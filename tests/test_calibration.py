"""Calibrated probabilities and the "unknown" label (catsdogs.calibration, catsdogs.novelty, catsdogs.trust)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.calibration import Calibration, fit_calibration, fit_platt, fit_temperature, negative_log_likelihood
from catsdogs.errors import UsageError
from catsdogs.novelty import Novelty, fit_novelty
from catsdogs.trust import CALIBRATION, NOVELTY

from helpers import make_photo


def overconfident(n: int = 600, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities that are right 70% of the time but say ~99%."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n))
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), predicted] += 6.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return labels, e / e.sum(axis=1, keepdims=True)


def test_temperature_reduces_nll_and_keeps_rows_summing_to_one():
    labels, p = overconfident()
    calibration = fit_temperature(labels, p)
    assert calibration.method == "temperature" and calibration.temperature > 1.5  # softened
    calibrated = calibration.apply(p)
    assert negative_log_likelihood(labels, calibrated) < negative_log_likelihood(labels, p) - 0.1
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-5)
    assert (calibrated.argmax(axis=1) == p.argmax(axis=1)).all()  # labels never change
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration


def test_platt_on_two_classes_and_saturated_outputs():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    p1 = np.where(rng.random(400) < 0.8, labels, 1 - labels).astype(float)  # 0 or 1 exactly: logit clipped
    p = np.stack([1 - p1, p1], axis=1)
    calibration = fit_platt(labels, p)
    assert calibration.method == "platt" and calibration.slope > 0
    calibrated = calibration.apply(p)
    assert np.isfinite(calibrated).all() and 0.7 < calibrated[p1 == 1, 1].mean() < 0.9
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-6)
    assert calibration.map_threshold(0.5) == pytest.approx(calibrated[p1 == 1, 1].max(), abs=0.5)


def test_a_map_that_does_not_help_held_out_folds_is_not_kept():
    rng = np.random.default_rng(3)
    p1 = rng.uniform(0.02, 0.98, 1000)
    labels = (rng.uniform(size=1000) < p1).astype(int)  # a calibrated model: its labels drawn from its p
    calibrated = np.stack([1 - p1, p1], axis=1)
    assert fit_platt(labels, calibrated).method == "platt"  # fitted on the whole split it always gains a little
    kept = fit_calibration(labels, calibrated)
    assert kept.method == "identity" and kept.nll_after == kept.nll_before
    logits = rng.normal(0, 3, (600, 4))
    labels = np.array([rng.choice(4, p=row) for row in np.exp(logits) / np.exp(logits).sum(1, keepdims=True)])
    overconfident = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    fitted = fit_calibration(labels, overconfident)
    assert fitted.method == "temperature" and fitted.temperature == pytest.approx(3.0, rel=0.2)


def test_threshold_accepts_the_share_of_validation():
    rng = np.random.default_rng(2)
    train = np.abs(rng.normal(0, 1, (300, 8)))  # like ReLU embeddings
    novelty = fit_novelty(train, rng.integers(0, 2, 300), 2, method="knn")
    scores = novelty.knn(np.abs(rng.normal(0, 1, (200, 8))))
    novelty.set_threshold(scores, 0.9)
    assert novelty.accepted == pytest.approx(0.9, abs=0.01)
    assert novelty.accepts(scores).mean() == pytest.approx(0.9, abs=0.01)
    far = novelty.knn(np.abs(rng.normal(0, 1, (50, 8))) + np.r_[6, 0, 6, 0, 6, 0, 6, 0])  # another direction
    assert novelty.mahalanobis(train[:5]).max() < novelty.mahalanobis(rng.normal(8, 1, (5, 8))).min()
    assert novelty.accepts(far).mean() < 0.5
    for accept in (0, 1.5, -1, True):
        with pytest.raises(UsageError, match="accept must be in"):
            novelty.set_threshold(scores, accept)


@pytest.fixture(scope="module")
def weird_photos(tmp_path_factory) -> Path:
    """Photos of none of the classes: random noise and flat colours."""
    root = tmp_path_factory.mktemp("other")
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / f"noise{i}.png")
        Image.fromarray(np.full((48, 48, 3), 40 * i, np.uint8)).save(root / f"flat{i}.png")
    return root


def test_training_calibrates_and_strange_photos_are_more_novel(tiny_run, tiny_data, weird_photos):
    assert (Path(tiny_run) / CALIBRATION).exists() and (Path(tiny_run) / NOVELTY).exists()
    stored = json.loads((Path(tiny_run) / CALIBRATION).read_text())
    assert stored["novelty"]["accept"] == 0.98 and stored["novelty"]["accepted_validation"] >= 0.98
    run = tiny_run if hasattr(tiny_run, "predict") else __import__("catsdogs").Run(tiny_run)
    familiar = run.predict([tiny_data / "test"])
    strange = run.predict([weird_photos])
    assert all(p.novelty is not None for p in familiar + strange)
    assert np.median([p.novelty for p in strange]) > np.median([p.novelty for p in familiar])
    for p in strange:
        assert p.unknown == (p.label == "unknown")
        assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_calibrate_reports_other_and_csv_has_novelty(tiny_run, weird_photos, tmp_path):
    import catsdogs
    from catsdogs.predict import Predictor
    from catsdogs.stream import stream_predictions

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = catsdogs.calibrate(run, accept=0.5, other=weird_photos)
    assert 0 <= summary.other["auroc"] <= 1 and summary.other["n"] == 12
    assert summary.novelty.accepted == pytest.approx(0.5, abs=0.1)
    assert "AUROC" in summary.line()
    out = tmp_path / "p.csv"
    stream_predictions(Predictor(run), [weird_photos], out, progress=False)
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[-2:] == ["novelty", "error"]
    assert all(float(r["novelty"]) >= 0 or True for r in rows) and all(r["novelty"] for r in rows)
    assert any(r["label"] == "unknown" for r in rows)  # half of validation is rejected: noise surely is


def test_run_without_calibration_still_predicts(tiny_run, tiny_data, tmp_path, caplog):
    from catsdogs.predict import Predictor
    from catsdogs.stream import csv_row

    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    (run / CALIBRATION).unlink()
    (run / NOVELTY).unlink()
    with caplog.at_level("WARNING"):
        predictor = Predictor(run)
    assert sum("no calibration.json" in r.getMessage() for r in caplog.records) == 1
    predictions = list(predictor.predict_paths([tiny_data / "test"]))
    assert predictions and all(p.novelty is None and not p.unknown and p.label != "unknown" for p in predictions)
    assert csv_row(predictions[0], predictor.classes)[-2] == ""


def test_bad_accept_and_other(tiny_run, tmp_path):
    import catsdogs

    for accept in (0, 1.01):
        with pytest.raises(UsageError, match="accept must be in") as error:
            catsdogs.calibrate(tiny_run, accept=accept)
        assert error.value.parameter == "accept"
    (tmp_path / "empty").mkdir()
    for other in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UsageError) as error:
            catsdogs.calibrate(tiny_run, other=other)
        assert error.value.parameter == "other"


def test_cli_calibrate(tiny_run, tmp_path, capsys):
    from catsdogs.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["calibrate", str(run), "--accept", "0.5"]) == 0
        assert main(["calibrate", str(run), "--accept", "0.99"]) == 0  # a 99% cut needs 99 validation photos
    first, second = buffer.getvalue().splitlines()
    assert "of validation accepted" in first and "no unknown threshold: too few validation photos" in second
    others = tmp_path / "others"
    for i in range(3):
        make_photo(others / f"{i}.jpg", i % 2, 50 + i)
    with redirect_stdout(buffer := io.StringIO()):
        assert main(["calibrate", str(run), "--accept", "0.99", "--other", str(others)]) == 0
    assert "none rejected without a threshold" in buffer.getvalue() and "% rejected" not in buffer.getvalue()
    assert main(["calibrate", str(run), "--accept", "2"]) == 2
    assert "--accept" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--other", str(tmp_path / "nowhere")]) == 2


def test_evaluate_adds_trust_metrics_and_plots(tiny_run, tmp_path):
    from catsdogs.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    trust = metrics["trust"]
    printed = buffer.getvalue()
    assert f"ECE {trust['ece_before_calibration']:.4f} -> {trust['ece_after_calibration']:.4f}" in printed
    assert f"a perfectly calibrated model would show ECE ~{trust['ece_if_calibrated']:.4f}" in printed
    assert 0 < trust["ece_if_calibrated"] < 0.5
    assert f"{trust['operating_point']['coverage']:.1%} of test accepted" in printed
    assert "accuracy at coverage (most familiar first): 50% " in printed
    for key in ("ece_before_calibration", "ece_after_calibration", "log_loss_before_calibration",
                "log_loss_after_calibration"):
        assert 0 <= trust[key] < 10
    assert trust["coverage_curve"][-1]["coverage"] == 1.0
    assert trust["coverage_curve"][-1]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert 0 < trust["operating_point"]["coverage"] <= 1
    for name in ("coverage.png", "reliability-before.png", "reliability-after.png"):
        assert (run / "plots" / name).stat().st_size > 1000


def test_format_trust_lines():
    from catsdogs.trust import format_trust, selective_metrics

    labels, p = overconfident(200, classes=3)
    novelty = np.random.default_rng(1).random(200)
    trust = selective_metrics(labels, p, Calibration("temperature", temperature=2.0).apply(p), novelty,
                              p.argmax(axis=1), float(np.quantile(novelty, 0.9)))
    calibration, point, curve = format_trust(trust, "validation").splitlines()
    assert calibration.startswith("calibration on the validation split: ECE ") and "log loss" in calibration
    assert f"{trust['operating_point']['accuracy_accepted']:.4f}" in point and "90.0% of validation accepted" in point
    assert curve.count("%") == 5 and f"100% {trust['coverage_curve'][-1]['accuracy']:.4f}" in curve
    assert format_trust({k: v for k, v in trust.items() if "calibration" in k}, "test").count("\n") == 0


def test_ece_if_calibrated_is_the_sampling_floor_of_ece():
    """A calibrated model's ECE on few photos is above zero by sampling alone; the floor shrinks with the photos
    and a miscalibrated model's ECE stands far above it."""
    from catsdogs.metrics import ece_if_calibrated, expected_calibration_error

    rng = np.random.default_rng(3)
    few, many = rng.uniform(0.5, 1.0, 300), rng.uniform(0.5, 1.0, 20000)
    assert ece_if_calibrated(few) == ece_if_calibrated(few)  # seeded: the same number for the same input
    assert 0.015 < ece_if_calibrated(few) < 0.06 and ece_if_calibrated(many) < 0.006
    calibrated = [expected_calibration_error((rng.random(few.size) < few).astype(int), few) for _ in range(50)]
    assert np.mean(calibrated) == pytest.approx(ece_if_calibrated(few), rel=0.25)
    overconfident_p = np.full(300, 0.99)
    outcomes = (rng.random(300) < 0.7).astype(int)
    assert expected_calibration_error(outcomes, overconfident_p) > 10 * ece_if_calibrated(overconfident_p)
    with pytest.raises(UsageError, match="no probabilities"):
        ece_if_calibrated([])


def test_novelty_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    novelty = fit_novelty(rng.normal(0, 1, (50, 4)), rng.integers(0, 3, 50), 3, method="knn+confidence")
    embeddings, probabilities = rng.normal(0, 1, (20, 4)), np.full((20, 3), 1 / 3)
    novelty.stats = {"knn": [0.1, 0.05], "confidence": [0.5, 0.2]}
    novelty.set_threshold(novelty.score(embeddings, probabilities), 0.8)
    novelty.save_arrays(tmp_path / "n.npz")
    again = Novelty.load(tmp_path / "n.npz", json.loads(json.dumps(novelty.to_dict())))
    np.testing.assert_allclose(again.score(embeddings, probabilities), novelty.score(embeddings, probabilities),
                               atol=1e-2)


def test_too_few_validation_photos_set_no_unknown_threshold(tmp_path):
    """The split-conformal rank ceil((n + 1) x accept) is past n for n < 49 at 0.98: nothing is labelled unknown."""
    from catsdogs.run_files import write_json

    rng = np.random.default_rng(5)
    novelty = fit_novelty(rng.normal(0, 1, (40, 4)), rng.integers(0, 2, 40), 2, method="knn")
    few, many = novelty.knn(rng.normal(0, 1, (20, 4))), novelty.knn(rng.normal(0, 1, (99, 4)))
    novelty.set_threshold(few, 0.98)
    assert novelty.threshold == float("inf") and novelty.accepts(few * 100).all()
    write_json(tmp_path / "c.json", novelty.to_dict())
    novelty.save_arrays(tmp_path / "n.npz")
    again = Novelty.load(tmp_path / "n.npz", json.loads((tmp_path / "c.json").read_text()))
    assert again.threshold == float("inf")
    novelty.set_threshold(many, 0.98)  # rank ceil(100 x 0.98) = 98 of 99
    assert novelty.threshold == np.sort(many)[97] and novelty.accepted == pytest.approx(98 / 99)


def test_centred_knn_rejects_what_uncentred_cosines_crowd_together(tmp_path):
    """ReLU-like embeddings share a large positive mean: uncentred cosines all sit near 1 (the old scorer, still
    used for a novelty.npz without `centre`), centred ones tell photos that vary along other directions apart."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    spread = np.r_[np.ones(4) * 3, np.ones(4) * 0.1]
    train, val, far = (np.abs(10 + rng.normal(0, 1, (n, 8)) * s) for n, s in ((300, spread), (100, spread),
                                                                               (100, spread[::-1])))
    novelty = fit_novelty(train, rng.integers(0, 2, 300), 2, method="knn")
    novelty.set_threshold(novelty.knn(val), 0.98)
    assert novelty.accepts(far).mean() < 0.05
    np.testing.assert_allclose(novelty.centre, train.mean(axis=0), rtol=1e-5)
    novelty.save_arrays(tmp_path / "n.npz")
    again = Novelty.load(tmp_path / "n.npz", json.loads(json.dumps(novelty.to_dict())))
    np.testing.assert_allclose(again.knn(far), novelty.knn(far), atol=1e-3)
    with np.load(tmp_path / "n.npz") as arrays:  # a RUN calibrated before centring: no centre, the old scores
        np.savez(tmp_path / "old.npz", reference=novelty_reference(train), means=arrays["means"],
                 precision=arrays["precision"])
    old = Novelty.load(tmp_path / "old.npz", novelty.to_dict())
    assert old.centre is None
    labels = np.r_[np.zeros(100), np.ones(100)]
    assert roc_auc_score(labels, np.r_[novelty.knn(val), novelty.knn(far)]) > 0.99
    assert roc_auc_score(labels, np.r_[old.knn(val), old.knn(far)]) < 0.95


def novelty_reference(embeddings: np.ndarray) -> np.ndarray:
    return (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float16)


# ---- a tampered calibration.json or novelty.npz: one line naming the file and `catsdogs calibrate RUN` ---------
def _tamper(run: Path, section: str, name: str, value) -> Path:
    path = run / CALIBRATION
    data = json.loads(path.read_text())
    data[section][name] = value
    path.write_text(json.dumps(data))  # json writes NaN as NaN, as a hand edit could
    return path


@pytest.mark.parametrize("section, name, value, words", [
    ("calibration", "method", "bogus", "calibration.method must be one of identity, temperature, platt"),
    ("calibration", "slope", float("nan"), "calibration.slope must be a finite number > 0, got nan"),
    ("calibration", "intercept", float("nan"), "calibration.intercept must be a finite number, got nan"),
    ("calibration", "temperature", 0, "calibration.temperature must be a finite number > 0, got 0"),
    ("calibration", "temperature", float("nan"), "calibration.temperature must be a finite number > 0, got nan"),
    ("novelty", "threshold", float("nan"), "novelty.threshold must be a finite number"),
    ("novelty", "threshold", "abc", "novelty.threshold must be a finite number"),
    ("novelty", "threshold", -1, "novelty.threshold of knn scores must be >= 0"),
    ("novelty", "k", 0, "novelty.k must be an integer between 1 and"),
    ("novelty", "k", 10 ** 9, "novelty.k must be an integer between 1 and"),
    ("novelty", "k", 2.5, "novelty.k must be an integer"),
    ("novelty", "method", "telepathy", "novelty.method must be one of"),
])
def test_a_tampered_calibration_json_is_refused_naming_the_field(run_copy, section, name, value, words):
    from catsdogs.predict import Predictor

    path = _tamper(run_copy, section, name, value)
    with pytest.raises(UsageError) as error:
        Predictor(run_copy)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message
    assert message.endswith(f"run `catsdogs calibrate {run_copy}` to rebuild it")


def test_a_tampered_calibration_is_exit_2_in_predict_and_calibrate_rebuilds_it(run_copy, tiny_data, capsys):
    from catsdogs.cli import main

    path = _tamper(run_copy, "calibration", "temperature", float("nan"))
    photo = str(next((tiny_data / "test").rglob("*.jpg")))
    assert main(["predict", str(run_copy), photo]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "calibration.temperature" in err
    assert main(["calibrate", str(run_copy), "--accept", "0.5"]) == 0  # the advice works
    assert main(["predict", str(run_copy), photo]) == 0


@pytest.mark.parametrize("content", ["text", "npy", "shapes", "nan", "pickle"])
def test_an_unreadable_novelty_npz_is_named_never_unpickled(run_copy, content):
    from catsdogs.predict import Predictor

    path = run_copy / NOVELTY
    with np.load(path) as stored:
        arrays = dict(stored)
    if content == "text":
        path.write_text("not an archive")
    elif content == "npy":
        np.save(open(path, "wb"), arrays["reference"])
    elif content == "shapes":
        np.savez(path, **{**arrays, "precision": arrays["precision"][:2]})
    elif content == "nan":
        np.savez(path, **{**arrays, "means": np.full_like(arrays["means"], np.nan)})
    else:
        np.savez(path, **{**arrays, "reference": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(UsageError) as error:
        Predictor(run_copy)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and f"catsdogs calibrate {run_copy}" in message
    assert "pickle" not in message and "\n" not in message


def test_novelty_settings_round_trip_and_k_past_a_small_reference_is_clamped(tmp_path):
    from catsdogs.novelty import check_settings

    rng = np.random.default_rng(6)
    novelty = fit_novelty(rng.normal(0, 1, (6, 4)), rng.integers(0, 2, 6), 2)  # k 10 > 6 photos: clamped, kept
    novelty.save_arrays(tmp_path / "n.npz")
    settings = json.loads(json.dumps(novelty.to_dict()).replace("Infinity", "null"))
    again = Novelty.load(tmp_path / "n.npz", check_settings(settings))
    assert again.k == 10 and again.threshold == float("inf")
    with pytest.raises(UsageError, match="novelty.reference says 7"):
        Novelty.load(tmp_path / "n.npz", {**settings, "reference": 7})


def test_a_missing_novelty_npz_is_said_once_and_calibrate_restores_it(run_copy, tiny_data, caplog):
    """calibration.json kept, novelty.npz lost (a partial copy): probabilities stay calibrated, no photo can be
    labelled unknown, and predict says so once instead of silently dropping the unknown label."""
    from catsdogs.cli import main
    from catsdogs.predict import Predictor

    (run_copy / NOVELTY).unlink()
    with caplog.at_level("WARNING"):
        predictor = Predictor(run_copy)
    said = [r.getMessage() for r in caplog.records if NOVELTY in r.getMessage()]
    assert len(said) == 1 and "no photo is labelled unknown" in said[0] and f"catsdogs calibrate {run_copy}" in said[0]
    predictions = list(predictor.predict_paths([tiny_data / "test"]))
    assert predictions and all(p.novelty is None and p.label != "unknown" for p in predictions)
    assert main(["calibrate", str(run_copy), "--accept", "0.5"]) == 0 and (run_copy / NOVELTY).exists()
    assert all(p.novelty is not None for p in Predictor(run_copy).predict_paths([tiny_data / "test"]))
