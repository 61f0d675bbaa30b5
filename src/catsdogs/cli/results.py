"""The commands that read trained runs: `evaluate` (metrics), `report` (one HTML page), `explain` (Grad-CAM)."""

from __future__ import annotations

import argparse
from pathlib import Path

from catsdogs.cli.common import add_command, add_engine_argument, add_overwrite_argument
from catsdogs.errors import UsageError


def register(commands) -> None:
    add_calibrate(commands)
    add_evaluate(commands)
    add_report(commands)
    add_explain(commands)


def add_calibrate(commands) -> None:
    p = add_command(commands, "calibrate", cmd_calibrate, "calibrate a RUN's probabilities and set the threshold "
                    "above which a photo is labelled unknown, on its validation split (RUN/calibration.json)")
    p.add_argument("run", type=Path)
    p.add_argument("--accept", type=float, default=0.98, help="the share of in-distribution validation photos to "
                   "accept (default 0.98)")
    p.add_argument("--other", type=Path, metavar="FOLDER", help="photos of none of the classes: report the AUROC "
                   "and the share rejected")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from catsdogs.trust import calibrate

    print(calibrate(args.run, args.accept, args.other).line())


def add_evaluate(commands) -> None:
    p = add_command(commands, "evaluate", cmd_evaluate, "metrics of a trained RUN on a split")
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, help="default: the DATA the run was trained on")
    p.add_argument("--split", choices=["train", "validation", "test"], default="test")
    p.add_argument("--threshold", type=float, help="decision threshold (default: tuned, else 0.5)")
    p.add_argument("--tta", action="store_true", help="average each photo with its mirror image")
    p.add_argument("--tune-threshold", action="store_true",
                   help="choose the threshold on the validation split first and save it in RUN/threshold.json")
    p.add_argument("--tune-metric", choices=["accuracy", "f1", "balanced_accuracy"], default="accuracy")
    add_engine_argument(p)
    p.add_argument("--cache-dir", type=Path)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from catsdogs.evaluation import evaluate, tune_run_threshold
    from catsdogs.metrics import format_metrics_table

    if args.tune_threshold:
        if args.threshold is not None:
            raise UsageError("--tune-threshold and --threshold exclude each other")
        threshold = tune_run_threshold(args.run, args.data, args.tune_metric, tta=args.tta, cache_dir=args.cache_dir)
        print(f"tuned threshold {threshold:.3f} on the validation split ({args.tune_metric}); "
              f"saved to {args.run / 'threshold.json'}")
    metrics = evaluate(args.run, args.data, args.split, tta=args.tta, threshold=args.threshold,
                       cache_dir=args.cache_dir, engine=args.engine)
    decision = (f"threshold {metrics['threshold']:.3f} ({metrics['threshold_origin']})"
                if metrics.get("threshold") is not None else "the most probable class")
    print(f"{args.split} split, {decision}{', with TTA (photo + mirror)' if args.tta else ''}")
    print(format_metrics_table(metrics))
    if "trust" in metrics:
        from catsdogs.trust import format_trust

        print(format_trust(metrics["trust"], args.split))


def add_report(commands) -> None:
    p = add_command(commands, "report", cmd_report, "one self-contained HTML page comparing runs",
                    needs_tensorflow=False)
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    p.add_argument("--out", type=Path, required=True, metavar="HTML")
    p.add_argument("--title", default="catsdogs report")
    add_overwrite_argument(p, "replace an existing HTML file (never one of the RUNs' own files)")


def cmd_report(args: argparse.Namespace) -> None:
    from catsdogs.files import check_out_file
    from catsdogs.published import PUBLISHED
    from catsdogs.report import run_files, write_report

    check_out_file(args.out, overwrite=args.overwrite, inputs=run_files(args.runs))
    out = write_report(args.runs, args.out, title=args.title, published=PUBLISHED)
    print(f"report of {len(args.runs)} run(s) written to {out}")


def add_explain(commands) -> None:
    p = add_command(commands, "explain", cmd_explain, "Grad-CAM heat map of one image: the predicted class (or "
                    "--target) and the runner-up")
    p.add_argument("run", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, metavar="PNG", help="default: IMAGE-gradcam.png in this folder")
    p.add_argument("--layer", help="conv layer to explain (default: the last one, found automatically)")
    p.add_argument("--target", metavar="CLASS", help="the class to explain (default: the predicted one)")
    add_overwrite_argument(p, "replace an existing PNG (never IMAGE itself)")


def cmd_explain(args: argparse.Namespace) -> None:
    from catsdogs.explain import save_explanation
    from catsdogs.files import check_out_file
    from catsdogs.images import ImageError, load_image
    from catsdogs.predict import Predictor

    # the default name is explain's own (IMAGE-gradcam.png): run again, it is replaced; a chosen --out is not
    out = check_out_file(args.out or Path(f"{args.image.stem}-gradcam.png"), overwrite=args.overwrite or not args.out,
                         inputs=[args.image])
    predictor = Predictor(args.run)
    try:
        image = load_image(args.image, predictor.image_size)
    except ImageError as error:
        raise UsageError(f"{args.image}: {error}") from None
    target = None
    if args.target is not None:
        if args.target not in predictor.classes:
            raise UsageError(f"--target {args.target!r} is not a class of the run ({', '.join(predictor.classes)})")
        target = predictor.classes.index(args.target)
    save_explanation(predictor.model, image, predictor.classes, out, layer=args.layer,
                     threshold=predictor.threshold, target=target)
    probabilities = predictor.probabilities(image[None])[0]
    label = predictor.label_of(probabilities)
    print(f"{args.image}: {label} (p_{label}={probabilities[predictor.classes.index(label)]:.3f}); "
          f"Grad-CAM saved to {out} (evidence for {args.target or label})")
