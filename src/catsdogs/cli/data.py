"""The data commands: `prepare` (SOURCE -> DATA), `audit` (DATA -> AUDIT), `download` (PetImages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catsdogs.cli.common import (
    DEFAULT_SOURCE_HELP,
    add_command,
    add_corrections_argument,
    add_input_argument,
    add_overwrite_argument,
    add_split_arguments,
    default_source,
)


def register(commands) -> None:
    add_prepare(commands)
    add_audit(commands)
    add_download(commands)


def add_prepare(commands) -> None:
    p = add_command(commands, "prepare", cmd_prepare, "check, de-duplicate and split SOURCE (folder or .zip) into "
                    "DATA", needs_tensorflow=False)
    add_input_argument(p, "source", f"Kaggle train.zip, PetImages, or one folder per class ({DEFAULT_SOURCE_HELP})")
    p.add_argument("--out", type=Path, required=True, metavar="DATA")
    add_split_arguments(p, "training photos: a count in total (3000) or a fraction of each class (0.7 or 70%%); "
                        "default: what validation and test leave")
    add_overwrite_argument(p, "replace a DATA made from another source")
    p.add_argument("--exclude", type=Path, metavar="FILE", help="leave out the photos a CSV's path column names: "
                   "an AUDIT/issues.csv (DATA paths, matched by sha256 through the audited DATA's manifest) or "
                   "paths inside SOURCE")
    add_corrections_argument(p)
    p.add_argument("--dedupe", choices=["exact", "near"], default="exact", help="exact (default): identical files "
                   "kept once; near: also one photo of each group of near-duplicates (perceptual hash)")
    p.add_argument("--group", choices=["near", "burst", "none"], help="photos that belong together go to one "
                   "split when splits are carved: near-duplicates (perceptual hash), bursts (same camera, EXIF times "
                   "within 2 s); default: both")
    p.add_argument("--allow-outside-csv-paths", action="store_true", help="a CSV SOURCE may name files outside "
                   "its own folder (absolute or ../ paths); refused rows by default")


def cmd_prepare(args: argparse.Namespace) -> None:
    from catsdogs.preparation import prepare

    source = args.source or default_source()
    summary = prepare(source, args.out, train=args.train, val=args.val, test=args.test, seed=args.seed,
                      overwrite=args.overwrite, exclude=args.exclude, dedupe=args.dedupe,
                      allow_outside=args.allow_outside_csv_paths, corrections=args.corrections,
                      group=args.group or "near+burst")
    print(summary.line())
    print(summary.audit_line())


def add_audit(commands) -> None:
    p = add_command(commands, "audit", cmd_audit, "near-duplicates, likely label errors and outliers of a prepared "
                    "DATA: AUDIT/issues.csv and AUDIT/audit.html")
    add_input_argument(p, "data", "a prepared DATA", required=True)
    p.add_argument("--out", type=Path, required=True, metavar="AUDIT")
    p.add_argument("--backbone", help="embeddings' ImageNet backbone (default efficientnet_lite0, else mobilenetv2; "
                   "any train --backbone name)")
    p.add_argument("--cache-dir", type=Path, help="features and hashes cache (default AUDIT/cache; give fit's "
                   "RUN/cache to reuse its features)")


def cmd_audit(args: argparse.Namespace) -> None:
    from catsdogs.auditing import audit

    result = audit(args.data, args.out, backbone=args.backbone, cache_dir=args.cache_dir)
    print(result.line())


def add_download(commands) -> None:
    p = add_command(commands, "download", cmd_download, "fetch Microsoft's PetImages archive (needs internet; "
                    "resumable)", needs_tensorflow=False)
    p.add_argument("--url", help="default: Microsoft's download URL, or $CATSDOGS_PETIMAGES_URL")
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--sha256", help="expected checksum; a mismatch deletes the download")
    add_overwrite_argument(p, "replace an existing complete FILE")


def cmd_download(args: argparse.Namespace) -> None:
    from catsdogs.download import download, resolve_url
    from catsdogs.progress import Progress

    url = resolve_url(args.url)
    print(f"downloading {url} -> {args.out}", file=sys.stderr)
    progress = Progress("downloaded", unit="MB")

    def report(done: int, total: int | None) -> None:
        progress.total = total // 2**20 if total else None
        progress.update(done // 2**20 - progress.done)

    result = download(args.out, url, expected_sha256=args.sha256, overwrite=args.overwrite, progress=report)
    progress.close()
    resumed = " (resumed)" if result.resumed else ""
    print(f"saved {result.path}: {result.size:,} bytes, sha256 {result.sha256}{resumed}")
