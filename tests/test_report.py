"""catsdogs.report: self-contained, escaped HTML and results.md from run folders."""

import base64
import json
import re

import pytest

from catsdogs.errors import UsageError
from catsdogs.plots import GALLERY_PNG
from catsdogs.report import format_duration, write_report, write_results_markdown
from catsdogs.runs import Run

from fake_runs import add_calibration, make_run

PUBLISHED = {"baseline": {"train": 0.85, "val": 0.82, "test": None}}
NASTY = "x<img src=x onerror=alert(1)>&|y"  # a run name with HTML and a Markdown "|"
IMG_SRC = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"')


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return [
        make_run(root, "baseline"),
        make_run(root, NASTY, model="transfer", backbone="vgg16", n_explain=6, seed=1),
        make_run(root, "bare", model="features", full=False),
    ]


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "deep" / "report.html"
    assert write_report(runs, out, title="Study <1>", published=PUBLISHED) == out
    return out.read_text(encoding="utf-8")


def test_every_image_is_an_embedded_png(page):
    sources = IMG_SRC.findall(page)
    # per full run: curves + 4 evaluation plots + gallery + explain (2, and 6 capped to 4); bare run: none
    assert len(sources) == (1 + 4 + 1 + 2) + (1 + 4 + 1 + 4)
    assert len(sources) == page.count("<img")
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r'\bsrc="(?!data:)', page)
    assert not re.search(r'\bhref="(?!#|data:)', page)  # only in-page links
    for external in ("<script", "http://", "https://", "url(", "@import"):
        assert external not in page


def test_page_is_phone_friendly(page):
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "max-width" in page and 'class="scroll"' in page


def test_text_is_escaped(page):
    assert NASTY not in page and "<img src=x" not in page
    assert page.count("x&lt;img src=x onerror=alert(1)&gt;&amp;|y") >= 3  # table, nav, section title
    assert "<title>Study &lt;1&gt;</title>" in page


def comparison_rows(page):
    table = page.split("<h2>Comparison</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r) for r in rows]


def test_comparison_table_has_our_and_published_numbers(page, runs):
    header, baseline, transfer, bare = comparison_rows(page)
    assert header[:3] == ["run", "model", "backbone"] and header[-3:] == ["published train", "published val", "published test"]
    row = dict(zip(header, baseline))
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert row["test acc"] == f"{metrics['accuracy']:.3f}"
    assert row["test AUC"] == f"{metrics['roc_auc']:.3f}"
    assert row["test log loss"] == f"{metrics['log_loss']:.3f}"
    assert row["train acc"] == "0.840"  # last of 0.60 + 0.06 * epoch
    assert row["val acc"] == "0.650"  # the saved epoch (lowest val_loss: the last), not the best accuracy (0.700)
    assert row["epochs"] == "5" and row["wall time"] == "2 min 05 s" and row["threshold"] == "0.50"
    assert (row["published train"], row["published val"], row["published test"]) == ("0.850", "0.820", "\u2014")
    assert dict(zip(header, transfer))["backbone"] == "vgg16"
    assert dict(zip(header, transfer))["published train"] == "\u2014"  # no published "transfer"
    assert dict(zip(header, bare))["test acc"] == "\u2014"


def test_run_sections_show_config_and_metrics(page):
    sections = page.split('<section class="run"')[1:]
    assert len(sections) == 3
    assert "Metrics on the test split" in sections[0] and "Training curves" in sections[0]
    assert "Grad-CAM" in sections[0] and "Most confidently wrong" in sections[0]
    assert "features" in sections[2] and "Training curves" not in sections[2] and "<img" not in sections[2]


def test_gallery_from_plots_folder_is_not_duplicated(tmp_path):
    run = make_run(tmp_path, "r", n_explain=0)
    (run / "predictions-test.csv").unlink()
    out = write_report([run], tmp_path / "a.html")
    assert "Most confidently wrong" not in out.read_text()
    (run / "plots" / GALLERY_PNG).write_bytes((run / "curves.png").read_bytes())
    page = write_report([run], tmp_path / "b.html").read_text()
    assert "Most confidently wrong" in page and len(IMG_SRC.findall(page)) == 1 + 4 + 1


def test_metrics_of_another_split_are_not_called_test(tmp_path):
    run = make_run(tmp_path, "r")
    metrics = json.loads((run / "metrics.json").read_text()) | {"split": "validation"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_report([run], tmp_path / "r.html").read_text()
    assert dict(zip(*comparison_rows(page)))["test acc"] == "\u2014"
    assert "Metrics on the validation split" in page


def test_bad_run_folders_are_usage_errors(tmp_path, runs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty.*no config.json"):
        write_report([runs[0], tmp_path / "empty"], tmp_path / "x.html")
    with pytest.raises(UsageError, match="no run folders"):
        write_results_markdown([], tmp_path / "x.md")
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="config.json"):
        Run(tmp_path / "empty")
    assert not (tmp_path / "x.html").exists()


def test_results_markdown(runs, tmp_path):
    out = write_results_markdown(runs, tmp_path / "results.md", published=PUBLISHED)
    lines = [line for line in out.read_text().splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert header == ["run", "model", "backbone", "epochs", "train acc", "val acc",
                      "test acc", "wall time", "published train", "published val", "published test"]
    assert lines[2].startswith("| baseline | baseline | \u2014 | 5 | 0.840 | 0.650 | 0.")
    assert lines[2].endswith("| 2 min 05 s | 0.850 | 0.820 | \u2014 |")
    assert lines[3].startswith(r"| x\<img src=x onerror=alert(1)\>&\|y | transfer | vgg16 | 5 |")
    no_published = write_results_markdown(runs, tmp_path / "plain.md").read_text()
    assert "published" not in no_published


def test_format_duration():
    assert [format_duration(s) for s in (None, 42.4, 125.4, 3725)] == ["\u2014", "42 s", "2 min 05 s", "1 h 02 min"]


def test_gallery_from_predictions_with_true_column_and_error_rows(tmp_path):
    run = make_run(tmp_path, "r", n_explain=0)
    image = next((tmp_path / "data" / "test").glob("cat.*.jpg"))
    (run / "predictions-test.csv").write_text(
        "path,label,p_cat,p_dog,true,error\n"
        f"{image},dog,0.1,0.9,cat,\n"  # predicted label in "label", true label in "true"
        "missing.jpg,error,,,dog,cannot identify image\n"
    )
    page = write_report([run], tmp_path / "r.html").read_text()
    assert "Most confidently wrong" in page and len(IMG_SRC.findall(page)) == 1 + 4 + 1
    (run / "predictions-test.csv").write_text(f"path,label,p_dog\n{image},cat,0.1\n")
    assert "No misclassified test images" in write_report([run], tmp_path / "t.html").read_text()
    (run / "predictions-test.csv").write_text("path,label,p_dog\nmissing.jpg,error,\n")
    assert "Most confidently wrong" not in write_report([run], tmp_path / "s.html").read_text()


HOSTILE_CLASS = '<script>alert("dog")</script>'
TRUST_HEADING = "<h3>Calibration and unknown photos</h3>"


def test_calibrated_run_has_the_trust_section(tmp_path):
    folder = f"{tmp_path}/<b>other</b>"
    other = {"folder": folder, "n": 17, "auroc": 0.9123, "rejected": 0.8236}
    run = make_run(tmp_path, "calibrated", classes=["cat", HOSTILE_CLASS])
    trust = add_calibration(run, other=other)
    plain = make_run(tmp_path, "plain")
    page = write_report([run, plain], tmp_path / "r.html").read_text()
    calibrated, uncalibrated = page.split('<section class="run"')[1:]
    section = calibrated.split(TRUST_HEADING, 1)[1]
    assert "<script" not in page and "<b>other" not in page
    assert "p(&lt;script&gt;alert(&quot;dog&quot;)&lt;/script&gt;)" in section  # Platt of p(class 1), escaped
    assert "&lt;b&gt;other&lt;/b&gt;" in section and "a = 1.7000, b = -0.2000" in section
    assert "0.6100 \u2192 0.5200" in section and "validation split (40 photos)" in section
    assert "On the test split (12 photos)" in section
    for key in ("ece", "log_loss"):
        for when in ("before", "after"):
            assert f"<td>{trust[f'{key}_{when}_calibration']:.4f}</td>" in section
    assert f"(sampling alone)</td><td>\u2014</td><td>{trust['ece_if_calibrated']:.4f}</td>" in section
    point = trust["operating_point"]
    assert f"<td>{point['coverage']:.1%}</td>" in section and f"<td>{point['accuracy_accepted']:.4f}</td>" in section
    assert "<td>0.8000</td>" in section and "<td>97.5%</td>" in section  # threshold, validation accepted
    assert "<td>knn+mahalanobis on the model&#x27;s own</td>" in section  # which features the score reads
    assert "82.4% labelled unknown, AUROC 0.9123" in section and "17 photos" in section
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section)
    assert captions[:3] == ["reliability before calibration (test split)", "reliability after calibration (test split)",
                            "coverage and accuracy on the accepted test photos"]
    evaluation = calibrated.split(TRUST_HEADING, 1)[0]
    assert not re.search(r"reliability-|alt=\"coverage|calibration\)", evaluation)  # not shown twice
    assert TRUST_HEADING in uncalibrated and "Not calibrated (no calibration.json)" in uncalibrated
    assert uncalibrated.split(TRUST_HEADING, 1)[1].split("</p>", 1)[1].lstrip().startswith("<h3>Most")


def test_calibrated_but_not_evaluated_run_says_how_to_measure(tmp_path):
    run = make_run(tmp_path, "r")
    add_calibration(run)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["trust"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    for name in ("reliability-before.png", "reliability-after.png", "coverage.png"):
        (run / "plots" / name).unlink()
    section = write_report([run], tmp_path / "r.html").read_text().split(TRUST_HEADING, 1)[1]
    assert "No before/after numbers yet" in section and "No photos of other subjects" in section
    assert "<td>0.8000</td>" in section and "test photos accepted" not in section
