"""The commands that use a trained run on new photos: `predict`, `serve` (web page and REST API), `export`."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from catsdogs.cli.common import add_command, add_engine_argument, port_number, positive_int
from catsdogs.errors import CatsdogsError, UsageError


def register(commands) -> None:
    add_predict(commands)
    add_serve(commands)
    add_export(commands)


def add_predict(commands) -> None:
    p = add_command(commands, "predict", cmd_predict, "classify image files and folders")
    p.add_argument("run", type=Path)
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--threshold", type=float)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="write the CSV to FILE as it goes (bounded memory, progress with rate and ETA)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --output FILE")
    add_engine_argument(p)


def cmd_predict(args: argparse.Namespace) -> None:
    from catsdogs.predict import Predictor

    predictor = Predictor(args.run, threshold=args.threshold, tta=args.tta, engine=args.engine,
                          samples=_engine_samples(args.run, args.engine))
    if predictor.tuned_threshold is not None and args.threshold is None:
        print(f"using the tuned threshold {predictor.threshold:.3f} from {args.run}", file=sys.stderr)
    missing = [str(p) for p in args.paths if not p.exists()]
    if args.output is not None or args.resume:  # hook: streaming to a file (catsdogs.stream)
        from catsdogs.stream import stream_predictions

        if args.output is None:
            raise UsageError("--resume needs --output FILE (the CSV to continue)")
        if args.format != "csv":
            raise UsageError(f"--output writes CSV: --format {args.format} cannot be streamed (leave --format out, "
                             "or write JSON to stdout without --output)")
        summary = stream_predictions(predictor, [p for p in args.paths if p.exists()], args.output,
                                     resume=args.resume)
        print(f"wrote {summary.written} rows to {summary.output} ({summary.skipped} already there, "
              f"{summary.errors} errors) in {summary.seconds:.1f} s", file=sys.stderr)
        if missing:
            raise UsageError(f"no such file: {', '.join(missing)} (the other files were classified)")
        return
    from catsdogs.progress import track
    from catsdogs.stream import count_files

    predictions = predictor.predict_paths(args.paths)
    if not sys.stdout.isatty():  # on a terminal the rows themselves show the progress
        predictions = track(predictions, count_files(args.paths), "predicting")
    if args.format == "json":
        threshold = predictor.threshold if len(predictor.classes) == 2 else None
        from catsdogs.run_files import json_text

        print(json_text([{**vars(p), "threshold": threshold} for p in predictions]))
    else:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        from catsdogs.stream import csv_header, csv_row

        writer.writerow(csv_header(predictor.classes))
        for p in predictions:
            writer.writerow(csv_row(p, predictor.classes))
            sys.stdout.flush()
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)} (the other files were classified)")


def add_serve(commands) -> None:
    p = add_command(commands, "serve", cmd_serve, "web page and REST API classifying uploaded photos with RUN")
    p.add_argument("run", type=Path)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=port_number, default=8000, help="default 8000; 0 picks a free port")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body accepted (default 10)")
    add_engine_argument(p)
    p.add_argument("--threshold", type=float, help="decision threshold (default: tuned, else 0.5)")


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
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold:g}")
    app = serve.create_app(args.run, threshold=args.threshold, max_upload_mb=args.max_upload_mb,
                           engine=args.engine, samples=_engine_samples(args.run, args.engine))
    sock = serve.listen(args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines; there is no authentication",
              file=sys.stderr)
    print(f"serving {args.run} at {serve.url_of(sock)} (API schema: {serve.url_of(sock)}openapi.json; Ctrl+C stops)",
          flush=True)
    serve.serve_forever(app, sock, log_level="info" if args.debug else "warning")


def add_export(commands) -> None:
    p = add_command(commands, "export", cmd_export, "export a RUN to a standard format, verified against Keras")
    p.add_argument("run", type=Path)
    p.add_argument("--format", choices=["savedmodel", "onnx", "tflite"], required=True)
    p.add_argument("--out", type=Path, required=True, metavar="PATH")
    p.add_argument("--quantize", choices=["int8"], help="post-training int8 (ONNX): calibrated on the train split; "
                   "refused when test accuracy drops more than 0.5 point; the measurement goes to PATH.quantization.json")
    p.add_argument("--calibration-images", type=positive_int, default=200, metavar="N",
                   help="train images to calibrate int8 ranges on (default 200)")


def cmd_export(args: argparse.Namespace) -> None:
    from catsdogs.export import export_model
    from catsdogs.predict import Predictor

    predictor = Predictor(args.run)
    if args.quantize:
        return _export_int8(args, predictor)
    from catsdogs.trust import export_metadata, write_export_metadata

    samples = _sample_images(args.run, predictor.image_size)
    result = export_model(predictor.model, args.format, args.out, samples, metadata=export_metadata(args.run))
    print(f"exported {args.run} as {result.format} to {result.path}")
    if (metadata := write_export_metadata(args.run, result.path)) is not None:
        print(f"calibration and unknown threshold (in the file's metadata and {metadata}; apply them in your "
              "runtime: docs/serving-and-export.md)")
    print(f"input:  {result.input_signature}")
    print(f"output: {result.output_signature}")
    note = " (float32 rebuild of a bf16 model)" if result.float32_rebuild else ""
    print(f"verified on {len(samples)} images: max |p_export - p_keras| = {result.max_abs_diff:.2e}{note}")


def _export_int8(args: argparse.Namespace, predictor) -> None:
    """`export --quantize int8`: calibrated on the run's train split, measured on its test split."""
    from catsdogs.quantize import quantize_run, report_path

    if args.format != "onnx":
        raise UsageError(f"--quantize int8 writes an ONNX graph; use --format onnx, not {args.format}")
    from catsdogs.export_metadata import embed_metadata
    from catsdogs.trust import export_metadata

    report = quantize_run(args.run, args.out, model=predictor.model, calibration_images=args.calibration_images)
    embed_metadata("onnx", args.out, export_metadata(args.run))
    print(f"exported {args.run} as int8 onnx to {report.path} (calibration in its metadata_props)")
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
