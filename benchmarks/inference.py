"""End-to-end prediction over a folder of phone-size JPEGs (2000 px on the long side): the way of the previous
release (each file fully decoded, one after the other, through Keras) against today's `catsdogs predict`
(draft-mode decoding in parallel, the fastest verified engine), in one process; then each engine alone.

    PYTHONPATH=src python benchmarks/inference.py RUN [--count 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from catsdogs.decision import class_probabilities
from catsdogs.engines import create_engine, list_engines
from catsdogs.images import decode_image, resize
from catsdogs.predict import Predictor

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-train-5000.zip"


def main() -> None:
    from decode import phone_sized  # benchmarks/decode.py

    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="phone-photos-"))
    with zipfile.ZipFile(ZIP) as archive:
        photos, labels = phone_sized(archive, args.count)
    paths = []
    for i, data in enumerate(photos):
        paths.append(folder / f"{i:05d}.jpg")
        paths[-1].write_bytes(data)

    today = Predictor(args.run, engine="auto")
    keras = create_engine(args.run, today.model, "keras")
    size = today.image_size

    def previous_release() -> np.ndarray:
        outputs = []
        for start in range(0, len(paths), 64):
            batch = np.stack([resize(decode_image(p.read_bytes()).pixels, size) for p in paths[start:start + 64]])
            outputs.append(keras(batch))
        return class_probabilities(np.concatenate(outputs))

    results = {}
    for name, run in (("previous release (full decode, sequential, Keras)", previous_release),
                      (f"catsdogs predict (draft decode, parallel, engine {today.engine})",
                       lambda: np.array([list(p.probabilities.values()) for p in today.predict_paths(paths)]))):
        run()  # warm-up
        started = time.perf_counter()
        probabilities = run()
        results[name] = len(paths) / (time.perf_counter() - started)
        accuracy = np.mean(probabilities.argmax(1) == labels)
        print(f"{name}: {results[name]:.1f} images/s, accuracy {accuracy:.4f}")
    old, new = results.values()
    print(f"end-to-end speedup: {new / old:.1f}x")
    images = np.stack([resize(decode_image(p.read_bytes(), at_least=size).pixels, size) for p in paths[:64]])
    for name in list_engines():
        try:
            engine = create_engine(args.run, today.model, name, samples=images[:8])
        except Exception as error:  # noqa: BLE001 - report and go on
            print(f"engine {name}: not verified ({error})")
            continue
        engine(images)
        started = time.perf_counter()
        for _ in range(3):
            engine(images)
        print(f"engine {name}: {3 * len(images) / (time.perf_counter() - started):.1f} images/s (batch of 64)")


if __name__ == "__main__":
    main()
