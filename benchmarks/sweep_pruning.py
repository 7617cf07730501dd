"""The same sweep with and without pruning: best val F1 reached and CPU-seconds spent by each.

    .venv/bin/python benchmarks/sweep_pruning.py [--trials 8] [--rows 600] [--epochs 3]

minilm-l6 + LoRA on a reduced train set (the study's space: rank, alpha, dropout, learning rate),
TPE with the same seed, median pruner vs none, run back to back in this one script.
Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, header, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG = """
name: bench-sweep
data: {{max_train_samples: {rows}, max_eval_samples: 500}}
model: {{name: minilm-l6, max_length: 128}}
train: {{batch_size: 32, epochs: {epochs}}}
sweep:
  method: bayes
  metric: {{name: eval/f1-score, goal: maximize}}
  pruner: {pruner}
  seed: 0
  parameters:
    lora_alpha: {{values: [16, 32, 64]}}
    lora_dropout: {{distribution: uniform, min: 0, max: 0.1}}
    lora_rank: {{values: [4, 8, 16, 32]}}
    learning_rate: {{distribution: uniform, min: 1e-5, max: 1e-3}}
"""


def run(pruner: str, args, tmp: Path) -> dict:
    from lorabench.cli import main as cli
    cfg = tmp / f"{pruner}.yaml"
    cfg.write_text(CONFIG.format(rows=args.rows, epochs=args.epochs, pruner=pruner))
    out = tmp / pruner
    with Timer() as t:
        assert cli(["sweep", str(cfg), "--output-dir", str(out), "--trials", str(args.trials)]) == 0
    trials = list(csv.DictReader((out / "trials.csv").open()))
    done = [float(r["value"]) for r in trials if r["state"] == "COMPLETE"]
    return {"pruner": pruner, "best": max(done), "cpu": t.cpu, "wall": t.wall, "util": t.cpu_util,
            "complete": sum(r["state"] == "COMPLETE" for r in trials),
            "pruned": sum(r["state"] == "PRUNED" for r in trials),
            "trials_per_cpu_hour": len(trials) / (t.cpu / 3600)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    res = [run("none", args, tmp), run("median", args, tmp)]
    a, b = res
    rows = ["| pruner | trials complete / pruned | best val F1 | CPU-seconds | wall s | CPU use | trials per CPU-hour |",
            "|---|---|---|---|---|---|---|"]
    for r in res:
        rows.append(f"| {r['pruner']} | {r['complete']} / {r['pruned']} | {r['best']:.4f} | {r['cpu']:.0f} | "
                    f"{r['wall']:.0f} | {100 * r['util']:.0f}% | {r['trials_per_cpu_hour']:.1f} |")
    body = textwrap.dedent(f"""\
        `.venv/bin/python benchmarks/sweep_pruning.py --trials {args.trials} --rows {args.rows} --epochs {args.epochs}` —
        minilm-l6 + LoRA, {args.rows} train rows, 500 val rows, {args.epochs} epochs a trial, TPE seed 0. {header()}

        """) + "\n".join(rows) + (f"\n\nPruned / unpruned: CPU-seconds {b['cpu'] / a['cpu']:.2f}x, "
                                    f"best val F1 {b['best'] - a['best']:+.4f}.")
    print(body)
    write_section("Sweep pruning (benchmarks/sweep_pruning.py)", body)


if __name__ == "__main__":
    main()
