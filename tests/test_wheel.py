"""The package as users get it: a wheel built from this checkout, installed with pip into a fresh venv outside the
repository (dependencies from the package index), runs `catsdogs --version` and `catsdogs prepare` on HEIC and
JPEG photos. About a minute: the wheel's dependencies (TensorFlow included) come from pip's index and cache."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import catsdogs
from catsdogs.images import register_openers

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """A wheel built from a copy of the checkout (nothing written into the repository)."""
    copy = out / "checkout"
    copy.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "dist"), str(copy)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = (out / "dist").glob("catsdogs-*.whl")
    return wheel


def test_wheel_installs_in_a_fresh_venv_and_reads_heic(tmp_path):
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith(f"catsdogs-{catsdogs.__version__}-")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], check=True, env=env,
                   cwd=tmp_path, timeout=900)
    catsdogs_cli = str(env_dir / "bin" / "catsdogs")
    version = subprocess.run([catsdogs_cli, "--version"], capture_output=True, text=True, env=env, cwd=tmp_path,
                             check=True, timeout=120)
    assert version.stdout.strip() == f"catsdogs {catsdogs.__version__}"

    register_openers()
    source = tmp_path / "photos"
    for kind, name in enumerate(("cats", "dogs")):
        for i in range(6):
            pixels = np.random.default_rng(10 * kind + i).integers(0, 60, (48, 64, 3), dtype=np.uint8)
            pixels[:, kind * 32:(kind + 1) * 32] += 180
            fmt, suffix = ("HEIF", ".HEIC") if i % 2 else ("JPEG", ".jpg")
            (source / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(source / name / f"IMG_{i}{suffix}", format=fmt)
    (source / "cats" / "IMG_1.AAE").write_text("<plist/>")
    done = subprocess.run([catsdogs_cli, "prepare", str(source), "--out", str(tmp_path / "data")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "data" / "manifest.csv", newline="") as handle:
        kept = {row["source"] for row in csv.DictReader(handle)}
    assert {f"{name}/IMG_{i}.HEIC" for name in ("cats", "dogs") for i in (1, 3, 5)} <= kept
    assert len(kept) == 12 and "skipped 1 not photos" in done.stdout
