"""What tests share besides fixtures: the project's shared files, and tiny synthetic photos (`from helpers import ...`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ZIP_NAME = Path("shared") / "data" / "dogs-vs-cats-train-5000.zip"
# ../shared beside the checkout, or beside a folder further up (a git worktree under the project)
SHARED = next((parent / "shared" for parent in ROOT.parents if (parent / ZIP_NAME).exists()), ROOT.parent / "shared")
# the default data and offline ImageNet weights: the variables the Makefile sets, else the project's ../shared
SHARED_ZIP = Path(os.environ.get("CATSDOGS_DEFAULT_SOURCE") or SHARED / "data" / ZIP_NAME.name)
SHARED_WEIGHTS = Path(os.environ.get("CATSDOGS_WEIGHTS") or SHARED / "weights" / "keras")


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
