"""Training speed: the study's recipe vs `lorabench train` defaults, same rows, same epochs, one run.

    .venv/bin/python benchmarks/train_speed.py [--model minilm-l6] [--rows 2000] [--val 0 (all)] [--epochs 1]
                                               [--lr 5e-4] [--seeds 1]

(a) the study's recipe exactly as its script ran it: plain Trainer + peft, batch 8, gradient
    checkpointing, random-order batches, DataCollatorWithPadding, weighted loss, torch's dropout.
(b) `lorabench train` with its defaults (batch 32, no checkpointing, length-grouped batches,
    the pooled token only in the last layer, fast CPU dropout, tokenised once, val scored in
    length-sorted batches).
Both use the same LoRA (r 8, alpha 16, query/value or q_proj/v_proj), epochs and rows; (b) takes
(a)'s learning rate scaled to its batch as lorabench's defaults are (same rate per sample: x4).
Prints samples/s, real tokens/s, achieved GFLOP/s and its share of the fp32 matmul peak measured
in this run, peak RSS, the ratio b/a and each one's val F1 (with --seeds N: both recipes N times,
same seeds, F1 as mean ± sd: one seed's F1 moves by about 0.01). Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, flops_per_token, header, matmul_peak_gflops, padding_share, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def study_recipe(cfg, splits, tmp: Path) -> dict:
    """(a) The study's script, 2026 API names: Trainer + peft, checkpointing, random order, batch 8.

    On a GPU, as the study ran its decoders: fp16 weights (cfg.model.dtype) and fp16 mixed precision.
    """
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from lorabench.evaluation.metrics import classification_metrics, predict_labels, softmax
    from lorabench.models import build_classifier
    from lorabench.runs.resources import PeakMemory
    from lorabench.training import WeightedCrossEntropy, tokenize
    set_seed(cfg.train.seed)  # as run_experiment does for (b): the same LoRA and head initialisation
    built = build_classifier(cfg.model, cfg.lora, splits.label_names)
    train_ds, _, _ = tokenize(splits.train, built.tokenizer, cfg.model.max_length)
    val_ds, _, _ = tokenize(splits.val, built.tokenizer, cfg.model.max_length)
    t = cfg.train
    args = TrainingArguments(
        output_dir=str(tmp / "a"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
        learning_rate=t.learning_rate, lr_scheduler_type="constant_with_warmup", warmup_steps=0.1, max_grad_norm=0.3,
        num_train_epochs=t.epochs, weight_decay=0.001, eval_strategy="epoch", save_strategy="no",
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        train_sampling_strategy="random", report_to="none", use_cpu=not torch.cuda.is_available(),
        fp16=torch.cuda.is_available(), seed=t.seed, disable_tqdm=True)

    def metrics(p):
        return classification_metrics(p.label_ids, predict_labels(softmax(p.predictions)), 2)
    trainer = Trainer(model=built.model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                      data_collator=DataCollatorWithPadding(built.tokenizer), processing_class=built.tokenizer,
                      compute_loss_func=WeightedCrossEntropy(splits.class_weights), compute_metrics=metrics)
    with PeakMemory() as peak, Timer() as tm:
        trainer.train()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    evals = [h for h in trainer.state.log_history if "eval_f1" in h]
    eval_s = sum(h["eval_runtime"] for h in evals)
    lengths = [len(x) for x in train_ds["input_ids"]]
    order = trainer._get_train_sampler(train_ds)
    order = list(iter(order)) if order is not None else list(range(len(lengths)))
    return {"train_s": tm.wall - eval_s, "util": tm.cpu_util, "f1": evals[-1]["eval_f1"],
            "peak_mb": peak.result["mb"], "tokens": sum(lengths), "lengths": lengths,
            "rows": len(train_ds), "padding": padding_share(lengths, order, 8)}


def counted_flops(cfg, splits, *, levers: bool) -> float:
    """Matmul FLOPs per real token of the recipe's model, on a fresh build after its run (no RNG drawn before it)."""
    from lorabench.models import build_classifier
    from lorabench.speedups import cpu as speed
    from lorabench.training import tokenize
    built = build_classifier(cfg.model, cfg.lora, splits.label_names)
    rows, _, _ = tokenize(splits.train, built.tokenizer, cfg.model.max_length)
    applied = speed.apply(built.model, built.arch, cfg.train) if levers else None  # (b): the work it does
    try:
        return flops_per_token(built.model, rows["input_ids"])
    finally:
        speed.restore_all(built.model, applied)


def _pool(runs: list[dict], epochs: float) -> dict:
    """One recipe's runs (one per seed) as one row: rates over all runs, F1 mean and sd."""
    import statistics
    secs = sum(r["train_s"] for r in runs)
    f1s = [r["f1"] for r in runs]
    return {**runs[0], "sps": sum(r["rows"] for r in runs) * epochs / secs,
            "tps": sum(r["tokens"] for r in runs) * epochs / secs, "util": statistics.mean(r["util"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs), "f1": statistics.mean(f1s), "f1s": f1s,
            "f1_sd": statistics.stdev(f1s) if len(f1s) > 1 else 0.0}


def lorabench_defaults(cfg, splits, tmp: Path, lengths: list[int]) -> dict:
    """(b) `lorabench train` as a user runs it; `lengths`: the train rows' token counts (same tokenizer as (a))."""
    import numpy as np

    from lorabench.pipeline.run import run_experiment
    from lorabench.training import length_buckets
    with Timer() as tm:
        rec = run_experiment(cfg, tmp / "b", splits=splits)
    bs = rec["batch"]["batch_size"]  # train.batch_size auto: the batch the run picked
    order = length_buckets(lengths, bs, np.random.default_rng(cfg.train.seed))
    return {"train_s": rec["pure_train_seconds"], "util": tm.cpu_util, "f1": rec["history"][-1]["f1"],
            "peak_mb": rec["peak_memory_mb"], "tokens": sum(lengths),
            "rows": len(lengths), "padding": padding_share(lengths, order, bs),
            "levers": rec.get("speed_levers"), "batch": bs, "lr": rec["batch"]["learning_rate"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--val", type=int, default=0, help="val rows (0: the whole val split)")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--lr", type=float, default=5e-4, help="(a)'s learning rate; (b) scales it to its batch")
    ap.add_argument("--seeds", type=int, default=1, help="train each recipe with seeds 42, 43, ...: F1 as mean ± sd")
    args = ap.parse_args()
    import torch

    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.data import load_splits
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    data = DataConfig(max_train_samples=args.rows, max_eval_samples=args.val or None)
    model = ModelConfig(name=args.model, max_length=128)
    defaults = TrainConfig()
    from lorabench.training.batch import AUTO_BATCH
    lr_b = args.lr * AUTO_BATCH / 8  # the rate at batch 32; batch_size auto scales it to the batch it picks

    def config(lr: float, seed: int) -> ExperimentConfig:
        return ExperimentConfig(name="bench", data=data, model=model, lora=LoraConfig(r=8, alpha=16),
                                train=TrainConfig(learning_rate=lr, epochs=args.epochs, logging_steps=10_000, seed=seed))
    splits = load_splits(data)
    tmp = Path(tempfile.mkdtemp())
    peak = matmul_peak_gflops()
    runs_a, runs_b = [], []
    for i in range(args.seeds):
        seed = defaults.seed + i
        runs_a.append(study_recipe(config(args.lr, seed), splits, tmp / f"s{seed}"))
        runs_b.append(lorabench_defaults(config(lr_b, seed), splits, tmp / f"s{seed}", runs_a[-1]["lengths"]))
    peak = max(peak, matmul_peak_gflops())
    shutil.rmtree(tmp, ignore_errors=True)
    a, b = _pool(runs_a, args.epochs), _pool(runs_b, args.epochs)
    a["flops_per_token"] = counted_flops(config(args.lr, defaults.seed), splits, levers=False)
    b["flops_per_token"] = counted_flops(config(lr_b, defaults.seed), splits, levers=True)
    ratios = [(rb["rows"] / rb["train_s"]) / (ra["rows"] / ra["train_s"]) for ra, rb in zip(runs_a, runs_b)]
    pairs = f" (per seed, run back to back: {', '.join(f'{r:.2f}x' for r in ratios)})" if args.seeds > 1 else ""
    seeds = f"seed {defaults.seed}" if args.seeds == 1 else f"seeds {defaults.seed}-{defaults.seed + args.seeds - 1}"
    rows = [f"| recipe | samples/s | real tokens/s | padding | GFLOP/s | share of fp32 matmul peak | CPU use | peak RSS "
            f"| val F1 ({seeds}) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in ((f"(a) the study's recipe (batch 8, lr {args.lr:g})", a),
                    (f"(b) lorabench train defaults (batch_size auto: {b['batch']}, lr {b['lr']:g})", b)):
        r["gflops"] = r["flops_per_token"] * r["tps"] / 1e9
        f1 = f"{r['f1']:.4f}" + (f" ± {r['f1_sd']:.4f} ({', '.join(f'{x:.4f}' for x in r['f1s'])})" if args.seeds > 1 else "")
        rows.append(f"| {name} | {r['sps']:.1f} | {r['tps']:.0f} | {100 * r['padding']:.1f}% | {r['gflops']:.1f} | "
                    f"{100 * r['gflops'] / peak:.0f}% | {100 * r['util']:.0f}% | {r['peak_mb']:.0f} MB | {f1} |")
    body = (f"`.venv/bin/python benchmarks/train_speed.py --model {args.model} --rows {args.rows} --val {args.val} "
            f"--epochs {args.epochs:g} --lr {args.lr:g} --seeds {args.seeds}` — {len(splits.train)} train rows, "
            f"{len(splits.val)} val rows, LoRA r 8, {torch.get_num_threads()} torch threads; each recipe trained "
            f"{args.seeds}x ({seeds}; samples/s over all its runs, F1 as mean ± sd and per seed); fp32 matmul peak measured in this run "
            f"{peak:.0f} GFLOP/s (best of square, mid-size and transformer-shaped matmuls, MKL in both layouts and oneDNN, measured before and after the runs); GFLOP/s = real tokens/s x the matmul "
            f"FLOPs each recipe performs per real token (torch's FlopCounterMode over forward + backward of 64 "
            f"unpadded rows: linears, attention, LoRA; (a) {a['flops_per_token'] / 1e6:.1f}, (b) "
            f"{b['flops_per_token'] / 1e6:.1f} MFLOP/token; padding and checkpointing recompute not counted). "
            f"{header()}\n\n"
            + "\n".join(rows) +
            f"\n\n(b)/(a): **{b['sps'] / a['sps']:.2f}x** samples/s{pairs}; val F1 {b['f1'] - a['f1']:+.4f}"
            f"{' (means)' if args.seeds > 1 else ''}. (b)'s levers: {b['levers']}.")
    print(body)
    write_section(f"Training speed, {args.model} (benchmarks/train_speed.py)", body)


if __name__ == "__main__":
    main()
