"""Distributed training on this machine (CPU): MirroredStrategy over two logical CPU devices, and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1, their own TF_CONFIG, and restarts."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catsdogs.distribute import (
    ClusterSpec,
    Distribution,
    read_tf_config,
    resolve_distribute,
)
from catsdogs.errors import UsageError

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")
LIMIT = 420  # seconds any child may run (two fitting workers on 2 loaded cores took over 240)


def tf_config(workers: list[str], index: int) -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def child_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    pythonpath = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    return dict(env, PYTHONPATH=pythonpath, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_path), **extra)


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "catsdogs.cli", "train", "--data", str(data), "--model", "baseline",
            "--image-size", "48", "--out", str(out), *extra]


def test_tf_config_and_strategy_choice():
    workers = ["127.0.0.1:1", "127.0.0.1:2"]
    env = {"TF_CONFIG": tf_config(workers, 1)}
    assert read_tf_config(env) == ClusterSpec(tuple(workers), "worker", 1)
    assert not read_tf_config(env).is_chief and read_tf_config({"TF_CONFIG": tf_config(workers, 0)}).is_chief
    assert resolve_distribute(None, env) == "multi-worker"  # picked automatically
    assert resolve_distribute(None, {"TF_CONFIG": tf_config(workers[:1], 0)}) is None
    assert resolve_distribute(None, {}) is None and resolve_distribute("mirrored", {}) == "mirrored"
    with pytest.raises(UsageError, match="several workers"):
        resolve_distribute("mirrored", env)
    with pytest.raises(UsageError, match="distribute"):
        resolve_distribute("ring", {})
    with pytest.raises(UsageError, match="TF_CONFIG"):
        read_tf_config({"TF_CONFIG": "{not json"})
    chief_spec = {"cluster": {"chief": ["h0:1"], "worker": ["h1:1"]}, "task": {"type": "worker", "index": 0}}
    assert not read_tf_config({"TF_CONFIG": json.dumps(chief_spec)}).is_chief


def test_no_distribution_is_one_process(tmp_path: Path):
    one = Distribution(None, environ={})
    assert one.replicas == 1 and one.is_chief and one.global_batch(32) == 32
    assert one.run_folder(tmp_path / "run") == tmp_path / "run"


MIRRORED_BATCHES = """
import json, sys, numpy as np
from catsdogs.distribute import Distribution
from catsdogs.dataset import SplitArrays, to_dataset
images = np.arange(22 * 2 * 2 * 3, dtype=np.uint8).reshape(22, 2, 2, 3)
labels = np.arange(22) % 2
d = Distribution("mirrored", environ={})
out = {"replicas": d.replicas, "batches": []}
for x, y in d.dataset(images, labels, 3, shuffle=True, seed=5):
    parts = d.strategy.experimental_local_results(x)
    out["batches"].append([p.numpy()[:, 0, 0, 0].tolist() for p in parts])
reference = to_dataset(SplitArrays(images, labels, [], ["a", "b"]), 6, shuffle=True, seed=5)
out["reference"] = [x.numpy()[:, 0, 0, 0].tolist() for x, _ in reference]
print(json.dumps(out))
"""


def test_mirrored_replicas_split_the_single_process_global_batches(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", MIRRORED_BATCHES], capture_output=True, text=True, timeout=LIMIT,
                          env=child_env(tmp_path, CATSDOGS_CPU_DEVICES="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # per-replica 3 x 2 replicas = the single process's shuffled global batches of 6 (the last partial one
    # is dropped in training so that every replica gets a full batch)
    assert len(result["batches"]) == 3
    for (first, second), reference in zip(result["batches"], result["reference"]):
        assert sorted(first + second) == sorted(reference) and first == reference[0::2]


def test_mirrored_training_on_two_cpu_devices(tiny_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    done = subprocess.run(train_command(tiny_data, run, "--epochs", "1", "--batch-size", "4", "--distribute",
                                        "mirrored"), capture_output=True, text=True, timeout=LIMIT,
                          env=child_env(tmp_path, CATSDOGS_CPU_DEVICES="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete" and config["distribute"] == "mirrored"
    assert config["replicas"] == 2 and config["global_batch_size"] == 8
    assert (run / "model.keras").stat().st_size > 0


def start_workers(command: list[str], tmp_path: Path, workers: list[str]) -> list[subprocess.Popen]:
    processes = []
    for index in range(len(workers)):
        log = open(tmp_path / f"worker{index}.log", "a")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          env=child_env(tmp_path, TF_CONFIG=tf_config(workers, index))))
    return processes


def wait_all(processes: list[subprocess.Popen], tmp_path: Path) -> None:
    deadline = time.time() + LIMIT
    try:
        for process in processes:
            process.wait(timeout=max(1, deadline - time.time()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, process in enumerate(processes):
        assert process.returncode == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]


def test_two_workers_train_one_run_written_by_the_chief_from_shards(tiny_data: Path, tmp_path: Path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run = tmp_path / "run"
    # no --distribute: TF_CONFIG with two workers picks multi-worker
    command = train_command(tiny_data, run, "--epochs", "2", "--batch-size", "4")
    processes = []
    for index in range(2):  # the training images from shards (over a tiny in-memory budget)
        log = open(tmp_path / f"worker{index}.log", "a")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env(
            tmp_path, TF_CONFIG=tf_config(workers, index), CATSDOGS_IN_MEMORY_MB="0.05")))
    wait_all(processes, tmp_path)
    assert "memory-mapped shards" in (tmp_path / "worker0.log").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["distribute"] == "multi-worker"
    assert config["workers"] == 2 and config["replicas"] == 2 and config["global_batch_size"] == 8
    assert config["status"] == "complete"
    assert [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))] == [0, 1]
    scratch = list(tmp_path.glob("catsdogs-worker1-*/run/config.json"))  # the other worker's temporary RUN
    assert len(scratch) == 1 and scratch[0].parent != run


def test_killed_workers_restart_and_the_run_continues(tiny_data: Path, tmp_path: Path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    run = tmp_path / "run"
    command = train_command(tiny_data, run, "--epochs", "30", "--batch-size", "2", "--distribute", "multi-worker")
    processes = start_workers(command, tmp_path, workers)
    states = [run / "checkpoint" / "state.json"]
    deadline = time.time() + LIMIT
    try:
        while time.time() < deadline:
            assert all(p.poll() is None for p in processes), "a worker ended before the kill: " + \
                (tmp_path / "worker0.log").read_text()[-2000:]
            found = list(tmp_path.glob("catsdogs-worker1-*/run/checkpoint/state.json"))
            epochs = [json.loads(s.read_text())["epoch"] if s.exists() else -1 for s in states + found[:1]]
            if len(epochs) == 2 and epochs[0] == epochs[1] >= 1:
                break
            time.sleep(0.02)
        else:
            pytest.fail("no epoch finished in time")
        processes[1].send_signal(signal.SIGKILL)  # a worker dies; the cluster goes down with it:
        assert processes[0].wait(timeout=60) == 1  # the survivor's collectives abort (UNAVAILABLE), exit 1
    finally:
        for p in processes:
            p.kill()
            p.wait()
    done = json.loads(states[0].read_text())["epoch"]
    other = next(tmp_path.glob("catsdogs-worker1-*/run/checkpoint/state.json"))
    saved = other.read_text()
    other.write_text(json.dumps({**json.loads(saved), "epoch": done - 1}))  # as if killed before its save
    processes = start_workers(command + ["--resume"], tmp_path, workers)
    for process in processes:
        assert process.wait(timeout=LIMIT) == 2  # a clear refusal on both, not a hang
    assert "resume from different epochs" in (tmp_path / "worker0.log").read_text()
    other.write_text(saved)
    wait_all(start_workers(command + ["--resume", "--epochs", str(done + 2)], tmp_path, workers), tmp_path)
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run / "history.csv"))]
    assert epochs == list(range(done + 2)), "history must continue where the killed workers stopped"
    assert json.loads((run / "config.json").read_text())["status"] == "complete"


def test_fit_on_two_workers(tmp_path: Path):
    from catsdogs.models.weights import offline_weights_dir

    from helpers import make_class_folders

    if offline_weights_dir() is None:
        pytest.skip("MobileNetV2's offline weights (../shared/weights/keras) are absent")
    photos = make_class_folders(tmp_path / "photos", per_class=12)
    out = tmp_path / "fitted"
    command = [sys.executable, "-m", "catsdogs.cli", "fit", str(photos), "--out", str(out),
               "--backbone", "mobilenetv2", "--distribute", "multi-worker", "--no-audit", "--budget", "0"]
    wait_all(start_workers(command, tmp_path, [f"127.0.0.1:{port}" for port in free_ports(2)]), tmp_path)
    assert json.loads((out / "fit.json").read_text())["status"] == "complete"
    config = json.loads((out / "config.json").read_text())
    assert config["distribute"] == "multi-worker" and config["replicas"] == 2
    assert list(tmp_path.glob("catsdogs-worker1-*/fitted/fit.json"))  # the other worker fitted in its own folder
