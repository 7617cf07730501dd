"""Does an ONNX export load with optimum's `ORTModelForSequenceClassification` and give `predict`'s probabilities?

    python tools/optimum_check.py ONNX_FOLDER [--venv /tmp/optimum-venv]

optimum's ONNX Runtime classes live in `optimum-onnx`, whose only release (0.1.0) requires transformers < 4.58:
they cannot share lorabench's environment (transformers 5). This builds a separate virtual environment (CPU torch
from the same wheel source, optimum-onnx[onnxruntime], ~1-2 min the first time), loads the folder there, and compares
its softmax probabilities with `lorabench predict` on a few texts. Exit 0 when they agree within 1e-4.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["forest fire near la ronge sask canada", "what a lovely day", "flood warning for the river tonight"]
LOAD = """
import json, sys
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
model = ORTModelForSequenceClassification.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
enc = tok(texts, return_tensors="pt", padding=True)
print(json.dumps(model(**enc).logits.softmax(-1).tolist()))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "lorabench-optimum-venv"))
    args = ap.parse_args()
    venv = Path(args.venv)
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheels = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else \
            ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
        subprocess.run([str(py), "-m", "pip", "install", "-q", *wheels, "torch==2.13.0",
                        "optimum-onnx[onnxruntime]==0.1.0"], check=True)
    got = json.loads(subprocess.run([str(py), "-c", LOAD, args.folder, json.dumps(TEXTS)], check=True,
                                    capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.csv"
        rows.write_text("text\n" + "\n".join(f'"{t}"' for t in TEXTS) + "\n")
        out = subprocess.run([str(Path(sys.executable).parent / "lorabench"), "predict", args.folder, "--input",
                              str(rows), "--output", "-", "--probabilities"], check=True, capture_output=True,
                             text=True, env=dict(os.environ)).stdout
    want = [[v for k, v in json.loads(line).items() if k.startswith("prob_")] for line in out.splitlines()]
    diff = max(abs(a - b) for ra, rb in zip(got, want) for a, b in zip(ra, rb))
    print(f"optimum ORTModelForSequenceClassification vs lorabench predict on {len(TEXTS)} texts: largest probability "
          f"difference {diff:.2e}")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
