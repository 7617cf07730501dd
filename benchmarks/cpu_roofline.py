"""This machine's roofline for `lorabench plan --gpu CPU-2core`: the measured fp32 matmul peak (torch, every core)
and memory bandwidth (a STREAM-like copy with numpy: bytes read + written per second).

    .venv/bin/python benchmarks/cpu_roofline.py

Prints the numbers the CPU entry of `lorabench.planning.gpus` holds (best of 5 repeats each) and rewrites its
BENCHMARKS.md section.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def copy_gbs(mb: int = 512, repeats: int = 5) -> float:
    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: pages touched
    best = min(_time(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best / 1e9  # read + write


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    import torch
    g, bw = matmul_gflops(), copy_gbs()
    body = (f"`.venv/bin/python benchmarks/cpu_roofline.py` — {os.cpu_count()} cores, {torch.get_num_threads()} torch "
            f"threads. {header()}\n\n| measure | value |\n|---|---|\n| fp32 matmul 2048 x 2048 (torch, best of 5) | "
            f"{g:.1f} GFLOP/s |\n| memory copy 512 MB (numpy, read + write, best of 5) | {bw:.1f} GB/s |\n| ridge "
            f"point (matmul peak / bandwidth) | {g / bw:.1f} FLOP/byte |\n\n`lorabench plan --gpu CPU-2core` plans "
            "with these (src/lorabench/planning/gpus.py).")
    print(body)
    write_section("CPU roofline (benchmarks/cpu_roofline.py)", body)


if __name__ == "__main__":
    main()
