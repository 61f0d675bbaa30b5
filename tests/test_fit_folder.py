"""fit's OUT folder run again: other split sizes re-prepare DATA, --overwrite replaces an unfinished or
unreadable fit, splits without photos are refused, and a broken cache file is computed again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.data_files import read_manifest, read_record
from catsdogs.dataset import load_split
from catsdogs.errors import UsageError
from catsdogs.fitting import _check_out, _prepared, check_splits
from catsdogs.photo_keys import read_cached_array
from catsdogs.preparation import prepare

from helpers import make_class_folders


def test_a_zero_split_is_refused_before_anything_is_written(tmp_path: Path, capsys):
    photos = make_class_folders(tmp_path / "photos", per_class=6)
    assert main(["fit", str(photos), "--out", str(tmp_path / "run"), "--val", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "val" in err and "no photos to train, choose or test on" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_interrupted_fit_prepares_again_when_the_split_sizes_change(tmp_path: Path):
    photos = make_class_folders(tmp_path / "photos", per_class=10)
    data = tmp_path / "run" / "data"
    _prepared(photos, data, 1, None, 2, 2)
    assert len(read_manifest(data, "validation")) == 2
    prepared_at = (data / "prepare.json").stat().st_mtime_ns
    _prepared(photos, data, 1, None, 2, 2)  # the same command again: kept
    assert (data / "prepare.json").stat().st_mtime_ns == prepared_at
    _prepared(photos, data, 1, None, 4, 2)
    assert len(read_manifest(data, "validation")) == 4 and read_record(data)["requested"]["val"] == 4
    _prepared(photos, data, 2, None, 4, 2)
    assert read_record(data)["seed"] == 2


def test_splits_without_photos_are_named(tmp_path: Path):
    data = tmp_path / "data"
    prepare(make_class_folders(tmp_path / "photos", per_class=6), data, val=2, test=0)
    with pytest.raises(UsageError, match="has no test photos, and fit needs them; give test_size") as raised:
        check_splits(data)
    assert raised.value.parameter == "test_size"


def test_overwrite_replaces_an_unfinished_or_unreadable_fit_and_keeps_its_cache(tmp_path: Path):
    out = tmp_path / "run"
    (out / "candidates" / "heads").mkdir(parents=True)
    (out / "cache").mkdir()
    (out / "cache" / "features.npy").write_bytes(b"kept")
    (out / "fit.json").write_text('{"status": "runn')  # truncated by a crash or by hand
    with pytest.raises(UsageError, match="cannot read .*fit.json; overwrite=True starts the fit afresh"):
        _check_out(out, overwrite=False)
    _check_out(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["cache"] and (out / "cache" / "features.npy").exists()
    (out / "fit.json").write_text(json.dumps({"status": "running"}))
    _check_out(out, overwrite=False)  # unfinished: the same command continues it
    assert (out / "fit.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "nan", "text"])
def test_a_broken_cache_file_is_a_miss_said_once(tmp_path: Path, damage: str, caplog):
    path = tmp_path / "features.npy"
    np.save(path, np.ones((8, 4), np.float32))
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "nan":
        np.save(path, np.full((8, 4), np.nan, np.float32))
    else:
        path.write_text("not an array")
    assert read_cached_array(path) is None and read_cached_array(path, mmap=True) is None
    assert "ignoring the unreadable cache file" in caplog.text and str(path) in caplog.text


def test_a_truncated_images_cache_is_decoded_again(tmp_path: Path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    prepare(make_class_folders(tmp_path / "photos", per_class=6), data, val=2, test=2)
    first = load_split(data, "train", 32, cache_dir=cache)
    (cached,) = cache.glob("images-*-train-32.npy")
    cached.write_bytes(cached.read_bytes()[:1000])
    again = load_split(data, "train", 32, cache_dir=cache)
    assert np.array_equal(again.images, first.images)
    assert np.array_equal(np.load(cached), first.images)  # written anew


@pytest.mark.parametrize("given_data", [False, True])
def test_a_fit_killed_before_its_first_stage_resumes_with_the_same_command(tmp_path: Path, monkeypatch,
                                                                             given_data: bool):
    """Killed while preparing or extracting (OUT holds only data/ or, with data=, its cache): the same command
    is recognised as the unfinished fit it is, not refused as a foreign folder."""
    import catsdogs.fitting as fitting

    class Killed(Exception):
        pass

    def killed(*args, **kwargs):
        (tmp_path / "run" / "cache").mkdir(exist_ok=True)  # what the first extraction writes first
        raise Killed

    photos = make_class_folders(tmp_path / "photos", per_class=10)
    data = None
    if given_data:
        data = tmp_path / "prepared"
        prepare(photos, data, val=2, test=2)
    monkeypatch.setattr(fitting, "measure_speed", lambda name: 100.0)
    monkeypatch.setattr(fitting, "_run_stages", killed)
    for _ in range(2):  # killed, then the same command: killed again at the same place, not refused
        with pytest.raises(Killed):
            fitting.fit(None if given_data else photos, tmp_path / "run", data=data, backbones=["mobilenetv2"],
                        val_size=2, test_size=2)
    assert json.loads((tmp_path / "run" / "fit.json").read_text()) == {"status": "running"}


def test_run_status_tells_a_damaged_run_from_a_finished_or_unfinished_one(tmp_path: Path):
    from catsdogs.run_files import run_status

    run = tmp_path / "run"
    run.mkdir()
    assert run_status(run) is None
    (run / "config.json").write_text(json.dumps({"status": "running"}))
    assert run_status(run) == "running"
    (run / "config.json").write_text(json.dumps({"status": "complete"}))
    assert run_status(run) == "damaged"  # complete, but no model.keras
    import zipfile

    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    assert run_status(run) == "complete"
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:20])
    assert run_status(run) == "damaged"
    for torn in ('{"status": "compl', "[1, 2]"):
        (run / "config.json").write_text(torn)
        assert run_status(run) == "damaged"


def test_an_out_inside_the_source_is_refused_before_anything_is_written_into_it(tmp_path: Path, capsys):
    photos = make_class_folders(tmp_path / "photos", per_class=6)
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    assert main(["fit", str(photos), "--out", str(photos / "run"), "--budget", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is inside source" in err
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before  # no run/, no fit.json
