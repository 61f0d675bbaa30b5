"""catsdogs.plots: valid PNGs, axes the right way round, the gallery picks the worst errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs.errors import UsageError
from catsdogs.plots import (
    EVALUATION_PLOTS,
    confusion_matrix_figure,
    curves_figure,
    gallery_figure,
    load_thumbnail,
    most_wrong,
    roc_figure,
    save_curves,
    save_evaluation_plots,
    save_gallery,
)

CLASSES = ["cat", "dog"]


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
        return im.size


def history(epochs=4, with_val=True):
    rows = [{"epoch": str(e), "accuracy": str(0.6 + 0.1 * e), "loss": str(0.9 - 0.2 * e)} for e in range(epochs)]
    if with_val:
        for e, row in enumerate(rows):
            row |= {"val_accuracy": str(0.55 + 0.05 * e), "val_loss": str(0.95 - 0.1 * e)}
    return rows


def test_save_curves_writes_png(tmp_path):
    out = save_curves(history(), tmp_path / "sub" / "curves.png", title="baseline")
    assert out == tmp_path / "sub" / "curves.png"
    width, height = png_size(out)
    assert 600 <= width <= 2000 and 250 <= height <= 1000


def test_curves_start_at_epoch_one_with_training_dots_and_validation_line():
    fig = curves_figure(history(), title="t")
    acc, loss = fig.axes
    assert "accuracy" in acc.get_title() and "loss" in loss.get_title()
    train, val = acc.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4]
    assert train.get_marker() == "o" and train.get_linestyle() == "None"
    assert val.get_marker() == "None" and val.get_linestyle() == "-"
    assert list(val.get_ydata()) == pytest.approx([0.55, 0.6, 0.65, 0.7])
    assert list(loss.get_lines()[0].get_ydata()) == pytest.approx([0.9, 0.7, 0.5, 0.3])


def test_curves_without_validation_or_epoch_column():
    rows = [{k: v for k, v in r.items() if k != "epoch"} for r in history(3, with_val=False)]
    fig = curves_figure(rows)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(UsageError, match="empty"):
        curves_figure([])


def test_evaluation_plots_are_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 50), 0, 1)
    paths = save_evaluation_plots(y, p, CLASSES, 0.5, tmp_path / "plots")
    assert set(paths) == set(EVALUATION_PLOTS)
    for key, path in paths.items():
        assert path == tmp_path / "plots" / EVALUATION_PLOTS[key]
        width, height = png_size(path)
        assert 300 <= width <= 1500 and 300 <= height <= 1500


def test_evaluation_plots_with_one_class_only(tmp_path):
    paths = save_evaluation_plots([1, 1, 1], [0.2, 0.9, 0.6], CLASSES, 0.5, tmp_path)
    assert all(png_size(p) for p in paths.values())


def test_evaluation_plots_validate_inputs(tmp_path):
    with pytest.raises(UsageError, match="inconsistent"):
        save_evaluation_plots([0, 1], [0.5], CLASSES, 0.5, tmp_path)
    assert not list(tmp_path.iterdir())


def test_confusion_matrix_figure_puts_names_and_counts_in_place():
    # three true cats, two of them called dog; one true dog, found
    fig = confusion_matrix_figure([0, 0, 0, 1], [0.9, 0.8, 0.1, 0.7], ["apple", "banana"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["apple", "banana"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["apple", "banana"]
    assert "predicted" in ax.get_xlabel() and "true" in ax.get_ylabel()
    counts = {tuple(map(round, t.get_position())): t.get_text().split()[0] for t in ax.texts}
    # text positions are (x = predicted column, y = true row)
    assert counts == {(0, 0): "1", (1, 0): "2", (0, 1): "0", (1, 1): "1"}


def test_most_wrong_picks_the_most_confident_errors():
    paths = [f"img{i}.jpg" for i in range(7)]
    y = [0, 0, 1, 1, 0, 1, 0]
    p = [0.99, 0.55, 0.02, 0.4, 0.01, 0.98, 0.8]  # wrong: 0 (off by 0.99), 1 (0.55), 2 (0.98), 3 (0.6), 6 (0.8)
    records = most_wrong(paths, y, p, n=3)
    assert [r["path"] for r in records] == ["img0.jpg", "img2.jpg", "img6.jpg"]
    assert records[1] == {"path": "img2.jpg", "label": 1, "predicted": 0, "p1": 0.02, "p_true": 0.02}
    assert [r["path"] for r in most_wrong(paths, y, p)] == ["img0.jpg", "img2.jpg", "img6.jpg", "img3.jpg", "img1.jpg"]
    assert [r["path"] for r in most_wrong(paths, y, p, threshold=0.6)] == ["img0.jpg", "img2.jpg", "img6.jpg", "img3.jpg"]
    assert most_wrong(paths[:2], [0, 1], [0.1, 0.9]) == []
    with pytest.raises(UsageError, match="inconsistent"):
        most_wrong(paths[:2], y, p)


def write_image(path: Path, size=(60, 30), orientation: int | None = None) -> Path:
    im = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    im.save(path, exif=exif)
    return path


def test_load_thumbnail_applies_exif_and_survives_bad_files(tmp_path):
    tile, ok = load_thumbnail(write_image(tmp_path / "a.jpg", orientation=6), 40)
    assert ok and tile.shape == (40, 40, 3)
    # 60x30 stored, rotated by EXIF to 30x60 portrait: white bars left and right, red in the middle
    assert tile[20, 2].tolist() == [255, 255, 255] and tile[20, 20, 0] > 150 and tile[2, 20, 0] > 150
    (tmp_path / "bad.jpg").write_text("not an image")
    for bad in (tmp_path / "bad.jpg", tmp_path / "missing.jpg", tmp_path):
        tile, ok = load_thumbnail(bad, 40)
        assert not ok and tile.shape == (40, 40, 3) and (tile == 128).all()


def test_gallery_png_and_captions(tmp_path):
    good = write_image(tmp_path / "cat.1.jpg")
    records = [{"path": str(good), "label": 0, "p1": 0.97}] + [
        {"path": str(tmp_path / f"missing{i}.jpg"), "label": 1, "p1": 0.1} for i in range(5)
    ]
    out = save_gallery(records, CLASSES, tmp_path / "g" / "most_wrong.png", thumb=100)
    width, height = png_size(out)
    assert 4 * 100 <= width <= 4 * 140 and 2 * 100 <= height <= 2 * 170  # 4 columns, 2 rows
    titles = [ax.get_title() for ax in gallery_figure(records, CLASSES, thumb=100).axes if ax.get_title()]
    assert titles[0].startswith("true: cat / p(dog)=0.97") and "cat.1.jpg" in titles[0]
    assert titles[1].startswith("true: dog / p(dog)=0.10") and "unreadable" in titles[1]
    assert len(titles) == 6


def test_empty_gallery_is_still_a_png(tmp_path):
    assert png_size(save_gallery([], CLASSES, tmp_path / "g.png"))


@pytest.mark.parametrize("n_classes", [3, 40])
def test_multiclass_figures(n_classes, tmp_path):
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(n_classes), 3)
    p = rng.dirichlet(np.ones(n_classes), len(y))
    names = [f"class {i}" for i in range(n_classes)]
    written = save_evaluation_plots(y, p, names, 0.5, tmp_path)
    assert all(path.stat().st_size > 0 for path in written.values())
    image = confusion_matrix_figure(y, p, names).axes[0].get_images()[0]
    assert image.get_array().shape == (n_classes, n_classes)
    texts = confusion_matrix_figure(y, p, names).axes[0].texts
    assert len(texts) == (n_classes ** 2 if n_classes <= 15 else 0)  # counts only where they stay readable
    assert len(roc_figure(y, p, names).axes[0].lines) == 1 + min(n_classes, 10)
    records = most_wrong([f"{i}.jpg" for i in range(len(y))], y, p, n=5)
    assert all(r["predicted"] != r["label"] for r in records)
    assert [r["p_true"] for r in records] == sorted(r["p_true"] for r in records)
