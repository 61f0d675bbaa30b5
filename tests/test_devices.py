"""The GPU path as far as a CPU machine can check it: precision chosen by device, nothing hiding a GPU, and a
dependency layout whose `gpu` extra brings TensorFlow's CUDA libraries for the same TensorFlow."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from catsdogs.precision import device_name, gpu_capability, gpu_precision, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def test_auto_precision_by_device():
    assert resolve_precision("auto", gpu=(9, 0)) == "bfloat16"  # Hopper
    assert resolve_precision("auto", gpu=(8, 6), bf16_friendly=False) == "bfloat16"  # depthwise is fine on GPUs
    assert resolve_precision("auto", gpu=(7, 5)) == "float16"  # Turing (T4)
    assert gpu_precision((6, 1)) == "float32"  # Pascal: no tensor cores
    assert resolve_precision("float32", gpu=(9, 0)) == "float32"  # asked for: kept
    assert resolve_precision("auto", {"avx2"}) == "float32"  # a CPU without bf16 units
    if gpu_capability() is None:  # this machine: the CPU path stays the default
        assert device_name().startswith("CPU ") and resolve_precision("auto", {"avx2"}) == "float32"


def test_no_forced_cpu_only_settings():
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"CUDA_VISIBLE_DEVICES|set_visible_devices", text), path


def test_gpu_extra_matches_the_tensorflow_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tensorflow = next(d for d in project["dependencies"] if d.startswith("tensorflow"))
    assert tensorflow.startswith("tensorflow==") and "cpu" not in tensorflow
    assert project["optional-dependencies"]["gpu"] == [tensorflow.replace("tensorflow", "tensorflow[and-cuda]", 1)]
    extras = project["optional-dependencies"]
    everything = extras["all"][0]
    assert all(name in everything for name in extras if name not in ("all", "gpu", "test"))
    assert project["dynamic"] == ["version"]
