"""Numeric precision: bf16 compute where the CPU does bf16 natively, float32 elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16")
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags the CPU reports (empty where /proc/cpuinfo is not available)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested: str = "auto", flags: set[str] | None = None, *, bf16_friendly: bool = True) -> str:
    """`auto` -> `bfloat16` when the CPU reports AMX-BF16 or AVX512-BF16 and the model gains from it, else
    `float32`. Depthwise-separable bases (MobileNet, EfficientNet) are not `bf16_friendly`: oneDNN runs their
    depthwise convolutions slower in bf16 here (MobileNetV2 284 vs 402 images/s, EfficientNet-Lite2 73 vs 95)."""
    if requested not in PRECISIONS:
        from catsdogs.errors import UsageError
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    flags = cpu_flags() if flags is None else flags
    return "bfloat16" if flags & BF16_CPU_FLAGS and bf16_friendly else "float32"


@contextmanager
def keras_precision(precision: str) -> Iterator[str]:
    """Build models under the Keras dtype policy for `precision`, restoring the previous policy after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(KERAS_POLICY[resolve_precision(precision)])
    try:
        yield keras.mixed_precision.global_policy().name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def jit_compile_setting() -> bool | str:
    """XLA for `model.compile`: Keras' "auto" on accelerators, off on CPUs, where XLA's convolutions run
    several times slower than oneDNN's (measured 52 vs 250 images/s for the study's convnet in bf16)."""
    import tensorflow as tf

    return "auto" if tf.config.list_physical_devices("GPU") else False
