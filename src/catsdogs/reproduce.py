"""`catsdogs reproduce`: the whole study in one call; re-running the same STUDY resumes it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from catsdogs.evaluate import evaluate
from catsdogs.prepare import prepare
from catsdogs.runs import CHECKPOINT_DIR, CONFIG, METRICS, read_json
from catsdogs.train import TrainOptions, train


@dataclass(frozen=True)
class Experiment:
    """One row of the study: a model, its epochs in the full and the quick study."""

    name: str
    model: str
    epochs: int
    quick_epochs: int
    uses_backbone: bool = False


STUDY = [
    Experiment("baseline", "baseline", epochs=30, quick_epochs=2),
]
QUICK_SPLIT = {"train": 400, "val": 200, "test": 200}
PUBLISHED = {  # Deep Learning with Python (Chollet), the small-data chapter
    "baseline": {"train": 0.85, "val": 0.82, "test": None},
    "augmented": {"train": 0.84, "val": 0.88, "test": 0.89},
    "features": {"train": None, "val": None, "test": 0.897},
}


def say(message: str) -> None:
    print(f"[reproduce] {message}", file=sys.stderr, flush=True)


def reproduce(source: Path, out: Path, *, quick: bool = False, precision: str = "auto") -> Path:
    """Prepare SOURCE into STUDY/data, run each experiment into STUDY/runs/NAME, evaluate, and report."""
    out = Path(out)
    data, cache = out / "data", out / "cache"
    if (data / "prepare.json").exists() and read_json(data / "prepare.json")["source"] == str(Path(source).resolve()):
        say(f"data already prepared in {data}")
    else:
        say(f"preparing {source} -> {data}")
        print(prepare(source, data, **(QUICK_SPLIT if quick else {})).line(), file=sys.stderr)
    runs = []
    for experiment in STUDY:
        run = out / "runs" / experiment.name
        runs.append(run)
        status = read_json(run / CONFIG).get("status") if (run / CONFIG).exists() else None
        if status == "complete":
            say(f"{experiment.name}: already trained, skipping")
        else:
            resume = (run / CHECKPOINT_DIR).exists()
            epochs = experiment.quick_epochs if quick else experiment.epochs
            say(f"{experiment.name}: {'resuming' if resume else 'training'} {experiment.model} for {epochs} epochs")
            train(TrainOptions(data=data, model=experiment.model, out=run, epochs=epochs, precision=precision,
                               cache_dir=cache, resume=resume))
        if not (run / METRICS).exists():
            metrics = evaluate(run, data, "test", cache_dir=cache)
            say(f"{experiment.name}: test accuracy {metrics['accuracy']:.3f}")
    say(f"ran: {', '.join(e.name for e in STUDY)}")
    _write_results(out, runs)
    return out


def _write_results(out: Path, runs: list[Path]) -> None:
    """STUDY/results.md and the self-contained STUDY/report.html, beside the study's published numbers."""
    from catsdogs.report import write_report, write_results_markdown

    write_results_markdown(runs, out / "results.md", published=PUBLISHED)
    write_report(runs, out / "report.html", title="catsdogs: the Dogs vs. Cats small-data study",
                 published=PUBLISHED)
    say(f"results: {out / 'results.md'}; report: {out / 'report.html'}")
