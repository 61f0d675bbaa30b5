"""Distributed training on tf.distribute: the strategy from `--distribute` and `TF_CONFIG`, the chief, the
folder each worker writes to, the global batch, and input pipelines sharded per worker.

- `mirrored`: `tf.distribute.MirroredStrategy` over the local GPUs (or, without GPUs, the local CPU devices).
- `multi-worker`: `tf.distribute.MultiWorkerMirroredStrategy` across hosts, configured by `TF_CONFIG` exactly
  as TensorFlow documents it (`{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": "worker",
  "index": i}}`). Chosen automatically when `TF_CONFIG` names more than one worker.

`batch_size` is per replica: the global batch is `batch_size x replicas`. The learning rate is *not* scaled
(pass `--learning-rate`; the linear rule is lr x replicas), so that a run on R replicas with batch b and a
single-process run with batch b x R train the same recipe.

Under Keras 3.15 / TensorFlow 2.21, `model.fit` fails with a plain `MultiWorkerMirroredStrategy`
(keras-team/keras#20585; see scripts/probe_distribute.py): Keras' TensorFlow trainer calls the strategy's
`reduce` on a nest of per-replica batches, and on scalar logs with `axis=0`, which the collective strategy
refuses. `KerasMultiWorkerMirroredStrategy` is the same strategy with a `reduce` that takes both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from catsdogs.errors import UsageError

Distribute = Literal["mirrored", "multi-worker"]
KINDS = ("mirrored", "multi-worker")
PEER_TIMEOUT_S = 300  # how long a worker waits for the others to start
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSpec:
    """What TF_CONFIG says: the workers' addresses and this process's place among them."""

    workers: tuple[str, ...]
    task_type: str
    task_index: int
    has_chief: bool = False  # a separate "chief" task in the cluster (then no worker is the chief)

    @property
    def is_chief(self) -> bool:
        if self.task_type == "chief":
            return True
        return not self.has_chief and self.task_type == "worker" and self.task_index == 0


def read_tf_config(environ: dict | None = None) -> ClusterSpec | None:
    """TF_CONFIG parsed, or None when it is unset or empty; a UsageError when it is malformed."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON: {error}", "distribute") from None
    cluster, task = _check_tf_config(config)
    workers = tuple(cluster.get("chief", [])) + tuple(cluster.get("worker", []))
    if not workers:
        raise UsageError("TF_CONFIG names no worker (cluster.worker)", "distribute")
    return ClusterSpec(workers, task["type"], task["index"], has_chief=bool(cluster.get("chief")))


def _check_tf_config(config) -> tuple[dict, dict]:
    """TF_CONFIG's cluster and task, checked as TensorFlow would only find out later (UsageError): each task
    type a list of "host:port" addresses, the task's type one of them, its index within the list."""
    def bad(what: str) -> UsageError:
        return UsageError(f"TF_CONFIG: {what} (the form: {{\"cluster\": {{\"worker\": [\"host1:port\", "
                          f"\"host2:port\"]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}})",
                          "distribute")

    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise bad("expected a JSON object with a cluster object")
    cluster, task = config.get("cluster", {}), config.get("task", {"type": "worker", "index": 0})
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise bad(f"cluster.{kind} must be a list of \"host:port\" strings, got {addresses!r}")
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise bad(f"address {address!r} in cluster.{kind} has no port (host:port)")
    if not isinstance(task, dict):
        raise bad(f"task must be an object, got {task!r}")
    task_type, index = task.get("type", "worker"), task.get("index", 0)
    if task_type not in cluster:
        raise bad(f"task type {task_type!r} is not in the cluster ({', '.join(cluster) or 'empty'})")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise bad(f"task index {index!r} is not between 0 and {len(cluster[task_type]) - 1} "
                  f"(cluster.{task_type} has {len(cluster[task_type])} addresses)")
    return cluster, {"type": str(task_type), "index": index}


def wait_for_peers(cluster: ClusterSpec, timeout: float = PEER_TIMEOUT_S, interval: float = 1.0) -> None:
    """Wait until every other task of the cluster accepts connections, saying (logging) who is awaited;
    a CatsdogsError naming the missing ones after `timeout` seconds."""
    import socket
    import time

    from catsdogs.errors import CatsdogsError

    own = cluster.workers[cluster.task_index + (1 if cluster.has_chief and cluster.task_type == "worker" else 0)]
    waiting = [address for address in cluster.workers if address != own]
    deadline, said = time.monotonic() + timeout, None
    while waiting:
        waiting = [address for address in waiting if not _accepts(address, socket)]
        if not waiting:
            return
        if said != waiting:
            logger.info("waiting for %s (TF_CONFIG peers; up to %.0f s)", ", ".join(waiting), timeout)
            said = list(waiting)
        if time.monotonic() > deadline:
            raise CatsdogsError(f"TF_CONFIG peers {', '.join(waiting)} did not start within {timeout:g} s; start "
                                "every worker with the same TF_CONFIG (its own task index), or check the addresses")
        time.sleep(interval)


def _accepts(address: str, socket) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except OSError:
        return False


def resolve_distribute(option: str | None, environ: dict | None = None) -> str | None:
    """The strategy to use: the option, or `multi-worker` when TF_CONFIG names more than one worker."""
    if option is not None and option not in KINDS:
        raise UsageError(f"distribute must be one of {', '.join(KINDS)}, got {option!r}", "distribute")
    cluster = read_tf_config(environ)
    if option is None and cluster is not None and len(cluster.workers) > 1:
        return "multi-worker"
    if option == "mirrored" and cluster is not None and len(cluster.workers) > 1:
        raise UsageError("distribute mirrored is one machine, but TF_CONFIG names several workers; "
                         "use multi-worker (or unset TF_CONFIG)", "distribute")
    return option


def keras_multi_worker_strategy_class():
    """`tf.distribute.MultiWorkerMirroredStrategy` with a `reduce` that Keras 3's trainer can call."""
    import tensorflow as tf

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):  # noqa: D102 - see the module docstring
            def one(v):
                local = self.experimental_local_results(v)[0]
                scalar = getattr(local, "shape", None) is not None and local.shape.rank == 0
                return super(KerasMultiWorkerMirroredStrategy, self).reduce(reduce_op, v,
                                                                           None if scalar else axis)
            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerMirroredStrategy


_STRATEGIES: dict[str, object] = {}  # one per process: TensorFlow allows one collective setup per process


def make_strategy(kind: str):
    """The tf.distribute strategy of `kind` (made once per process)."""
    import tensorflow as tf

    if kind not in _STRATEGIES:
        if kind == "mirrored":
            split_cpu(int(os.environ.get("CATSDOGS_CPU_DEVICES", "0") or 0))
            gpus = tf.config.list_logical_devices("GPU")
            devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
            _STRATEGIES[kind] = tf.distribute.MirroredStrategy(devices)
        elif kind == "multi-worker":
            _STRATEGIES[kind] = keras_multi_worker_strategy_class()()
        else:
            raise UsageError(f"distribute must be one of {', '.join(KINDS)}, got {kind!r}", "distribute")
    return _STRATEGIES[kind]


def split_cpu(devices: int) -> None:
    """Split the CPU into `devices` logical devices (`CATSDOGS_CPU_DEVICES`: to try `mirrored` on a
    machine without GPUs); must happen before TensorFlow starts its runtime."""
    import tensorflow as tf

    if devices < 2 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:  # already initialised: keep what there is
        log(f"CATSDOGS_CPU_DEVICES={devices} ignored: TensorFlow's devices were already set up")


class Distribution:
    """One process's view of a distributed (or not) training run."""

    def __init__(self, kind: str | None, environ: dict | None = None, *,
                 peer_timeout: float = PEER_TIMEOUT_S) -> None:
        self.kind = resolve_distribute(kind, environ)  # TF_CONFIG checked here, before TensorFlow sees it
        self.cluster = read_tf_config(environ) if self.kind == "multi-worker" else None
        self.strategy = make_strategy(self.kind) if self.kind else None
        if self.cluster is not None and len(self.cluster.workers) > 1:
            wait_for_peers(self.cluster, peer_timeout)  # this worker's server is up: say who is awaited

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy else 1

    @property
    def workers(self) -> int:
        return len(self.cluster.workers) if self.cluster else 1

    @property
    def worker_index(self) -> int:
        if not self.cluster:
            return 0
        offset = 1 if self.cluster.has_chief and self.cluster.task_type == "worker" else 0
        return self.cluster.task_index + offset

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief if self.cluster else True

    def global_batch(self, per_replica_batch: int) -> int:
        return per_replica_batch * self.replicas

    def scope(self):
        """The strategy's scope (build, compile and fit models in it); a no-op without distribution."""
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()

    def run_folder(self, out: Path) -> Path:
        """Where this process writes its RUN: `out` on the chief; a per-worker temporary folder elsewhere
        (stable across restarts of the same worker, so it can resume)."""
        out = Path(out)
        prefix = f"catsdogs-worker{self.worker_index}-"
        if self.is_chief or any(parent.name.startswith(prefix) for parent in out.resolve().parents):
            return out  # the chief, or already inside this worker's folder (a run of `fit`)
        key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"{prefix}{key}" / out.name

    def check_same_start(self, epoch: int) -> None:
        """Every worker must resume from the same epoch (else the collectives would wait forever): gather
        each worker's first epoch and fail clearly on a mismatch."""
        if self.workers < 2:
            return
        import tensorflow as tf

        per_replica = self.strategy.run(lambda: tf.constant([epoch], tf.int64))
        starts = [int(v) for v in self.strategy.gather(per_replica, axis=0).numpy()]
        if len(set(starts)) > 1:
            raise UsageError(f"the workers would resume from different epochs ({', '.join(map(str, starts))}, "
                             "one per replica): a worker was killed while saving. Restart every worker "
                             "without resume, or put back a consistent RUN/checkpoint", "resume")

    def describe(self) -> str:
        if not self.strategy:
            return "one process"
        return (f"{self.kind}: {self.replicas} replicas on {self.workers} worker(s), this is worker "
                f"{self.worker_index}{' (chief)' if self.is_chief else ''}")

    def dataset(self, images, labels: np.ndarray, per_replica_batch: int, *, shuffle: bool, seed: int,
                label_dtype="float32"):
        """A distributed dataset for `model.fit`: the same global order as a single process would shuffle
        with `seed` in batches of `per_replica_batch x replicas`; each worker reads only its own images."""
        import tensorflow as tf

        from catsdogs.shards import batch_reader

        strategy, replicas = self.strategy, self.replicas
        global_batch = self.global_batch(per_replica_batch)
        read = batch_reader(images)
        label_table = tf.constant(np.asarray(labels).astype(label_dtype))
        count = len(labels)

        def per_worker(context: tf.distribute.InputContext):
            local = context.num_replicas_in_sync // context.num_input_pipelines
            first = context.input_pipeline_id * local
            indices = tf.data.Dataset.range(count)
            if shuffle:
                indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
            # every worker draws the same global batches; replica k of R takes rows k, k + R, ...
            # training drops the last incomplete global batch (every replica gets full batches), unless the
            # split is smaller than one global batch
            batches = indices.batch(global_batch, drop_remainder=shuffle and count >= global_batch)
            mine = batches.flat_map(lambda i: tf.data.Dataset.range(first, first + local).map(
                lambda k: tf.strided_slice(i, [k], [tf.shape(i, out_type=tf.int64)[0]], [replicas])))
            options = tf.data.Options()
            options.autotune.enabled = False
            return mine.map(lambda i: (tf.cast(read(i), tf.float32), tf.gather(label_table, i))).prefetch(2) \
                .with_options(options)

        return strategy.distribute_datasets_from_function(per_worker)


def log(message: str) -> None:
    logging.getLogger(__name__).warning(message)
