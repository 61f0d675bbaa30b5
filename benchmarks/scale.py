"""Peak memory and speed of training and predict on 1k / 10k / 100k generated photos.

    PYTHONPATH=src python benchmarks/scale.py --work /tmp/catsdogs-scale --sizes 1000 10000 100000

For each size N: a DATA of N generated training photos (160 x 120 JPEGs, two classes) and 64 validation
photos is written once (without `catsdogs prepare`, whose per-file checks are not what is measured); then,
each in a fresh process whose peak RSS (VmHWM) is read at its end:
- train: `load_split` (decode once into the storage `auto` picks, or the one forced by --storage) then the
  study's baseline convnet (150 px) fit for --train-steps shuffled batches of 32 through `to_dataset`;
  images/s over the timed steps (after 5 warm-up steps), decode images/s separately;
- predict: `catsdogs predict RUN DATA/train --output FILE` (catsdogs.stream) over all N photos.
Prints a Markdown table. Shards and CSVs go under --work (100k photos: ~1 GB of JPEGs, 6.8 GB of shards).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

IMAGE_SIZE = 150


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _make_photos(args) -> list[tuple[str, str]]:
    import numpy as np
    from PIL import Image

    root, start, stop = args
    rows = []
    for i in range(start, stop):
        kind = i % 2
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
        half = slice(0, 80) if kind == 0 else slice(80, 160)
        pixels[:, half] += 150
        name = ("cat", "dog")[kind]
        split = "validation" if i < 64 else "train"
        path = f"{split}/{name}/{i:06d}.jpg"
        (Path(root) / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(Path(root) / path, quality=85)
        rows.append((path, name))
    return rows


def make_data(root: Path, count: int) -> Path:
    if (root / "manifest.csv").exists():
        return root
    total = count + 64
    chunks = [(str(root), s, min(s + 2000, total)) for s in range(0, total, 2000)]
    with ProcessPoolExecutor(2) as pool:
        rows = [row for part in pool.map(_make_photos, chunks) for row in part]
    with open(root / ".manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "class", "split", "sha256", "width", "height", "source"])
        for path, name in rows:
            writer.writerow([path, name, path.split("/")[0], "", 160, 120, "generated"])
    (root / "classes.json").write_text(json.dumps(["cat", "dog"]))
    os.replace(root / ".manifest.csv", root / "manifest.csv")
    return root


def child_train(data: Path, cache: Path, storage: str, steps: int) -> dict:
    import keras

    from catsdogs.dataset import load_split, to_dataset
    from catsdogs.models import create_model

    started = time.perf_counter()
    split = load_split(data, "train", IMAGE_SIZE, cache_dir=cache, storage=storage)
    decode_s = time.perf_counter() - started
    chosen = "memory" if type(split.images).__name__ == "ndarray" else "shards"
    keras.utils.set_random_seed(1)
    model = create_model("baseline", image_size=IMAGE_SIZE)
    batches = to_dataset(split, 32, shuffle=True, seed=1).repeat()
    model.fit(batches, epochs=1, steps_per_epoch=5, verbose=0)
    started = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    return {"storage": chosen, "decode_s": round(decode_s, 1), "decode_ips": round(len(split.labels) / decode_s),
            "train_ips": round(steps * 32 / seconds, 1), "peak_rss_mb": round(peak_rss_mb())}


def child_predict(data: Path, run: Path, output: Path) -> dict:
    from catsdogs.predict import Predictor
    from catsdogs.stream import stream_predictions

    output.unlink(missing_ok=True)
    summary = stream_predictions(Predictor(run), [data / "train"], output)
    return {"predict_ips": round(summary.written / summary.seconds, 1), "rows": summary.written,
            "peak_rss_mb": round(peak_rss_mb())}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "child", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/catsdogs-scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--storage", nargs="+", default=["auto"], help="auto, memory, shards (each measured)")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--skip-predict", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.work / "run"
    if not (run / "model.keras").exists():
        from catsdogs.train import TrainOptions, train

        small = make_data(args.work / "data-200", 200)
        train(TrainOptions(data=small, model="baseline", out=run, epochs=1, image_size=IMAGE_SIZE))
    print("| photos | storage | decode images/s | train images/s | train peak RSS | predict images/s | "
          "predict peak RSS |\n|---|---|---|---|---|---|---|", flush=True)
    for count in args.sizes:
        started = time.perf_counter()
        data = make_data(args.work / f"data-{count}", count)
        print(f"<!-- data {count}: {time.perf_counter() - started:.0f} s -->", flush=True)
        predicted = None
        for storage in args.storage:
            trained = run_child("train", str(data), str(args.work / f"cache-{count}"), storage,
                                str(args.train_steps))
            if predicted is None and not args.skip_predict:
                predicted = run_child("predict", str(data), str(run), str(args.work / f"predict-{count}.csv"))
            p = predicted or {"predict_ips": "", "peak_rss_mb": ""}
            print(f"| {count:,} | {trained['storage']} ({storage}) | {trained['decode_ips']} | "
                  f"{trained['train_ips']} | {trained['peak_rss_mb']} MB | {p['predict_ips']} | "
                  f"{p['peak_rss_mb']} MB |", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "train":
            result = child_train(Path(rest[0]), Path(rest[1]), rest[2], int(rest[3]))
        else:
            result = child_predict(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        print(json.dumps(result))
    else:
        main()
