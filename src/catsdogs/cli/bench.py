"""`catsdogs bench`: training and inference speed (plain Keras, catsdogs, the engines, the peak)."""

from __future__ import annotations

import argparse
from pathlib import Path

from catsdogs.cli.common import add_command, add_input_argument, add_precision_argument, default_source, positive_int


def register(commands) -> None:
    p = add_command(commands, "bench", cmd_bench, "training and inference speed: plain Keras, catsdogs, engines, peak")
    add_input_argument(p, "data", "a prepared DATA (default: prepare the default source in a temp dir)")
    p.add_argument("--steps", type=positive_int, default=40, help="timed training steps (default 40)")
    p.add_argument("--warmup", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_precision_argument(p)
    p.add_argument("--run", type=Path, help="a trained RUN with a pretrained backbone (e.g. study/finetune) for the "
                   "engines and end-to-end timings (default: the default backbone under an untrained head)")
    p.add_argument("--photos", type=positive_int, default=200, help="full-size test JPEGs predicted end to end "
                   "(default 200)")


def cmd_bench(args: argparse.Namespace) -> None:
    from catsdogs.bench import bench

    result = bench(args.data, None if args.data else default_source(), steps=args.steps, warmup=args.warmup,
                   batch_size=args.batch_size, precision=args.precision, run=args.run, photos=args.photos)
    print("\n".join(result.lines()))
