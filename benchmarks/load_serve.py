"""Bounded load check of `catsdogs serve` (not a test): N requests, C at a time, over loopback.

    PYTHONPATH=src python benchmarks/load_serve.py [--run RUN] [--requests 200] [--concurrency 8] [--explain]
        [--engine keras|onnx|openvino|int8|auto]

Without --run, an untrained baseline at the study's 150 px is saved into a temporary RUN (same compute as
a trained one). The photo is train/cat.3.jpg from ../shared/data/dogs-vs-cats-train-5000.zip when present,
else a synthetic 500x375 JPEG. Prints p50/p99 latency, throughput and the error count; stops the server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import numpy as np

ZIP = Path("shared") / "data" / "dogs-vs-cats-train-5000.zip"


def untrained_run(folder: Path, image_size: int) -> Path:
    """A RUN folder holding a freshly initialised baseline (enough to measure serving cost)."""
    from catsdogs.models import create_model
    from catsdogs.run_files import write_json

    model = create_model("baseline", image_size=image_size)
    model.save(folder / "model.keras")
    write_json(folder / "classes.json", ["cat", "dog"])
    write_json(folder / "config.json", {"model": "baseline", "image_size": image_size, "note": "untrained, for load checks"})
    return folder


def photo_bytes() -> tuple[str, bytes]:
    for parent in Path(__file__).resolve().parents:
        if (parent / ZIP).exists():
            with zipfile.ZipFile(parent / ZIP) as archive:
                return "cat.3.jpg", archive.read("train/cat.3.jpg")
    from catsdogs.images import encode_jpeg

    rng = np.random.default_rng(0)
    return "synthetic.jpg", encode_jpeg(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), quality=90)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained RUN (default: an untrained baseline)")
    parser.add_argument("--image-size", type=int, default=150, help="for the untrained baseline")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--explain", action="store_true", help="ask for Grad-CAM overlays too")
    parser.add_argument("--engine", default="auto", help="auto (default, as catsdogs serve), keras, onnx, openvino or int8")
    parser.add_argument("--timeout", type=float, default=240, help="give up after this many seconds in all")
    args = parser.parse_args()

    from catsdogs.serve import background_server, create_app

    with tempfile.TemporaryDirectory(prefix="load-serve-") as tmp:
        run = args.run or untrained_run(Path(tmp), args.image_size)
        name, data = photo_bytes()
        app = create_app(run, engine=args.engine)
        params = {"explain": "true"} if args.explain else {}
        latencies: list[float] = []
        errors: dict[str, int] = {}
        with background_server(app) as url, httpx.Client(base_url=url, timeout=60,
                                                         limits=httpx.Limits(max_connections=args.concurrency)) as client:
            def one() -> float:
                start = time.perf_counter()
                response = client.post("predict", files={"file": (name, data, "image/jpeg")}, params=params)
                elapsed = time.perf_counter() - start
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:80]}")
                return elapsed

            one()  # warm-up: the first call builds the predict function
            deadline = time.monotonic() + args.timeout
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                futures = [pool.submit(one) for _ in range(args.requests)]
                for future in as_completed(futures, timeout=max(1.0, deadline - time.monotonic())):
                    try:
                        latencies.append(future.result())
                    except Exception as error:  # noqa: BLE001 - counted and reported
                        key = str(error).splitlines()[0][:100]
                        errors[key] = errors.get(key, 0) + 1
            wall = time.perf_counter() - started
    ms = [1000 * t for t in latencies]
    print(f"load_serve: {args.requests} requests, {args.concurrency} at a time, photo {name} ({len(data)} bytes), "
          f"model {'untrained baseline ' + str(args.image_size) + ' px' if args.run is None else args.run}"
          f"{', explain' if args.explain else ''}")
    print(f"latency p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, mean {statistics.fmean(ms):.1f} ms"
          if ms else "latency: no successful request")
    print(f"throughput {len(latencies) / wall:.1f} requests/s over {wall:.1f} s; errors {sum(errors.values())}")
    for message, count in errors.items():
        print(f"  {count} x {message}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
