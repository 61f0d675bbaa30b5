"""Phone exports: HEIC/AVIF read everywhere, junk (sidecars, movies, hidden files, thumbnails) skipped and
counted, bursts kept in one split, bad phone files rejected (never a crash)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.errors import UsageError
from catsdogs.images import decode_image, register_openers
from catsdogs.preparation import prepare
from catsdogs.sources import iter_image_files, not_a_photo

EXIF_TIME, EXIF_MAKE, EXIF_MODEL, EXIF_IFD, ORIENTATION = 0x9003, 0x010F, 0x0110, 0x8769, 0x0112


def save(path: Path, pixels: np.ndarray, fmt: str, exif: Image.Exif | None = None) -> Path:
    register_openers()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **({"exif": exif.tobytes()} if exif is not None else {}))
    return path


def phone_exif(when: str, model: str = "iPhone 15") -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_MAKE], exif[EXIF_MODEL] = "Apple", model
    exif.get_ifd(EXIF_IFD)[EXIF_TIME] = when
    return exif


def pixels_of(kind: int, index: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """helpers.make_photo's pixels: class `kind` bright in its half, with noise."""
    width, height = size
    pixels = np.random.default_rng(index * 2 + kind).integers(0, 60, (height, width, 3), dtype=np.uint8)
    pixels[:, kind * width // 2:(kind + 1) * width // 2] += 180
    return pixels


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def phone_export(root: Path) -> dict[str, list[str]]:
    """Two class folders as a phone exports them; returns the photo files of each kind of content."""
    made: dict[str, list[str]] = {"photos": [], "burst": []}
    for kind, name in enumerate(("Cats", "Dogs")):
        for i in range(8):
            fmt, suffix = [("HEIF", ".HEIC"), ("AVIF", ".avif"), ("JPEG", ".JPG"), ("HEIF", ".heif")][i % 4]
            save(root / name / f"IMG_{kind}{i:03d}{suffix}", pixels_of(kind, i), fmt,
                 phone_exif(f"2024:05:0{kind + 1} 1{i}:00:00"))
            made["photos"].append(f"{name}/IMG_{kind}{i:03d}{suffix}")
        (root / name / f"IMG_{kind}000.AAE").write_text("<plist>adjustments</plist>")
        (root / name / f"IMG_{kind}000.MOV").write_bytes(b"\0\0\0\x14ftypqt  " + b"\0" * 64)
        (root / name / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 32)
        (root / name / f"._IMG_{kind}001.JPG").write_bytes(b"\0\5\x16\7" + b"\0" * 60)
        save(root / name / "@eaDir" / "SYNOPHOTO_THUMB_S.jpg", pixels_of(kind, 50), "JPEG")
    base = pixels_of(0, 99, (96, 80)).astype(int)
    for frame in range(5):  # a burst: 5 near-identical frames, 1 s apart, same camera
        noise = np.random.default_rng(frame).integers(-3, 4, base.shape)
        save(root / "Cats" / f"IMG_9{frame:03d}.JPG", np.clip(base + noise, 0, 255).astype(np.uint8), "JPEG",
             phone_exif(f"2024:06:01 12:00:0{frame}"))
        made["burst"].append(f"Cats/IMG_9{frame:03d}.JPG")
    return made


def test_heic_and_avif_decode_upright():
    register_openers()
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # white on the left; orientation 6: shown rotated 90 degrees clockwise, white on top
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    for fmt in ("HEIF", "AVIF"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, exif=exif.tobytes(), quality=95)
        decoded = decode_image(buffer.getvalue())
        assert decoded.original_format == fmt and decoded.pixels.shape == (80, 40, 3), fmt
        assert decoded.pixels[2, 20].min() > 200 and decoded.pixels[-3, 20].max() < 60, fmt


def test_not_a_photo_reasons():
    assert not_a_photo("a/IMG_1.AAE") == "not a photo: sidecar (.aae)"
    assert not_a_photo("a/IMG_1.MOV") == "not a photo: movie (.mov)"
    assert not_a_photo("a/clip.Mp4") == "not a photo: movie (.mp4)"
    assert not_a_photo("a/.DS_Store") == "hidden file"
    assert not_a_photo("a/._IMG_1.jpg") == "hidden file (AppleDouble)"
    assert not_a_photo("a/THUMBS.DB").startswith("thumbnail cache")
    assert not_a_photo("a/@eaDir/x.jpg") == "thumbnail folder (@eaDir)"
    assert not_a_photo("a/.thumbnails/x.jpg") == "thumbnail folder (.thumbnails)"
    assert not_a_photo("a/IMG_1.HEIC") is None and not_a_photo("a/IMG_1.JPG") is None


def test_phone_export_prepared_with_nothing_lost(tmp_path):
    made = phone_export(tmp_path / "export")
    summary = prepare(tmp_path / "export", tmp_path / "data", seed=3)
    kept = rows(tmp_path / "data" / "manifest.csv")
    assert {r["source"] for r in kept} == set(made["photos"] + made["burst"]), "every photo kept, HEIC/AVIF/.JPG"
    reasons = {r["source"]: r["reason"] for r in rows(tmp_path / "data" / "rejected.csv")}
    assert reasons["Cats/IMG_0000.AAE"] == "not a photo: sidecar (.aae)"
    assert reasons["Dogs/IMG_1000.MOV"] == "not a photo: movie (.mov)"
    assert reasons["Cats/.DS_Store"] == "hidden file"
    assert reasons["Dogs/._IMG_1001.JPG"] == "hidden file (AppleDouble)"
    assert reasons["Cats/@eaDir/SYNOPHOTO_THUMB_S.jpg"] == "thumbnail folder (@eaDir)"
    assert len(reasons) == 10 and summary.skipped == 10 and summary.rejected == 0
    assert "skipped 10 not photos" in summary.line()
    assert summary.scanned == len(made["photos"]) + len(made["burst"]) + 10
    assert all(Image.open(tmp_path / "data" / r["path"]).format == "JPEG" for r in kept)


def test_bad_phone_files_are_rejected_rows(tmp_path):
    source = tmp_path / "export"
    for kind, name in enumerate(("Cats", "Dogs")):
        for i in range(6):
            save(source / name / f"{i}.heic", pixels_of(kind, i), "HEIF")
    good = save(tmp_path / "good.avif", pixels_of(0, 40, (200, 160)), "AVIF").read_bytes()
    (source / "Cats" / "truncated.avif").write_bytes(good[: len(good) // 2])
    ftyp_only = bytes.fromhex("00000018") + b"ftypheic" + b"\0\0\0\0" + b"mif1heic"  # a HEIC with no image data
    (source / "Dogs" / "empty.HEIC").write_bytes(ftyp_only)
    summary = prepare(source, tmp_path / "data", seed=1)
    reasons = {r["source"]: r["reason"] for r in rows(tmp_path / "data" / "rejected.csv")}
    assert reasons["Cats/truncated.avif"].startswith("cannot decode")
    assert reasons["Dogs/empty.HEIC"].startswith("cannot decode")
    assert summary.rejected == 2 and sum(sum(c.values()) for c in summary.counts.values()) == 12


def test_predict_folder_walk_lists_phone_photos_and_skips_junk(tmp_path):
    phone_export(tmp_path / "export")
    found = {p.relative_to(tmp_path / "export").as_posix() for p in iter_image_files([tmp_path / "export"])}
    assert "Cats/IMG_0000.HEIC" in found and "Cats/IMG_0001.avif" in found and "Cats/IMG_0002.JPG" in found
    assert not any(not_a_photo(p) for p in found) and len(found) == 21


def test_burst_lands_in_one_split(tmp_path):
    made = phone_export(tmp_path / "export")
    summary = prepare(tmp_path / "export", tmp_path / "data", seed=3, val=0.3, test=0.3)
    split_of = {r["source"]: r["split"] for r in rows(tmp_path / "data" / "manifest.csv")}
    assert len({split_of[p] for p in made["burst"]}) == 1, "a burst's frames must not be spread over splits"
    assert summary.groups_kept >= 1 and summary.grouped_photos >= 5 and "groups together" in summary.audit_line()
    record = json.loads((tmp_path / "data" / "prepare.json").read_text())
    assert record["group"] == "near+burst" and record["groups_kept"] == summary.groups_kept


def burst_source(root: Path, frames: int = 12, start: int = 0) -> Path:
    """Two classes of 12 unrelated photos; the cats are one burst (one camera, 1 s apart) by EXIF only."""
    for kind, name in enumerate(("Cats", "Dogs")):
        for i in range(frames):
            exif = phone_exif(f"2024:06:01 12:00:{i:02d}") if kind == 0 else None
            save(root / name / f"{i}.jpg", pixels_of(kind, start + i), "JPEG", exif)
    return root


@pytest.mark.parametrize("group, together", [("burst", True), ("near+burst", True), ("near", False), ("none", False)])
def test_group_modes(tmp_path, group, together):
    burst_source(tmp_path / "src")
    summary = prepare(tmp_path / "src", tmp_path / "data", seed=5, val=0.25, test=0.25, group=group)
    cats = {r["split"] for r in rows(tmp_path / "data" / "manifest.csv") if r["class"] == "cat"}
    assert (len(cats) == 1) is together and (summary.groups_kept == 1) is together
    if not together:
        assert summary.counts["validation"]["cat"] == 3 and summary.counts["test"]["cat"] == 3


def test_given_splits_are_kept_and_bad_group_refused(tmp_path):
    for start, split in enumerate(("train", "test")):
        burst_source(tmp_path / "src" / split, frames=6, start=start * 100)
    prepare(tmp_path / "src", tmp_path / "data", seed=5)
    splits = {r["source"].split("/")[0] + ">" + r["split"] for r in rows(tmp_path / "data" / "manifest.csv")}
    assert "test>test" in splits and "test>train" not in splits and "train>test" not in splits
    with pytest.raises(UsageError, match="group must be one of"):
        prepare(tmp_path / "src", tmp_path / "data2", group="bursts")
