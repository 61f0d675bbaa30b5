"""The report's "Calibration and unknown photos" section of a RUN (no Keras): the calibration and novelty
threshold from RUN/calibration.json, the before/after numbers and the selective-prediction operating point
from the `trust` entry that `evaluate` saves in metrics.json, and the plots it draws (catsdogs.trust)."""

from __future__ import annotations

from pathlib import Path

from catsdogs.html_parts import escape, file_figure, is_number, num, share, table, text
from catsdogs.run_files import read_json
from catsdogs.trust import CALIBRATION

TRUST_PLOTS = ("reliability-before.png", "reliability-after.png", "coverage.png")
HEADING = "<h3>Calibration and unknown photos</h3>"


def trust_section(run_path: Path, classes: list[str], metrics: dict | None) -> str:
    """The section's HTML, or a one-line note when the RUN has no calibration.json."""
    run_path = Path(run_path)
    source = run_path / CALIBRATION
    if not source.is_file():
        return (f'{HEADING}<p class="muted">Not calibrated (no {CALIBRATION}): the probabilities are the model\'s '
                "own and no photo is labelled unknown; <code>catsdogs calibrate RUN</code> adds both without "
                "retraining.</p>")
    data = read_json(source)
    calibration, novelty = data.get("calibration") or {}, data.get("novelty") or {}
    trust = (metrics or {}).get("trust") or {}
    split = (metrics or {}).get("split", "test")
    parts = [HEADING, f"<p>{_method_text(calibration, classes)}; fitted on the {escape(data.get('split', 'validation'))}"
             f" split ({escape(text(data.get('n_validation', calibration.get('n'))))} photos), where its log loss went "
             f"{num(calibration.get('nll_before'), 4)} \u2192 {num(calibration.get('nll_after'), 4)}.</p>"]
    if trust:
        rows = [(name, num(trust.get(f"{key}_before_calibration"), 4), num(trust.get(f"{key}_after_calibration"), 4))
                for name, key in (("ECE (10 bins)", "ece"), ("log loss", "log_loss"))]
        if is_number(trust.get("ece_if_calibrated")):  # older metrics.json files do not have it
            rows.append(("ECE of a perfectly calibrated model on this many photos (sampling alone)", num(None),
                         num(trust["ece_if_calibrated"], 4)))
        parts += [f"<p>On the {escape(split)} split ({escape(text((metrics or {}).get('n')))} photos):</p>",
                  table(("metric", "before calibration", "after calibration"), rows)]
    else:
        parts.append('<p class="muted">No before/after numbers yet: <code>catsdogs evaluate RUN</code> measures '
                     "them on the test split.</p>")
    plots = [run_path / "plots" / name for name in TRUST_PLOTS]
    reliability = [file_figure(p, f"reliability {p.stem.split('-')[1]} calibration ({split} split)")
                   for p in plots[:2] if p.is_file()]
    if reliability:
        parts += ['<div class="grid">', *reliability, "</div>"]
    coverage = file_figure(plots[2], f"coverage and accuracy on the accepted {split} photos") \
        if plots[2].is_file() else ""
    parts += ['<div class="grid"><div>', _operating_point_html(novelty, trust, split), "</div>", coverage, "</div>"]
    parts.append(_other_html(data.get("other")))
    return "\n".join(parts)


def _method_text(calibration: dict, classes: list[str]) -> str:
    method = calibration.get("method", "identity")
    if method == "platt":
        positive = classes[1] if len(classes) > 1 else "class 1"
        return (f"Platt scaling of p({escape(positive)}): sigmoid(a \u00b7 logit p + b), "
                f"a = {num(calibration.get('slope'), 4)}, b = {num(calibration.get('intercept'), 4)}")
    if method == "temperature":
        return (f"Temperature scaling over {len(classes)} classes: softmax(log p / T), "
                f"T = {num(calibration.get('temperature'), 4)}")
    return "No calibration kept (it did not lower the validation log loss): the model's own probabilities"


def _operating_point_html(novelty: dict, trust: dict, split: str) -> str:
    if not novelty:
        return '<p class="muted">No novelty data: no photo is labelled unknown.</p>'
    threshold = novelty.get("threshold")
    if not is_number(threshold):
        return (f"<p>No unknown threshold: too few validation photos for a {share(novelty.get('accept'))} cut, so "
                "no photo is labelled unknown.</p>")
    point = trust.get("operating_point") or {}
    features = "the base with its top's pretrained weights" if novelty.get("embedding") == "pretrained top" \
        else "the model's own"
    rows = [("novelty score", f"{text(novelty.get('method'))} on {features}"),
            ("threshold (unknown above)", num(threshold, 4)),
            ("target share accepted", share(novelty.get("accept"))),
            ("validation photos accepted", share(novelty.get("accepted_validation")))]
    if point:
        rows += [(f"{split} photos accepted", share(point.get("coverage"))),
                 (f"accuracy on the accepted {split} photos", num(point.get("accuracy_accepted"), 4)),
                 (f"{split} photos labelled unknown", text(point.get("unknown")))]
    return "<p>Operating point:</p>" + table(("", "value"), rows, kind="kv")


def _other_html(other: dict | None) -> str:
    if not other:
        return ('<p class="muted">No photos of other subjects were checked (<code>catsdogs calibrate RUN --other '
                "FOLDER</code> reports AUROC and the share rejected).</p>")
    return (f"<p>Photos of none of the classes ({escape(text(other.get('folder')))}, {escape(text(other.get('n')))} "
            f"photos): {share(other.get('rejected'))} labelled unknown, AUROC {num(other.get('auroc'), 4)} "
            "(novelty, validation photos against these).</p>")
