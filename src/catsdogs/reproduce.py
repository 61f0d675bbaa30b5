"""`catsdogs reproduce`: the whole study in one call; re-running the same STUDY resumes it."""

from __future__ import annotations

import json
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
    "baseline": {"train": 0.85, "validation": 0.82, "test": None},
    "augmented": {"train": 0.84, "validation": 0.88, "test": 0.89},
    "features": {"train": None, "validation": None, "test": 0.897},
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
    """STUDY/results.md: one row per experiment beside the study's published numbers."""
    lines = ["| experiment | epochs | train acc | val acc | test acc | wall time (s) | published train/val/test |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        config, metrics = read_json(run / CONFIG), read_json(run / METRICS)
        from catsdogs.train import read_history

        best = read_history(run)[config["best_epoch"]]
        published = PUBLISHED.get(run.name, {})
        shown = "/".join(f"{published.get(k):.0%}" if published.get(k) else "-" for k in ("train", "validation", "test"))
        lines.append(f"| {run.name} | {config['epochs_run']} | {best['accuracy']:.3f} | {best['val_accuracy']:.3f} | "
                     f"{metrics['accuracy']:.3f} | {config['wall_time_s']:.0f} | {shown} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({"results": str(out / "results.md")}), file=sys.stderr)
