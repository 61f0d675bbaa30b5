"""Fixtures and hooks: the shared files checked, a tiny prepared DATA and a tiny trained RUN (read-only;
`run_copy` for a test that writes into it). Helpers to import live in helpers.py."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from helpers import SHARED_WEIGHTS, SHARED_ZIP, make_class_folders


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


# the longest files first (measured), so that `make test` (pytest-xdist, one file per worker at a time) does not
# end with one worker on a long file while the other idles
LONGEST_FIRST = ("test_reproduce.py", "test_distribute.py", "test_readme.py", "test_backbones.py", "test_n_classes.py",
                 "test_prepare.py", "test_train.py", "test_fit.py", "test_efficientnet_lite.py")


def pytest_collection_modifyitems(items) -> None:
    """The longest files run first (the `slow` and `browser` markers are each file's `pytestmark`)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order is kept


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
    """A baseline convnet trained for 2 epochs on `tiny_data` at 48 px, shared by the session: read-only (a test
    that evaluates, explains or caches an engine into a RUN takes `run_copy`)."""
    from catsdogs.training import TrainOptions, train

    out = tmp_path_factory.mktemp("runs") / "baseline"
    return train(TrainOptions(data=tiny_data, model="baseline", out=out, epochs=2, image_size=48, batch_size=8))


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of `tiny_run` in tmp_path, for a test that writes into its RUN."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


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
