"""Requests per second and latency of `lorabench serve` under concurrent clients, against a server that runs one
forward pass per request, in the same script.

    .venv/bin/python benchmarks/serve_load.py [--run RUN_DIR] [--requests N] [--clients 1,8,32] [--seconds S]

Without --run it first fine-tunes minilm-l6 with LoRA on 500 rows for one epoch (~30 s). Both servers are the same
app on 127.0.0.1 (uvicorn, in this process): lorabench's batching (each forward pass takes every request waiting,
up to 64 rows: those that came while the previous pass ran) and one request per forward pass (`max_batch_rows` 1). Each level
sends N requests of one bundled test tweet each from C client threads (each client one request at a time), stopping
early after S seconds; latency is per request, from send to answer. Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, make_minilm_run, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextlib.contextmanager
def served(run_dir: Path, settings):
    from lorabench.inference.serve import create_app, in_thread
    app = create_app(run_dir, settings)
    with in_thread(app) as url:
        yield url, app


def load(url: str, texts: list[str], requests: int, clients: int, seconds: float) -> dict:
    """Send `requests` one-text requests from `clients` threads (stopping after `seconds`); returns req/s and
    latency percentiles (ms)."""
    deadline = time.perf_counter() + seconds
    lat: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client():
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = json.dumps({"texts": [texts[i % len(texts)]]}).encode()
            req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            with lock:
                lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {"requests": len(lat), "rps": len(lat) / wall, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    from lorabench.data import bundled_path, read_table
    from lorabench.inference.serve import ServeSettings
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    tmp = Path(tempfile.mkdtemp())
    run_dir = Path(args.run) if args.run else make_minilm_run(tmp)
    texts = read_table(bundled_path("test.csv")).text.fillna("").tolist()
    levels = [int(c) for c in args.clients.split(",")]
    servers = {"lorabench serve (batches what waits, <= 64 rows)": ServeSettings(),
               "one forward pass per request": ServeSettings(max_batch_rows=1, max_wait_ms=0)}
    results = {}
    for name, settings in servers.items():
        with served(run_dir, settings) as (url, app):
            load(url, texts, 20, 4, 30)  # warm-up
            for c in levels:
                results[(name, c)] = load(url, texts, args.requests, c, args.seconds)
                print(name, c, results[(name, c)], flush=True)
    table = ["| server | clients | requests | requests/s | p50 latency | p99 latency |", "|---|---|---|---|---|---|"]
    for (name, c), r in results.items():
        table.append(f"| {name} | {c} | {r['requests']} | {r['rps']:.1f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms |")
    ours, single = list(servers)
    ratios = ", ".join(f"{c} clients {results[(ours, c)]['rps'] / results[(single, c)]['rps']:.2f}x" for c in levels)
    body = (f"`.venv/bin/python benchmarks/serve_load.py` — minilm-l6 + LoRA (merged, PyTorch), one bundled test tweet "
            f"per request, {args.requests} requests per level (at most {args.seconds:g} s), every client one request at "
            f"a time, all on 127.0.0.1. {header()}\n\n" + "\n".join(table) +
            f"\n\nBatching / one forward per request, requests/s: {ratios}.")
    print(body)
    write_section("Serving under load (benchmarks/serve_load.py)", body)


if __name__ == "__main__":
    main()
