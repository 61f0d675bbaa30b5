"""Safe image decoding: every photo that enters catsdogs goes through `decode_image`."""

from __future__ import annotations

import functools
import io
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from catsdogs.errors import one_line

MIN_SIDE = 32
MAX_PIXELS = 50_000_000  # well above any photo; a 100-megapixel image or a bomb is refused
MAX_FILE_BYTES = 64 * 1024 * 1024
BATCH_PIXELS = 16 * 260 * 260  # a forward batch's pixels: 16 photos at 260 px (EfficientNet-Lite2's size)
REDUCE_ABOVE = 12_000_000  # pixels: a bigger non-JPEG image needed at `at_least` is reduced right after decoding
ORIENTATION_TAG = 0x0112


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message is the reason (one line)."""


FILE_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
              (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


@functools.cache
def register_openers() -> tuple[str, ...]:
    """Teach Pillow the phone formats once: HEIC/HEIF through `pillow-heif`; AVIF through Pillow itself (11.3+),
    else through `pillow-avif-plugin` when installed. Returns the formats that are readable."""
    from PIL import features

    readable = []
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        readable.append("HEIF")
    except ImportError:  # a default dependency: only a broken install lacks it, and such files are then rejected
        pass
    if not features.check("avif"):
        try:
            import pillow_avif  # noqa: F401  (registers itself)
        except ImportError:
            pass
    if features.check("avif") or "AVIF" in Image.registered_extensions().values():
        readable.append("AVIF")
    return tuple(readable)


def size_limit_reason(limit: int = MAX_FILE_BYTES) -> str:
    """The one reason given for a file over `limit` bytes."""
    return f"larger than {limit // 2**20} MB" if limit >= 2**20 else f"larger than {limit} bytes"


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def read_photo_bytes(path: str | os.PathLike, limit: int = MAX_FILE_BYTES, root: str | os.PathLike | None = None,
                     root_name: str = "SOURCE") -> bytes:
    """The bytes of the photo file at `path`, read safely, or `ImageError` with the reason (one line).

    `lstat` first: only regular files are read (a FIFO, a device or a socket is refused without opening it);
    with `root`, the file (after any symlink) must lie inside `root`; the size is checked before reading, and
    at most `limit` + 1 bytes are ever read (a file growing meanwhile is still refused).
    """
    path = os.fspath(path)
    try:
        info = os.lstat(path)
        is_link = stat.S_ISLNK(info.st_mode)
        target = path
        if root is not None:
            target = os.path.realpath(path)
            if not _inside(target, os.path.realpath(root)):
                raise ImageError(f"{'symlink' if is_link else 'path'} leaves {root_name}")
        if is_link:
            info = os.stat(target)
        _check_kind(info, limit)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        descriptor = os.open(target, flags)
        with os.fdopen(descriptor, "rb") as handle:
            _check_kind(os.fstat(handle.fileno()), limit)  # the file opened is the file checked
            data = handle.read(limit + 1)
    except OSError as error:
        raise ImageError(f"cannot read: {error.strerror or error}") from None
    if len(data) > limit:
        raise ImageError(size_limit_reason(limit))
    return data


def _check_kind(info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "special file")
        raise ImageError(f"not a regular file ({kind})")
    if info.st_size > limit:
        raise ImageError(size_limit_reason(limit))


@dataclass(frozen=True)
class DecodedImage:
    """A fully decoded RGB photo and what we learned about the original file."""

    pixels: np.ndarray  # uint8, H x W x 3
    original_format: str
    converted: bool  # True when the stored pixels differ from a plain RGB decode (mode, rotation)
    original_pixels: int = 0  # width x height of the file (before any draft or reduction)


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE,
                 at_least: int | None = None) -> DecodedImage:
    """Decode `data` completely into an upright RGB array, or raise `ImageError` with the reason.

    The header is checked against `max_pixels` before any pixel is decoded, so a decompression bomb
    never reaches memory. EXIF orientation is applied; grayscale, palette, RGBA and CMYK become RGB.
    `at_least`: the photo is only needed at this many pixels a side; a JPEG is then decoded in draft mode
    (scaled by 1/2, 1/4 or 1/8 inside the decoder, never below `at_least`), several times faster; another
    format over REDUCE_ABOVE pixels is reduced by an integer factor (box filter, never below `at_least`) right
    after decoding, before any conversion: a 49-megapixel PNG costs one decode, not five full-size copies.
    """
    if not data:
        raise ImageError("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(size_limit_reason())
    register_openers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"too large: {width}x{height} pixels (limit {max_pixels:,})")
            if min(width, height) < min_side:
                raise ImageError(f"too small: {width}x{height} (minimum {min_side} px a side)")
            fmt = image.format or "unknown"
            mode = image.mode
            if at_least and fmt == "JPEG":
                image.draft("RGB", (at_least, at_least))
            image.load()  # full decode: truncated files fail here
            factor = min(width, height) // at_least if at_least and fmt != "JPEG" else 0
            if width * height > REDUCE_ABOVE and factor >= 2 and image.mode in ("RGB", "RGBA", "L", "LA", "I",
                                                                                 "F", "CMYK", "I;16"):
                image = image.reduce(factor)
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
            converted = orientation != 1 or mode != "RGB"
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "P", "PA"):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            rgb = image.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"too large: more than {max_pixels:,} pixels (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as error:  # PIL's (and libheif's) "not an image"
        reason = one_line(error, first_line=True)
        if "cannot identify image file" in reason:
            reason = "not an image"
        raise ImageError(f"cannot decode: {reason}") from None
    return DecodedImage(pixels=np.asarray(rgb, dtype=np.uint8), original_format=fmt, converted=converted,
                        original_pixels=width * height)


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB array to size x size (aspect ratio not kept, as Keras' loaders do)."""
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image file (`read_photo_bytes`) into a uint8 RGB array, resized to `size` x `size` when given."""
    data = read_photo_bytes(path)
    pixels = decode_image(data, at_least=size).pixels
    return resize(pixels, size) if size else pixels


def decode_workers(workers: int | None = None) -> int:
    """The threads that decode photos: `workers`, or by default one per core (at least 2; Pillow decodes
    without the GIL)."""
    return workers if workers is not None else max(2, os.cpu_count() or 2)


def decode_many(paths: Sequence[str | Path], size: int, workers: int | None = None, *,
                decode: Callable[[str | Path, int], np.ndarray] | None = None, out: np.ndarray | None = None,
                on_each: Callable[[], object] | None = None) -> np.ndarray:
    """`paths` decoded and resized to `size` x `size` on `decode_workers(workers)` threads, as one uint8 array
    in `paths`' order (written into `out` when given). `decode` defaults to `load_image`; `on_each` is called
    after each photo (a progress bar's update). The first photo that fails raises its error."""
    decode = decode or load_image
    images = out if out is not None else np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def one(index: int) -> None:
        images[index] = decode(paths[index], size)
        if on_each is not None:
            on_each()

    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        list(pool.map(one, range(len(paths))))
    return images


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB array as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def batch_for(image_size: int, largest: int = 64, pixels: int = BATCH_PIXELS) -> int:
    """How many images of `image_size` px go through a model at once: memory grows with the pixels of a batch
    (a process with EfficientNet-Lite2's two views peaked at 1.52 GB with 32 photos at 260 px, 1.16 GB with 16,
    in the same time), so larger images go in smaller batches (8 at 384 px); between 4 and `largest`."""
    return max(4, min(largest, pixels // max(1, int(image_size) ** 2)))
