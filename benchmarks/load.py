"""Load benchmark of `fmnist serve`: concurrent clients on loopback for a bounded time.

    python benchmarks/load.py RUN_DIR [--clients 16] [--seconds 20] [--backend torch|onnx]

Starts the server on a free loopback port, sends POST /predict (PNG uploads of real test images) from
--clients threads for --seconds, and prints requests/s, p50/p99 latency and the error count (JSON with --json).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
from PIL import Image

from fmnist.data import load_dataset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    ds = load_dataset(test_limit=200)
    pngs = []
    for img in ds.test.images[:200]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "fmnist", "serve", args.run_dir, "--port", str(port),
                               "--backend", args.backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        stop = time.perf_counter() + args.seconds

        def client(k: int) -> None:
            with httpx.Client(timeout=10) as c:
                i = k
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    try:
                        r = c.post(f"{url}/predict", files={"file": ("x.png", pngs[i % len(pngs)], "image/png")})
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    dt = time.perf_counter() - t
                    with lock:
                        latencies.append(dt)
                        errors[0] += not ok
                    i += args.clients

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=10)
    lat = np.array(latencies) * 1000
    res = {"clients": args.clients, "seconds": wall, "requests": len(lat), "errors": errors[0],
           "requests_per_second": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "backend": args.backend}
    print(json.dumps(res) if args.json else
          f"{res['requests']} requests in {wall:.1f}s from {args.clients} clients ({args.backend}): "
          f"{res['requests_per_second']:.0f} req/s, p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
          f"{res['errors']} errors")
    return 1 if errors[0] else 0


if __name__ == "__main__":
    sys.exit(main())
