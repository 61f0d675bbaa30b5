"""Epochs of the models with a frozen pretrained base (`transfer`, `finetune`): Keras training the whole model
against catsdogs' trainer, whose frozen part runs through the fastest verified engine, in one process (not a test).

    PYTHONPATH=src python benchmarks/transfer_training.py --data study/data [--cache-dir study/cache]
        [--model transfer | --model finetune --from-run TRANSFER_RUN] [--backbone efficientnet_lite2]
        [--epochs 1] [--rounds 1]

Trains the same seeded model for N epochs each way, in turns, into temporary RUN folders, and prints each
epoch's seconds (validation included), the run's wall time (engine export and check included) and the
validation accuracy and loss of the last epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from catsdogs.trainers import transfer
from catsdogs.training import read_history, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a prepared DATA (catsdogs prepare)")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--model", choices=("transfer", "finetune"), default="transfer")
    parser.add_argument("--from-run", help="finetune: the transfer RUN to start from")
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.model == "finetune" and not args.from_run:
        parser.error("--model finetune needs --from-run")
    split = transfer.split
    variants = [("Keras trains the whole model", lambda model: None),
                ("frozen part through the fastest verified engine (catsdogs)", split)] * args.rounds
    for label, splitter in variants:
        transfer.split = splitter  # None: catsdogs' trainer falls back to Keras' whole-model fit
        model_options = {"from_run": args.from_run} if args.from_run else {}
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            train(data=args.data, model=args.model, backbone=args.backbone, epochs=args.epochs,
                  cache_dir=args.cache_dir, out=Path(folder) / "run", model_options=model_options)
            wall = time.perf_counter() - started
            rows = read_history(Path(folder) / "run")
        last, seconds = rows[-1], " ".join(f"{float(row['seconds']):.1f}" for row in rows)
        print(f"{label}: epochs {seconds} s, run {wall:.1f} s; "
              f"val_accuracy {float(last['val_accuracy']):.3f}, val_loss {float(last['val_loss']):.4f}", flush=True)
    transfer.split = split


if __name__ == "__main__":
    main()
