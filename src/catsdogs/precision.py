"""Numeric precision chosen by device: on a GPU, bf16 (compute capability 8.0+: Ampere, Hopper) or fp16 (7.x:
Volta, Turing tensor cores) mixed precision; on a CPU, bf16 where it does bf16 natively; float32 elsewhere.
Nothing here hides a device: TensorFlow sees every GPU it finds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
BF16_GPU_CAPABILITY = (8, 0)  # Ampere and newer: bf16 tensor cores
FP16_GPU_CAPABILITY = (7, 0)  # Volta and Turing: fp16 tensor cores


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


def gpu_capability() -> tuple[int, int] | None:
    """The compute capability of the first GPU TensorFlow sees (`(8, 0)` for an A100), or None without one."""
    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        return tuple(capability) if capability else (0, 0)
    return None


def gpu_precision(capability: tuple[int, int]) -> str:
    """The mixed precision a GPU of this compute capability gains from: bfloat16, float16 or float32."""
    if capability >= BF16_GPU_CAPABILITY:
        return "bfloat16"
    return "float16" if capability >= FP16_GPU_CAPABILITY else "float32"


def device_name() -> str:
    """The device training and inference run on, for bench's report: the first GPU, else the CPU."""
    import os

    import tensorflow as tf

    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = ".".join(map(str, details.get("compute_capability", ()))) or "?"
        return f"GPU {details.get('device_name', device.name)} (compute capability {capability})"
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU {model or 'unknown'} ({os.cpu_count()} cores)"


def resolve_precision(requested: str = "auto", flags: set[str] | None = None, *, bf16_friendly: bool = True,
                      gpu: tuple[int, int] | None = None) -> str:
    """`auto` on a GPU (`gpu`: its compute capability; looked up when neither `flags` nor `gpu` is given):
    `gpu_precision`. On a CPU: `bfloat16` when it reports AMX-BF16 or AVX512-BF16 and the model gains from it,
    else `float32`. Depthwise-separable bases (MobileNet, EfficientNet) are not `bf16_friendly`: oneDNN runs their
    depthwise convolutions slower in bf16 here (MobileNetV2 284 vs 402 images/s, EfficientNet-Lite2 73 vs 95)."""
    if requested not in PRECISIONS:
        from catsdogs.errors import UsageError
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}", "precision")
    if requested != "auto":
        return requested
    if gpu is None and flags is None:
        gpu = gpu_capability()
    if gpu is not None:
        return gpu_precision(gpu)
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
