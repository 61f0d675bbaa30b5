"""Two local workers (MultiWorkerMirroredStrategy, TF_CONFIG on 127.0.0.1) against one process: the same
model, epochs, seed and global batch, on the shared data.

    PYTHONPATH=src python benchmarks/distributed_accuracy.py --work /tmp/catsdogs-dist \
        [--source ../shared/data/dogs-vs-cats-train-5000.zip] [--model features] [--backbone mobilenetv2 --image-size 224] \
        [--epochs 30] [--global-batch 64]

Steps (each a `catsdogs` command, printed before it runs):
1. `catsdogs prepare SOURCE --out WORK/data` (the study's 3000 / 1000 / 1000 split);
2. one process: `catsdogs train ... --batch-size GLOBAL --cache-dir WORK/cache --out WORK/one`;
3. two workers, each `TF_CONFIG={"cluster": {"worker": [A, B]}, "task": {"type": "worker", "index": i}}
   catsdogs train ... --batch-size GLOBAL/2 --distribute multi-worker --cache-dir WORK/cache --out WORK/two`
   (the features are extracted in step 2 and reused: the cache key is the base's weights and the DATA);
4. `catsdogs evaluate` both; prints validation (best epoch) and test accuracy side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def catsdogs(*args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "catsdogs.cli", *args]
    print("$", " ".join(command), flush=True)
    out = open(log, "w") if log else None
    return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)


def check(process: subprocess.Popen, what: str) -> None:
    if process.wait() != 0:
        raise SystemExit(f"{what} failed (exit {process.returncode})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {"val_accuracy": config.get("monitor_best") if config.get("monitor") == "val_accuracy" else None,
            "best_epoch": config["best_epoch"], "train_s": config["wall_time_s"],
            "test_accuracy": metrics.get("accuracy"), "test_log_loss": metrics.get("log_loss")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/catsdogs-dist"))
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "dogs-vs-cats-train-5000.zip")
    parser.add_argument("--model", default="features")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--image-size", type=int, default=224, help="MobileNetV2's offline weights are 224 px")
    parser.add_argument("--weights", default=str(ROOT.parent / "shared" / "weights" / "keras" /
                                                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--global-batch", type=int, default=64)
    args = parser.parse_args()
    work, data, cache = args.work, args.work / "data", args.work / "cache"
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    if not (data / "manifest.csv").exists():
        check(catsdogs("prepare", str(args.source), "--out", str(data), env=env), "prepare")
    common = ["train", "--data", str(data), "--model", args.model, "--epochs", str(args.epochs),
              "--monitor", "val_accuracy", "--cache-dir", str(cache)]
    if args.backbone:
        common += ["--backbone", args.backbone, "--image-size", str(args.image_size)]
    if args.weights:
        common += ["--weights", args.weights]
    results = {}
    one, two = work / "one", work / "two"
    if not (one / "metrics.json").exists():
        started = time.perf_counter()
        shutil.rmtree(one, ignore_errors=True)
        check(catsdogs(*common, "--batch-size", str(args.global_batch), "--out", str(one), env=env,
                       log=work / "one.log"), "one process")
        results["one_wall_s"] = round(time.perf_counter() - started, 1)
        check(catsdogs("evaluate", str(one), env=env, log=work / "one-eval.log"), "evaluate one")
    if not (two / "metrics.json").exists():
        shutil.rmtree(two, ignore_errors=True)
        workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        started = time.perf_counter()
        processes = []
        for index in range(2):
            worker_env = dict(env, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                         "task": {"type": "worker", "index": index}}),
                              TMPDIR=str(work / f"tmp{index}"))
            (work / f"tmp{index}").mkdir(exist_ok=True)
            processes.append(catsdogs(*common, "--batch-size", str(args.global_batch // 2), "--distribute",
                                      "multi-worker", "--out", str(two), env=worker_env,
                                      log=work / f"two-worker{index}.log"))
        for index, process in enumerate(processes):
            check(process, f"worker {index}")
        results["two_wall_s"] = round(time.perf_counter() - started, 1)
        check(catsdogs("evaluate", str(two), env=env, log=work / "two-eval.log"), "evaluate two")
    results.update(one=summary(one), two=summary(two))
    print(json.dumps(results, indent=2))
    print("| training | val accuracy (best) | test accuracy | test log loss | training s |\n|---|---|---|---|---|")
    for name, label in (("one", f"one process, batch {args.global_batch}"),
                        ("two", f"two workers, {args.global_batch // 2} x 2")):
        r = results[name]
        print(f"| {label} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['test_log_loss']:.4f} | "
              f"{r['train_s']} |")


if __name__ == "__main__":
    main()
