"""Tweets per second of `lorabench predict` vs a plain transformers pipeline at *its* best batch size, end to end.

    .venv/bin/python benchmarks/predict_speed.py [--run RUN_DIR] [--rows N] [--batch-sizes 1,8,32,64,128]

Without --run it first fine-tunes minilm-l6 with LoRA on 500 rows for one epoch (~30 s): prediction speed does not
depend on how well the model was trained. Every side is one fresh process that starts, loads the model, reads the
bundled Kaggle test tweets and writes a label per row, timed from start to exit (start-up and loading included):

- the pipeline (`transformers.pipeline("text-classification")`) on the merged export of the run (`export --merge`),
  at each batch size; its fastest is the baseline;
- `lorabench predict` on the run (PyTorch, merged LoRA, length-sorted batches of 64);
- `lorabench predict` on its ONNX export (`export --format onnx`, onnxruntime, float32), and on the int8 one.

Labels must equal the pipeline's (float32); for int8 the share of changed labels on these rows and the val F1
change `export` measured are stated. Rewrites its BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, make_minilm_run, write_section  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BIN = Path(sys.executable).parent
PIPELINE = """
import sys, pandas as pd
from transformers import pipeline
folder, rows, bs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
texts = pd.read_csv(sys.argv[5], keep_default_na=False)["text"].tolist()[:rows]
pipe = pipeline("text-classification", model=folder, device=-1)
labels = [d["label"] for d in pipe(texts, batch_size=bs, truncation=True, max_length=int(sys.argv[6]))]
pd.DataFrame({"label_name": labels}).to_csv(out, index=False)
"""


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run")
    ap.add_argument("--rows", type=int, default=3263)
    ap.add_argument("--batch-sizes", default="1,8,32,64,128")
    args = ap.parse_args()
    from lorabench.data import bundled_path, read_table
    tmp = Path(tempfile.mkdtemp())
    run_dir = Path(args.run) if args.run else make_minilm_run(tmp)
    rec = json.loads((run_dir / "run.json").read_text())
    max_length = rec["config"]["model"]["max_length"]
    rows = read_table(bundled_path("test.csv"))[["id", "text"]].head(args.rows).fillna("")
    rows.to_csv(tmp / "rows.csv", index=False)
    lb = str(BIN / "lorabench")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    for cmd in ([lb, "export", str(run_dir), str(tmp / "merged"), "--merge"],
                [lb, "export", str(run_dir), str(tmp / "onnx"), "--format", "onnx"],
                [lb, "export", str(run_dir), str(tmp / "onnx-int8"), "--format", "onnx", "--quantize", "int8"]):
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    (tmp / "pipe.py").write_text(PIPELINE)
    results: dict[str, float] = {}
    labels: dict[str, list[str]] = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        out = tmp / f"pipe{bs}.csv"
        results[f"transformers pipeline, batch_size={bs}"] = timed(
            [sys.executable, str(tmp / "pipe.py"), str(tmp / "merged"), str(len(rows)), str(bs), str(out),
             str(tmp / "rows.csv"), str(max_length)], env)
        labels[f"pipeline{bs}"] = pd.read_csv(out)["label_name"].tolist()
    for name, folder in (("lorabench predict, PyTorch (merged LoRA)", run_dir),
                         ("lorabench predict, ONNX float32", tmp / "onnx"),
                         ("lorabench predict, ONNX int8", tmp / "onnx-int8")):
        out = tmp / f"{len(results)}.csv"
        results[name] = timed([lb, "predict", str(folder), "--input", str(tmp / "rows.csv"), "--output", str(out)], env)
        labels[name] = pd.read_csv(out)["label_name"].tolist()
    pipes = {k: v for k, v in results.items() if k.startswith("transformers")}
    best_name = min(pipes, key=pipes.get)
    best = pipes[best_name]
    ref = labels["pipeline" + best_name.rsplit("=", 1)[1]]
    table = ["| method (fresh process, start to exit) | seconds | tweets/s | vs the pipeline's best | labels as the "
             "pipeline's |", "|---|---|---|---|---|"]
    for name, s in results.items():
        key = ("pipeline" + name.rsplit("=", 1)[1]) if name.startswith("transformers") else name
        same = float(np.mean([a == b for a, b in zip(labels[key], ref)]))
        table.append(f"| {name} | {s:.1f} | {len(rows) / s:.0f} | {best / s:.2f}x | {same:.2%} |")
    int8 = json.loads((tmp / "onnx-int8" / "onnx.json").read_text())["check"]
    fastest = min((k for k in results if k.startswith("lorabench")), key=results.get)
    change = (f"; on the run's {int8['rows']} val rows int8 changed {int8['labels_changed']:.2%} of the labels and val "
              f"{int8['metric']} by {int8['metric_change']:+.4f}") if int8.get("metric") else ""
    body = (f"`.venv/bin/python benchmarks/predict_speed.py` — {len(rows)} bundled test tweets, minilm-l6 + LoRA "
            f"(max_length {max_length}), {os.cpu_count()} cores, every side a fresh process timed from start to exit "
            f"(start-up, loading and writing included). {header()}\n\n" + "\n".join(table) +
            f"\n\nThe pipeline's best batch size here: {best_name.rsplit('=', 1)[1]} ({best:.1f} s). Fastest lorabench: "
            f"{fastest}, {best / results[fastest]:.2f}x the pipeline's best{change}. Target (issue 26): >= 3x the "
            "pipeline at its best batch size, end to end, with the same labels (int8: F1 change stated).")
    print(body)
    write_section("Prediction speed (benchmarks/predict_speed.py)", body)


if __name__ == "__main__":
    main()
