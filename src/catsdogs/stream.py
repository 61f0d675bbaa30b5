"""`catsdogs predict ... --output FILE [--resume]`: classify any number of files in bounded memory.

Files are listed lazily (sorted walk, the order `predict` always uses), classified batch by batch, and each
batch's rows are appended to FILE and flushed before the next: memory holds one batch, whatever the count.
A re-run with `resume` keeps FILE's complete rows and carries on after them (the file order is
deterministic, so the rows already written are exactly the first ones; a torn last line is dropped).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from catsdogs.errors import UsageError
from catsdogs.files import check_out_file, safe_cell
from catsdogs.progress import progress as progress_line
from catsdogs.sources import iter_image_files
from catsdogs.verbosity import get_verbosity


@dataclass
class StreamSummary:
    output: Path
    written: int  # rows written by this call
    skipped: int  # rows already in FILE (resume)
    errors: int  # rows with an error
    seconds: float


def csv_header(classes: list[str]) -> list[str]:
    return [safe_cell(cell) for cell in ("path", "label", *(f"p_{name}" for name in classes), "novelty", "error")]


def csv_row(prediction, classes: list[str]) -> list[str]:
    """One predict CSV row (the one writer of predict's CSV, streamed or not): names made spreadsheet-safe."""
    probabilities = [f"{prediction.probabilities[name]:.6f}" if prediction.probabilities else "" for name in classes]
    novelty = getattr(prediction, "novelty", None)  # empty for a RUN without calibration.json (catsdogs.trust)
    return [safe_cell(prediction.path), safe_cell(prediction.label), *probabilities,
            "" if novelty is None else f"{novelty:.6f}", safe_cell(prediction.error)]


def _header_line(header: list[str]) -> bytes:
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(header)
    return line.getvalue().encode("utf-8")


def _complete_rows(output: Path, header: list[str]) -> tuple[int, str | None]:
    """Complete data rows in an existing FILE and the last row's path, once FILE is known to be a predict CSV
    of this run; then a torn last line (a kill mid-write, even within the header) is cut off."""
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    not_ours = UsageError(f"{output} is not a predict CSV of this run; choose another output", "output")
    if not end and not _header_line(header).startswith(data):
        raise not_ours
    try:
        rows = list(csv.reader(io.StringIO(data[:end].decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error):
        raise not_ours from None
    if rows and rows[0] != header:
        raise UsageError(f"{output} is not a predict CSV of this run (header {','.join(rows[0])}); "
                         "choose another output", "output")
    if end < len(data):  # the last line was cut short by a kill: drop it
        with open(output, "rb+") as handle:
            handle.truncate(end)
    return max(0, len(rows) - 1), (rows[-1][0] if len(rows) > 1 else None)


def count_files(paths: Iterable[Path]) -> int:
    return sum(1 for _ in iter_image_files([Path(p) for p in paths]))


def stream_predictions(predictor, paths: list[Path], output: Path, *, resume: bool = False,
                       progress: bool = True) -> StreamSummary:
    """Classify `paths` (files and folders) into the CSV `output`, appending as it goes."""
    import time

    output, paths = check_out_file(output, "output"), [Path(p) for p in paths]
    header = csv_header(predictor.classes)
    skipped, last = 0, None
    if output.exists() and output.stat().st_size:
        if not resume:
            raise UsageError(f"{output} already exists; resume=True continues it, or choose another output",
                             "resume")
        skipped, last = _complete_rows(output, header)
    progress = progress and get_verbosity() >= 1
    total = count_files(paths) if progress else None
    files: Iterator[Path] = iter_image_files(paths)
    if skipped:
        done = list(islice(files, skipped - 1))  # only to check the order: the last one must be `last`
        check = next(files, None)
        if check is None or safe_cell(str(check)) != last:
            raise UsageError(f"{output}: its rows are not the first files of these PATHs in order; "
                             "resume needs the same PATH arguments", "resume")
        del done
    started = time.perf_counter()
    bar = progress_line((total - skipped) if total is not None else None, f"predicting -> {output.name}",
                        unit="images") if progress else None
    written = errors = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    has_header = output.exists() and output.stat().st_size > 0  # resumed: at least the header is there
    with open(output, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if not has_header:
            writer.writerow(header)
        batch: list[list[str]] = []
        for prediction in predictor.predict_paths(files):
            batch.append(csv_row(prediction, predictor.classes))
            errors += bool(prediction.error)
            if len(batch) >= predictor.batch_size:
                written += _flush(writer, handle, batch, bar)
                batch = []
        written += _flush(writer, handle, batch, bar)
    if bar:
        bar.close()
    return StreamSummary(output, written, skipped, errors, time.perf_counter() - started)


def _flush(writer, handle, rows: list[list[str]], bar) -> int:
    writer.writerows(rows)
    handle.flush()
    os.fsync(handle.fileno())
    if bar:
        bar.update(len(rows))
    return len(rows)
