"""Hostile and careless inputs (issue 22, items 1-3 and 10): nothing blocks, nothing outside SOURCE is read,
nothing is read unbounded, each bad file gets its row with the reason, and the rest of the work is done."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from catsdogs.cli import main
from catsdogs.errors import UsageError
from catsdogs.images import ImageError, read_photo_bytes
from catsdogs.predict import Predictor
from catsdogs.preparation import prepare
from catsdogs.sources import iter_image_files
from catsdogs.stream import stream_predictions

from helpers import make_class_folders, make_photo

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX files (FIFOs, /dev/zero)")


@pytest.fixture(autouse=True)
def alarm():
    """A regression that blocks on a FIFO or reads /dev/zero fails after 20 s instead of hanging."""
    def expire(signum, frame):
        raise TimeoutError("blocked: a hostile file was read without bounds")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def rejected(data: Path) -> dict[str, str]:
    with open(data / "rejected.csv", newline="") as handle:
        return {row["source"]: row["reason"] for row in csv.DictReader(handle)}


def manifest_sources(data: Path) -> set[str]:
    with open(data / "manifest.csv", newline="") as handle:
        return {row["source"] for row in csv.DictReader(handle)}


def tree_digest(root: Path) -> str:
    """Names, kinds, link targets and regular files' bytes: what a read-only prepare must leave unchanged."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file() and path.stat().st_size < 2**20:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def hostile_files(folder: Path, outside: Path) -> None:
    """x.jpg -> /dev/zero, a FIFO p.jpg, a sparse 2 GB big.jpg, and a link to a photo outside SOURCE."""
    (folder / "x.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "p.jpg")
    with open(folder / "big.jpg", "wb") as handle:
        handle.truncate(2 * 2**30)  # sparse: costs no disk
    (folder / "leak.jpg").symlink_to(make_photo(outside / "secret.jpg", 0, 99))


def test_read_photo_bytes_refuses_before_reading(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    hostile_files(root, tmp_path / "outside")
    make_photo(root / "ok.jpg", 0, 1)
    (root / "inside.jpg").symlink_to(root / "ok.jpg")
    assert read_photo_bytes(root / "inside.jpg", root=root) == (root / "ok.jpg").read_bytes()
    expected = {"x.jpg": "symlink leaves SOURCE", "p.jpg": "not a regular file (FIFO)",
                "big.jpg": "larger than 64 MB", "leak.jpg": "symlink leaves SOURCE"}
    for name, reason in expected.items():
        with pytest.raises(ImageError, match=rf"^{reason.replace('(', '[(]').replace(')', '[)]')}$"):
            read_photo_bytes(root / name, root=root)
    assert read_photo_bytes(root / "leak.jpg")  # without a root (predict), a link to a photo is followed
    with pytest.raises(ImageError, match="^not a regular file [(]character device[)]$"):
        read_photo_bytes(root / "x.jpg")
    with pytest.raises(ImageError, match="^larger than 100 bytes$"):
        read_photo_bytes(root / "ok.jpg", limit=100)
    with pytest.raises(ImageError, match="not a regular file [(]folder[)]"):
        read_photo_bytes(tmp_path)


def test_prepare_rejects_hostile_files_and_prepares_the_rest(tmp_path):
    source = make_class_folders(tmp_path / "source", per_class=10)
    hostile_files(source / "Cats", tmp_path / "outside")
    before = tree_digest(source)
    summary = prepare(source, tmp_path / "data", val=4, test=4)
    reasons = rejected(tmp_path / "data")
    assert reasons["Cats/x.jpg"] == "symlink leaves SOURCE"  # to /dev/zero
    assert reasons["Cats/p.jpg"] == "not a regular file (FIFO)"
    assert reasons["Cats/big.jpg"] == "larger than 64 MB"
    assert reasons["Cats/leak.jpg"] == "symlink leaves SOURCE"
    assert sum(sum(counts.values()) for counts in summary.counts.values()) == 20
    assert not any("secret" in path or "leak" in path for path in manifest_sources(tmp_path / "data"))
    assert tree_digest(source) == before
    record = json.loads((tmp_path / "data" / "prepare.json").read_text())
    assert record["given_splits"] == [] and record["carved_splits"] == ["validation", "test"]


def corrupt_zip(path: Path, photos: list[Path]) -> Path:
    """A zip of `photos` (deflated) whose first entry's compressed data has bytes flipped, plus `../evil.jpg`
    and an absolute `/abs.jpg`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for photo in photos:
            archive.write(photo, f"{photo.parent.name}/{photo.name}")
        archive.writestr("../evil.jpg", photos[0].read_bytes())
        archive.writestr("/abs.jpg", photos[0].read_bytes())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        first = archive.infolist()[0]
    start = first.header_offset + 30 + len(first.filename.encode()) + len(first.extra)
    for offset in range(start + 10, start + 40):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_one_corrupt_zip_entry_is_rejected_and_the_rest_prepared(tmp_path):
    folders = make_class_folders(tmp_path / "photos", per_class=10)
    photos = sorted(folders.rglob("*.jpg"))
    archive = corrupt_zip(tmp_path / "photos.zip", photos)
    first = f"{photos[0].parent.name}/{photos[0].name}"
    summary = prepare(archive, tmp_path / "data", val=4, test=4)
    reasons = rejected(tmp_path / "data")
    assert reasons[first].startswith("corrupt zip entry: ")
    assert reasons["../evil.jpg"].startswith("unsafe path") and reasons["/abs.jpg"].startswith("unsafe path")
    assert sum(sum(counts.values()) for counts in summary.counts.values()) == 19
    assert not (tmp_path / "evil.jpg").exists()


def test_zip_entry_with_a_bad_crc_or_over_the_limit(tmp_path, monkeypatch):
    import catsdogs.sources as sources

    folders = make_class_folders(tmp_path / "photos", per_class=6)
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as handle:
        for photo in sorted(folders.rglob("*.jpg")):
            handle.write(photo, f"{photo.parent.name}/{photo.name}")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as handle:
        info = handle.getinfo("Cats/cat-000.jpg") if "Cats/cat-000.jpg" in handle.namelist() else handle.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size - 3] ^= 0xFF  # stored bytes changed: only the CRC notices
    archive.write_bytes(bytes(data))
    monkeypatch.setattr(sources, "MAX_ENTRY_BYTES", 300)  # every photo is now too large: refused unread
    readers, refused = sources._list_zip(archive)
    assert not readers and len(refused) == 12 and {reason for _, reason in refused} == {"larger than 300 bytes"}
    monkeypatch.undo()
    prepare(archive, tmp_path / "data", val=2, test=2)
    assert rejected(tmp_path / "data")[info.filename] == "corrupt zip entry: Bad CRC-32 for file " \
        f"'{info.filename}'"


def test_zip_names_too_long_repeated_or_a_truncated_archive(tmp_path, capsys):
    import warnings

    folders = make_class_folders(tmp_path / "photos", per_class=8)
    photos = sorted(folders.rglob("*.jpg"))
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names
        for photo in photos[1:]:
            handle.write(photo, f"{photo.parent.name}/{photo.name}")
        handle.write(photos[0], f"{photos[0].parent.name}/{'A' * 300}.jpg")  # past a file system's 255 bytes
        for photo in (photos[1], photos[-1]):  # a cat and a dog under one name
            handle.write(photo, "Cats/twice.jpg")
    prepare(archive, tmp_path / "data", val=2, test=2)
    reasons = rejected(tmp_path / "data")
    assert reasons["Cats/twice.jpg"] == "the zip holds more than one entry of this name: none is read"
    long_names = [p.name for p in (tmp_path / "data").rglob("AAAA*.jpg")]
    assert len(long_names) == 1 and len(long_names[0].encode()) < 255
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[:2000])
    assert main(["prepare", str(truncated), "--out", str(tmp_path / "d2")]) == 2
    assert "a corrupt or truncated zip archive" in capsys.readouterr().err


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *rows])
    return path


def test_csv_paths_stay_inside_its_folder_and_bad_labels_are_rows(tmp_path):
    root = tmp_path / "csvsource"
    photos = [make_photo(root / "images" / f"{i}.jpg", i % 2, i) for i in range(16)]
    outside = make_photo(tmp_path / "outside.jpg", 0, 77)
    (root / "images" / "link.jpg").symlink_to(outside)
    rows = [[f"images/{p.name}", "cat" if i % 2 == 0 else "dog"] for i, p in enumerate(photos[:12])]
    rows += [["../outside.jpg", "cat"], [str(outside), "dog"], ["images/link.jpg", "cat"],
             ["images/12.jpg", "cat"], ["images/12.jpg", "dog"],  # conflicting: both rows refused
             ["images/13.jpg", "b" * 10_000], ["images/14.jpg", ".hidden"], ["images/15.jpg", "a/b"],
             ["images/15.jpg", ""]]
    labels = write_csv(root / "labels.csv", rows)
    before = tree_digest(root)
    summary = prepare(labels, tmp_path / "data", val=2, test=2)
    assert summary.classes == ["cat", "dog"] and sum(sum(c.values()) for c in summary.counts.values()) == 12
    with open(tmp_path / "data" / "rejected.csv", newline="") as handle:
        found = [(row["source"], row["reason"]) for row in csv.DictReader(handle)]
    reasons = dict(found)
    assert "leaves the CSV's folder" in reasons["labels.csv line 14"]
    assert "leaves the CSV's folder" in reasons["labels.csv line 15"]
    assert reasons["images/link.jpg"] == "symlink leaves the CSV's folder"
    conflicts = [reason for source, reason in found if source == "images/12.jpg"]
    assert len(conflicts) == 2 and all(r.startswith("conflicting labels in CSV") for r in conflicts)
    assert reasons["labels.csv line 19"] == "label longer than 100 characters (10000)"
    assert "cannot be a folder name" in reasons["labels.csv line 20"]
    assert "cannot be a folder name" in reasons["labels.csv line 21"]
    assert reasons["labels.csv line 22"] == "empty label"
    assert all(len(reason) < 160 and "\n" not in reason for _, reason in found)
    used = manifest_sources(tmp_path / "data")
    assert "images/12.jpg" not in used and not any("outside" in path or "link" in path for path in used)
    assert tree_digest(root) == before

    opted = prepare(labels, tmp_path / "opted", val=2, test=2, allow_outside=True)
    assert sum(sum(c.values()) for c in opted.counts.values()) == 13  # outside.jpg by 3 names: kept once
    assert {"../outside.jpg", str(outside)} & manifest_sources(tmp_path / "opted")


def test_train_less_class_and_all_carved_splits(tmp_path):
    source = tmp_path / "presplit"
    for split, per_class in (("train", 8), ("val", 3)):
        for kind, name in enumerate(("cat", "dog")):
            for i in range(per_class):
                make_photo(source / split / name / f"{i}.jpg", kind, i + 100 * (split == "val"))
    for i in range(5):
        make_photo(source / "val" / "bird" / f"{i}.jpg", 0, 500 + i, kinds=3)
    with pytest.raises(UsageError, match=r"^class 'bird' has no usable training photos \(SOURCE gives it "
                                         r"validation 5\)"):
        prepare(source, tmp_path / "data")


def test_predict_folder_rows_for_hostile_and_unsupported_files(tmp_path):
    folder = tmp_path / "photos"
    make_photo(folder / "a.jpg", 0, 1)
    make_photo(folder / "b.png", 1, 2, fmt="PNG")
    (folder / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "notes.txt").write_text("not a photo")
    hostile_files(folder, tmp_path / "outside")
    names = [p.name for p in iter_image_files([folder])]
    assert "drawing.svg" in names and "notes.txt" not in names

    class FixedPredictor(Predictor):
        def __init__(self):  # no model: a constant forward pass, to test the walk and the reads
            self.classes, self.image_size, self.batch_size, self.tta, self.threshold = ["cat", "dog"], 32, 3, False, 0.5
            self.forward = lambda images: np.full((len(images), 1), 0.7, np.float32)
            self.trust = None  # no calibration.json: probabilities as the model gives them

    out = tmp_path / "predictions.csv"
    summary = stream_predictions(FixedPredictor(), [folder], out, progress=False)
    with open(out, newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    assert rows["a.jpg"]["label"] == rows["b.png"]["label"] == "dog"
    assert rows["drawing.svg"]["error"] == "not a supported image type (.svg)"
    assert rows["x.jpg"]["error"] == "not a regular file (character device)"
    assert rows["p.jpg"]["error"] == "not a regular file (FIFO)"
    assert rows["big.jpg"]["error"] == "larger than 64 MB"
    assert rows["leak.jpg"]["label"] == "dog"  # predict reads what it is given, links included
    assert "notes.txt" not in rows and summary.errors == 4


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["fifo_source", "all_rows_outside", "garbage_csv", "long_label_only"])
def test_cli_bad_input_is_exit_2_with_one_line(tmp_path, capsys, case):
    if case == "fifo_source":
        source = tmp_path / "source.zip"
        os.mkfifo(source)
    elif case == "all_rows_outside":
        make_photo(tmp_path / "a.jpg", 0, 1)
        make_photo(tmp_path / "b.jpg", 1, 2)
        (tmp_path / "csv").mkdir()
        source = write_csv(tmp_path / "csv" / "labels.csv", [["../a.jpg", "cat"], ["/etc/passwd", "dog"],
                                                             ["../b.jpg", "dog"]])
    elif case == "garbage_csv":
        source = tmp_path / "labels.csv"
        source.write_bytes(b"\xff\xfe" + os.urandom(200))
    else:
        make_photo(tmp_path / "a.jpg", 0, 1)
        source = write_csv(tmp_path / "labels.csv", [["a.jpg", "x" * 10_000], ["a.jpg", "y" * 10_000]])
    code, err = run_cli(["prepare", str(source), "--out", str(tmp_path / "data")], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and len(err) < 400 and "Traceback" not in err
    assert not (tmp_path / "data" / "manifest.csv").exists()


def test_cli_flag_allows_outside_csv_paths(tmp_path, capsys):
    for i in range(12):
        make_photo(tmp_path / "photos" / f"{i}.jpg", i % 2, i)
    (tmp_path / "csv").mkdir()
    source = write_csv(tmp_path / "csv" / "labels.csv",
                       [[f"../photos/{i}.jpg", ("cat", "dog")[i % 2]] for i in range(12)])
    assert main(["prepare", str(source), "--out", str(tmp_path / "refused")]) == 2
    capsys.readouterr()
    assert main(["prepare", str(source), "--out", str(tmp_path / "data"), "--allow-outside-csv-paths",
                 "--val", "2", "--test", "2"]) == 0
    assert "prepared" in capsys.readouterr().out


def test_cli_prepare_of_a_hostile_folder_in_a_subprocess(tmp_path):
    """The whole command, as a user runs it: exit 0, the summary, no hang, no memory blow-up."""
    source = make_class_folders(tmp_path / "source", per_class=6)
    hostile_files(source / "Dogs", tmp_path / "outside")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run([os.sys.executable, "-m", "catsdogs.cli", "prepare", str(source), "--out",
                             str(tmp_path / "data"), "--val", "2", "--test", "2"], capture_output=True,
                            text=True, timeout=18, env=env)
    assert result.returncode == 0, result.stderr
    assert "rejected 4" in result.stdout and "Traceback" not in result.stderr
    assert io.StringIO(result.stdout).readline().startswith("prepared ")


def test_a_symlinked_class_folder_is_not_followed_and_said(tmp_path, caplog):
    from catsdogs.sources import scan_source

    make_class_folders(tmp_path / "photos", per_class=4, names=("cat", "dog", "fox"))
    outside = make_class_folders(tmp_path / "elsewhere", per_class=4, names=("owl",))
    (tmp_path / "photos" / "owl").symlink_to(outside / "owl")
    scan = scan_source(tmp_path / "photos")
    assert {f.class_name for f in scan.files} == {"cat", "dog", "fox"}
    assert "a symlinked folder, not followed" in caplog.text and "owl" in caplog.text
