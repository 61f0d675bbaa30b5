"""Probe: does tf.distribute work with model.fit under this Keras 3 / TensorFlow?

    PYTHONPATH=src python scripts/probe_distribute.py            # both probes
    PYTHONPATH=src python scripts/probe_distribute.py mirrored   # MirroredStrategy, 2 logical CPUs
    PYTHONPATH=src python scripts/probe_distribute.py multi      # MultiWorkerMirroredStrategy, 2 processes

The multi-worker probe starts two worker processes on 127.0.0.1 (free ports), each with its own TF_CONFIG,
fits a tiny Keras model for 2 epochs with BackupAndRestore, and prints each worker's result (or its error).
Every child is killed after the timeout.

Findings (keras 3.15.1, tensorflow 2.21.0, CPU, 2026-11-24):
- MirroredStrategy over 2 logical CPU devices: model.fit works as is.
- MultiWorkerMirroredStrategy, plain: model.fit fails on both workers before the first step with
  "ValueError: Attempt to convert a value (PerReplica:{...}) ... to a Tensor" (keras-team/keras#20585):
  Keras' TensorFlowTrainer._maybe_symbolic_build calls strategy.reduce("MEAN", (x, y), axis=None) on a
  *nest* of PerReplica batches, which the collective strategy's reduce does not accept.
- With that fixed, the next failure is reduce_per_replica's strategy.reduce("MEAN", v, axis=0) on the
  *scalar* per-replica logs (loss, metrics): "Invalid reduction dimension 0 for input with 0 dimensions".
- PROBE_NEST_REDUCE=1 runs MultiWorkerMirroredStrategy subclassed with a reduce() that maps over nests
  and reduces scalars with axis=None: then model.fit with BackupAndRestore runs cleanly, and both workers
  report the same losses. catsdogs.distribute uses that subclass.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tiny_fit(strategy, backup_dir: str | None = None) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    global_batch = 16 * strategy.num_replicas_in_sync
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir)] if backup_dir else []
    history = model.fit(data, epochs=2, verbose=0, callbacks=callbacks)
    return {"replicas": strategy.num_replicas_in_sync, "loss": [round(v, 4) for v in history.history["loss"]],
            "accuracy": round(history.history["accuracy"][-1], 4)}


def probe_mirrored() -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    print("mirrored:", json.dumps(tiny_fit(strategy)), flush=True)


def worker_main(backup_dir: str) -> None:
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()

    if os.environ.get("PROBE_NEST_REDUCE"):  # the fix catsdogs.distribute uses
        class NestReducing(tf.distribute.MultiWorkerMirroredStrategy):
            def reduce(self, reduce_op, value, axis):
                def one(v):
                    local = self.experimental_local_results(v)[0]
                    scalar = getattr(local, "shape", None) is not None and local.shape.rank == 0
                    return super(NestReducing, self).reduce(reduce_op, v, None if scalar else axis)
                return tf.nest.map_structure(one, value)
        strategy = NestReducing()
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    result = tiny_fit(strategy, backup_dir)
    print("RESULT", json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_multi(timeout: float = 180) -> None:
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    backup = tempfile.mkdtemp(prefix="probe-backup-")
    processes = []
    started = time.time()
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, __file__, "worker", os.path.join(backup, str(index))],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for index, process in enumerate(processes):
        try:
            output, _ = process.communicate(timeout=max(1, timeout - (time.time() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            output += "\n<killed after timeout>"
        lines = [line for line in output.splitlines() if line.strip()]
        results = [line for line in lines if line.startswith("RESULT")]
        print(f"multi-worker {index}: rc={process.returncode}",
              results[0] if results else "\n    " + "\n    ".join(lines[-15:]), flush=True)
    print(f"multi-worker wall time {time.time() - started:.1f} s")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "both"
    if mode == "worker":
        worker_main(sys.argv[2])
    else:
        import keras
        import tensorflow as tf
        print(f"keras {keras.__version__}, tensorflow {tf.__version__}")
        if mode in ("both", "mirrored"):
            probe_mirrored()
        if mode in ("both", "multi"):
            probe_multi()
