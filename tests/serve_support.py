"""Helpers for the serve tests: a tiny trained RUN and photos (synthetic, or real ones from the default data)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import SHARED_ZIP

TINY_IMAGE_SIZE = 48  # the baseline's four conv+pool blocks need at least 48 px


def synthetic_jpeg(seed: int, color: tuple[int, int, int], size: int = 64) -> bytes:
    """A noisy single-colour JPEG (different seeds give different images)."""
    rng = np.random.default_rng(seed)
    pixels = (rng.normal(0, 40, (size, size, 3)) + color).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_tiny_run(root: Path) -> Path:
    """Prepare a 24-photo DATA and train the baseline for one epoch at 48 px; returns RUN."""
    from catsdogs.preparation import prepare
    from catsdogs.training import TrainOptions, train

    source = root / "source"
    for name, color in (("cat", (200, 70, 60)), ("dog", (60, 80, 200))):
        (source / name).mkdir(parents=True)
        for i in range(12):
            (source / name / f"{name}{i}.jpg").write_bytes(synthetic_jpeg(i + (100 if name == "dog" else 0), color))
    prepare(source, root / "data", train=12, val=6, test=6)
    return train(TrainOptions(data=root / "data", model="baseline", out=root / "run", epochs=1,
                              image_size=TINY_IMAGE_SIZE))


def png_bomb(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side pixels, with almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def real_photos(out: Path, names: list[str]) -> list[Path] | None:
    """Extract `train/<name>` photos from the default data zip into `out`; None when the zip is absent."""
    if not SHARED_ZIP.exists():
        return None
    found = SHARED_ZIP
    paths = []
    with zipfile.ZipFile(found) as archive:
        members = set(archive.namelist())
        for name in names:
            member = next((m for m in (f"train/{name}", name) if m in members), None)
            if member is None:
                return None
            path = out / Path(member).name
            path.write_bytes(archive.read(member))
            paths.append(path)
    return paths
