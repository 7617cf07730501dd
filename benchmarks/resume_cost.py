"""Time lost to a kill -9 mid-training: minilm-l6 killed during epoch 2 of 3, then the same command.

    .venv/bin/python benchmarks/resume_cost.py [--rows N]

(a) one uninterrupted `lorabench train` of 3 epochs (the baseline, same script); (b) the same command
killed with SIGKILL once its epoch-2 training is under way (half an epoch after the epoch-1 checkpoint
is complete), then run again with the same --output-dir, which resumes from the epoch-1 checkpoint.
Time lost = (killed run + resumed run) - uninterrupted run. Before resumable runs, a kill lost
everything trained so far; now at most the epoch in progress. Also checks that (b) ends with exactly
(a)'s val metrics. Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

LB = [sys.executable, "-m", "lorabench.cli"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000, help="train rows (val: the study's 1523)")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = tmp / "c.yaml"
        cfg.write_text(f"name: resume\ndata: {{max_train_samples: {args.rows}}}\nmodel: {{name: minilm-l6, max_length: 128}}\n"
                       "train: {epochs: 3}\n")
        t0 = time.perf_counter()
        subprocess.run(LB + ["train", str(cfg), "--output-dir", str(tmp / "a")], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        full = time.perf_counter() - t0
        epoch = full / 3
        t0 = time.perf_counter()
        proc = subprocess.Popen(LB + ["train", str(cfg), "--output-dir", str(tmp / "b")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpts = tmp / ".b-partial" / "checkpoints"
        while not list(ckpts.glob("checkpoint-*/lorabench_resume.json")):
            time.sleep(0.2)
            if proc.poll() is not None:
                raise SystemExit("the run ended before its first checkpoint")
        time.sleep(epoch / 2)  # mid-epoch 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(LB + ["train", str(cfg), "--output-dir", str(tmp / "b")], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resumed = time.perf_counter() - t0
        a = json.loads((tmp / "a" / "run.json").read_text())
        b = json.loads((tmp / "b" / "run.json").read_text())
    lost = killed + resumed - full
    lines = [header(), "",
             f"minilm-l6, {args.rows} train rows, 3 epochs (1523 val rows scored each epoch), killed mid-epoch 2:", "",
             "| | seconds |", "|---|---|",
             f"| (a) uninterrupted run (baseline) | {full:.1f} |",
             f"| (b) killed run, until the kill | {killed:.1f} |",
             f"| (b) same command again (resumed from epoch {b['resumed_from']:g}) | {resumed:.1f} |",
             f"| time lost to the kill: (b) - (a) | {lost:.1f} ({lost / epoch:.2f} of an epoch of {epoch:.1f} s; "
             f"without resume: {killed:.1f} s, all of it) |", "",
             f"Val metrics equal after resume: {a['metrics'] == b['metrics']} (F1 {a['metrics']['val']['f1']:.4f} vs "
             f"{b['metrics']['val']['f1']:.4f})."]
    print("\n".join(lines))
    write_section("resume_cost", "\n".join(lines))


if __name__ == "__main__":
    main()
