"""Tweets per second of `lorabench predict` vs a plain transformers pipeline, same model and file.

    .venv/bin/python benchmarks/predict_speed.py [--run RUN_DIR] [--rows N]

Without --run it first fine-tunes minilm-l6 with LoRA on 500 rows for one epoch (~30 s):
prediction speed does not depend on how well the model was trained. Both sides predict
the bundled Kaggle test tweets on the same merged weights; the pipeline runs as a user
would write it (its default batch size 1, and batch 8), lorabench with its defaults
(merged LoRA, length-sorted batches of 64, inference mode). Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, header, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_run(tmp: Path) -> Path:
    from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
    from lorabench.pipeline.run import run_experiment
    from lorabench.quiet import quiet_libraries
    quiet_libraries()
    cfg = ExperimentConfig(name="bench", data=DataConfig(max_train_samples=500, max_eval_samples=200),
                           model=ModelConfig(name="minilm-l6", max_length=128), lora=LoraConfig(r=8),
                           train=TrainConfig(epochs=1, batch_size=32, learning_rate=5e-4))
    run_experiment(cfg, tmp / "run")
    return tmp / "run"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--rows", type=int, default=3263)
    args = ap.parse_args()
    import torch
    from transformers import pipeline

    from lorabench.data import bundled_path, read_table
    from lorabench.inference.predict import load_run, predict_probs
    tmp = Path(tempfile.mkdtemp())
    run_dir = Path(args.run) if args.run else make_run(tmp)
    texts = read_table(bundled_path("test.csv")).text.fillna("").tolist()[: args.rows]
    run = load_run(run_dir)  # merged
    pipe_model = load_run(run_dir).model  # the same merged weights, for the pipeline
    results = {}
    with Timer() as t:
        ours = predict_probs(run, texts, progress=False)
    results["lorabench predict (merged, sorted batches of 64)"] = t
    for bs in (1, 8):
        pipe = pipeline("text-classification", model=pipe_model, tokenizer=run.tokenizer, device=-1, top_k=None)
        with Timer() as t:
            out = pipe(texts, batch_size=bs, truncation=True, max_length=128)
        results[f"transformers pipeline, batch_size={bs}"] = t
        theirs = np.array([[d["score"] for d in sorted(row, key=lambda d: run.model.config.label2id[d["label"]])]
                           for row in out])
        assert np.abs(theirs - ours).max() < 1e-3, "the two paths disagree"
    base = results["transformers pipeline, batch_size=1"].wall
    b8 = results["transformers pipeline, batch_size=8"].wall
    rows = ["| method | seconds | tweets/s | CPU use | vs pipeline bs=1 | vs pipeline bs=8 |", "|---|---|---|---|---|---|"]
    for name, t in results.items():
        rows.append(f"| {name} | {t.wall:.1f} | {len(texts) / t.wall:.0f} | {100 * t.cpu_util:.0f}% | "
                    f"{base / t.wall:.2f}x | {b8 / t.wall:.2f}x |")
    body = (f"`.venv/bin/python benchmarks/predict_speed.py` — {len(texts)} bundled test tweets, minilm-l6 + LoRA "
            f"(merged), {torch.get_num_threads()} torch threads. {header()}\n\n" + "\n".join(rows) +
            "\n\nTarget (issue: predict speed): lorabench at least 3x a plain pipeline.")
    print(body)
    write_section("Prediction speed (benchmarks/predict_speed.py)", body)


if __name__ == "__main__":
    main()
