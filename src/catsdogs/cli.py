"""The `catsdogs` command: a thin layer over the library. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from catsdogs import __version__
from catsdogs.errors import CatsdogsError, UsageError
from catsdogs.options import TrainOptions, add_option_arguments

DEFAULT_SOURCE_NAME = Path("shared") / "data" / "dogs-vs-cats-train-5000.zip"
SHARED_WEIGHTS_NAME = Path("shared") / "weights" / "keras"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout, for an editable install
NO_SOURCE_HELP = ("no SOURCE given and the default data ({path}) is absent: download Kaggle's Dogs vs. Cats "
                  "train.zip (https://www.kaggle.com/c/dogs-vs-cats/data) or run `catsdogs download --out "
                  "PetImages.zip`, then pass it as SOURCE")


def project_shared(name: Path) -> list[Path]:
    """Where the project's `../shared` files may be: beside the checkout, or beside the working folder."""
    return [PROJECT_ROOT.parent / name, Path.cwd().parent / name]


def use_shared_weights() -> None:
    """Point $CATSDOGS_WEIGHTS at the project's offline ImageNet weights (`../shared/weights/keras`) when they
    exist and the variable is unset: the library itself only reads the variable."""
    from catsdogs.models.weights import WEIGHTS_ENV

    found = next((path for path in project_shared(SHARED_WEIGHTS_NAME) if path.is_dir()), None)
    if found is not None:
        os.environ.setdefault(WEIGHTS_ENV, str(found.resolve()))


def default_source() -> Path:
    """The project's default data, `../shared/data/dogs-vs-cats-train-5000.zip` beside the checkout."""
    if "CATSDOGS_DEFAULT_SOURCE" in os.environ:
        candidates = [Path(os.environ["CATSDOGS_DEFAULT_SOURCE"])]
    else:
        candidates = project_shared(DEFAULT_SOURCE_NAME)
    for path in candidates:
        if path.exists():
            return path.resolve()
    raise UsageError(NO_SOURCE_HELP.format(path=candidates[0]))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def split_size(text: str) -> int | float:
    from catsdogs.preparation import parse_split_size

    try:
        return parse_split_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# ---- commands -------------------------------------------------------------------------------------

def cmd_prepare(args: argparse.Namespace) -> None:
    from catsdogs.preparation import prepare

    source = args.source or default_source()
    summary = prepare(source, args.out, train=args.train, val=args.val, test=args.test, seed=args.seed,
                      overwrite=args.force, exclude=args.exclude, dedupe=args.dedupe,
                      allow_outside=args.allow_outside_csv_paths)
    print(summary.line())
    print(summary.audit_line())


def cmd_audit(args: argparse.Namespace) -> None:
    from catsdogs.auditing import audit

    result = audit(args.data, args.out, backbone=args.backbone, cache_dir=args.cache_dir)
    print(result.line())


def cmd_fit(args: argparse.Namespace) -> None:
    from catsdogs.fitting import fit

    source = args.source if args.source or args.data else default_source()
    class_weight = None if args.class_weight == "none" else args.class_weight
    run = fit(source, args.out, data=args.data, backbones=args.backbone, train_size=args.train,
              val_size=args.val, test_size=args.test, seed=args.seed, class_weight=class_weight,
              overwrite=args.overwrite, distribute=args.distribute, audit=args.audit,
              **({"epochs": args.epochs} if args.epochs else {}))
    metrics = run.metrics
    print(f"fitted {run}: {run.config['fit']['chosen']} features, test accuracy {metrics['accuracy']:.4f} "
          f"({metrics['n']} photos, {len(run.classes)} classes); report: {run / 'report.html'}")


def cmd_train(args: argparse.Namespace) -> None:
    from catsdogs.models import model_entry
    from catsdogs.training import train

    pretrained_flags = {"--backbone": args.backbone, "--weights": args.weights, "--from-run": args.from_run,
                        "--unfreeze": args.unfreeze}
    given = [flag for flag, value in pretrained_flags.items() if value is not None]
    if given and not model_entry(args.model).uses_backbone:
        raise UsageError(f"{', '.join(given)}: only for the pretrained models (features, transfer, finetune)")
    model_options = {name: value for name, value in (("weights", args.weights), ("from_run", args.from_run),
                                                     ("unfreeze", args.unfreeze)) if value is not None}
    options = TrainOptions(model_options=model_options, **{item.name: getattr(args, item.name)
                                                           for item in dataclasses.fields(TrainOptions)
                                                           if item.metadata.get("cli", True)})
    run = train(options)
    from catsdogs.run_files import read_config

    config = read_config(run)
    print(f"trained {args.model} into {run}: best epoch {config['best_epoch'] + 1}/{config['epochs']}, "
          f"{config['monitor']} {config['monitor_best']:.4f}, {config['wall_time_s']:.0f} s")


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


def cmd_predict(args: argparse.Namespace) -> None:
    from catsdogs.predict import Predictor

    predictor = Predictor(args.run, threshold=args.threshold, tta=args.tta, engine=args.engine,
                          samples=_engine_samples(args.run, args.engine))
    if predictor.tuned_threshold is not None and args.threshold is None:
        print(f"using the tuned threshold {predictor.threshold:.3f} from {args.run}", file=sys.stderr)
    missing = [str(p) for p in args.paths if not p.exists()]
    if args.output is not None or args.resume:  # hook: streaming to a file (catsdogs.stream)
        from catsdogs.stream import stream_predictions

        if args.output is None or args.format != "csv":
            raise UsageError("--resume needs --output FILE; --output writes CSV")
        summary = stream_predictions(predictor, [p for p in args.paths if p.exists()], args.output,
                                     resume=args.resume)
        print(f"wrote {summary.written} rows to {summary.output} ({summary.skipped} already there, "
              f"{summary.errors} errors) in {summary.seconds:.1f} s", file=sys.stderr)
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)} (the other files were classified)")
        return
    predictions = predictor.predict_paths(args.paths)
    if args.format == "json":
        threshold = predictor.threshold if len(predictor.classes) == 2 else None
        print(json.dumps([{**vars(p), "threshold": threshold} for p in predictions], indent=2))
    else:
        from catsdogs.stream import csv_header, csv_row

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(csv_header(predictor.classes))  # path,label,p_<class>...,novelty,error
        for p in predictions:
            writer.writerow(csv_row(p, predictor.classes))
            sys.stdout.flush()
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)} (the other files were classified)")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from catsdogs.trust import calibrate

    print(calibrate(args.run, args.accept, args.other).line())


def cmd_explain(args: argparse.Namespace) -> None:
    from catsdogs.explain import save_explanation
    from catsdogs.images import ImageError, load_image
    from catsdogs.predict import Predictor

    predictor = Predictor(args.run)
    try:
        image = load_image(args.image, predictor.image_size)
    except ImageError as error:
        raise UsageError(f"{args.image}: {error}") from None
    out = args.out or Path(f"{args.image.stem}-gradcam.png")
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


def cmd_bench(args: argparse.Namespace) -> None:
    from catsdogs.bench import bench

    bench(args.data, None if args.data else default_source(), steps=args.steps, warmup=args.warmup,
          batch_size=args.batch_size, precision=args.precision, run=args.run, photos=args.photos)


def cmd_download(args: argparse.Namespace) -> None:
    from catsdogs.download import download, resolve_url
    from catsdogs.progress import Progress

    url = resolve_url(args.url)
    print(f"downloading {url} -> {args.out}", file=sys.stderr)
    progress = Progress("downloaded", unit="MB")

    def report(done: int, total: int | None) -> None:
        progress.total = total // 2**20 if total else None
        progress.update(done // 2**20 - progress.done)

    result = download(args.out, url, expected_sha256=args.sha256, overwrite=args.force, progress=report)
    progress.close()
    resumed = " (resumed)" if result.resumed else ""
    print(f"saved {result.path}: {result.size:,} bytes, sha256 {result.sha256}{resumed}")


def cmd_export(args: argparse.Namespace) -> None:
    from catsdogs.export import export_model
    from catsdogs.predict import Predictor

    predictor = Predictor(args.run)
    if args.quantize:
        return _export_int8(args, predictor)
    samples = _sample_images(args.run, predictor.image_size)
    result = export_model(predictor.model, args.format, args.out, samples)
    print(f"exported {args.run} as {result.format} to {result.path}")
    from catsdogs.trust import write_export_metadata  # hook: catsdogs.trust

    if (metadata := write_export_metadata(args.run, result.path)) is not None:
        print(f"calibration and unknown threshold (apply them in your runtime): {metadata}")
    print(f"input:  {result.input_signature}")
    print(f"output: {result.output_signature}")
    note = " (float32 rebuild of a bf16 model)" if result.float32_rebuild else ""
    print(f"verified on {len(samples)} images: max |p_export - p_keras| = {result.max_abs_diff:.2e}{note}")


def _export_int8(args: argparse.Namespace, predictor) -> None:
    """`export --quantize int8`: calibrated on the run's train split, measured on its test split."""
    from catsdogs.quantize import quantize_run, report_path

    if args.format != "onnx":
        raise UsageError(f"--quantize int8 writes an ONNX graph; use --format onnx, not {args.format}")
    report = quantize_run(args.run, args.out, model=predictor.model, calibration_images=args.calibration_images)
    print(f"exported {args.run} as int8 onnx to {report.path}")
    print(report.line())
    print(f"measurement written to {report_path(args.out)}")


def _engine_samples(run: Path, engine: str):
    """Test photos of the run's DATA to verify an exported engine on (None for Keras itself)."""
    from catsdogs.run_files import read_config

    return None if engine == "keras" else _sample_images(run, int(read_config(run).get("image_size") or 0) or 150)


def _sample_images(run: Path, size: int, count: int = 8):
    """A few test images of the run's DATA for export checks; random pixels when DATA is gone."""
    import numpy as np

    from catsdogs.dataset import sample_images
    from catsdogs.run_files import read_config

    try:
        return sample_images(Path(read_config(run).get("data", "")), "test", size, count)
    except (CatsdogsError, OSError, ValueError):
        return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from catsdogs import serve
    except ImportError as error:
        raise CatsdogsError(f"serve needs the web extras ({error.name} is missing): "
                            "pip install 'catsdogs[serve]'") from None
    from catsdogs.run_files import read_config

    read_config(args.run)
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    if args.port > 65535:
        raise UsageError(f"--port must be at most 65535, got {args.port}")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    app = serve.create_app(args.run, threshold=args.threshold, max_upload_mb=args.max_upload_mb,
                           engine=args.engine, samples=_engine_samples(args.run, args.engine))
    try:
        sock = serve.bind_socket(args.host, args.port)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines; there is no authentication",
              file=sys.stderr)
    print(f"serving {args.run} at {serve.url_of(sock)} (API docs: {serve.url_of(sock)}docs; Ctrl+C stops)", flush=True)
    serve.serve_forever(app, sock, log_level="info" if args.debug else "warning")


def cmd_report(args: argparse.Namespace) -> None:
    from catsdogs.published import PUBLISHED
    from catsdogs.report import write_report

    out = write_report(args.runs, args.out, title=args.title, published=PUBLISHED)
    print(f"report of {len(args.runs)} run(s) written to {out}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from catsdogs.study import reproduce

    source = args.source or default_source()
    reproduce(source, args.out, quick=args.quick, precision=args.precision, backbone=args.backbone)


# ---- parser ---------------------------------------------------------------------------------------

class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line with a pointer to --help, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["auto", "keras", "onnx", "openvino", "int8"], default="auto",
                        help="inference engine (default auto: the fastest installed one whose answers match Keras' "
                        "within 1e-4 on this run; its graph is kept in RUN/engines/); int8: the run quantized "
                        "once (as export --quantize int8: kept only within 0.5 point of test accuracy)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    parser = OneLineErrorParser(prog="catsdogs", parents=[common],
                                     description="Photos of two kinds or more -> a trained, evaluated, explainable classifier.")
    parser.add_argument("--version", action="version", version=f"catsdogs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    p = command("prepare", cmd_prepare, "check, de-duplicate and split SOURCE (folder or .zip) into DATA")
    p.add_argument("source", type=Path, nargs="?", help="Kaggle train.zip, PetImages, or one folder per class "
                   "(default: ../shared/data/dogs-vs-cats-train-5000.zip)")
    p.add_argument("--out", type=Path, required=True, metavar="DATA")
    p.add_argument("--train", type=split_size, metavar="N", help="training photos: a count in total (3000) or a "
                   "fraction of each class (0.7 or 70%%); default: what validation and test leave")
    p.add_argument("--val", type=split_size, metavar="N", help="validation photos (default 15%% of each class)")
    p.add_argument("--test", type=split_size, metavar="N", help="test photos (default 15%% of each class)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--force", action="store_true", help="replace a DATA made from another source")
    p.add_argument("--exclude", type=Path, metavar="FILE", help="leave out the photos a CSV's path column names: "
                   "an AUDIT/issues.csv (DATA paths, matched by sha256 through the audited DATA's manifest) or "
                   "paths inside SOURCE")
    p.add_argument("--dedupe", choices=["exact", "near"], default="exact", help="exact (default): identical files "
                   "kept once; near: also one photo of each group of near-duplicates (perceptual hash)")
    p.add_argument("--allow-outside-csv-paths", action="store_true", help="a CSV SOURCE may name files outside "
                   "its own folder (absolute or ../ paths); refused rows by default")

    p.set_defaults(needs_tensorflow=False)

    p = command("fit", cmd_fit, "one command from a folder of photos to the best classifier: prepare, train, "
                "evaluate, report")
    p.add_argument("source", type=Path, nargs="?", help="a folder, .zip or .csv of photos in any layout prepare "
                   "reads (default: ../shared/data/dogs-vs-cats-train-5000.zip)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN")
    p.add_argument("--data", type=Path, help="an already prepared DATA (default: prepare SOURCE into RUN/data)")
    p.add_argument("--backbone", action="append", metavar="B", help="a candidate backbone (repeat for several; "
                   "default: efficientnet_lite2 and mobilenetv2, the best on validation is kept)")
    p.add_argument("--train", type=split_size, metavar="N", help="as in prepare (default: the rest)")
    p.add_argument("--val", type=split_size, metavar="N", help="as in prepare (default 15%% of each class)")
    p.add_argument("--test", type=split_size, metavar="N", help="as in prepare (default 15%% of each class)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--class-weight", choices=["auto", "balanced", "none"], default="auto",
                   help="auto (default): balanced when the largest class has 1.5x the photos of the smallest")
    p.add_argument("--overwrite", action="store_true", help="replace a finished RUN")
    p.add_argument("--epochs", type=positive_int,
                   help="the most epochs of each candidate's head (default 100; early stopping after 10 without "
                   "improvement on validation)")
    p.add_argument("--no-audit", dest="audit", action="store_false",
                   help="leave out the audit of the photos (RUN/audit, and its section of the report)")
    p.add_argument("--distribute", choices=["mirrored", "multi-worker"],
                   help="train the candidates as `train --distribute` does (multi-worker: TF_CONFIG)")

    p = command("audit", cmd_audit, "near-duplicates, likely label errors and outliers of a prepared DATA: "
                "AUDIT/issues.csv and AUDIT/audit.html")
    p.add_argument("data", type=Path, metavar="DATA")
    p.add_argument("--out", type=Path, required=True, metavar="AUDIT")
    p.add_argument("--backbone", help="embeddings' ImageNet backbone (default efficientnet_lite0, else mobilenetv2; "
                   "any train --backbone name)")
    p.add_argument("--cache-dir", type=Path, help="features and hashes cache (default AUDIT/cache; give fit's "
                   "RUN/cache to reuse its features)")

    p = command("train", cmd_train, "train one experiment into RUN")
    add_option_arguments(p, TrainOptions, required=("data", "model", "out"))
    p.add_argument("--weights", metavar="imagenet|none|PATH",
                   help="the base's weights (default imagenet, from Keras' cache $KERAS_HOME/models; offline, "
                   "place the file there or pass its path)")
    p.add_argument("--from-run", metavar="RUN", help="finetune: start from this completed transfer RUN")
    p.add_argument("--unfreeze", type=non_negative_int, metavar="N",
                   help="finetune: unfreeze the top N layers of the base (default: its last block)")

    p = command("calibrate", cmd_calibrate, "calibrate a RUN's probabilities and set the threshold above which a "
                "photo is labelled unknown, on its validation split (RUN/calibration.json)")
    p.add_argument("run", type=Path)
    p.add_argument("--accept", type=float, default=0.98, help="the share of in-distribution validation photos to "
                   "accept (default 0.98)")
    p.add_argument("--other", type=Path, metavar="FOLDER", help="photos of none of the classes: report the AUROC "
                   "and the share rejected")

    p = command("evaluate", cmd_evaluate, "metrics of a trained RUN on a split")
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

    p = command("predict", cmd_predict, "classify image files and folders")
    p.add_argument("run", type=Path)
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--threshold", type=float)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write the CSV to FILE as it goes (bounded memory, progress with rate and ETA)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output FILE")
    add_engine_argument(p)

    p = command("explain", cmd_explain, "Grad-CAM heat map of one image: the predicted class (or --target) and the runner-up")
    p.add_argument("run", type=Path)
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, metavar="PNG", help="default: IMAGE-gradcam.png in this folder")
    p.add_argument("--layer", help="conv layer to explain (default: the last one, found automatically)")
    p.add_argument("--target", metavar="CLASS", help="the class to explain (default: the predicted one)")
    p = command("serve", cmd_serve, "web page and REST API classifying uploaded photos with RUN")
    p.add_argument("run", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=non_negative_int, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body accepted (default 10)")
    add_engine_argument(p)
    p.add_argument("--threshold", type=float, help="decision threshold (default: tuned, else 0.5)")

    p = command("report", cmd_report, "one self-contained HTML page comparing runs")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    p.add_argument("--out", type=Path, required=True, metavar="HTML")
    p.add_argument("--title", default="catsdogs report")
    p.set_defaults(needs_tensorflow=False)

    p = command("reproduce", cmd_reproduce, "the whole study: prepare, every experiment, evaluate, report")
    p.add_argument("--source", type=Path, help="default: ../shared/data/dogs-vs-cats-train-5000.zip")
    p.add_argument("--out", type=Path, required=True, metavar="STUDY")
    p.add_argument("--quick", action="store_true", help="a few-minute demo instead of the full study")
    p.add_argument("--backbone", help="pretrained base of the last three experiments "
                   "(default: efficientnet_lite2 when installed, else mobilenetv2)")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")

    p = command("download", cmd_download, "fetch Microsoft's PetImages archive (needs internet; resumable)")
    p.add_argument("--url", help="default: Microsoft's download URL, or $CATSDOGS_PETIMAGES_URL")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--sha256", help="expected checksum; a mismatch deletes the download")
    p.add_argument("--force", action="store_true", help="replace an existing complete FILE")
    p.set_defaults(needs_tensorflow=False)

    p = command("export", cmd_export, "export a RUN to a standard format, verified against Keras")
    p.add_argument("run", type=Path)
    p.add_argument("--format", choices=["savedmodel", "onnx", "tflite"], required=True)
    p.add_argument("--out", type=Path, required=True, metavar="PATH")
    p.add_argument("--quantize", choices=["int8"], help="post-training int8 (ONNX): calibrated on the train split; "
                   "refused when test accuracy drops more than 0.5 point; the measurement goes to PATH.quantization.json")
    p.add_argument("--calibration-images", type=positive_int, default=200, metavar="N",
                   help="train images to calibrate int8 ranges on (default 200)")

    p = command("bench", cmd_bench, "training and inference speed: plain Keras, catsdogs, engines, peak")
    p.add_argument("--data", type=Path, help="a prepared DATA (default: prepare the default source in a temp dir)")
    p.add_argument("--steps", type=positive_int, default=40, help="timed training steps (default 40)")
    p.add_argument("--warmup", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--run", type=Path, help="a trained RUN with a pretrained backbone (e.g. study/finetune) for the "
                   "engines and end-to-end timings (default: the default backbone under an untrained head)")
    p.add_argument("--photos", type=positive_int, default=200, help="full-size test JPEGs predicted end to end "
                   "(default 200)")
    return parser


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN, absl) kept off stderr; `--debug` shows it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import keras  # noqa: F401  (imports tensorflow)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def in_flags(error: CatsdogsError, parser: argparse.ArgumentParser, command: str) -> str:
    """The library's message in the command line's words: the parameter at fault, and any on/off option
    named in it, become their flags (`epochs must be >= 1` -> `--epochs must be >= 1`)."""
    message = str(error)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {action.dest: action.option_strings[-1] for action in subparsers.choices[command]._actions
             if action.option_strings and action.option_strings[-1].startswith("--")}
    switches = {dest for dest, flag in flags.items()
                if isinstance(subparsers.choices[command]._option_string_actions[flag], argparse._StoreTrueAction)}
    aliases = {"overwrite": "force"} if "force" in flags and "overwrite" not in flags else {}
    for name, dest in aliases.items():
        flags[name] = flags[dest]
        switches.add(name)
    named = {getattr(error, "parameter", None), *switches, *(dest for dest in flags if "_" in dest)}
    for name in named & set(flags):
        message = re.sub(rf"(?<![\w-]){re.escape(name)}=(True|'[^']*'|\S+)",
                         lambda m, n=name: flags[n] if m.group(1) == "True" else f"{flags[n]} {m.group(1).strip(chr(39))}",
                         message)
        message = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/.-])", flags[name], message)
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # usage errors (2) and --help/--version (0), already printed by argparse
        return int(exit.code or 0)
    try:
        if getattr(args, "needs_tensorflow", True):
            use_shared_weights()
            if not args.debug:
                import_tensorflow_quietly()
        args.handler(args)
    except CatsdogsError as error:
        if args.debug:
            raise
        print(f"catsdogs {args.command}: error: {in_flags(error, parser, args.command)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"catsdogs {args.command}: interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - the one place that turns surprises into one line
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"catsdogs {args.command}: error: {type(error).__name__}: {message} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
