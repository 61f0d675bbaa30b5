"""prepare(..., corrections=PATH): relabels and exclusions applied; every bad file a one-line error, nothing written."""

from __future__ import annotations

import csv
from pathlib import Path

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
