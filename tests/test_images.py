"""Safe decoding: every kind of odd or bad file gets a precise reason, readable odd ones become RGB."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from catsdogs.images import ImageError, decode_image, decode_many, decode_workers, encode_jpeg, load_image


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


def test_plain_jpeg_is_kept_as_is():
    data = encode_jpeg(np.full((40, 50, 3), 120, np.uint8))
    decoded = decode_image(data)
    assert decoded.pixels.shape == (40, 50, 3) and decoded.original_format == "JPEG"
    assert not decoded.converted


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P"])
def test_odd_modes_become_rgb(mode):
    image = Image.new("RGB", (40, 40), (200, 10, 10)).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    decoded = decode_image(encoded(image, fmt))
    assert decoded.pixels.shape == (40, 40, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.converted


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert decode_image(encoded(image, "PNG")).pixels.min() == 255


def test_exif_rotation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    data = encoded(Image.new("RGB", (60, 40), (0, 200, 0)), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data)
    assert decoded.pixels.shape == (60, 40, 3) and decoded.converted


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is a text file, not a photo", "not an image"),
    (encode_jpeg(np.zeros((20, 100, 3), np.uint8)), "too small"),
    (png_header_only(20_000, 20_000), "too large"),
    (png_header_only(12_000, 9_000), "too large"),  # about 100 megapixels
])
def test_bad_files_get_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = encode_jpeg(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="cannot decode"):
        decode_image(data[: len(data) // 2])


def test_load_image_resizes_and_reports_missing_files(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(encode_jpeg(np.full((80, 60, 3), 50, np.uint8)))
    assert load_image(path, 32).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")


def test_draft_mode_decodes_a_large_jpeg_at_the_size_asked(tmp_path):
    from catsdogs.images import decode_image, load_image, resize

    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((1600, 1200), Image.BICUBIC))  # smooth, like a photo
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=92)
    drafted = decode_image(path.read_bytes(), at_least=100)
    assert min(drafted.pixels.shape[:2]) >= 100 and drafted.pixels.shape[1] <= 1600 // 4  # decoded at 1/8..1/4
    full = resize(decode_image(path.read_bytes()).pixels, 100)
    quick = load_image(path, 100)
    assert quick.shape == (100, 100, 3)
    assert np.abs(quick.astype(int) - full.astype(int)).mean() < 3  # the same picture


def test_decode_many_keeps_order_counts_and_raises_the_first_failure(tmp_path):
    paths = []
    for index, shade in enumerate((0, 120, 250)):
        path = tmp_path / f"{index}.png"
        path.write_bytes(encoded(Image.new("RGB", (40, 36), (shade, shade, shade)), "PNG"))
        paths.append(path)
    done = []
    images = decode_many(paths, 32, workers=3, on_each=lambda: done.append(1))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert [int(image.mean()) for image in images] == [0, 120, 250] and len(done) == 3
    out = np.zeros((3, 32, 32, 3), np.uint8)
    assert decode_many(paths, 32, out=out) is out and int(out[2].mean()) == 250
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot decode"):
        decode_many([*paths, tmp_path / "bad.png"], 32)
    assert decode_workers(5) == 5 and decode_workers() >= 2
