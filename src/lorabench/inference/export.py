"""export = a run folder -> a portable model folder (adapter + head, or merged) with a model card.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from lorabench.config.loading import from_dict
from lorabench.config.schema import DataConfig
from lorabench.config.tasks import DISPLAY
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.data.splits import load_splits
from lorabench.errors import LorabenchError
from lorabench.inference.onnx import (
    CHECK_ROWS,
    MAX_PROB_DIFF,
    ONNX_FILE,
    ONNX_INFO,
    OPSET,
    card,
    check_outputs,
    onnx_wrapper,
)
from lorabench.inference.predict import load_onnx, load_run, predict_probs
from lorabench.quiet import quiet
from lorabench.runs.files import write_json
from lorabench.runs.record import refit_line

_USE = """## Use
```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer{extra}
tok = AutoTokenizer.from_pretrained(folder)
model = {load}
```
"""


def model_card(rec: dict, merged: bool, onnx: bool = False) -> str:
    """The README.md of an export: model, data, metrics, training; how to load it (transformers, or with `onnx` the
    onnxruntime lines of `inference.onnx.card`, appended by the caller)."""
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
    use = "" if onnx else _USE.format(extra=", peft" if not merged else "", load=(
        "AutoModelForSequenceClassification.from_pretrained(folder)" if merged else
        "peft.AutoPeftModelForSequenceClassification.from_pretrained(folder)"))
    note = f"\n> Note: {rec['model']['note']}\n" if rec["model"].get("note") else ""
    if rec.get("refit"):
        note += f"\n> Refit: {refit_line(rec)}.\n"
    return f"""# {rec.get('label')} — text classifier fine-tuned with lorabench

Base model: `{rec['model']['name']}` ({rec['model'].get('architecture')}); {how}.
{'ONNX graph of the merged classifier (see ONNX below).' if onnx else 'Adapter merged into the base weights: a plain transformers model.' if merged else 'LoRA adapter and classification head.'}
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

{use}"""


def export_run(run_dir: str | Path, out_dir: str | Path, *, merge: bool = False) -> Path:
    """Copy the adapter + head, or merge them into a plain transformers folder; add a model card."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LorabenchError(f"{out_dir} is a file; export writes a folder")
    run = load_run(run_dir, merge=merge, full_precision=True)  # on the GPU when there is one
    if run.is_baseline:
        raise LorabenchError(f"{run_dir}: the tfidf-logreg baseline has no transformers export")
    with building(out_dir) as tmp:
        if merge or not (run_dir / "adapter_config.json").is_file():
            run.model.save_pretrained(tmp, safe_serialization=True)
        else:
            for f in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copy2(run_dir / f, tmp / f)
        run.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(run.record, merged=merge), encoding="utf-8")
        shutil.copy2(run_dir / "run.json", tmp / "lorabench_run.json")
    return out_dir


@contextlib.contextmanager
def building(out_dir: Path):
    """A temp folder beside `out_dir` to write an export into: renamed to `out_dir` when the block succeeds, removed
    when it fails (nothing half-written is left). Raises `LorabenchError` when `out_dir` exists and is not empty."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise LorabenchError(f"{out_dir} exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _calibration_line(rec: dict) -> str:
    """The model card's line about train.calibration: the temperature to divide the logits by."""
    t = (rec.get("calibration") or {}).get("temperature")
    return "" if t is None else (f" Calibrated by temperature scaling (fitted on val): probabilities are "
                                 f"softmax(logits / {t:.6g}); the saved weights give the uncalibrated logits.")


def export_onnx(run_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None, say=None) -> dict:
    """Write the ONNX folder of the run in `run_dir` to `out_dir` (built beside it, renamed into place) and return
    what `onnx.json` records: {opset, inputs, quantize, check: {rows, max_probability_difference, labels_changed,
    metrics_torch, metrics_onnx, metric, metric_change}, seconds}. Raises `LorabenchError` for a baseline run, a
    non-empty `out_dir`, val rows that cannot be read, or a float32 export that differs from PyTorch by more than
    `MAX_PROB_DIFF`; nothing is written then."""
    import torch

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if quantize not in (None, "int8"):
        raise LorabenchError(f"--quantize: {quantize!r} is not supported (int8)")
    t0 = time.perf_counter()
    run = load_run(run_dir, merge=True, full_precision=True)
    if run.is_baseline:
        raise LorabenchError(f"{run_dir}: the tfidf-logreg baseline has no ONNX export (it predicts in microseconds "
                             "with scikit-learn)")
    model = run.model.to("cpu").eval()
    with quiet():
        splits = load_splits(from_dict(DataConfig, run.record["config"]["data"], "data"))
    rows = splits.val if len(splits.val) else splits.train
    texts, labels = rows.texts[:CHECK_ROWS], rows.labels[:CHECK_ROWS]
    example = run.tokenizer(texts[:2] if len(texts) > 1 else texts * 2, padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in example]
    with building(out_dir) as tmp:
        fp32 = tmp / ("model_fp32.onnx" if quantize else ONNX_FILE)
        with quiet(), torch.no_grad():
            torch.onnx.export(onnx_wrapper(model, names), tuple(example[k] for k in names), str(fp32),
                              input_names=names, output_names=["logits"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in names},
                                            "logits": {0: "batch"}})
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            with quiet():
                quantize_dynamic(str(fp32), str(tmp / ONNX_FILE), weight_type=QuantType.QInt8)
            fp32.unlink()
        run.tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)  # problem_type, id2label: what the graph's outputs mean
        shutil.copy2(run_dir / "run.json", tmp / "lorabench_run.json")
        if say:
            say(f"  checking the export against PyTorch on {len(texts)} val rows ...")
        want = predict_probs(run, texts, progress=False)
        got = predict_probs(load_onnx(tmp), texts, progress=False)  # as predict will load it: its own tokenizer
        check = check_outputs(run.task, run.record.get("threshold"), labels, want, got, rows.labelled)
        if quantize is None and check["max_probability_difference"] > MAX_PROB_DIFF:
            raise LorabenchError(f"the ONNX export differs from PyTorch by {check['max_probability_difference']:.2e} "
                                 f"in probability on the val rows (at most {MAX_PROB_DIFF:g} allowed); not written")
        info = {"opset": OPSET, "inputs": names, "quantize": quantize, "exporter": f"torch {torch.__version__} "
                "(TorchScript-based, dynamo=False)", "check": check, "seconds": round(time.perf_counter() - t0, 2),
                "source": str(run_dir)}
        write_json(tmp / ONNX_INFO, info)
        (tmp / "README.md").write_text(model_card(run.record, merged=True, onnx=True) + card(info), encoding="utf-8")
    return info
