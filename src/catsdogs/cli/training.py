"""The training commands: `train` (one experiment, flags from TrainOptions), `fit` (photos -> the best
classifier), `reproduce` (the whole study)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from catsdogs.cli.common import (
    DEFAULT_SOURCE_HELP,
    add_command,
    add_corrections_argument,
    add_force_alias,
    add_input_argument,
    add_overwrite_argument,
    add_precision_argument,
    add_split_arguments,
    default_source,
    non_negative_int,
)
from catsdogs.errors import UsageError
from catsdogs.options import TrainOptions, add_option_arguments, image_size_arg


def register(commands) -> None:
    add_fit(commands)
    add_train(commands)
    add_reproduce(commands)
    add_lr_find(commands)


def add_train(commands) -> None:
    p = add_command(commands, "train", cmd_train, "train one experiment into RUN")
    add_option_arguments(p, TrainOptions, required=("model", "out"))
    add_input_argument(p, "data", "a prepared DATA folder (or --data DATA)", required=True, flag=False)
    add_force_alias(p)
    p.add_argument("--weights", metavar="imagenet|none|PATH",
                   help="the base's weights (default imagenet, from Keras' cache $KERAS_HOME/models; offline, "
                   "place the file there or pass its path)")
    p.add_argument("--from-run", metavar="RUN", help="finetune: start from this completed transfer RUN; "
                   "finetune-top: tune this completed finetune-top RUN's top further on the augmented photos")
    p.add_argument("--unfreeze", type=non_negative_int, metavar="N",
                   help="finetune: unfreeze the top N layers of the base (default: its last block)")


def cmd_train(args: argparse.Namespace) -> None:
    from catsdogs.models import model_entry
    from catsdogs.run_files import read_config
    from catsdogs.training import train

    pretrained_flags = {"--backbone": args.backbone, "--weights": args.weights, "--from-run": args.from_run,
                        "--unfreeze": args.unfreeze}
    given = [flag for flag, value in pretrained_flags.items() if value is not None]
    if given and not model_entry(args.model).uses_backbone:
        raise UsageError(f"{', '.join(given)}: only for the pretrained models (features, transfer, heads, "
                         "finetune-top, finetune)")
    model_options = {name: value for name, value in (("weights", args.weights), ("from_run", args.from_run),
                                                     ("unfreeze", args.unfreeze)) if value is not None}
    options = TrainOptions(model_options=model_options, **{item.name: getattr(args, item.name)
                                                           for item in dataclasses.fields(TrainOptions)
                                                           if item.metadata.get("cli", True)})
    run = train(options)
    config = read_config(run)
    saved = run.best_val_acc
    print(f"trained {args.model} into {run}: saved epoch {config['best_epoch']}/{config['epochs']}, "
          f"{config['monitor']} {config['monitor_best']:.4f}"
          + (f", validation accuracy {saved:.4f}" if saved is not None else "") + f", {config['wall_time_s']:.0f} s")


def add_fit(commands) -> None:
    p = add_command(commands, "fit", cmd_fit, "one command from a folder of photos to the best classifier: prepare, "
                    "train, evaluate, report")
    add_input_argument(p, "source", f"a folder, .zip or .csv of photos in any layout prepare reads "
                       f"({DEFAULT_SOURCE_HELP})")
    p.add_argument("--out", type=Path, required=True, metavar="RUN")
    p.add_argument("--data", type=Path, help="an already prepared DATA (default: prepare SOURCE into RUN/data)")
    p.add_argument("--backbone", action="append", metavar="B", help="a candidate backbone (repeat for several; "
                   "default: efficientnet_lite2 and mobilenetv2, the best on validation is kept)")
    add_split_arguments(p, "as in prepare (default: the rest)")
    add_corrections_argument(p)
    p.add_argument("--class-weight", choices=["auto", "balanced", "none"], default="auto",
                   help="auto (default): balanced when the largest class has 1.5x the photos of the smallest")
    add_overwrite_argument(p, "replace a finished RUN")
    p.add_argument("--budget", default="10m", metavar="DURATION",
                   help="wall time for the stages (10m, 90s, 1h30m; default 10m); 0: no budget, heads only")
    p.add_argument("--no-audit", dest="audit", action="store_false",
                   help="leave out the audit of the photos (RUN/audit, and its section of the report)")
    p.add_argument("--distribute", choices=["mirrored", "multi-worker"],
                   help="train the candidates as `train --distribute` does (multi-worker: TF_CONFIG)")


def cmd_fit(args: argparse.Namespace) -> None:
    from catsdogs.fitting import fit

    source = args.source if args.source or args.data else default_source()
    class_weight = None if args.class_weight == "none" else args.class_weight
    run = fit(source, args.out, data=args.data, backbones=args.backbone, train_size=args.train,
              val_size=args.val, test_size=args.test, seed=args.seed, class_weight=class_weight,
              overwrite=args.overwrite, distribute=args.distribute, audit=args.audit, budget=args.budget,
              corrections=args.corrections)
    metrics = run.metrics
    recipe = f"{run.config['head']} head" if run.config.get("head") else run.model_name  # heads, or finetune-top
    recipe += ", then tuned on the augmented photos" if run.config.get("from_run") else ""  # stage (e)
    print(f"fitted {run}: {run.config['fit']['chosen']} ({recipe}), test accuracy "
          f"{metrics['accuracy']:.4f} ({metrics['n']} photos, {len(run.classes)} classes); report: {run / 'report.html'}")


def add_reproduce(commands) -> None:
    p = add_command(commands, "reproduce", cmd_reproduce, "the whole study: prepare, every experiment, evaluate, "
                    "report")
    add_input_argument(p, "source", f"the photos ({DEFAULT_SOURCE_HELP})")
    p.add_argument("--out", type=Path, required=True, metavar="STUDY")
    p.add_argument("--quick", action="store_true", help="a few-minute demo instead of the full study")
    p.add_argument("--backbone", help="pretrained base of the last three experiments "
                   "(default: efficientnet_lite2 when installed, else mobilenetv2)")
    add_precision_argument(p)


def cmd_reproduce(args: argparse.Namespace) -> None:
    from catsdogs.study import reproduce

    source = args.source or default_source()
    reproduce(source, args.out, quick=args.quick, precision=args.precision, backbone=args.backbone)


def add_lr_find(commands) -> None:
    p = add_command(commands, "lr-find", cmd_lr_find, "the learning-rate range test (fastai's lr_find): the suggested "
                    "rate on stdout, the loss-against-rate plot written")
    p.add_argument("run", type=Path, nargs="?", metavar="RUN",
                   help="a trained RUN: its model on its DATA's training photos (plot: RUN/plots/lr_find.png)")
    p.add_argument("--data", type=Path, help="before training: a prepared DATA, with --model as train takes it")
    p.add_argument("--model", help="with --data: the model to build (as train --model)")
    p.add_argument("--backbone", help="with --data: the pretrained base (as train --backbone)")
    p.add_argument("--image-size", type=image_size_arg, metavar="N", help="with --data: as train --image-size")
    p.add_argument("--plot", type=Path, metavar="PNG", help="with --data: where to write the plot (default lr_find.png)")
    p.add_argument("--start", type=float, default=1e-7, help="the first rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="the last rate (default 10)")
    p.add_argument("--steps", type=int, help="batches (default 100, fewer for small data: one pass, at least 30)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's, else 32)")
    add_overwrite_argument(p, "with --data: replace an existing --plot file (never one of DATA's)")


def cmd_lr_find(args: argparse.Namespace) -> None:
    from catsdogs.files import check_out_file
    from catsdogs.trainers.lr_find import data_lr_find, run_lr_find

    options = {"start": args.start, "end": args.end, "steps": args.steps}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if (args.run is None) == (args.data is None):
        raise UsageError("give a trained RUN, or --data DATA --model MODEL (not both)")
    if args.run is not None:
        given = [flag for flag, value in (("--model", args.model), ("--backbone", args.backbone),
                                          ("--image-size", args.image_size), ("--plot", args.plot)) if value]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --data (a RUN has its own model and plot)")
        result = run_lr_find(args.run, data=None, **options)
    else:
        if not args.model:
            raise UsageError("--data needs --model (the model to build, as train takes it)")
        plot = check_out_file(args.plot or Path("lr_find.png"), "plot", overwrite=args.overwrite,
                              inputs=(path for path in args.data.rglob("*") if path.is_file()))
        result = data_lr_find(args.data, args.model, plot, backbone=args.backbone,
                              image_size=args.image_size, **options)
    print(f"{result.line()}; plot: {result.plot_path}", file=sys.stderr)
    print(f"{result.suggestion:.3g}")  # one line alone on stdout: LR=$(catsdogs lr-find RUN)
