"""Training speed: the study's recipe vs `lorabench train` defaults, same rows, same epochs, one run.

    .venv/bin/python benchmarks/train_speed.py [--model minilm-l6] [--rows 2000] [--val 0 (all)] [--epochs 1] [--lr 5e-4]

(a) the study's recipe exactly as its script ran it: plain Trainer + peft, batch 8, gradient
    checkpointing, random-order batches, DataCollatorWithPadding, weighted loss, torch's dropout.
(b) `lorabench train` with its defaults (batch 32, no checkpointing, length-grouped batches,
    fast CPU dropout, tokenised once, val scored in length-sorted batches).
Both use the same LoRA (r 8, alpha 16, query/value or q_proj/v_proj), epochs and rows; (b) takes
(a)'s learning rate scaled to its batch as lorabench's defaults are (same rate per sample: x4).
Prints samples/s, real tokens/s, achieved GFLOP/s and its share of the fp32 matmul peak measured
in this run, peak RSS, the ratio b/a and each one's val F1. Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, header, matmul_peak_gflops, padding_share, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def matmul_params(model) -> int:
    """Weights that take part in matmuls per token (embeddings are lookups, not matmuls)."""
    import torch
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in type(m).__name__.lower())


def study_recipe(cfg, splits, tmp: Path) -> dict:
    """(a) The study's script, 2026 API names: Trainer + peft, checkpointing, random order, batch 8.

    On a GPU, as the study ran its decoders: fp16 weights (cfg.model.dtype) and fp16 mixed precision.
    """
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from lorabench.metrics import classification_metrics, predict_labels, softmax
    from lorabench.models import build_classifier
    from lorabench.resources import PeakMemory
    from lorabench.train import WeightedCrossEntropy, tokenize
    built = build_classifier(cfg.model, cfg.lora, splits.label_names)
    train_ds, _ = tokenize(splits.train, built.tokenizer, cfg.model.max_length)
    val_ds, _ = tokenize(splits.val, built.tokenizer, cfg.model.max_length)
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
            "peak_mb": peak.result["mb"], "params": matmul_params(built.model), "tokens": _tokens(train_ds),
            "rows": len(train_ds), "padding": padding_share(lengths, order, 8)}


def _tokens(ds) -> int:
    return int(sum(len(x) for x in ds["input_ids"]))


def lorabench_defaults(cfg, splits, tmp: Path) -> dict:
    """(b) `lorabench train` as a user runs it."""
    from lorabench.pipeline import run_experiment
    with Timer() as tm:
        rec = run_experiment(cfg, tmp / "b", splits=splits)
    import numpy as np

    from lorabench.models import build_classifier
    from lorabench.train import length_buckets, tokenize
    built = build_classifier(cfg.model, cfg.lora, splits.label_names)
    train_ds, _ = tokenize(splits.train, built.tokenizer, cfg.model.max_length)
    lengths = [len(x) for x in train_ds["input_ids"]]
    bs = cfg.train.batch_size
    order = length_buckets(lengths, bs, np.random.default_rng(cfg.train.seed))
    return {"train_s": rec["pure_train_seconds"], "util": tm.cpu_util, "f1": rec["history"][-1]["f1"],
            "peak_mb": rec["peak_memory_mb"], "params": matmul_params(built.model), "tokens": _tokens(train_ds),
            "rows": len(train_ds), "padding": padding_share(lengths, order, bs),
            "levers": rec.get("speed_levers")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--val", type=int, default=0, help="val rows (0: the whole val split)")
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--lr", type=float, default=5e-4, help="(a)'s learning rate; (b) scales it to its batch")
    args = ap.parse_args()
    import torch

    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.data import load_splits
    from lorabench.pipeline import quiet_libraries
    quiet_libraries()
    data = DataConfig(max_train_samples=args.rows, max_eval_samples=args.val or None)
    model = ModelConfig(name=args.model, max_length=128)
    study = ExperimentConfig(name="bench", data=data, model=model, lora=LoraConfig(r=8, alpha=16),
                             train=TrainConfig(learning_rate=args.lr, epochs=args.epochs, logging_steps=10_000))
    defaults = TrainConfig()
    lr_b = args.lr * defaults.batch_size / 8
    ours = ExperimentConfig(name="bench", data=data, model=model, lora=LoraConfig(r=8, alpha=16),
                            train=TrainConfig(learning_rate=lr_b, epochs=args.epochs, logging_steps=10_000))
    splits = load_splits(data)
    tmp = Path(tempfile.mkdtemp())
    peak = matmul_peak_gflops()
    a = study_recipe(study, splits, tmp)
    b = lorabench_defaults(ours, splits, tmp)
    peak = max(peak, matmul_peak_gflops())
    shutil.rmtree(tmp, ignore_errors=True)
    rows = ["| recipe | samples/s | real tokens/s | padding | GFLOP/s | share of fp32 matmul peak | CPU use | peak RSS | val F1 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, r in ((f"(a) the study's recipe (batch 8, lr {args.lr:g})", a),
                    (f"(b) lorabench train defaults (batch {defaults.batch_size}, lr {lr_b:g})", b)):
        sps = r["rows"] * args.epochs / r["train_s"]
        tps = r["tokens"] * args.epochs / r["train_s"]
        gflops = 4 * r["params"] * tps / 1e9  # LoRA: forward 2N + input-gradient 2N per token (frozen weights)
        r.update(sps=sps, gflops=gflops)
        rows.append(f"| {name} | {sps:.1f} | {tps:.0f} | {100 * r['padding']:.1f}% | {gflops:.1f} | {100 * gflops / peak:.0f}% | "
                    f"{100 * r['util']:.0f}% | {r['peak_mb']:.0f} MB | {r['f1']:.4f} |")
    body = (f"`.venv/bin/python benchmarks/train_speed.py --model {args.model} --rows {args.rows} --val {args.val} "
            f"--epochs {args.epochs:g} --lr {args.lr:g}` — {len(splits.train)} train rows, {len(splits.val)} val rows, "
            f"LoRA r 8, {torch.get_num_threads()} torch threads; fp32 matmul peak measured in this run "
            f"{peak:.0f} GFLOP/s (best of square and 1056x384x1536 matmuls); GFLOP/s = 4 x matmul weights x real "
            f"tokens/s (forward + input gradient; frozen weights need no weight gradient). {header()}\n\n"
            + "\n".join(rows) +
            f"\n\n(b)/(a): **{b['sps'] / a['sps']:.2f}x** samples/s; val F1 {b['f1'] - a['f1']:+.4f}. "
            f"(b)'s levers: {b['levers']}.")
    print(body)
    write_section(f"Training speed, {args.model} (benchmarks/train_speed.py)", body)


if __name__ == "__main__":
    main()
