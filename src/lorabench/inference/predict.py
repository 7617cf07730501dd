"""predict = a run folder + new rows -> predictions file (or DataFrame).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lorabench import console
from lorabench.config.loading import from_dict
from lorabench.config.schema import ModelConfig
from lorabench.config.tasks import POOLING
from lorabench.data.sources import parse_json_rows, read_table
from lorabench.data.splits import build_texts, template_fields
from lorabench.data.windows import encode, pool
from lorabench.errors import DataError, LorabenchError
from lorabench.evaluation.calibration import apply_temperature
from lorabench.evaluation.metrics import predict_labels
from lorabench.evaluation.tasks import decide as decide_outputs
from lorabench.evaluation.tasks import outputs_from_logits
from lorabench.inference.onnx import ONNX_FILE, OnnxModel, is_onnx_export
from lorabench.models.build import PROBLEM_TYPES, keep_4bit_trainable_on_cpu, loading_kwargs
from lorabench.models.hub_code import import_peft, without_bitsandbytes
from lorabench.models.precision import decide
from lorabench.models.registry import ARCHITECTURES, arch_for
from lorabench.models.sources import resolve_source
from lorabench.quiet import quiet
from lorabench.runs.ensemble import ensemble_probs, is_ensemble, read_ensemble
from lorabench.runs.files import not_a_run, read_run, write_atomic
from lorabench.training.baseline import WEIGHTS_FILE, load_baseline


@dataclass
class LoadedRun:
    record: dict
    model: Any            # a torch module, or a scikit-learn pipeline for tfidf-logreg
    tokenizer: Any
    run_dir: Path
    device: str = "cpu"   # where the model sits (models.precision.decide): batches go there too

    @property
    def label_names(self) -> list[str]:
        return self.record["data"]["label_names"]

    @property
    def task(self) -> str:
        """The run's task (`config.tasks.TASKS`)."""
        return self.record["data"].get("task", "single_label")

    @property
    def is_baseline(self) -> bool:
        return self.record["model"].get("kind") == "tfidf-logreg"

    @property
    def temperature(self) -> float:
        """train.calibration's temperature (run.json `calibration`; 1.0 for a run without): predicted probabilities
        are softmax(logits / T), as the run's saved predictions are."""
        return float((self.record.get("calibration") or {}).get("temperature") or 1.0)


def load_run(run_dir: str | Path, *, merge: bool = True, full_precision: bool = False) -> LoadedRun:
    """Load a finished run: base weights + adapter + head (merged into the base for speed by default),
    on the device and in the dtype `models.precision.decide` picks for its model config on this machine
    (a GPU when there is one); `full_precision` keeps the weights in float32 (export). Raises
    `LorabenchError` for a folder that is not a finished run or cannot be loaded."""
    run_dir = Path(run_dir)
    rec = read_run(run_dir)
    if rec is None:
        raise LorabenchError(not_a_run(run_dir))
    if rec.get("status") not in ("completed", "pruned"):
        raise LorabenchError(f"{run_dir}: run status is {rec.get('status')!r}, not completed")
    if rec["model"].get("kind") == "tfidf-logreg":
        if not (run_dir / WEIGHTS_FILE).is_file():
            raise LorabenchError(f"{run_dir}: no {WEIGHTS_FILE} (a baseline from before lorabench stored it as a "
                                 "pickle, which is not loaded: re-run it, it takes seconds)")
        return LoadedRun(rec, load_baseline(run_dir), None, run_dir)
    model_cfg = from_dict(ModelConfig, rec["config"]["model"], "model")
    precision = decide(model_cfg, inference=True)
    if full_precision:  # export: the GPU if there is one, weights kept in float32
        precision = dataclasses.replace(precision, weights_dtype="float32", autocast=None, grad_scaler=False)
    with quiet(), without_bitsandbytes(keep_out=not precision.quantization):  # no Hub kernel: models.hub_code
        return _load_transformer_run(rec, run_dir, merge, precision, model_cfg)


def _load_transformer_run(rec: dict, run_dir: Path, merge: bool, precision, model_cfg) -> LoadedRun:
    """The run's model in eval mode. A quantized (QLoRA) run loads its base quantized exactly as it trained;
    merged, the base is first dequantized (the NF4/int8 values it trained through, in the run's dtype)
    and LoRA is merged into those weights: a plain transformers model, no bitsandbytes needed after."""
    import_peft()  # no bitsandbytes (and no Hub kernel) unless the run is quantized: lorabench.models.hub_code
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    names = rec["data"]["label_names"]
    tok = AutoTokenizer.from_pretrained(run_dir)
    labels = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                  pad_token_id=tok.pad_token_id,
                  problem_type=PROBLEM_TYPES[rec["data"].get("task", "single_label")])  # an export loads as trained
    try:
        if (run_dir / "adapter_config.json").is_file():
            from peft import PeftModel
            source = _base_source(rec)
            cfg = AutoConfig.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code, **labels)
            kw = loading_kwargs(model_cfg, precision, arch_for(cfg.model_type))
            base = AutoModelForSequenceClassification.from_pretrained(source, config=cfg, **kw)
            if precision.quantization and merge:
                base = base.dequantize(dtype=precision.weights_torch_dtype)
            elif precision.quantization:
                keep_4bit_trainable_on_cpu(base)  # one kernel for training and predict (same numbers)
            model = PeftModel.from_pretrained(base, run_dir)
            if merge:
                model = model.merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                run_dir, **loading_kwargs(model_cfg, precision, arch_for(rec["model"].get("architecture") or "")))
    except (OSError, ValueError) as e:
        raise LorabenchError(f"{run_dir}: cannot load the model: {str(e).splitlines()[0]}") from e
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False):
        model = model.to(precision.device)
        if precision.weights_dtype != "float32":  # one dtype for inference: head and merged LoRA too
            model = model.to(precision.weights_torch_dtype)
    device = next(model.parameters()).device.type if precision.device == "cpu" else str(_input_device(model))
    return LoadedRun(rec, model.eval(), tok, run_dir, device)


def _input_device(model):
    """Where input batches go: the device of the embeddings (the first device of a device map)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return next(emb.parameters()).device if emb is not None else next(model.parameters()).device


def _base_source(rec: dict) -> str:
    """The base weights' folder: as recorded, else resolved again (a cleared cache is rebuilt)."""
    source = rec["model"]["source"]
    if Path(source).is_dir():
        return source
    return resolve_source(from_dict(ModelConfig, rec["config"]["model"], "model")).path


def read_rows(path: str, *, encoding: str = "utf-8", delimiter: str | None = None) -> pd.DataFrame:
    """Rows to predict: a file (as `data.read_table`: values as written, ids keep leading zeros), or
    `-` for JSON lines on stdin. Raises `DataError` for unreadable input."""
    if path == "-":
        return parse_json_rows(sys.stdin.read(), "stdin")
    return read_table(path, encoding=encoding, delimiter=delimiter)


def predict_probs(run: LoadedRun, texts: list[str], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Class probabilities (rows, classes) float64 in input order, calibrated by the run's temperature when it has
    one (`LoadedRun.temperature`); texts longer than the window read by the run's `data.long_text` rule (chunk: the
    mean over a text's windows, `data.windows`); batches sorted by length (less padding)."""
    if run.is_baseline:
        return apply_temperature(run.model.predict_proba(texts), run.temperature)
    if isinstance(run.model, OnnxModel):  # an ONNX export: onnxruntime, no torch
        return _onnx_probs(run, texts, batch_size, progress)
    import torch

    from lorabench.speedups import cpu as speed  # imports torch (its levers subclass torch modules)

    max_len = run.record["config"]["model"]["max_length"]
    data = run.record["config"]["data"]  # texts longer than the window are read as the run read them
    enc, doc = encode(run.tokenizer, texts, max_len, data.get("long_text", "truncate"), data.get("stride", 0))
    ids = enc["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), len(run.label_names)), dtype=np.float64)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    arch = ARCHITECTURES.get(run.record["model"].get("architecture"))
    pooled_only = bool(arch and arch.first_token_layers) and speed.apply_pooled_only_last_layer(run.model)
    try:
        bar = console.progress_bar(math.ceil(len(order) / batch_size), desc="predict", unit="batch") if progress \
            else contextlib.nullcontext()
        with torch.inference_mode(), bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                feats = [{k: enc[k][i] for k in keys} for i in idx]
                batch = {k: v.to(run.device) for k, v in run.tokenizer.pad(feats, return_tensors="pt").items()}
                logits = run.model(**batch).logits.float().cpu().numpy()  # (batch, num_labels)
                out[idx] = outputs_from_logits(run.task, logits)  # probabilities, or a regression's value
                if progress:
                    bar.update(1)
    finally:
        if pooled_only:  # same logits, less work (lorabench.speedups.cpu); the loaded model is left as it was
            speed.restore_last_layer(run.model)
    # long_text: chunk: pooled over each text's windows (config.tasks.POOLING); then the run's temperature, as
    # training applied it
    return apply_temperature(pool(out, doc, len(texts), POOLING[run.task]), run.temperature)


def _onnx_probs(run: LoadedRun, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    """`predict_probs` of an ONNX export (`inference.onnx`): the same windows, length-sorted batches, pooling and
    temperature as the PyTorch path, the logits from onnxruntime."""
    max_len = run.record["config"]["model"]["max_length"]
    data = run.record["config"]["data"]
    enc, doc = encode(run.tokenizer, texts, max_len, data.get("long_text", "truncate"), data.get("stride", 0))
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
    out = np.zeros((len(order), len(run.label_names)), dtype=np.float64)
    keys = [k for k in run.model.input_names if k in enc]
    bar = console.progress_bar(math.ceil(len(order) / batch_size), desc="predict", unit="batch") if progress \
        else contextlib.nullcontext()
    with bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = run.tokenizer.pad([{k: enc[k][i] for k in keys} for i in idx], return_tensors="np")
            out[idx] = outputs_from_logits(run.task, run.model.logits(batch).astype(np.float64))
            if progress:
                bar.update(1)
    return apply_temperature(pool(out, doc, len(texts), POOLING[run.task]), run.temperature)


def load_onnx(folder: str | Path) -> LoadedRun:
    """An ONNX export folder (`export --format onnx`) as a `LoadedRun` whose model is an `OnnxModel` (onnxruntime,
    no torch). Raises `LorabenchError` for a folder that is not one."""
    import json

    from transformers import PreTrainedTokenizerFast  # the saved tokenizer.json as is: no model config, no torch
    folder = Path(folder)
    if not is_onnx_export(folder):
        raise LorabenchError(f"{folder}: not an ONNX export (no {ONNX_FILE} and lorabench_run.json); make one with "
                             "lorabench export RUN OUT --format onnx")
    rec = json.loads((folder / "lorabench_run.json").read_text(encoding="utf-8"))
    return LoadedRun(rec, OnnxModel(folder / ONNX_FILE), PreTrainedTokenizerFast.from_pretrained(folder), folder)


def load_for(run_dir: str | Path, backend: str = "auto", *, merge: bool = True) -> LoadedRun:
    """A run folder (PyTorch) or an ONNX export folder (onnxruntime) by `backend`: `auto` picks by the folder,
    `torch` and `onnx` insist. Raises `LorabenchError` when the folder does not fit the backend."""
    onnx = is_onnx_export(run_dir)
    if backend == "onnx" and not onnx:
        raise LorabenchError(f"--backend onnx: {run_dir} is not an ONNX export; make one with lorabench export "
                             f"{run_dir} OUT --format onnx, then give OUT")
    if backend == "torch" and onnx:
        raise LorabenchError(f"--backend torch: {run_dir} is an ONNX export; give the run folder it came from")
    return load_onnx(run_dir) if onnx else load_run(run_dir, merge=merge)


@dataclass
class Predictor:
    """What predict_file (and `serve`) needs of a run or of an ensemble: label names and values (id order), the
    decision threshold (None: most probable class; multi_label: one per label), the data config the texts are built
    by, `probs(frame, input_path, batch_size, progress)` -> (rows, classes) float64 in input order, the task, and
    `record` (run.json, or ensemble.json for an ensemble)."""
    names: list[str]
    values: list
    threshold: float | list[float] | None
    data_cfg: dict
    probs: Any
    task: str = "single_label"
    record: dict | None = None


def _run_probs(run: LoadedRun, frame: pd.DataFrame, input_path: str, batch_size: int, progress: bool) -> np.ndarray:
    texts = build_texts(frame, run.record["config"]["data"]["text"], input_path)  # as the run built its rows
    return predict_probs(run, texts, batch_size=batch_size, progress=progress)


def open_predictor(run_dir: str | Path, merge: bool = True, *, keep_loaded: bool = False,
                   backend: str = "auto") -> Predictor:
    """A run folder, or an ensemble folder (ensemble.json: each member run predicts in turn and their probabilities
    are combined by the ensemble's rule, `ensemble.combine`). Members are loaded one at a time for each call, or
    with `keep_loaded` (a server) once, up front, and kept. Raises `LorabenchError` as `load_run` /
    `read_ensemble`."""
    if not is_ensemble(run_dir):
        run = load_for(run_dir, backend, merge=merge)
        return Predictor(run.label_names, run.record["data"].get("label_values") or list(range(len(run.label_names))),
                         run.record.get("threshold"), run.record["config"]["data"],
                         lambda frame, path, bs, progress: _run_probs(run, frame, path, bs, progress), run.task,
                         run.record)
    if backend == "onnx":
        raise LorabenchError(f"--backend onnx: {run_dir} is an ensemble; export each member run with --format onnx "
                             "and predict with those")
    spec = read_ensemble(run_dir)
    loaded = {d: load_run(d, merge=merge) for d in spec.run_dirs} if keep_loaded else {}

    def probs(frame, path, bs, progress):
        return ensemble_probs(spec, lambda d: _run_probs(loaded.get(d) or load_run(d, merge=merge), frame, path, bs,
                                                         progress))
    first = read_run(spec.run_dirs[0])
    return Predictor(spec.label_names, spec.label_values, spec.threshold, first["config"]["data"], probs,
                     first["data"].get("task", "single_label"), spec.record)


def check_request(run: Predictor, frame: pd.DataFrame, where: str, threshold: float | None, fmt: str) -> int:
    """Check what `predictions` would refuse before any model predicts: a threshold the task has no use for, a
    format the task cannot write, a missing text column. Returns the number of rows whose every text field is blank
    (predicted too). Raises `DataError` / `LorabenchError` (one line)."""
    if threshold is not None and run.task == "regression":
        raise LorabenchError("threshold (--threshold) is a decision threshold; this run is a regression (it predicts "
                             "a number)")
    if threshold is not None and len(run.names) != 2 and run.task == "single_label":
        raise LorabenchError(f"threshold (--threshold) applies to binary tasks only; this run has {len(run.names)} "
                             "classes")
    if fmt == "kaggle" and run.task == "multi_label":
        raise LorabenchError("--format kaggle writes one label per row; this run is multi_label (use the default "
                             "format: a label list and a probability per label)")
    if fmt == "kaggle" and "id" not in frame.columns:
        raise DataError(f"{where}: --format kaggle needs an 'id' column in the input")
    template = run.data_cfg["text"]
    build_texts(frame, template, where)  # a missing column is an error before any model predicts
    fields = [build_texts(frame, f, where) for f in template_fields(template)]
    return sum(1 for row in zip(*fields) if not any(v.strip() for v in row))  # every text field blank


def predictions(run: Predictor, frame: pd.DataFrame, probs: np.ndarray, threshold: float | None = None, *,
                fmt: str = "default", probabilities: bool = False) -> tuple[pd.DataFrame, Any]:
    """The prediction frame of `frame`'s rows from their `probs` ((rows, classes) float64, `Predictor.probs`), at
    `threshold` (None: the run's): what `predict` writes and `serve` answers. Returns (frame, threshold used)."""
    thr = threshold if threshold is not None else run.threshold
    if run.task != "single_label":
        return _task_frame(frame, run, probs, thr, fmt), thr
    labels = predict_labels(probs, thr if len(run.names) == 2 else None)
    return _output_frame(frame, run.names, run.values, probs, labels, fmt=fmt, probabilities=probabilities), thr


def predict_file(run_dir: str, input_path: str, output_path: str, *, fmt: str = "default",
                 probabilities: bool = False, threshold: float | None = None, batch_size: int = 64,
                 merge: bool = True, encoding: str | None = None, backend: str = "auto") -> dict:
    """Predict every row of `input_path` and write `output_path` (CSV, JSON lines, Parquet, or - for stdout).

    `run_dir`: a run folder, or an ensemble folder (`ensemble.json`, written by `compare`): then every member
    run predicts and the probabilities are averaged by the ensemble's rule (`lorabench.runs.ensemble`).
    Columns written: `id` (when the input has one, exactly as written), `label` (the predicted label
    value, as in the training data), `label_name`, `probability` (of that label), and with
    `probabilities` one `prob_<name>` per class. `encoding`: of the input file (default: the run's
    data.encoding). Returns {"rows", "empty_text_rows", "threshold"}. Raises `DataError` /
    `LorabenchError` for bad input (an invalid ensemble.json, a missing member run, members of other
    label sets); nothing is written then. `backend`: `torch`, `onnx` (an ONNX export folder, `inference.onnx`), or
    `auto` (by the folder).
    """
    _check_output(output_path)
    run = open_predictor(run_dir, merge, backend=backend)
    data_cfg = run.data_cfg
    frame = read_rows(input_path, encoding=encoding or data_cfg.get("encoding", "utf-8"),
                      delimiter=data_cfg.get("delimiter"))
    if len(frame) == 0:
        raise DataError(f"{input_path}: no rows")
    empty = check_request(run, frame, input_path, threshold, fmt)
    if empty:
        console.say(f"lorabench: warning: {empty} row(s) of {input_path} have empty text; they are predicted too", err=True)
    probs = run.probs(frame, input_path, batch_size, output_path != "-")
    out, thr = predictions(run, frame, probs, threshold, fmt=fmt, probabilities=probabilities)
    _write_frame(out, output_path)
    return {"rows": len(out), "empty_text_rows": empty, "threshold": thr}


def _task_frame(frame, run: Predictor, outputs: np.ndarray, threshold, fmt: str) -> pd.DataFrame:
    """multi_label: `labels` (the predicted label values, a list; none above its threshold: []) and `prob_<name>`
    per label; regression: `prediction` (the number; --format kaggle: a column named as the target)."""
    cols: dict[str, Any] = {}
    if "id" in frame.columns:
        cols["id"] = frame["id"].values
    if run.task == "regression":
        cols["prediction" if fmt != "kaggle" else run.names[0]] = outputs[:, 0]
        return pd.DataFrame(cols)
    decided = decide_outputs("multi_label", outputs, threshold)
    cols["labels"] = pd.Series([[run.values[j] for j in np.flatnonzero(r)] for r in decided], dtype=object)
    for j, n in enumerate(run.names):
        cols[f"prob_{n}"] = outputs[:, j]
    return pd.DataFrame(cols)


def _output_frame(frame, names: list[str], values: list, probs, labels, *, fmt: str, probabilities: bool) -> pd.DataFrame:
    predicted = pd.Series([values[i] for i in labels], dtype=object)  # the user's label values, not ids
    if fmt == "kaggle":
        if "id" not in frame.columns:
            raise DataError("--format kaggle needs an 'id' column in the input")
        return pd.DataFrame({"id": frame["id"].values, "target": predicted})
    cols: dict[str, Any] = {}
    if "id" in frame.columns:
        cols["id"] = frame["id"].values
    cols["label"] = predicted
    cols["label_name"] = [names[i] for i in labels]
    cols["probability"] = probs[np.arange(len(labels)), labels]
    if probabilities:
        for i, n in enumerate(names):
            cols[f"prob_{n}"] = probs[:, i]
    return pd.DataFrame(cols)


def _check_output(path: str) -> None:
    if path != "-" and Path(path).suffix.lower() not in (".csv", ".jsonl", ".json", ".parquet", ""):
        raise LorabenchError(f"--output {path}: unsupported file type (csv, jsonl, json, parquet, or -)")
    if path != "-" and Path(path).is_dir():
        raise LorabenchError(f"--output {path} is a folder")


def json_lines(df: pd.DataFrame) -> str:
    """One JSON object per row, numbers written exactly (Python's shortest round-trip repr, as CSV has them; pandas'
    `to_json` rounds floats to 10 decimals), missing values as null, ids as they were read."""
    import json
    import math

    def plain(v):
        if hasattr(v, "item"):  # numpy scalars
            v = v.item()
        return None if isinstance(v, float) and math.isnan(v) else v
    rows = (json.dumps({k: plain(v) for k, v in row.items()}, ensure_ascii=False, default=str)
            for row in df.to_dict("records"))
    return "".join(r + "\n" for r in rows)


def _write_frame(df: pd.DataFrame, path: str) -> None:
    if path == "-":
        console.stdout().write(json_lines(df))
        return
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        write_atomic(path, json_lines(df))
    elif suffix == ".parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        write_atomic(path, buf.getvalue())
    elif suffix in (".csv", ""):
        import json
        lists = [c for c in df.columns if df[c].map(lambda v: isinstance(v, list)).any()]
        if lists:  # a label set per row (multi_label): JSON text in a CSV cell
            df = df.assign(**{c: df[c].map(lambda v: json.dumps(v, default=str)) for c in lists})
        write_atomic(path, df.to_csv(index=False))
    else:
        raise LorabenchError(f"--output {path}: unsupported file type (csv, jsonl, json, parquet, or -)")
