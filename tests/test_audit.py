"""catsdogs audit, prepare --exclude and --dedupe near on tiny generated photos (a pixel extractor, no backbone)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from catsdogs.auditing import ISSUE_FIELDS, KINDS, audit, read_issues
from catsdogs.cli import main
from catsdogs.near_duplicates import phash
from catsdogs.preparation import prepare

CLASSES = ("ants", "bees", "wasps")


def photo(kind: int, index: int, kinds: int = 3, size: int = 64) -> Image.Image:
    """A smooth random pattern (distinct for every index), tinted with the class's colour (red, green, blue)."""
    rng = np.random.default_rng(1000 * kind + index)
    pattern = Image.fromarray(rng.integers(0, 200, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(pattern).copy()
    pixels[..., kind] = np.clip(pixels[..., kind].astype(int) + 110, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_source(root: Path, per_class: int = 16) -> Path:
    for kind, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg(photo(kind, i)))
    return root


def pixels(images: np.ndarray) -> np.ndarray:
    """The tests' feature extractor: the mean of each colour channel (the class) and the pixels (the picture)."""
    images = images.astype(np.float32)
    return np.concatenate([images.mean(axis=(1, 2)), images.reshape(len(images), -1)], axis=1)


def read_manifest(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def write_manifest(data: Path, rows: list[dict[str, str]]) -> None:
    with open(data / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def add_photo(data: Path, rows: list[dict[str, str]], relpath: str, content: bytes) -> None:
    (data / relpath).parent.mkdir(parents=True, exist_ok=True)
    (data / relpath).write_bytes(content)
    split, name = relpath.split("/")[:2]
    rows.append({"path": relpath, "class": name, "split": split, "sha256": hashlib.sha256(content).hexdigest(),
                 "width": "64", "height": "64", "source": relpath})


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """A prepared DATA of three classes with a resized and a mirrored copy in other splits, a flipped label
    and an empty (black) picture."""
    root = tmp_path_factory.mktemp("audit")
    source = make_source(root / "source")
    data = root / "data"
    prepare(source, data, val=0.25, test=0.25)
    rows = read_manifest(data)
    train = [r for r in rows if r["split"] == "train"]
    original, mirrored_of, flipped = train[0], train[1], [r for r in train if r["class"] == "bees"][2]
    with Image.open(data / original["path"]) as image:
        add_photo(data, rows, f"test/{original['class']}/copy-resized.jpg", jpeg(image.resize((40, 40)), 60))
    with Image.open(data / mirrored_of["path"]) as image:
        add_photo(data, rows, f"validation/{mirrored_of['class']}/copy-mirror.jpg", jpeg(ImageOps.mirror(image)))
    name = flipped["path"].rsplit("/", 1)[1]
    target = f"train/wasps/{name}"
    (data / flipped["path"]).rename(data / target)
    flipped.update(path=target, **{"class": "wasps"})
    add_photo(data, rows, "train/ants/black.jpg", jpeg(Image.new("RGB", (64, 64))))
    write_manifest(data, rows)
    out = root / "audit"
    result = audit(data, out, extractor=pixels, image_size=9)
    return {"root": root, "source": source, "data": data, "out": out, "result": result,
            "pairs": [{original["path"], f"test/{original['class']}/copy-resized.jpg"},
                      {mirrored_of["path"], f"validation/{mirrored_of['class']}/copy-mirror.jpg"}],
            "flipped": target, "outlier": "train/ants/black.jpg"}


def test_audit_finds_each_kind(planted):
    issues = read_issues(planted["out"] / "issues.csv")
    with open(planted["out"] / "issues.csv") as handle:
        assert handle.readline().strip() == ",".join(ISSUE_FIELDS)
    pairs = [{i.path, i.detail} for i in issues if i.kind == "near_duplicate"]
    for pair in planted["pairs"]:
        assert pair in pairs
    near = [i for i in issues if i.kind == "near_duplicate"]
    assert all(i.split != i.detail.split("/")[0] for i in near[:2])  # leakage first
    labels = [i for i in issues if i.kind == "label"]
    assert planted["flipped"] in [i.path for i in labels[:3]]
    assert next(i for i in labels if i.path == planted["flipped"]).detail == "bees"
    assert planted["outlier"] in [i.path for i in issues if i.kind == "outlier"]
    order = [KINDS.index(i.kind) for i in issues]
    assert order == sorted(order)
    for flag in (True, False):  # confident label rows first, each group by score
        scores = [i.score for i in labels if i.confident is flag]
        assert scores == sorted(scores, reverse=True)
    flags = [i.confident for i in labels]
    assert flags == sorted(flags, reverse=True) and {i.confident for i in issues if i.kind != "label"} <= {None}
    line = planted["result"].line()
    assert "near-duplicate pairs" in line and "\n" not in line
    summary = json.loads((planted["out"] / "audit.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["photos"] == planted["result"].photos


def test_audit_page_is_self_contained(planted):
    page = (planted["out"] / "audit.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 * 2 + 2
    assert "http://" not in page and "https://" not in page


def test_phash_matches_imagehash():
    imagehash = pytest.importorskip("imagehash")
    for kind in range(3):
        image = photo(kind, 7)
        expected = imagehash.phash(image).hash.ravel()
        assert (np.unpackbits(phash(np.asarray(image))[0]) == expected).all()
        mirrored = imagehash.phash(ImageOps.mirror(image)).hash.ravel()
        assert (np.unpackbits(phash(np.asarray(image))[1]) != mirrored).sum() <= 2  # resampling round-off


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_exclude_and_near_dedupe_keep_the_source(tmp_path, planted):
    source = make_source(tmp_path / "source", per_class=10)
    with Image.open(source / "ants" / "0.jpg") as image:
        (source / "ants" / "0-small.jpg").write_bytes(jpeg(image.resize((48, 48)), 60))
        (source / "ants" / "0-mirror.jpg").write_bytes(jpeg(ImageOps.mirror(image)))
    before = tree(source)

    summary = prepare(source, tmp_path / "near", dedupe="near")
    rows = read_manifest(tmp_path / "near")
    kept = [r["source"] for r in rows if r["source"].startswith("ants/0")]
    assert kept == ["ants/0-mirror.jpg"]  # one of the group (the first by path), so in one split
    assert summary.near_dropped == 2 and summary.near_leaks == 0
    rejected = (tmp_path / "near" / "rejected.csv").read_text()
    assert "ants/0.jpg,near-duplicate of ants/0-mirror.jpg" in rejected

    plain = prepare(source, tmp_path / "plain")
    assert len(read_manifest(tmp_path / "plain")) == len(rows) + 2
    assert "near-duplicate pairs across splits" in plain.audit_line()

    # exclude by DATA paths (an audit's issues.csv, matched through AUDIT/manifest.csv) and by SOURCE paths
    audit(tmp_path / "plain", tmp_path / "audit", extractor=pixels, image_size=9, html=False)
    with open(tmp_path / "audit" / "issues.csv") as handle:  # the near-duplicates of issues.csv, beside it
        lines = [line for line in handle if line.startswith("path,") or ",near_duplicate," in line]
    (tmp_path / "audit" / "duplicates.csv").write_text("".join(lines))
    dropped = {line.split(",")[0] for line in lines[1:]}
    assert len(dropped) == 2
    shas = {r["sha256"] for r in read_manifest(tmp_path / "plain") if r["path"] in dropped}
    prepare(source, tmp_path / "clean", exclude=tmp_path / "audit" / "duplicates.csv")
    clean = read_manifest(tmp_path / "clean")
    assert not {r["sha256"] for r in clean} & shas
    assert len(clean) == len(read_manifest(tmp_path / "plain")) - len(shas)

    listed = tmp_path / "drop.csv"
    listed.write_text("path\nbees/3.jpg\nwasps/4.jpg\n")
    summary = prepare(source, tmp_path / "listed", exclude=listed)
    sources = {r["source"] for r in read_manifest(tmp_path / "listed")}
    assert "bees/3.jpg" not in sources and "wasps/4.jpg" not in sources and summary.excluded == 2
    assert tree(source) == before


def test_cli_one_line_errors(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing"), "--out", str(tmp_path / "a")]) == 2
    assert main(["audit", str(tmp_path), "--out", str(tmp_path / "a")]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.jpg\n")
    source = make_source(tmp_path / "source", per_class=4)
    assert main(["prepare", str(source), "--out", str(tmp_path / "d"), "--exclude", str(bad)]) == 2
    assert main(["prepare", str(source), "--out", str(tmp_path / "d"), "--exclude", str(tmp_path / "no.csv")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("catsdogs ") for line in errors)
    assert "does not exist" in errors[0] and "not a prepared DATA" in errors[1]
    assert "--exclude" in errors[2] and "path column" in errors[2] and "no such file" in errors[3]
    assert not (tmp_path / "a").exists()


def test_cli_prepare_prints_the_audit_line(tmp_path, capsys):
    source = make_source(tmp_path / "source", per_class=6)
    assert main(["prepare", str(source), "--out", str(tmp_path / "d"), "--dedupe", "near"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("audit: ") and "near-duplicate pairs across splits" in out[-1]


@pytest.mark.slow
def test_cli_audit_with_a_backbone(planted, tmp_path, capsys):
    """The command end to end with MobileNetV2's offline ImageNet weights (skipped when absent)."""
    from catsdogs.models.weights import offline_weights_dir

    if offline_weights_dir() is None:
        pytest.skip("shared MobileNetV2 weights not available")
    out = tmp_path / "audit"
    assert main(["audit", str(planted["data"]), "--out", str(out), "--backbone", "mobilenetv2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("audit of ") and "mobilenetv2" in line
    assert (out / "issues.csv").exists() and (out / "audit.html").exists()
    cached = sorted((out / "cache").glob("features-mobilenetv2-160-*-train.npy"))
    assert len(cached) == 1  # the features model's cache: features and photo ids .npy, as fit and train read them
    train = [r["sha256"] for r in read_manifest(planted["data"]) if r["split"] == "train"]
    ids = np.load(cached[0].with_name(cached[0].name.replace("features-", "ids-", 1)))
    assert ids.tolist() == train and len(np.load(cached[0])) == len(train)
    started = json.loads((out / "audit.json").read_text())
    assert main(["audit", str(planted["data"]), "--out", str(out), "--backbone", "mobilenetv2"]) == 0  # cached
    assert json.loads((out / "audit.json").read_text())["cached"] and not started["cached"]


def test_missing_cleanlab_is_one_line(planted, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    assert main(["audit", str(planted["data"]), "--out", str(tmp_path / "a")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install 'catsdogs[audit]'" in error


def test_label_suspects_rank_every_disagreement_after_the_confident_ones():
    """Synthetic embeddings of 3 overlapping classes with 20 planted flips: each flip is within the top 2x20
    rows; cleanlab's rows come first, then every other out-voted photo, most doubted first."""
    from catsdogs.label_errors import label_issues, out_of_fold_probabilities

    rng = np.random.default_rng(7)
    truth = np.repeat(np.arange(3), 120)
    centres = rng.normal(0, 1.6, (3, 16))
    features = centres[truth] + rng.normal(0, 1.0, (len(truth), 16))
    labels = truth.copy()
    flipped = rng.choice(len(labels), 20, replace=False)
    labels[flipped] = (labels[flipped] + rng.integers(1, 3, len(flipped))) % 3
    probabilities = out_of_fold_probabilities(features, labels, 3)
    found = label_issues(probabilities, labels)
    top = [i for i, *_ in found[:2 * len(flipped)]]
    assert set(flipped.tolist()) <= set(top)
    flags = [confident for *_, confident in found]
    assert flags == sorted(flags, reverse=True) and False in flags
    disagree = {int(i) for i in np.flatnonzero(probabilities.argmax(axis=1) != labels)}
    assert disagree <= {i for i, *_ in found}
    scores = [score for _, score, _, confident in found if not confident]
    assert scores == sorted(scores, reverse=True)


def test_issues_csv_without_the_confident_column_is_still_read(tmp_path):
    path = tmp_path / "issues.csv"
    path.write_text("path,split,kind,score,detail\ntrain/a/1.jpg,train,label,0.9,b\ntrain/a/2.jpg,train,outlier,0.5,far\n")
    label, outlier = read_issues(path)
    assert (label.confident, outlier.confident) == (True, None)


def test_a_keras_model_extractor_reads_and_fills_the_features_cache(planted, tmp_path, monkeypatch):
    """fit audits with its chosen base (a Keras model): a second audit embeds nothing."""
    import keras

    inner = keras.Input((9, 9, 3))
    base = keras.Model(inner, keras.layers.Conv2D(4, 1)(inner), name="mobilenetv2")  # named as a backbone
    inputs = keras.Input((9, 9, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(base(inputs)), name="extractor")
    cache = tmp_path / "cache"
    first = audit(planted["data"], tmp_path / "a", extractor=model, cache_dir=cache, html=False)
    assert sorted(p.name.rsplit("-", 1)[1] for p in cache.glob("features-*.npy")) == \
        ["test.npy", "train.npy", "validation.npy"]

    def no_embedding(batch):
        raise AssertionError("embedded photos although their features are cached")

    monkeypatch.setattr("catsdogs.auditing._embedder", lambda *args: no_embedding)
    again = audit(planted["data"], tmp_path / "b", extractor=model, cache_dir=cache, html=False)
    assert again.cached and not first.cached and again.photos == first.photos
