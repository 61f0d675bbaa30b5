"""catsdogs review: the queue, decisions written at once (atomically), undo, restart, no path traversal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from catsdogs.auditing import Issue, write_issues
from catsdogs.corrections import read_corrections
from catsdogs.preparation import prepare
from catsdogs.review import create_app, open_review
from catsdogs.unlabeled import diverse_order, entropy
from test_audit import make_source

POST = {"X-Review": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review")
    source = make_source(root / "source", per_class=8)
    data = root / "data"
    prepare(source, data, val=0.25, test=0.25)
    return source, data


def rows(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def issues_for(data: Path) -> list[Issue]:
    manifest = rows(data)
    ant = next(r for r in manifest if r["class"] == "ants" and r["split"] == "train")
    a, b = [r for r in manifest if r["class"] == "bees"][:2]
    odd = next(r for r in manifest if r["class"] == "wasps")
    return [Issue(ant["path"], ant["split"], "label", 0.9, "bees", True),
            Issue(b["path"], b["split"], "near_duplicate", 0.97, a["path"]),
            Issue(odd["path"], odd["split"], "outlier", 0.5, "far from every class")]


def client_for(data: Path, tmp_path: Path, **options) -> TestClient:
    review = open_review(data, corrections=tmp_path / "corrections.csv", issues=issues_for(data), **options)
    return TestClient(create_app(review))


def test_queue_and_page(prepared, tmp_path):
    _, data = prepared
    client = client_for(data, tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    state = client.get("/api/state").json()
    assert [item["kind"] for item in state["items"]] == ["label", "near_duplicate", "outlier"]
    assert len(state["items"][1]["photos"]) == 2 and state["items"][0]["suggested"] == "bees"
    assert state["keys"] == {"1": "ants", "2": "bees", "3": "wasps"} and state["decisions"] == {}
    image = client.get(f"/api/image/{state['items'][0]['photos'][0]['image']}")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"


def test_decisions_are_written_at_once_undo_and_restart_continue(prepared, tmp_path):
    _, data = prepared
    client = client_for(data, tmp_path)
    items = client.get("/api/state").json()["items"]
    label, pair = items[0], items[1]
    assert client.post("/api/decision", json={"item": label["id"], "action": "relabel", "label": "bees"},
                       headers=POST).status_code == 200
    fixes = read_corrections(tmp_path / "corrections.csv")
    assert [(c.source, c.action, c.label) for c in fixes] == [(label["photos"][0]["source"], "relabel", "bees")]
    client.post("/api/decision", json={"item": pair["id"], "action": "keep_one", "keep": 0}, headers=POST)
    fixes = {c.source: c.action for c in read_corrections(tmp_path / "corrections.csv")}
    assert fixes[pair["photos"][1]["source"]] == "exclude" and pair["photos"][0]["source"] not in fixes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrections.csv", "corrections.csv.review.json"]  # no partials
    undone = client.post("/api/undo", headers=POST).json()
    assert undone["item"] == pair["id"] and list(undone["decisions"]) == [label["id"]]
    assert [c.source for c in read_corrections(tmp_path / "corrections.csv")] == [label["photos"][0]["source"]]
    # a restart (a new app on the same files) continues: the first decision is still there, undo still works
    again = client_for(data, tmp_path)
    assert again.get("/api/state").json()["decisions"] == {label["id"]: "relabel bees"}
    assert again.post("/api/undo", headers=POST).json()["item"] == label["id"]
    assert read_corrections(tmp_path / "corrections.csv") == []
    # deciding an item again replaces its decision
    again.post("/api/decision", json={"item": label["id"], "action": "exclude"}, headers=POST)
    again.post("/api/decision", json={"item": label["id"], "action": "keep"}, headers=POST)
    assert read_corrections(tmp_path / "corrections.csv") == []


def test_prepare_applies_what_review_wrote(prepared, tmp_path):
    source, data = prepared
    client = client_for(data, tmp_path)
    label = client.get("/api/state").json()["items"][0]
    client.post("/api/decision", json={"item": label["id"], "action": "relabel", "label": "bees"}, headers=POST)
    fixed = tmp_path / "fixed"
    prepare(source, fixed, val=0.25, test=0.25, corrections=tmp_path / "corrections.csv")
    moved = next(r for r in rows(fixed) if r["source"] == label["photos"][0]["source"])
    assert moved["class"] == "bees"


def test_refusals(prepared, tmp_path):
    _, data = prepared
    client = client_for(data, tmp_path)
    assert client.get("/api/image/999").status_code == 404
    assert client.get("/api/image/-1").status_code == 404
    assert client.get("/api/image/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/api/image/../../etc/passwd").status_code == 404
    item = client.get("/api/state").json()["items"][0]["id"]
    assert client.post("/api/decision", json={"item": item, "action": "exclude"}).status_code == 403  # no header
    bad = client.post("/api/decision", json={"item": item, "action": "relabel", "label": "hornets"}, headers=POST)
    assert bad.status_code == 400 and "hornets" in bad.json()["error"]
    assert client.post("/api/decision", json={"item": "label:../x", "action": "keep"}, headers=POST).status_code == 400
    assert not (tmp_path / "corrections.csv").exists()


def test_symlink_leaving_data_is_not_served(prepared, tmp_path):
    _, data = prepared
    copy = tmp_path / "data"
    import shutil

    shutil.copytree(data, copy)
    first = rows(copy)[0]["path"]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((copy / first).read_bytes())
    (copy / first).unlink()
    (copy / first).symlink_to(secret)
    manifest = rows(copy)
    issues = [Issue(first, manifest[0]["split"], "outlier", 0.5, "far")]
    client = TestClient(create_app(open_review(copy, corrections=tmp_path / "c.csv", issues=issues)))
    assert client.get("/api/image/0").status_code == 404


def test_existing_audit_beside_data_is_read(prepared, tmp_path):
    _, data = prepared
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (tmp_path / "audit").mkdir()
    write_issues(tmp_path / "audit" / "issues.csv", issues_for(copy))
    review = open_review(copy)
    assert [item.kind for item in review.queue.items] == ["label", "near_duplicate", "outlier"]
    assert review.corrections_path == copy / "corrections.csv"


def test_run_queue_has_wrong_unsure_and_unknown(prepared, tmp_path):
    _, data = prepared
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(data), "classes": ["ants", "bees", "wasps"]}))
    tests = [r for r in rows(data) if r["split"] == "test"]
    lines = ["path,true_label,label,p_ants,p_bees,p_wasps"]
    lines.append(f"{data / tests[0]['path']},{tests[0]['class']},unknown,0.4,0.3,0.3")
    wrong = "bees" if tests[1]["class"] != "bees" else "ants"
    lines.append(f"{data / tests[1]['path']},{tests[1]['class']},{wrong},0.1,0.8,0.1" if wrong == "bees" else
                 f"{data / tests[1]['path']},{tests[1]['class']},{wrong},0.8,0.1,0.1")
    probs = {"ants": "0.5,0.3,0.2", "bees": "0.3,0.5,0.2", "wasps": "0.2,0.3,0.5"}[tests[2]["class"]]
    lines.append(f"{data / tests[2]['path']},{tests[2]['class']},{tests[2]['class']},{probs}")
    (run / "predictions-test.csv").write_text("\n".join(lines) + "\n")
    review = open_review(run, issues=[])
    assert [item.kind for item in review.queue.items] == ["unknown", "wrong", "unsure"]
    assert review.corrections_path == run / "corrections.csv"


def test_unlabeled_ranking_is_diverse_and_labels_go_to_a_labels_csv(prepared, tmp_path):
    source, data = prepared
    from catsdogs.near_duplicates import phash
    from test_audit import photo

    # entropy first, near-copies of a chosen photo deferred to the end
    hashes = np.stack([phash(np.asarray(photo(0, i))) for i in (1, 1, 2)])
    order = diverse_order(np.array([0.9, 0.8, 0.1]), hashes)
    assert order == [0, 2, 1]
    assert entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))[0] > entropy(np.array([[1.0, 0.0]]))[0]

    class Stub:  # a Predictor's interface: classes and predict_paths
        classes = ["ants", "bees", "wasps"]

        def predict_paths(self, paths):
            from catsdogs.predict import Prediction

            for i, path in enumerate(paths):
                p = [0.34, 0.33, 0.33] if i == 0 else [0.9, 0.05, 0.05]
                yield Prediction(str(path), "ants", dict(zip(self.classes, p)))

    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes((source / "bees" / ("1.jpg" if name == "a.jpg" else "2.jpg")).read_bytes())
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(data)}))
    review = open_review(run, issues=[], unlabeled=folder, predictor=Stub())
    items = [i for i in review.queue.items if i.kind == "unlabeled"]
    assert [Path(i.photos[0].path).name for i in items] == ["a.jpg", "b.jpg"]
    client = TestClient(create_app(review))
    assert client.get(f"/api/image/{items[0].photos[0].image}").status_code == 200
    client.post("/api/decision", json={"item": items[0].id, "action": "relabel", "label": "wasps"}, headers=POST)
    text = (run / "labeled.csv").read_text()
    assert text.splitlines()[0] == "path,label" and text.splitlines()[1].endswith("a.jpg,wasps")
    assert str(folder / "a.jpg") in text  # outside RUN: absolute (prepare --allow-outside-csv-paths)
    client.post("/api/decision", json={"item": items[1].id, "action": "relabel", "label": "ants"}, headers=POST)
    from catsdogs.sources import scan_source

    scan = scan_source(run / "labeled.csv", allow_outside=True)  # prepare reads it as a labels CSV
    assert sorted((Path(f.relpath).name, f.class_name) for f in scan.files) == [("a.jpg", "wasps"), ("b.jpg", "ants")]


def test_cli_port_in_use_or_out_of_range_is_one_line_and_no_url(prepared, tmp_path, capsys):
    """As serve: the socket is bound before any URL is printed; a busy or impossible port is a usage error."""
    import socket

    from catsdogs.cli import main

    _, data = prepared
    corrections = ["--corrections", str(tmp_path / "corrections.csv")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["review", str(data), *corrections, "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "http://" not in out and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert main(["review", str(data), *corrections, "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "--port: must be at most 65535" in err and "got 70000" in err and err.count("\n") == 1


def test_the_next_step_names_the_command_that_applies_the_decisions(prepared, tmp_path):
    """A DATA (or a RUN trained on one) is prepared again from its recorded SOURCE; a `fit` RUN, whose photos were
    prepared inside it, is fitted again with --overwrite (its cache kept)."""
    import shutil

    from catsdogs.review import apply_command

    source, data = prepared
    assert apply_command(data, data / "corrections.csv") == \
        f"catsdogs prepare {source.resolve()} --out {data} --corrections {data / 'corrections.csv'} --overwrite"
    run = tmp_path / "my run"
    shutil.copytree(data, run / "data")
    (run / "config.json").write_text(json.dumps({"data": str(run / "data")}))
    (run / "fit.json").write_text(json.dumps({"status": "complete"}))
    assert apply_command(run, run / "corrections.csv") == \
        f"catsdogs fit {source.resolve()} --out '{run}' --corrections '{run / 'corrections.csv'}' --overwrite"
    (run / "config.json").write_text(json.dumps({"data": str(data)}))  # fitted with data=: prepare that DATA
    assert apply_command(run, run / "corrections.csv").startswith(f"catsdogs prepare {source.resolve()} --out {data} ")
