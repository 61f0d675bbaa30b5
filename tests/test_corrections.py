"""prepare(..., corrections=PATH): relabels and exclusions applied; every bad file a one-line error, nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.corrections import Correction, parse_corrections, read_corrections, write_corrections
from catsdogs.errors import UsageError
from catsdogs.preparation import prepare
from test_audit import make_source


def manifest(data: Path) -> dict[str, dict[str, str]]:
    with open(data / "manifest.csv", newline="") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


def rejected(data: Path) -> dict[str, str]:
    with open(data / "rejected.csv", newline="") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source(tmp_path_factory.mktemp("corrections") / "source", per_class=8)


def test_relabel_and_exclude_are_applied_and_other_photos_keep_their_split(source, tmp_path):
    plain = tmp_path / "plain"
    prepare(source, plain, val=0.25, test=0.25)
    before = manifest(plain)
    fixes = tmp_path / "corrections.csv"
    fixes.write_text("source,action,label\nants/3.jpg,relabel,bees\nbees/5.jpg,exclude,\n")
    data = tmp_path / "data"
    summary = prepare(source, data, val=0.25, test=0.25, corrections=fixes)
    after = manifest(data)
    assert after["ants/3.jpg"]["class"] == "bees"
    assert after["ants/3.jpg"]["path"].split("/")[:2] == [before["ants/3.jpg"]["split"], "bees"]
    assert (data / after["ants/3.jpg"]["path"]).is_file()
    assert "bees/5.jpg" not in after
    assert rejected(data)["bees/5.jpg"] == "excluded by corrections"
    assert summary.relabelled == 1 and summary.excluded == 1
    assert all(after[s]["split"] == row["split"] for s, row in before.items() if s in after)  # splits stable
    assert "relabelled 1" in summary.audit_line()


@pytest.mark.parametrize("text, message", [
    ("source,label\nants/1.jpg,bees\n", "row 1: missing column action"),
    ("source,action,label\nants/1.jpg,rename,bees\n", "row 2: unknown action 'rename'"),
    ("source,action,label\nants/1.jpg,exclude,\n../secret.jpg,exclude,\n", "row 3: source '../secret.jpg' is outside"),
    ("source,action,label\n/etc/passwd,exclude,\n", "row 2: source '/etc/passwd' is outside"),
    ("source,action,label\nants/1.jpg,exclude,\nbees/1.jpg,exclude,\nants/1.jpg,exclude,\n",
     "row 4: 'ants/1.jpg' is listed again (duplicated; first on row 2)"),
    ("source,action,label\nants/1.jpg,relabel,bees\nants/1.jpg,relabel,wasps\n",
     "row 3: 'ants/1.jpg' is listed again (conflicting"),
    ("source,action,label\nants/1.jpg,relabel,\n", "row 2: relabel needs a label"),
    ("source,action,label\nants/1.jpg,relabel,hornets\n", "row 2: class 'hornets' does not exist"),
    ("source,action,label\nants/1.jpg,exclude,\nants/99.jpg,exclude,\n", "row 3: photo 'ants/99.jpg' not found in SOURCE"),
])
def test_bad_corrections_are_one_line_errors_and_nothing_is_written(source, tmp_path, text, message):
    fixes = tmp_path / "corrections.csv"
    fixes.write_text(text)
    with pytest.raises(UsageError) as error:
        prepare(source, tmp_path / "data", corrections=fixes)
    assert message in str(error.value) and str(error.value).startswith("corrections.csv row ")
    assert error.value.parameter == "corrections" and "\n" not in str(error.value)
    assert not (tmp_path / "data").exists()


def test_missing_file_and_cli_flag(source, tmp_path, capsys):
    with pytest.raises(UsageError, match="no such file"):
        read_corrections(tmp_path / "nope.csv")
    fixes = tmp_path / "c.csv"
    fixes.write_text("source,action,label\nants/1.jpg,relabel,nothing\n")
    assert main(["prepare", str(source), "--out", str(tmp_path / "data"), "--corrections", str(fixes)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("catsdogs prepare: error: c.csv row 2: class 'nothing'") and "\n" not in err
    assert not (tmp_path / "data").exists()


def test_write_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "corrections.csv"
    fixes = [Correction("a/1.jpg", "relabel", "bees"), Correction("b/2.jpg", "exclude")]
    write_corrections(path, fixes)
    assert [(c.source, c.action, c.label) for c in read_corrections(path)] == [
        ("a/1.jpg", "relabel", "bees"), ("b/2.jpg", "exclude", "")]
    assert [p.name for p in tmp_path.iterdir()] == ["corrections.csv"]  # no partial file left
    assert parse_corrections("source,action,label\n") == []


@pytest.mark.slow
def test_training_again_after_a_relabel_reuses_the_features_cache_and_uses_the_new_label(source, tmp_path, monkeypatch):
    import catsdogs
    from catsdogs.trainers import heads

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    fit_logistic = heads.fit_logistic

    def spy(train, validation, *args, **kwargs):
        seen.append((np.array(train[0]), np.array(train[1])))
        return fit_logistic(train, validation, *args, **kwargs)

    monkeypatch.setattr(heads, "fit_logistic", spy)
    data, cache = tmp_path / "data", tmp_path / "cache"
    options = dict(data=data, model="heads", backbone="mobilenetv2", image_size=64, model_options={"weights": None},
                   calibration=False, cache_dir=cache)
    prepare(source, data, val=0.25, test=0.25)
    catsdogs.train(out=tmp_path / "run1", **options)
    before = [row for row in manifest(data).values() if row["split"] == "train"]
    moved = next(row for row in before if row["class"] == "ants")  # its path and manifest order change too
    fixes = tmp_path / "corrections.csv"
    fixes.write_text(f"source,action,label\n{moved['source']},relabel,bees\n")
    prepare(source, data, val=0.25, test=0.25, corrections=fixes, overwrite=True)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted again although only a label changed")

    monkeypatch.setattr("catsdogs.trainers.features.extract_features", no_extraction)
    catsdogs.train(out=tmp_path / "run2", **options)
    (x1, y1), (x2, y2) = seen
    with open(data / "manifest.csv", newline="") as handle:
        after = [row for row in csv.DictReader(handle) if row["split"] == "train"]
    classes = json.loads((data / "classes.json").read_text())
    assert y2.tolist() == [classes.index(row["class"]) for row in after]  # labels: the current manifest's
    first, second = [row["sha256"] for row in before], [row["sha256"] for row in after]
    assert first != second and sorted(first) == sorted(second)  # same photos, another order
    at = second.index(moved["sha256"])
    assert classes[y1[first.index(moved["sha256"])]] == "ants" and classes[y2[at]] == "bees"
    np.testing.assert_array_equal(x2, x1[[first.index(sha) for sha in second]])  # rows follow their photos


def test_fit_overwrite_keeps_the_cache_and_the_review_decisions(tmp_path):
    from catsdogs.fitting import _check_out

    out = tmp_path / "run"
    for folder in ("cache", "candidates", "data", "audit"):
        (out / folder).mkdir(parents=True)
    (out / "fit.json").write_text('{"status": "complete"}')
    for name in ("corrections.csv", "corrections.csv.review.json", "mine.csv", "report.html"):
        (out / name).write_text("x")
    _check_out(out, overwrite=True, keep=out / "mine.csv")
    assert sorted(p.name for p in out.iterdir()) == ["cache", "corrections.csv", "corrections.csv.review.json",
                                                   "mine.csv"]
