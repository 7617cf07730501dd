"""GPU training speed: lorabench's GPU defaults vs the study's recipe on a ~1B-parameter Llama.

    python benchmarks/gpu_speed.py [--rows 4000] [--val 500]          # on a CUDA machine
    python benchmarks/gpu_speed.py --smoke                            # CPU check of the code path

A Llama built from config (TinyLlama-1.1B shape: 22 layers, hidden 2048, 32 heads, 4 kv heads,
FFN 5632; random weights; tokenizer fit on the bundled tweets), LoRA r 8 on q_proj/v_proj:
(a) the study's recipe: fp16 weights + fp16 mixed precision, gradient checkpointing, batch 8,
    random order (plain Trainer + peft, as benchmarks/train_speed.py);
(b) `lorabench train` with its defaults on a GPU: bf16 weights (LoRA and head in fp32), bf16
    mixed precision, batch 32, no checkpointing, tight length buckets.
Prints samples/s, peak GPU memory (max allocated) and achieved TFLOP/s as a share of the bf16
matmul peak measured in this run. Rewrites its BENCHMARKS.md section (not with --smoke).
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
from _common import header, write_section  # noqa: E402
from train_speed import lorabench_defaults, study_recipe  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPE_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4)
SHAPE_SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2)


def build_llama(out: Path, shape: dict) -> int:
    """Save a random Llama of `shape` (bf16 safetensors) with a tweet-fit tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoModel, LlamaConfig

    from lorabench.models import tiny_tokenizer
    tok = tiny_tokenizer("llama", n_rows=5000)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def bf16_matmul_peak_tflops(n: int = 8192, reps: int = 50) -> float:
    import torch
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-4, help="(a)'s learning rate (the study's); (b) scales it x4")
    ap.add_argument("--smoke", action="store_true", help="tiny shape on CPU: checks the code path, writes nothing")
    args = ap.parse_args()
    import torch

    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.data import load_splits
    from lorabench.quiet import quiet_libraries
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py: no CUDA device here (use --smoke for a CPU check of the code path)")
    quiet_libraries()
    tmp = Path(tempfile.mkdtemp())
    params = build_llama(tmp / "llama-1b", SHAPE_SMOKE if args.smoke else SHAPE_1B)
    data = DataConfig(max_train_samples=args.rows, max_eval_samples=args.val)
    splits = load_splits(data)
    lora = LoraConfig(r=8, alpha=16)
    study = ExperimentConfig(name="gpu-a", data=data, lora=lora,
                             model=ModelConfig(name=str(tmp / "llama-1b"), max_length=128,
                                               dtype="float32" if args.smoke else "float16"),
                             train=TrainConfig(learning_rate=args.lr, epochs=1, logging_steps=10_000))
    ours = ExperimentConfig(name="gpu-b", data=data, lora=lora, model=ModelConfig(name=str(tmp / "llama-1b"), max_length=128),
                            train=TrainConfig(learning_rate=args.lr * 32 / 8, epochs=1,  # at batch 32; auto scales it
                                              logging_steps=10_000))
    peak = None if args.smoke else bf16_matmul_peak_tflops()
    a = study_recipe(study, splits, tmp)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    b = lorabench_defaults(ours, splits, tmp)
    if not args.smoke:
        peak = max(peak, bf16_matmul_peak_tflops())
    shutil.rmtree(tmp, ignore_errors=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke)"
    rows = ["| recipe | samples/s | real tokens/s | padding | TFLOP/s | share of bf16 matmul peak | peak GPU memory | val F1 |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in ((f"(a) the study's recipe (fp16, checkpointing, batch 8, lr {args.lr:g})", a),
                    ("(b) lorabench train defaults (bf16, batch_size auto)", b)):
        r["sps"] = r["rows"] / r["train_s"]
        tps = r["tokens"] / r["train_s"]
        tflops = 4 * r["params"] * tps / 1e12
        share = f"{100 * tflops / peak:.0f}%" if peak else "—"
        rows.append(f"| {name} | {r['sps']:.1f} | {tps:.0f} | {100 * r['padding']:.1f}% | {tflops:.2f} | {share} | "
                    f"{r['peak_mb']:.0f} MB | {r['f1']:.4f} |")
    body = (f"`python benchmarks/gpu_speed.py --rows {args.rows} --val {args.val}` — a {params / 1e9:.2f}B-parameter "
            f"Llama built from config (random weights), LoRA r 8 on q_proj/v_proj, 1 epoch, on {gpu}; bf16 matmul peak "
            f"measured in this run {peak or 0:.0f} TFLOP/s. {header()}\n\n" + "\n".join(rows) +
            f"\n\n(b)/(a): **{b['sps'] / a['sps']:.2f}x** samples/s, peak memory {b['peak_mb'] / a['peak_mb']:.2f}x. "
            "Val F1 of a random-weight model is not a quality measure.")
    print(body)
    if not args.smoke:
        write_section("GPU training speed, 1B Llama (benchmarks/gpu_speed.py)", body)


if __name__ == "__main__":
    main()
