"""export = a run folder -> a portable model folder (adapter + head, or merged) with a model card.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from lorabench.config.tasks import DISPLAY
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.errors import LorabenchError
from lorabench.inference.predict import load_run
from lorabench.runs.record import refit_line


def model_card(rec: dict, merged: bool) -> str:
    m = rec.get("metrics", {})
    d = rec["data"]
    cfg = rec["config"]
    task = d.get("task", "single_label")
    keys = TASK_METRICS[task]
    rows = "\n".join(f"| {split} | " + " | ".join("" if v.get(k) is None else f"{v[k]:.4f}" for k in keys) + " |"
                     for split, v in m.items() if isinstance(v, dict) and keys[0] in v)
    header = "| split | " + " | ".join(DISPLAY[k] for k in keys) + " |\n|" + "---|" * (len(keys) + 1)
    head_note = {"single_label": "", "multi_label": "\nTask: multi_label (problem_type multi_label_classification: a "
                 "sigmoid per label; a label applies when its probability reaches its threshold).\n",
                 "regression": "\nTask: regression (problem_type regression: the one logit is the predicted value).\n"}[task]
    lora = cfg.get("lora")
    how = (f"LoRA r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, targets "
           f"{rec['model'].get('lora_target_modules')}" if lora else "full fine-tuning")
    load = ("AutoModelForSequenceClassification.from_pretrained(folder)" if merged else
            "peft.AutoPeftModelForSequenceClassification.from_pretrained(folder)")
    note = f"\n> Note: {rec['model']['note']}\n" if rec["model"].get("note") else ""
    if rec.get("refit"):
        note += f"\n> Refit: {refit_line(rec)}.\n"
    return f"""# {rec.get('label')} — text classifier fine-tuned with lorabench

Base model: `{rec['model']['name']}` ({rec['model'].get('architecture')}); {how}.
{'Adapter merged into the base weights: a plain transformers model.' if merged else 'LoRA adapter and classification head.'}
{note}
## Data
- source: {d['source']}, text: `{d['text']}`
- rows: train {d['train_rows']}, val {d['val_rows']}, test {d['test_rows']}
- labels: {', '.join(f'{i} = {n}' for i, n in enumerate(d['label_names']))}
- class weights: {d.get('class_weights')}

## Metrics{head_note}
{header}
{rows}

Decision threshold: {rec.get('threshold') or 'argmax (0.5)'}.{_calibration_line(rec)}

## Training
learning rate {cfg['train']['learning_rate']}, batch {cfg['train']['batch_size']}, epochs {cfg['train']['epochs']},
max_length {cfg['model']['max_length']}, seed {rec.get('seed')}; {rec.get('train_seconds')} s on
{rec.get('machine', {}).get('gpus') or 'CPU'}; versions {json.dumps(rec.get('versions'))}.

## Use
```python
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(folder)
model = {load}
```
"""


def export_run(run_dir: str | Path, out_dir: str | Path, *, merge: bool = False) -> Path:
    """Copy the adapter + head, or merge them into a plain transformers folder; add a model card."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LorabenchError(f"{out_dir} is a file; export writes a folder")
    run = load_run(run_dir, merge=merge, full_precision=True)  # on the GPU when there is one
    if run.is_baseline:
        raise LorabenchError(f"{run_dir}: the tfidf-logreg baseline has no transformers export")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LorabenchError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        if merge or not (run_dir / "adapter_config.json").is_file():
            run.model.save_pretrained(tmp, safe_serialization=True)
        else:
            for f in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copy2(run_dir / f, tmp / f)
        run.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(run.record, merged=merge), encoding="utf-8")
        shutil.copy2(run_dir / "run.json", tmp / "lorabench_run.json")
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _calibration_line(rec: dict) -> str:
    """The model card's line about train.calibration: the temperature to divide the logits by."""
    t = (rec.get("calibration") or {}).get("temperature")
    return "" if t is None else (f" Calibrated by temperature scaling (fitted on val): probabilities are "
                                 f"softmax(logits / {t:.6g}); the saved weights give the uncalibrated logits.")
