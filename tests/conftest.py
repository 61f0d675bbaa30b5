"""Shared fixtures: tiny photos made here, a tiny prepared DATA and a tiny trained RUN."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ZIP_NAME = Path("shared") / "data" / "dogs-vs-cats-train-5000.zip"
# ../shared beside the checkout, or beside a folder further up (a git worktree under the project)
SHARED = next((parent / "shared" for parent in ROOT.parents if (parent / ZIP_NAME).exists()), ROOT.parent / "shared")
# the default data and offline ImageNet weights: the variables the Makefile sets, else the project's ../shared
SHARED_ZIP = Path(os.environ.get("CATSDOGS_DEFAULT_SOURCE") or SHARED / "data" / ZIP_NAME.name)
SHARED_WEIGHTS = Path(os.environ.get("CATSDOGS_WEIGHTS") or SHARED / "weights" / "keras")


def pytest_sessionstart(session) -> None:
    """The tests need the project's ../shared (the default data and the offline weights): a missing one
    fails the session at once (never a quiet skip); the command line and subprocesses find them through
    $CATSDOGS_DEFAULT_SOURCE and $CATSDOGS_WEIGHTS, set here when the Makefile did not."""
    missing = [str(path) for path in (SHARED_ZIP, SHARED_WEIGHTS) if not path.exists()]
    if missing:
        pytest.exit(f"the project's shared files are missing: {', '.join(missing)} (the tests need ../shared beside "
                    "the checkout, or $CATSDOGS_DEFAULT_SOURCE and $CATSDOGS_WEIGHTS)", returncode=1)
    os.environ["CATSDOGS_DEFAULT_SOURCE"] = str(SHARED_ZIP)
    os.environ["CATSDOGS_WEIGHTS"] = str(SHARED_WEIGHTS)


def make_photo(path: Path, kind: int, index: int, size: tuple[int, int] = (48, 40), fmt: str = "JPEG",
               kinds: int = 2) -> Path:
    """A synthetic 'photo' of class `kind` out of `kinds`: bright in the kind-th vertical band, with noise
    (two kinds: class 0 bright on the left half, class 1 on the right)."""
    rng = np.random.default_rng(index * kinds + kind)
    width, height = size
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    band = slice(kind * width // kinds, (kind + 1) * width // kinds)
    pixels[:, band] = np.clip(pixels[:, band].astype(int) + 180, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_class_folders(root: Path, per_class: int = 12, names: tuple[str, ...] = ("Cats", "Dogs")) -> Path:
    for kind, name in enumerate(names):
        for i in range(per_class):
            make_photo(root / name / f"{i}.jpg", kind, i, kinds=len(names))
    return root


SLOW_FILES = {"test_reproduce.py", "test_distribute.py", "test_n_classes.py", "test_fit.py", "test_backbones.py",
              "test_efficientnet_lite.py", "test_export.py", "test_quantize.py", "test_bench.py"}
BROWSER_FILES = {"test_serve_browser.py", "test_report_browser.py", "test_audit_browser.py"}


# the longest files first (measured), so that `make test` (pytest-xdist, one file per worker at a time) does not
# end with one worker on a long file while the other idles
LONGEST_FIRST = ("test_reproduce.py", "test_distribute.py", "test_readme.py", "test_backbones.py", "test_n_classes.py",
                 "test_prepare.py", "test_train.py", "test_fit.py", "test_efficientnet_lite.py")


def pytest_collection_modifyitems(items) -> None:
    """Markers by file: `browser` (headless Chromium) and `slow` (trains real backbones or whole studies);
    `make test-fast` leaves both out. The longest files run first."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order is kept
    for item in items:
        if item.path.name in BROWSER_FILES:
            item.add_marker(pytest.mark.browser)
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _verbosity_restored():
    """The `catsdogs` logger as each test found it (the CLI's main() sets verbosity 1, some tests 0)."""
    import logging

    logger = logging.getLogger("catsdogs")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers
    logger.propagate = propagate


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "source")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A prepared DATA: 40 train, 12 validation, 12 test images of two synthetic classes."""
    from catsdogs.preparation import prepare

    root = tmp_path_factory.mktemp("tiny")
    source = make_class_folders(root / "source", per_class=32)
    prepare(source, root / "data", train=40, val=12, test=12)
    return root / "data"


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory) -> Path:
    """A baseline convnet trained for 2 epochs on `tiny_data` at 48 px."""
    from catsdogs.training import TrainOptions, train

    out = tmp_path_factory.mktemp("runs") / "baseline"
    return train(TrainOptions(data=tiny_data, model="baseline", out=out, epochs=2, image_size=48, batch_size=8))


@pytest.fixture(scope="session")
def real_zip() -> Path:
    if not SHARED_ZIP.exists():
        pytest.skip(f"real photos not available ({SHARED_ZIP} absent)")
    return SHARED_ZIP


@pytest.fixture
def real_photos(real_zip: Path, tmp_path: Path) -> dict[str, list[Path]]:
    """A few real Kaggle photos extracted into tmp_path: {"cat": [...], "dog": [...]}."""
    photos: dict[str, list[Path]] = {"cat": [], "dog": []}
    with zipfile.ZipFile(real_zip) as archive:
        for name in ("cat", "dog"):
            for number in (1, 2, 3):
                target = tmp_path / "real" / f"{name}.{number}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(f"train/{name}.{number}.jpg"))
                photos[name].append(target)
    return photos
