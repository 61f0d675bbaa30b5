"""Memory of `catsdogs serve` under huge-pixel uploads (not a test): N concurrent 7000x7000 PNGs, R rounds.

    PYTHONPATH=src python benchmarks/serve_memory.py [--run RUN] [--side 7000] [--concurrency 8] [--rounds 4]
        [--settle 10]

Starts `catsdogs serve` in a subprocess (without --run, on an untrained baseline at 150 px saved into a
temporary RUN, as benchmarks/load_serve.py does), sends `concurrency` uploads at once of one PNG of
side x side pixels (a flat colour with a little noise: ~160 KB at 7000 px), `rounds` times, while sampling
the server's resident memory (/proc/PID/status). Prints the RSS at start (after a warm-up request), the peak,
the RSS `settle` seconds after the last request, and the longest request time. Issue 22 asks for: peak below
start + 1.5 GB, back within 0.5 GB of start after 10 s, every request under 15 s.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import untrained_run  # noqa: E402


def huge_png(side: int) -> bytes:
    """A side x side RGB PNG that compresses well (a flat colour, a few noisy rows)."""
    pixels = np.full((side, side, 3), (120, 90, 60), np.uint8)
    pixels[:: max(1, side // 64)] = np.random.default_rng(0).integers(0, 256, (len(pixels[:: max(1, side // 64)]),
                                                                               side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """The peak RSS of a process, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained RUN (default: an untrained baseline)")
    parser.add_argument("--side", type=int, default=7000, help="pixels a side of the uploaded PNG")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait before the last RSS reading")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        run = args.run or untrained_run(Path(folder), 150)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
        server = subprocess.Popen([sys.executable, "-c", "from catsdogs.cli import main; raise SystemExit(main())",
                                   "serve", str(run), "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=120) as client:
                deadline = time.time() + 120
                while time.time() < deadline:
                    try:
                        if client.get(f"{url}/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.3)
                else:
                    print("serve did not start:", server.stderr.read().decode()[-2000:] if server.stderr else "")
                    return 1
                data = huge_png(args.side)
                client.post(f"{url}/predict", files={"file": ("warm.png", huge_png(64), "image/png")})
                start = rss_mb(server.pid)
                sampler = Sampler(server.pid)
                sampler.start()

                def upload(index: int) -> tuple[int, float]:
                    began = time.perf_counter()
                    response = client.post(f"{url}/predict", files={"file": (f"{index}.png", data, "image/png")})
                    return response.status_code, time.perf_counter() - began

                results: list[tuple[int, float]] = []
                with ThreadPoolExecutor(args.concurrency) as pool:
                    for _ in range(args.rounds):
                        results += list(pool.map(upload, range(args.concurrency)))
                time.sleep(args.settle)
                sampler.running = False
                sampler.join()
                after = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    statuses = sorted({status for status, _ in results})
    print(f"{args.concurrency} concurrent {args.side}x{args.side} PNG uploads ({len(data) / 1000:.0f} KB), "
          f"{args.rounds} rounds: HTTP {statuses}")
    print(f"RSS start {start:.0f} MB, peak {sampler.peak:.0f} MB (+{sampler.peak - start:.0f}), "
          f"after {args.settle:g} s {after:.0f} MB (+{after - start:.0f}); "
          f"max request {max(seconds for _, seconds in results):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
