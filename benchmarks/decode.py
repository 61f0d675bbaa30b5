"""Draft-mode JPEG decoding against a full decode, on photos enlarged to phone size (2000 px on the long side).

    PYTHONPATH=src python benchmarks/decode.py [--run RUN] [--count 200]

Prints decode+resize images/s both ways (one process, same photos) and, with --run, the largest change of a
class probability and both accuracies (the label is the photo's Kaggle name).
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from catsdogs.images import decode_image, resize

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-train-5000.zip"


def phone_sized(archive: zipfile.ZipFile, count: int) -> tuple[list[bytes], list[int]]:
    photos, labels = [], []
    for i in range(count):
        name = f"train/{'cat' if i % 2 else 'dog'}.{i * 3}.jpg"
        image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
        scale = 2000 / max(image.size)
        buffer = io.BytesIO()
        image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC).save(buffer, "JPEG",
                                                                                                   quality=92)
        photos.append(buffer.getvalue())
        labels.append(int(name.startswith("train/dog")))
    return photos, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path)
    parser.add_argument("--size", type=int, default=260)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    with zipfile.ZipFile(ZIP) as archive:
        photos, labels = phone_sized(archive, args.count)
    size = args.size
    if args.run:
        from catsdogs.predict import Predictor

        predictor = Predictor(args.run)
        size = predictor.image_size
    decoded = {}
    for name, at_least in (("full decode", None), ("draft mode", size)):
        started = time.perf_counter()
        decoded[name] = np.stack([resize(decode_image(data, at_least=at_least).pixels, size) for data in photos])
        seconds = time.perf_counter() - started
        print(f"{name}: {len(photos) / seconds:.1f} images/s ({len(photos)} photos of ~2000 px, to {size} px)")
    diff = np.abs(decoded["full decode"].astype(int) - decoded["draft mode"].astype(int))
    print(f"pixels: mean |difference| {diff.mean():.2f} of 255")
    if args.run:
        full, draft = (predictor.probabilities(decoded[name]) for name in ("full decode", "draft mode"))
        print(f"largest probability change {np.abs(full - draft).max():.4f}; accuracy full "
              f"{np.mean(full.argmax(1) == labels):.4f}, draft {np.mean(draft.argmax(1) == labels):.4f}")


if __name__ == "__main__":
    main()
