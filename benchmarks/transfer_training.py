"""The `transfer` model's epochs: Keras training the whole model against catsdogs' trainer, whose frozen base
runs through the fastest verified engine, in one process (not a test).

    PYTHONPATH=src python benchmarks/transfer_training.py --data study/data [--cache-dir study/cache]
        [--backbone efficientnet_lite2] [--epochs 1] [--rounds 1]

Trains the same seeded transfer model (augmentation, frozen base, Dropout, output) for N epochs each way, in
turns, into temporary RUN folders, and prints each epoch's seconds (validation included), the run's wall time
(engine export and check included) and the validation accuracy and loss of the last epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from catsdogs.models import DEFAULT_TRAINER, MODELS
from catsdogs.training import read_history, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA (catsdogs prepare)")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    catsdogs_entry = MODELS["transfer"]
    variants = [("Keras trains the whole model", dataclasses.replace(catsdogs_entry, trainer=DEFAULT_TRAINER)),
                ("frozen base through the fastest verified engine (catsdogs)", catsdogs_entry)] * args.rounds
    for label, entry in variants:
        MODELS["transfer"] = entry
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            train(data=args.data, model="transfer", backbone=args.backbone, epochs=args.epochs,
                  cache_dir=args.cache_dir, out=Path(folder) / "run")
            wall = time.perf_counter() - started
            rows = read_history(Path(folder) / "run")
        last, seconds = rows[-1], " ".join(f"{float(row['seconds']):.1f}" for row in rows)
        print(f"{label}: epochs {seconds} s, run {wall:.1f} s; "
              f"val_accuracy {float(last['val_accuracy']):.3f}, val_loss {float(last['val_loss']):.4f}", flush=True)
    MODELS["transfer"] = catsdogs_entry


if __name__ == "__main__":
    main()
