"""Know the data first: split sizes, classes, weights, missing values, text lengths per tokenizer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lorabench.config.schema import CompareConfig, ExperimentConfig
from lorabench.console import say
from lorabench.data.sources import read_source
from lorabench.data.splits import Splits, load_splits, representative
from lorabench.data.windows import window_counts
from lorabench.errors import ConfigError
from lorabench.models.build import text_tokenizer, token_lengths

LENGTH_BINS = 30


def _stats(values: list[int]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": int(a.max())}


def _model_settings(cfg: ExperimentConfig | CompareConfig) -> list[tuple[str, Any]]:
    """(label, ModelConfig) of each transformer model in the config."""
    exps = cfg.experiments() if isinstance(cfg, CompareConfig) else [cfg]
    seen, out = set(), []
    for e in exps:
        if e.model.kind != "transformer" or e.label in seen:
            continue
        seen.add(e.label)
        out.append((e.label or e.model.name, e.model))
    return out


def summarise(cfg: ExperimentConfig | CompareConfig, splits: Splits | None = None) -> dict:
    """The data summary `lorabench data` prints and `compare` writes to data.json (see `format_summary`)."""
    splits = splits or load_splits(representative(cfg.data))  # k-fold: fold 1 stands for the folds
    frame, _ = read_source(cfg.data.source, cfg.data)
    texts = splits.train.texts + splits.val.texts
    chars = [len(t) for t in texts]
    words = [len(t.split()) for t in texts]
    out: dict[str, Any] = {**splits.summary()}
    out["missing_values"] = {str(c): int(frame[c].isna().sum()) for c in frame.columns
                             if not (cfg.data.label_separator is not None and c == cfg.data.label)}  # empty = no labels
    out["source_rows"] = int(len(frame))
    out["lengths"] = {"chars": _stats(chars), "words": _stats(words)}
    hist, edges = np.histogram(chars, bins=LENGTH_BINS)
    out["char_histogram"] = {"counts": hist.tolist(), "edges": [round(float(e), 2) for e in edges]}
    tokens = {}
    for label, mcfg in _model_settings(cfg):
        try:
            tok = text_tokenizer(mcfg)
            lens = token_lengths(texts, mcfg, tok)
        except ConfigError as e:  # a setting the run would fail on: say it here too
            tokens[label] = {"problem": str(e)}
            continue
        except Exception as e:  # a model that cannot load fails in its own run, not here
            tokens[label] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            continue
        cut = sum(1 for n in lens if n > mcfg.max_length)
        tokens[label] = {**_stats(lens), "max_length": mcfg.max_length, "cut_rows": cut,
                         "cut_share": round(cut / len(lens), 4), "long_text": cfg.data.long_text}
        if cut:  # what data.long_text: chunk would read: every window of the long texts
            try:
                tokens[label]["windows"] = window_counts(tok, texts, mcfg.max_length, cfg.data.stride)["windows"]
            except ConfigError as e:  # a window with no room for text: a problem only where the rule reads windows
                if cfg.data.long_text != "truncate":
                    tokens[label]["problem"] = str(e)
    out["lengths"]["tokens"] = tokens
    return out


def format_summary(s: dict) -> str:
    names = s["label_names"]
    lines = [f"data: {s['source']}  (text: {s['text']!r})",
             f"  rows: train {s['train_rows']}, val {s['val_rows']}, test {s['test_rows']}"
             f"{' (labelled)' if s['test_labelled'] else ' (unlabelled)' if s['test_rows'] else ''}"
             + (f"; fold {s['fold']} of {s['folds']} (stratified k-fold: each fold is val once)" if s.get("folds") else ""),
             ]
    task = s.get("task", "single_label")
    w = s.get("class_weights")
    if task == "regression":
        lines.append(f"  task: regression, target {names[0]!r}")
        for part in ("train", "val"):
            t = s.get(f"{part}_target")
            if t:
                lines.append(f"  target ({part}): mean {t['mean']:.4g}, std {t['std']:.4g}, min {t['min']:.4g}, "
                             f"max {t['max']:.4g}")
    elif task == "multi_label":
        lines.append(f"  task: multi_label, {len(names)} labels (a sigmoid each; a row may have any number)")
        lines.append("  rows with the label (train / val): " + ", ".join(
            f"{n} {a} / {b}" for n, a, b in zip(names, s["train_class_counts"], s["val_class_counts"])))
        lines.append("  positive weights (negatives / positives): "
                     + (", ".join(f"{n} {x:.6g}" for n, x in zip(names, w)) if w else "none"))
    else:
        lines.append("  classes (train / val): " + ", ".join(
            f"{n} {a} / {b}" for n, a, b in zip(names, s["train_class_counts"], s["val_class_counts"])))
        lines.append("  class weights: " + (", ".join(f"{n} {x:.6g}" for n, x in zip(names, w)) if w else "none"))
    miss = {k: v for k, v in s.get("missing_values", {}).items() if v}
    lines.append("  missing values: " + (", ".join(f"{k} {v}" for k, v in miss.items()) if miss else "none"))
    L = s["lengths"]
    for unit in ("chars", "words"):
        x = L[unit]
        lines.append(f"  length in {unit}: min {x['min']}, median {x['median']:g}, p95 {x['p95']:g}, max {x['max']}")
    for label, x in L.get("tokens", {}).items():
        if "problem" in x:
            lines.append(f"  problem ({label}): {x['problem']}")
            continue
        if "error" in x:
            lines.append(f"  tokens ({label}): tokenizer unavailable ({x['error']})")
            continue
        how = {"truncate": "cut by", "head_tail": "cut to head + tail by", "chunk": "longer than"}[
            x.get("long_text", "truncate")]
        lines.append(f"  tokens ({label}): median {x['median']:g}, p95 {x['p95']:g}, max {x['max']}; "
                     f"{how} max_length {x['max_length']}: {x['cut_rows']} rows ({100 * x['cut_share']:.2f}%)"
                     + (f"; all rows read as {x['windows']} windows (long_text: chunk)"
                        if x.get("windows") and x.get("long_text") == "chunk" else
                        f"; long_text: chunk would read all rows as {x['windows']} windows" if x.get("windows") else ""))
    if s.get("positive_label") is not None:
        lines.append(f"  positive label (binary F1, threshold): {s['positive_label']}")
    checks = s.get("checks")
    if checks:
        d = checks["duplicates"]
        lines.append(f"  duplicate texts: within train {d['train']}, val rows also in train {d['val_in_train']}, "
                     f"test rows also in train {d['test_in_train']} / in val {d['test_in_val']}; "
                     f"texts with conflicting labels {checks['conflicting_texts']}")
        for w in checks["warnings"]:
            lines.append(f"  warning: {w}")
    for note in s.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def print_summary(cfg) -> dict:
    s = summarise(cfg)
    say(format_summary(s))
    return s
