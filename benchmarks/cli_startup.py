"""How long a config mistake takes to report, against the cost of importing the training stack.

    .venv/bin/python benchmarks/cli_startup.py [--repeats N]

Times, interleaved N times in fresh processes: `lorabench train bad.yaml` with `train: {epochs: zero}` (a config
error: exit 2, one line) and `python -c "import torch, transformers.modeling_utils"` (the baseline the issue
named). Also a missing data file (an input error). Prints the medians and their ratio and rewrites its
BENCHMARKS.md section. The target (issue 21): a config error well under half the baseline.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402


def wall(cmd: list[str], cwd: Path, expect: int) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}, expected {expect}: {r.stderr[-500:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    lorabench = [sys.executable, "-m", "lorabench.cli"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "bad.yaml").write_text("data: {source: disaster_tweets}\nmodel: {name: tiny-bert}\ntrain: {epochs: zero}\n")
        (tmp / "nodata.yaml").write_text("data: {source: missing.csv}\nmodel: {name: tiny-bert}\n")
        cases = {"import torch, transformers.modeling_utils (baseline)":
                 ([sys.executable, "-c", "import torch, transformers.modeling_utils"], 0),
                 "lorabench train bad.yaml (train.epochs: zero)": (lorabench + ["train", "bad.yaml"], 2),
                 "lorabench train nodata.yaml (data file missing)": (lorabench + ["train", "nodata.yaml"], 2)}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, (cmd, rc) in cases.items():
                times[name].append(wall(cmd, tmp, rc))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = next(iter(med.values()))
    rows = [f"| {k} | {v:.2f} s | {v / base:.2f}x |" for k, v in med.items()]
    body = (f"{header()} Median of {args.repeats} fresh processes each, interleaved.\n\n"
            "| command | median wall time | vs baseline |\n|---|---|---|\n" + "\n".join(rows) +
            "\n\nA config or input mistake is reported before torch and transformers are imported "
            "(tests/test_console.py checks the imports); the target is well under half the baseline.")
    print(body)
    write_section("Reporting a config mistake (benchmarks/cli_startup.py)", body)


if __name__ == "__main__":
    main()
