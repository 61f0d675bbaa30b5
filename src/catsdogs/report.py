"""One self-contained HTML page and a results.md table comparing run folders (no Keras).

A run folder holds config.json (required), history.csv, curves.png, classes.json, metrics.json,
threshold.json, plots/*.png, predictions-test.csv and explain/*.png; optional files may be missing.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from catsdogs import __version__
from catsdogs.errors import UsageError
from catsdogs.files import check_out_file
from catsdogs.html_parts import DASH, escape, figure, file_figure, is_number, num, table, text
from catsdogs.plots import EVALUATION_PLOTS, GALLERY_PNG, figure_png, gallery_figure, most_wrong
from catsdogs.runs import Run
from catsdogs.trust_report import TRUST_PLOTS, trust_section

MAX_EXPLAIN = 4
GALLERY_SIZE = 16
#: Published numbers are read from these keys of ``published[model]`` (see catsdogs.published).
PUBLISHED_KEYS = ("train", "val", "test")


def _number_or_text(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings; [] when the file is absent."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def run_files(run_dirs: Sequence[Path]) -> Iterator[Path]:
    """The files of the run folders (all but HTML pages, which a report never reads): what a report must never
    be written over. Lazy: walked only when the report's path exists."""
    for folder in run_dirs:
        yield from (path for path in Path(folder).rglob("*") if path.suffix.lower() != ".html")


def _load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    if not run_dirs:
        raise UsageError("no run folders given")
    return [Run(Path(d)) for d in run_dirs]


def format_duration(seconds) -> str:
    """'42 s', '3 min 05 s' or '1 h 02 min'."""
    if not is_number(seconds):
        return DASH
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# Columns of the comparison tables: (header, value of a run as text).
Column = tuple[str, Callable[[Run], str]]
_COLUMNS: dict[str, Column] = {
    "run": ("run", lambda r: r.name),
    "model": ("model", lambda r: text(r.recipe)),
    "backbone": ("backbone", lambda r: text(r.config.get("backbone"))),
    "epochs": ("epochs", lambda r: r.epochs_text),
    "wall": ("wall time", lambda r: format_duration(r.config.get("wall_time_s"))),
    "train": ("train acc", lambda r: num(r.final_train_acc)),
    "val": ("val acc", lambda r: num(r.best_val_acc)),
    "test": ("test acc", lambda r: num((r.test_metrics or {}).get("accuracy"))),
    "log_loss": ("test log loss", lambda r: num((r.test_metrics or {}).get("log_loss"))),
    "auc": ("test AUC", lambda r: num((r.test_metrics or {}).get("roc_auc"))),
    "threshold": ("threshold", lambda r: num(r.threshold, 2)),
}
HTML_COLUMNS = ("run", "model", "backbone", "epochs", "wall", "train", "val", "test", "log_loss", "auc", "threshold")
MARKDOWN_COLUMNS = ("run", "model", "backbone", "epochs", "train", "val", "test", "wall")


def _columns(keys: Sequence[str], published: dict[str, dict] | None) -> list[Column]:
    cols = [_COLUMNS[k] for k in keys]
    if published is not None:
        for key in PUBLISHED_KEYS:
            cols.append((f"published {key}", lambda r, k=key: num((published.get(r.model_name) or {}).get(k))))
    return cols


def _summary(runs: Sequence[Run], keys: Sequence[str], published) -> tuple[list[str], list[list[str]]]:
    cols = _columns(keys, published)
    return [h for h, _ in cols], [[value(r) for _, value in cols] for r in runs]


def _markdown_escape(text: str) -> str:
    """Text for a Markdown table cell: one line, with |, HTML and emphasis characters escaped."""
    return re.sub(r"([\\`*|<>])", r"\\\1", " ".join(text.split()))


def write_results_markdown(run_dirs: Sequence[Path], out_md: Path, *, published: dict[str, dict] | None = None) -> Path:
    """results.md: one table row per run with train/val/test accuracy, epochs, wall time and,
    when given, the study's published numbers."""
    check_out_file(out_md)
    header, rows = _summary(_load_runs(run_dirs), MARKDOWN_COLUMNS, published)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_markdown_escape(c) for c in cells) + " |"

    lines = [
        "# Results",
        "",
        "Accuracy is a fraction: train on the last epoch, validation on the best epoch (the saved model),"
        " test from `metrics.json`.",
        "",
        line(header),
        line(["---"] * len(header)),
        *(line(r) for r in rows),
        "",
    ]
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines), encoding="utf-8")
    return out_md


# ---------------------------------------------------------------- HTML

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
 background:#fff;line-height:1.45;max-width:1200px;margin:0 auto;padding:0 12px 48px;overflow-wrap:anywhere}
h1{font-size:1.6rem;margin:.8em 0 .3em}h2{font-size:1.3rem;margin:0;padding-top:1em}
h3{font-size:1.05rem;margin:1.2em 0 .4em}
section.run{border-top:3px solid #e5e7eb;margin-top:2em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;margin:.3em 0}
th,td{padding:.3em .6em;border-bottom:1px solid #e5e7eb;text-align:right;white-space:nowrap}
th{background:#f3f4f6;vertical-align:bottom}th:first-child,td:first-child{text-align:left}
.published{background:#fef9e7}
table.compare th{white-space:normal;overflow-wrap:normal}
table.compare th,table.compare td{padding:.3em .45em}
table.compare td:first-child{position:sticky;left:0;background:#fff;box-shadow:1px 0 0 #e5e7eb}
table.kv th,table.kv td{text-align:left;white-space:normal}table.kv td:first-child{white-space:nowrap}
.row{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}
img{max-width:100%;height:auto;display:block}
figure{margin:0 0 12px}figcaption{font-size:.85rem;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,440px),1fr));gap:12px 20px}
.muted{color:#666;font-size:.9rem}
nav ul{padding-left:1.2em}
pre{overflow-x:auto;background:#f8f8f8;padding:.6em;font-size:.8rem}
@media (max-width:600px){body{font-size:15px}table{font-size:.8rem}h1{font-size:1.3rem}}
"""


def _config_html(run: Run) -> str:
    c = run.config
    versions = c.get("versions")
    rows = [
        ("model", text(c.get("model"))),
        ("schedule", text(c.get("schedule", "constant"))),
        ("backbone", text(c.get("backbone"))),
        ("image size", text(c.get("image_size"))),
        ("epochs", run.epochs_text),
        ("seed", text(c.get("seed"))),
        ("precision", text(c.get("precision"))),
        ("wall time", format_duration(c.get("wall_time_s"))),
        ("data", text(c.get("data"))),
        ("manifest sha256", text(c.get("manifest_sha256"))[:16]),
        ("classes", ", ".join(run.classes) if run.classes else DASH),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else text(versions)),
    ]
    everything = json.dumps(c, indent=2, sort_keys=True, default=str)
    return (table(("setting", "value"), rows, kind="kv")
            + f"<details><summary>all settings</summary><pre>{escape(everything)}</pre></details>")


def _metrics_html(metrics: dict) -> str:
    split = metrics.get("split", "test")
    headline = [
        ("accuracy", num(metrics.get("accuracy"), 4)),
        ("balanced accuracy", num(metrics.get("balanced_accuracy"), 4)),
        ("ROC AUC", num(metrics.get("roc_auc"), 4)),
        ("log loss", num(metrics.get("log_loss"), 4)),
        ("Brier score", num(metrics.get("brier"), 4)),
        ("ECE (10 bins)", num(metrics.get("ece"), 4)),
        ("threshold", num(metrics.get("threshold"), 3)),
        ("images", text(metrics.get("n"))),
    ]
    parts = [f'<h3>Metrics on the {escape(split)} split</h3><div class="row">', table(("metric", "value"), headline)]
    per_class = metrics.get("per_class") or {}
    rows = [(name, *(num(m.get(k), 4) for k in ("precision", "recall", "f1")), text(m.get("support")))
            for name, m in per_class.items()]
    if "macro" in metrics:
        rows.append(("macro avg", *(num(metrics["macro"].get(k), 4) for k in ("precision", "recall", "f1")), DASH))
    if rows:
        parts.append(table(("class", "precision", "recall", "F1", "support"), rows))
    cm = metrics.get("confusion_matrix") or {}
    if cm.get("labels") and cm.get("matrix"):
        header = ["true \u2193 / predicted \u2192", *map(str, cm["labels"])]
        parts.append(table(header, [(str(n), *map(str, row)) for n, row in zip(cm["labels"], cm["matrix"])]))
    return "".join(parts) + "</div>"


def _resolve_image(path: str, run: Run) -> Path:
    """An image path from predictions-test.csv, tried as given, then under the run and data folders."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    bases = [run.path] + ([Path(str(run.config["data"]))] if run.config.get("data") else [])
    return next((b / p for b in bases if (b / p).exists()), p)


def _gallery_html(run: Run) -> str:
    """plots/most_wrong.png if present, else a gallery drawn from predictions-test.csv, else "".

    The true label is read from a ``true_label`` or ``true`` column if there is one, else ``label``.
    """
    heading = "<h3>Most confidently wrong test images</h3>"
    saved = run.path / "plots" / GALLERY_PNG
    if saved.is_file():
        return heading + figure(saved.read_bytes(), "most confidently wrong")
    rows = _read_csv(run.path / "predictions-test.csv")
    if not rows or not run.classes:
        return ""
    keys = [f"p_{name}" for name in run.classes] if len(run.classes) > 2 else [f"p_{run.classes[1]}"]
    label_key = next(k for k in ("true_label", "true", "label") if k in rows[0] or k == "label")
    index = {"0": 0, "1": 1} | {name: i for i, name in enumerate(run.classes)}
    usable = []
    for row in rows:
        values = [_number_or_text(row.get(key)) for key in keys]
        if row.get(label_key) in index and all(is_number(v) and 0 <= v <= 1 for v in values):
            usable.append((row.get("path") or "", index[row[label_key]], values if len(values) > 1 else values[0]))
    if not usable:
        return ""
    paths, labels, scores = zip(*usable)
    records = most_wrong(
        [str(_resolve_image(path, run)) for path in paths],
        list(labels),
        list(scores),
        n=GALLERY_SIZE,
        threshold=0.5 if run.threshold is None else run.threshold,
    )
    if not records:
        return heading + "<p>No misclassified test images.</p>"
    return heading + figure(figure_png(gallery_figure(records, run.classes)), "most confidently wrong")


def _run_html(run: Run, anchor: str) -> str:
    parts = [f'<section class="run" id="{anchor}"><h2>{escape(run.name)}</h2>',
             f'<p class="muted">{escape(run.path)}</p>', "<h3>Configuration</h3>", _config_html(run)]
    curves = run.path / "curves.png"
    if curves.is_file():
        parts += ["<h3>Training curves</h3>", figure(curves.read_bytes(), "training and validation curves")]
    if run.metrics:
        parts.append(_metrics_html(run.metrics))
    known = list(EVALUATION_PLOTS.values())
    plots = sorted((p for p in (run.path / "plots").glob("*.png") if p.name not in (GALLERY_PNG, *TRUST_PLOTS)),
                   key=lambda p: (known.index(p.name) if p.name in known else len(known), p.name))
    if plots:
        parts += ["<h3>Evaluation plots</h3>", '<div class="grid">', *map(file_figure, plots), "</div>"]
    parts.append(trust_section(run.path, run.classes, run.metrics))
    parts.append(_gallery_html(run))
    explain = sorted((run.path / "explain").glob("*.png"))[:MAX_EXPLAIN]
    if explain:
        parts += ["<h3>Grad-CAM</h3>", '<div class="grid">', *map(file_figure, explain), "</div>"]
    parts.append("</section>")
    return "\n".join(parts)


def write_report(run_dirs: Sequence[Path], out_html: Path, *, title: str = "catsdogs report",
                 published: dict[str, dict] | None = None, sections: Sequence[str] = ()) -> Path:
    """Write one self-contained, phone-friendly HTML page comparing the runs (images embedded); `sections`
    are extra HTML blocks placed after the comparison (e.g. `catsdogs fit`'s audit). Never written over a file
    of the runs."""
    check_out_file(out_html, inputs=run_files(run_dirs))
    runs = _load_runs(run_dirs)
    anchors = [f"run-{i}" for i in range(1, len(runs) + 1)]
    header, rows = _summary(runs, HTML_COLUMNS, published)
    nav = "".join(f'<li><a href="#{a}">{escape(r.name)}</a></li>' for r, a in zip(runs, anchors))
    note = (' <span class="published">Shaded columns: the study\'s published numbers.</span>'
            if published is not None else "")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="muted">{len(runs)} run(s). Accuracy: train on the last epoch, validation on the best epoch
(the saved model), test from metrics.json.{note}</p>
<h2>Comparison</h2>
{table(header, rows, kind="compare", published_from=len(HTML_COLUMNS) if published is not None else None)}
{"".join(sections)}
<nav><ul>{nav}</ul></nav>
{"".join(_run_html(r, a) for r, a in zip(runs, anchors))}
<p class="muted">Generated by catsdogs {escape(__version__)} on {generated}.</p>
</body>
</html>
"""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
