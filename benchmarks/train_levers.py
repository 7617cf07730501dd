"""Training-speed levers one at a time: from the study's recipe to lorabench's defaults, and the ones dropped.

    .venv/bin/python benchmarks/train_levers.py [--model minilm-l6] [--rows 1000] [--val 500] [--compile]

Each rung is `lorabench train` (run_experiment) with one more setting changed, in a fresh
process, on the same rows, 1 epoch; learning rate scaled with the batch (same rate per sample).
Rungs after the defaults try levers that lorabench does NOT turn on, to record what they gave.
Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STUDY = {"batch_size": 8, "gradient_checkpointing": True, "group_by_length": False, "fast_dropout": False,
         "pooled_only_last_layer": False}
# (label, train settings, extra environment); each kept rung builds on the one before
KEPT = [
    ("the study's recipe: batch 8, gradient checkpointing, random order, torch dropout", {}, {}),
    ("- gradient checkpointing", {"gradient_checkpointing": False}, {}),
    ("+ tight length buckets", {"group_by_length": True}, {}),
    ("+ fast CPU dropout (lorabench.speedups.cpu)", {"fast_dropout": True}, {}),
    ("+ batch 32", {"batch_size": 32}, {}),
    ("+ pooled token only in the last layer = lorabench defaults at batch 32", {"pooled_only_last_layer": True}, {}),
]
DROPPED = [
    ("defaults + OMP_PROC_BIND=close OMP_PLACES=cores", {}, {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}),
    ("defaults + glibc malloc: no mmap/trim (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)", {},
     {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}),
    ("defaults + batch 64", {"batch_size": 64}, {}),
]
COMPILE = ("defaults - fast dropout + torch.compile (inductor; compile time included)",
           {"fast_dropout": False, "torch_compile": True}, {})


def rung(args) -> dict:
    """One training run in this process; prints its measurements as JSON."""
    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.pipeline.run import run_experiment
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    settings = json.loads(args.settings)
    lr = args.lr * settings["batch_size"] / 8
    cfg = ExperimentConfig(name="lever", data=DataConfig(max_train_samples=args.rows, max_eval_samples=args.val),
                           model=ModelConfig(name=args.model, max_length=128), lora=LoraConfig(r=8, alpha=16),
                           train=TrainConfig(learning_rate=lr, epochs=1, logging_steps=10_000, **settings))
    rec = run_experiment(cfg, Path(tempfile.mkdtemp()) / "run")
    return {"sps": args.rows / rec["pure_train_seconds"], "f1": rec["metrics"]["val"]["f1"],
            "train_s": rec["pure_train_seconds"], "peak_mb": rec["peak_memory_mb"], "lr": lr}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--lr", type=float, default=5e-4, help="learning rate at batch 8")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.settings:
        print("RESULT " + json.dumps(rung(args)))
        return
    table = ["| rung | samples/s | vs study | vs previous rung | val F1 | peak RSS |", "|---|---|---|---|---|---|"]
    settings, base, prev = dict(STUDY), None, None
    ladder = [(label, change, env, True) for label, change, env in KEPT]
    ladder += [(label, change, env, False) for label, change, env in DROPPED + ([COMPILE] if args.compile else [])]
    defaults, defaults_result = None, None
    for label, change, env, kept in ladder:
        run_settings = {**(settings if kept else defaults), **change}
        cmd = [sys.executable, __file__, "--model", args.model, "--rows", str(args.rows), "--val", str(args.val),
               "--lr", str(args.lr), "--settings", json.dumps(run_settings)]
        out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(out.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"rung failed: {label}")
        r = json.loads(line[7:])
        base = base or r
        ref = prev if kept else defaults_result
        vs_prev = f"{r['sps'] / ref['sps']:.2f}x" if ref else "—"
        table.append(f"| {label} | {r['sps']:.1f} | {r['sps'] / base['sps']:.2f}x | {vs_prev}"
                     f"{'' if kept or ref is None else ' (vs defaults)'} | {r['f1']:.4f} | {r['peak_mb']:.0f} MB |")
        print(table[-1], flush=True)
        if kept:
            settings, prev = run_settings, r
            defaults, defaults_result = dict(settings), r
    body = (f"`.venv/bin/python benchmarks/train_levers.py --model {args.model} --rows {args.rows} --val {args.val}"
            f"{' --compile' if args.compile else ''}` — each rung a fresh process, 1 epoch, lr {args.lr:g} at batch 8 "
            f"scaled with the batch. {header()}\n\n" + "\n".join(table) +
            "\n\nRungs above the defaults line are on in `lorabench train`; the rest were measured and left off.")
    write_section(f"Training-speed levers, {args.model} (benchmarks/train_levers.py)", body)


if __name__ == "__main__":
    main()
