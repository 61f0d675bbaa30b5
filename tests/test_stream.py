"""predict --output FILE [--resume]: rows written as it goes, a re-run continues after the rows there."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from catsdogs.errors import UsageError
from catsdogs.predict import Predictor
from catsdogs.progress import Progress
from catsdogs.stream import stream_predictions

from helpers import make_photo


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    for i in range(11):
        make_photo(tmp_path / "photos" / f"{i:02d}.jpg", i % 2, i)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path / "photos"


def test_resume_continues_after_the_rows_written(tiny_run: Path, photo_folder: Path, tmp_path: Path):
    predictor = Predictor(tiny_run, batch_size=4)
    full = tmp_path / "full.csv"
    summary = stream_predictions(predictor, [photo_folder], full, progress=False)
    assert summary.written == 12 and summary.errors == 1 and summary.skipped == 0
    lines = full.read_text().splitlines()
    assert lines[0] == "path,label,p_cat,p_dog,novelty,error" and len(lines) == 13
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[:6]) + "\n" + lines[6][:7])  # killed mid-row
    with pytest.raises(UsageError, match="resume=True"):
        stream_predictions(predictor, [photo_folder], partial, progress=False)
    resumed = stream_predictions(predictor, [photo_folder], partial, resume=True, progress=False)
    assert resumed.skipped == 5 and resumed.written == 7
    assert partial.read_text() == full.read_text()
    again = stream_predictions(predictor, [photo_folder], partial, resume=True, progress=False)
    assert again.written == 0 and partial.read_text() == full.read_text()


def test_cli_predict_output_and_resume(tiny_run: Path, photo_folder: Path, tmp_path: Path, capsys):
    from catsdogs.cli import main

    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_run), str(photo_folder), "--output", str(out)]) in (0, None)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 12 and rows[0]["path"].endswith("00.jpg")
    assert main(["predict", str(tiny_run), str(photo_folder), "--output", str(out), "--resume"]) in (0, None)
    assert "0 rows" in capsys.readouterr().err


def test_cli_predict_to_stdout_shows_progress_on_stderr_past_the_delay(tiny_run: Path, photo_folder: Path,
                                                                      capsys, monkeypatch):
    import functools

    import catsdogs.progress
    from catsdogs.cli import main

    assert main(["predict", str(tiny_run), str(photo_folder)]) in (0, None)
    quick = capsys.readouterr()
    assert "predicting:" not in quick.err and len(quick.out.splitlines()) == 13  # done within the delay: silent
    monkeypatch.setattr(catsdogs.progress, "track", functools.partial(catsdogs.progress.track, delay=0))
    assert main(["predict", str(tiny_run), str(photo_folder), "--format", "json"]) in (0, None)
    shown = capsys.readouterr()
    assert "predicting: 12/12 images" in shown.err and shown.out.count('"path"') == 12


def test_progress_shows_rate_and_eta():
    import io

    stream = io.StringIO()
    progress = Progress("predicting", total=100, unit="images", stream=stream, interval=0)
    progress.update(10)
    assert "images/s" in stream.getvalue() and "ETA" in stream.getvalue()


def test_progress_ends_with_the_final_count_once():
    import io

    stream = io.StringIO()
    progress = Progress("extracting", total=4, unit="images", stream=stream, interval=0)
    progress.update(2)
    progress.update(2)  # shown at once: interval 0
    progress.close()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [lines[0], lines[1]] and lines[1].startswith("extracting: 4/4 images")
    quiet = io.StringIO()
    slow = Progress("decoding", total=4, unit="images", stream=quiet, interval=3600)
    slow.update(4)
    slow.close()
    assert quiet.getvalue().count("decoding: 4/4 images") == 1


@pytest.mark.parametrize("left", ["path,label,p_cat,p_dog,novelty,error\n", "path,label,p_c"])
def test_resume_after_only_the_header_writes_it_once(tiny_run: Path, photo_folder: Path, tmp_path: Path, left: str):
    """What Ctrl-C right after the header leaves (or during it): one header, then every row."""
    out = tmp_path / "p.csv"
    out.write_text(left)
    summary = stream_predictions(Predictor(tiny_run), [photo_folder], out, resume=True, progress=False)
    lines = out.read_text().splitlines()
    assert summary.skipped == 0 and summary.written == 12 and len(lines) == 13
    assert lines.count("path,label,p_cat,p_dog,novelty,error") == 1


def test_resume_of_a_file_that_is_not_text_is_one_line(tiny_run: Path, photo_folder: Path, tmp_path: Path):
    out = tmp_path / "g.csv"
    out.write_bytes(b"path,label\n\xff\xfe\x00garbage\n")
    with pytest.raises(UsageError, match=f"{out} is not a predict CSV") as error:
        stream_predictions(Predictor(tiny_run), [photo_folder], out, resume=True, progress=False)
    assert error.value.parameter == "output" and "\n" not in str(error.value)
    assert out.read_bytes() == b"path,label\n\xff\xfe\x00garbage\n"


@pytest.mark.parametrize("flags, words", [
    (["--output", "OUT", "--resume", "--format", "json"], "--output writes CSV: --format json cannot be streamed"),
    (["--resume"], "--resume needs --output FILE"),
    (["--output", "GARBAGE", "--resume"], "is not a predict CSV"),
])
def test_cli_predict_output_misuse_is_one_accurate_line(tiny_run: Path, photo_folder: Path, tmp_path: Path,
                                                        capsys, flags: list[str], words: str):
    from catsdogs.cli import main

    (tmp_path / "g.csv").write_bytes(b"\xff\xfe garbage")
    paths = {"OUT": str(tmp_path / "o.csv"), "GARBAGE": str(tmp_path / "g.csv")}
    assert main(["predict", str(tiny_run), str(photo_folder), *[paths.get(f, f) for f in flags]]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
