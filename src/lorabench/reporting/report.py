"""Reports from run records alone: tables (CSV/JSON/Markdown), PNG plots, one offline HTML page.

Nothing here trains or loads a model; every number comes from a run.json (or the
data.json summary that `compare` writes beside them).
"""
from __future__ import annotations

import csv
import html
import io
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from lorabench.config.loading import from_dict, load_yaml
from lorabench.config.schema import CompareConfig, StatisticsConfig
from lorabench.config.tasks import greater_is_better
from lorabench.errors import LorabenchError
from lorabench.evaluation.calibration import TEMPERATURE_BOUNDS
from lorabench.reporting.data_summary import format_summary
from lorabench.reporting.error_analysis import ANALYSIS_DIR, FLAGS, TOP_WRONG, analyse
from lorabench.reporting.html import _html, _img
from lorabench.reporting.model_predictions import gather
from lorabench.reporting.plots import confusion_png, plots
from lorabench.reporting.sweep_report import build_sweep_report
from lorabench.reporting.tables import markdown
from lorabench.reporting.task_report import build_task_report, by_model
from lorabench.reporting.uncertainty import fold_statistics, split_statistics
from lorabench.runs.ensemble import (
    CHOSEN_BY,
    DECISION,
    ENSEMBLE_DIR,
    OPTIMISTIC,
    RULE,
    choose_members,
    compare_groups,
    read_ensemble,
)
from lorabench.runs.files import find_runs, read_run, write_atomic, write_json
from lorabench.runs.layout import refit_dir_for, run_dir_for
from lorabench.runs.record import RunRecord, RunStatus

METRIC_KEYS = ("f1", "precision", "recall", "accuracy")
DETAIL_KEYS = ("macro_f1", "weighted_f1", "mcc", "roc_auc", "pr_auc")
CSV_COLUMNS = ["label", "model", "finetune", "runs", "failed", "val_f1", "val_f1_std", "val_precision", "val_recall",
               "val_accuracy", "val_macro_f1", "val_weighted_f1", "val_mcc", "val_roc_auc", "val_pr_auc", "test_f1",
               "test_accuracy", "test_mcc", "test_roc_auc", "test_pr_auc", "train_seconds", "peak_memory_mb", "trainable_params", "total_params",
               "trainable_pct", "compute_precision", "quantization", "world_size", "train_samples_per_second", "train_rows", "epochs",
               "kind",  # kind: model, or ensemble (the mean of the top models' probabilities, lorabench.runs.ensemble)
               # what predicting costs (run.json `serving`, lorabench.inference.serving; blank where not measured)
               "predict_rows_per_second", "latency_ms", "predict_peak_memory_mb", "export_mb",
               # calibration on val (lorabench.evaluation.calibration; first seed's run) and train.calibration's T
               "val_ece", "val_brier", "temperature"]
INTERVAL_METRICS = ("f1", "accuracy", "mcc", "roc_auc", "pr_auc")
# the 1 - alpha interval of each headline metric (statistics.alpha; bootstrap over rows, or corrected t over folds)
INTERVAL_COLUMNS = [f"{split}_{m}_{end}" for split in ("val", "test") for m in INTERVAL_METRICS for end in ("low", "high")]
# each model against the best by val F1 (difference = this model - the best); a k-fold comparison has the
# corrected resampled t-test's p-values instead of the bootstrap's and McNemar's
TEST_COLUMNS = ["delta_f1", "delta_f1_low", "delta_f1_high", "p_bootstrap", "p_bootstrap_holm", "p_mcnemar",
                "p_mcnemar_holm", "p_t_corrected", "p_t_corrected_holm", "not_separable_from_best"]
CSV_COLUMNS = CSV_COLUMNS + INTERVAL_COLUMNS + TEST_COLUMNS
# k-fold comparisons only, after CSV_COLUMNS (whose values are then means over every (seed, fold) run): the
# number of folds and the sample standard deviation (ddof=1) of each number over those runs
FOLD_COLUMNS = ["folds", "val_precision_std", "val_recall_std", "val_accuracy_std", "val_macro_f1_std",
                "val_weighted_f1_std", "val_mcc_std", "val_roc_auc_std", "val_pr_auc_std", "test_f1_std",
                "train_seconds_std", "peak_memory_mb_std"]


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _std(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def _order(folder: Path, labels: list[str]) -> list[str]:
    """Labels in the comparison's config order when known, else first appearance."""
    cfg = folder / "compare.yaml"
    order: list[str] = []
    if cfg.is_file():
        raw = load_yaml(cfg.read_text(), str(cfg)) or {}
        order = [m.get("label") or m.get("name") for m in raw.get("models", [])]
    return [x for x in order if x in labels] + [x for x in labels if x not in order]


def aggregate(records: list[RunRecord]) -> list[dict]:
    """One row per model label: mean (and sample std of F1) over its completed seeds; for a k-fold comparison
    (runs with `data.folds`) over every (seed, fold) run, with `folds` and the sample std (ddof=1) of every
    number in FOLD_COLUMNS. Refit runs (no val score of their own) are left out."""
    rows = []
    for label, recs, ok in by_model(records):
        row: dict[str, Any] = {"label": label, "model": recs[0].model["name"],
                               "finetune": (ok or recs)[0].model.get("finetune", ""),
                               "runs": len(ok), "failed": len(recs) - len(ok), "kind": "model"}
        for k in METRIC_KEYS:
            row[f"val_{k}"] = _mean([r.val[k] for r in ok])
        row["val_f1_std"] = _std([r.val["f1"] for r in ok])
        for k in DETAIL_KEYS:  # from each run's evaluation detail (absent in records before schema 3)
            row[f"val_{k}"] = _mean([r.evaluation["val"][k] for r in ok
                                     if r.evaluation.get("val", {}).get(k) is not None])
        first = next((r for r in ok if r.evaluation.get("val")), None)
        row["detail"] = {"seed": first.seed, **first.evaluation["val"]} if first else None
        row["test_f1"] = _mean([r.metrics["test"]["f1"] for r in ok if "test" in r.metrics])
        row["test_accuracy"] = _mean([r.metrics["test"]["accuracy"] for r in ok if "test" in r.metrics])
        for k in ("mcc", "roc_auc", "pr_auc"):  # a labelled test split's evaluation detail
            row[f"test_{k}"] = _mean([r.evaluation["test"][k] for r in ok
                                      if (r.evaluation.get("test") or {}).get(k) is not None])
        row["train_seconds"] = _mean([r.train_seconds for r in ok])
        row["peak_memory_mb"] = _mean([r.peak_memory_mb for r in ok])
        p = ok[0].params if ok else {}
        row["trainable_params"], row["total_params"] = p.get("trainable"), p.get("total")
        row["trainable_pct"] = p.get("trainable_pct")
        row["train_samples_per_second"] = _mean([r.throughput["train_samples_per_second"] for r in ok
                                                 if r.throughput.get("train_samples_per_second")])
        row.update(_setup(ok[0]) if ok else {"compute_precision": None, "quantization": None, "world_size": None})
        row["train_rows"] = ok[0].data["train_rows"] if ok else None
        row["epochs"] = _mean([r.epochs_run or r.config["train"]["epochs"] for r in ok
                               if r.model.get("kind") != "tfidf-logreg"]) if ok else None
        serving = [r.serving for r in ok if r.serving and not r.serving.get("error")]
        for col, key in (("predict_rows_per_second", "rows_per_second"), ("latency_ms", "latency_ms"),
                         ("predict_peak_memory_mb", "peak_memory_mb"), ("export_mb", "export_mb")):
            row[col] = _mean([s[key] for s in serving if s.get(key) is not None])
        row["temperature"] = _mean([r.calibration["temperature"] for r in ok if r.calibration])
        row["history"] = [r.history for r in ok]
        row["notes"] = sorted({r.model.get("note") for r in ok if r.model.get("note")})
        row["errors"] = [r.error or "" for r in recs if r.status != RunStatus.COMPLETED]
        folds = max((r.data.get("folds") or 0 for r in recs), default=0)
        if folds:
            row["folds"] = folds
            _fold_spread(row, ok)
            if first is not None:
                row["detail"]["fold"] = first.data.get("fold")
        rows.append(row)
    return rows


def _fold_spread(row: dict, ok: list[RunRecord]) -> None:
    """The sample std (ddof=1) over the runs `ok` of each number a k-fold row shows as mean ± std."""
    for k in ("precision", "recall", "accuracy"):
        row[f"val_{k}_std"] = _std([r.val[k] for r in ok])
    for k in DETAIL_KEYS:
        row[f"val_{k}_std"] = _std([r.evaluation["val"][k] for r in ok if r.evaluation.get("val", {}).get(k) is not None])
    row["test_f1_std"] = _std([r.metrics["test"]["f1"] for r in ok if "test" in r.metrics])
    row["train_seconds_std"] = _std([r.train_seconds for r in ok])
    row["peak_memory_mb_std"] = _std([r.peak_memory_mb for r in ok])


def winner(rows: list[dict], order: list[str] | None = None, metric: str = "f1") -> str | None:
    """The label of the row with the best mean val `metric` (the task's primary: F1, micro F1, RMSE; on a tie the
    first in `order`, else in row order); None when no model finished. What `compare --refit` refits (a model,
    never the ensemble row)."""
    ok = [r for r in rows if r.get(f"val_{metric}") is not None and r.get("kind", "model") == "model"]
    if order:
        ok.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))
    sign = 1 if greater_is_better(metric) else -1
    return max(ok, key=lambda r: sign * r[f"val_{metric}"])["label"] if ok else None


def _setup(r: RunRecord) -> dict:
    """How a run computed: `compute_precision` (e.g. "bf16", "fp32", "fp32 + bf16 autocast"), `quantization`
    ("none", "4bit", "8bit") and `world_size` (processes), from its record (absent before schema 3)."""
    p = r.precision or {}
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    text = short.get(p.get("weights_dtype"), p.get("weights_dtype") or "")
    if p.get("autocast") and p.get("autocast") != text:
        text = f"{text} + {p['autocast']} autocast" if text else f"{p['autocast']} autocast"
    par = r.parallel or {}
    return {"compute_precision": text or None, "quantization": r.quantization or "none",
            "world_size": par.get("world_size", 1)}


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = CSV_COLUMNS + (FOLD_COLUMNS if any(r.get("folds") for r in rows) else [])
    w.writerow(columns)
    digits = {"train_seconds": 1, "peak_memory_mb": 0, "trainable_pct": 4, "train_samples_per_second": 1, "epochs": 2,
              "train_seconds_std": 1, "peak_memory_mb_std": 0}
    for r in rows:
        w.writerow([_fmt(r.get(c), digits.get(c, 4)) for c in columns])
    return buf.getvalue()


def _pm(r: dict, key: str, nd: int = 4, unit: str = "") -> str:
    """A cell: the mean, and in a k-fold row ` ± ` the sample std over its runs."""
    if r.get(key) is None:
        return ""
    text = f"{r[key]:.{nd}f}{unit}"
    if r.get("folds") and r.get(f"{key}_std") is not None:
        text += f" ± {r[f'{key}_std']:.{nd}f}{unit}"
    return text


def _interval(r: dict, key: str, nd: int = 3) -> str:
    lo, hi = r.get(f"{key}_low"), r.get(f"{key}_high")
    return f" [{lo:.{nd}f}, {hi:.{nd}f}]" if lo is not None and hi is not None else ""


def _f1_cell(r: dict) -> str:
    """Val F1: the mean over seeds (± their sample std with several seeds or folds) and the 1 - alpha interval."""
    if r["val_f1"] is None:
        return "failed"
    spread = r["val_f1_std"] if (r["runs"] > 1 or r.get("folds")) and r.get("val_f1_std") is not None else None
    return f"{r['val_f1']:.4f}" + (f" ± {spread:.4f}" if spread is not None else "") + _interval(r, "val_f1")


def _delta_cell(r: dict) -> str:
    if r.get("delta_f1") is None:
        return "best" if r.get("is_best") else ""
    lo, hi = r.get("delta_f1_low"), r.get("delta_f1_high")
    ci = f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else ""
    return f"{r['delta_f1']:+.4f}{ci}"


def _p_cell(r: dict) -> str:
    p = r.get("p_t_corrected_holm") if r.get("folds") else r.get("p_bootstrap_holm")
    if p is None:
        return ""
    text = "< 0.001" if p < 0.001 else f"{p:.2g}"
    return text + ("" if r.get("not_separable_from_best") else " *")


def results_table(rows: list[dict], has_test: bool, binary: bool):
    """The comparison table as a pandas DataFrame of display strings, one row per model, narrow enough for a
    1280 px screen: val F1 (binary: of the positive label; more classes: macro) with its interval, the difference
    to the best model and its Holm-adjusted p-value, MCC, ROC-AUC (binary), test F1, what training cost and what
    predicting costs. The other numbers are in `details_table`."""
    import pandas as pd
    out = []
    for r in rows:
        cells = {"model": r["label"], ("val F1" if binary else "val macro F1"): _f1_cell(r),
                 "Δ F1 vs best": _delta_cell(r), "p (Holm)": _p_cell(r), "MCC": _pm(r, "val_mcc", 3)}
        if binary:
            cells["ROC-AUC"] = _pm(r, "val_roc_auc", 3)
        if has_test:
            cells["test F1" if binary else "test macro F1"] = _pm(r, "test_f1") + _interval(r, "test_f1")
        cells.update({
            "train time": _pm(r, "train_seconds", 0, " s"),
            "train memory": _pm(r, "peak_memory_mb", 0, " MB"),
            "predict rows/s": _fmt(r.get("predict_rows_per_second"), 0),
            "1-row latency": "" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f} ms",
            "predict memory": "" if r.get("predict_peak_memory_mb") is None else f"{r['predict_peak_memory_mb']:.0f} MB",
            "export size": "" if r.get("export_mb") is None else
            f"{r['export_mb']:.0f} MB" if r["export_mb"] >= 10 else f"{r['export_mb']:.2g} MB"})
        out.append(cells)
    return pd.DataFrame(out)


def details_table(rows: list[dict], binary: bool):
    """The rest of each row's numbers (DataFrame of display strings): precision, recall, accuracy, PR-AUC
    (binary) or weighted F1, calibration (ECE, Brier, the temperature of train.calibration), the trainable share,
    how it computed, training throughput and runs."""
    import pandas as pd
    out = []
    for r in rows:
        cells = {"model": r["label"], ("precision" if binary else "macro precision"): _pm(r, "val_precision"),
                 ("recall" if binary else "macro recall"): _pm(r, "val_recall"), "accuracy": _pm(r, "val_accuracy")}
        if binary:
            cells["PR-AUC"] = _pm(r, "val_pr_auc")
        else:
            cells["weighted F1"] = _pm(r, "val_weighted_f1")
        cells.update({
            "ECE": _fmt(r.get("val_ece"), 4), "Brier": _fmt(r.get("val_brier"), 4),
            "temperature": _fmt(r.get("temperature"), 3),
            "trainable": f"{r['trainable_pct']:.3g}% of {_count(r['total_params'])}" if r.get("total_params") else "",
            "computed in": ", ".join(x for x in (r.get("compute_precision") or "",
                                               "" if r.get("quantization") in (None, "none") else f"{r['quantization']} weights",
                                               f"{r['world_size']} processes" if (r.get("world_size") or 1) > 1 else "") if x),
            "train samples/s": _fmt(r.get("train_samples_per_second"), 1),
            "runs": f"{r['runs']}" + (f" (+{r['failed']} failed)" if r["failed"] else "")})
        out.append(cells)
    return pd.DataFrame(out)


def _count(n: int) -> str:
    """A parameter count for people: 22.8M, 1.2B, 40.0k."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def per_class_table(detail: dict):
    """One run's per-class precision, recall, F1 and support (rows: classes, then macro and weighted F1)."""
    import pandas as pd
    rows = [{"class": name, "precision": _fmt(m["precision"]), "recall": _fmt(m["recall"]), "F1": _fmt(m["f1"]),
             "support": str(m["support"])} for name, m in detail["per_class"].items()]
    total = sum(m["support"] for m in detail["per_class"].values())
    rows += [{"class": "macro avg", "precision": "", "recall": "", "F1": _fmt(detail["macro_f1"]), "support": str(total)},
             {"class": "weighted avg", "precision": "", "recall": "", "F1": _fmt(detail["weighted_f1"]),
              "support": str(total)}]
    return pd.DataFrame(rows)


def _html_frame(df) -> str:
    return f"<div class='scroll'>{df.to_html(index=False, escape=True, border=0)}</div>"


def verdict(folder: Path) -> str | None:
    """The verdict sentence of the comparison report in `folder` (results.json `statistics`), None without one."""
    results = Path(folder) / "results.json"
    if not results.is_file():
        return None
    return (json.loads(results.read_text(encoding="utf-8")).get("statistics") or {}).get("verdict")


def _statistics_config(folder: Path) -> StatisticsConfig:
    """The comparison's `statistics` settings (compare.yaml), or the defaults for a folder without one."""
    cfg_file = folder / "compare.yaml"
    if not cfg_file.is_file():
        return StatisticsConfig()
    return from_dict(CompareConfig, load_yaml(cfg_file.read_text(), str(cfg_file))).statistics


def _apply_statistics(rows: list[dict], stats: dict) -> None:
    """Copy the statistics' intervals, differences and p-values into the rows' CSV columns."""
    by = {r["label"]: r for r in rows}
    for r in rows:  # every column in every row (blank where not computed)
        for c in INTERVAL_COLUMNS + TEST_COLUMNS:
            r.setdefault(c, None)
    for label, splits in (stats.get("intervals") or {}).items():
        for split, metrics in splits.items():
            for m, (lo, hi) in metrics.items():
                by[label][f"{split}_{m}_low"], by[label][f"{split}_{m}_high"] = lo, hi
    group = set(stats.get("group") or [])
    for r in rows:
        r["is_best"] = r["label"] == stats.get("best")
        r["not_separable_from_best"] = (r["label"] in group) if group else None
    for c in stats.get("comparisons") or []:
        r = by[c["label"]]
        r.update(delta_f1=c["difference"], delta_f1_low=c["low"], delta_f1_high=c["high"])
        for key in ("p_bootstrap", "p_bootstrap_holm", "p_mcnemar", "p_mcnemar_holm", "p_t_corrected",
                    "p_t_corrected_holm"):
            r[key] = c.get(key)


def _comparisons_table(stats: dict):
    """Each model against the best (DataFrame of display strings)."""
    import pandas as pd
    out = []
    folds = stats.get("method") != "bootstrap"
    for c in stats.get("comparisons") or []:
        cells = {"model": c["label"], "Δ F1 vs " + stats["best"]: f"{c['difference']:+.4f}",
                 f"{1 - stats['alpha']:.0%} interval": f"[{c['low']:+.4f}, {c['high']:+.4f}]"
                 if c.get("low") is not None else ""}
        if folds:
            cells.update({"folds": str(c["folds"]), "p corrected t": _p(c["p_t_corrected"]),
                          "p (Holm)": _p(c["p_t_corrected_holm"])})
        else:
            cells.update({"p bootstrap": _p(c["p_bootstrap"]), "p bootstrap (Holm)": _p(c["p_bootstrap_holm"]),
                          "rows only it gets right": str(c["only_this_right"]),
                          "rows only the best gets right": str(c["only_best_right"]),
                          "p McNemar": _p(c["p_mcnemar"]), "p McNemar (Holm)": _p(c["p_mcnemar_holm"])})
        cells["separable"] = "yes" if c["label"] not in (stats.get("group") or []) else "no"
        out.append(cells)
    return pd.DataFrame(out)


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _statistics_text(stats: dict) -> str:
    """What the intervals and p-values are, in one paragraph."""
    level = f"{1 - stats['alpha']:.0%}"
    if stats.get("method") == "bootstrap":
        return (f"[low, high]: {level} percentile interval from {stats['resamples']} bootstrap resamples of the "
                f"{stats.get('rows', '')} val rows (seed {stats['seed']}; the same resamples for every model, so "
                "differences are paired; Koehn 2004). p bootstrap: share of resamples where the model is not worse "
                "than the best (the difference's sign flips), two-sided. McNemar: exact binomial test on the rows "
                "where exactly one of the two is right (Dietterich 1998; statsmodels). Holm: adjusted across the "
                f"comparisons. A model is separable from the best when its Holm-adjusted bootstrap p < {stats['alpha']:g}. "
                "± in the table: the sample standard deviation over seeds (spread of training, not of the data).")
    return (f"[low, high]: {level} interval of the mean over {stats.get('folds')} folds from the corrected resampled "
            f"t-test (Nadeau & Bengio 2003; test/train rows {stats.get('test_train_ratio', 0):.3f}), which widens the "
            "plain t interval because folds share training rows. p: corrected resampled t-test of the paired fold "
            f"scores, Holm-adjusted; separable when p < {stats['alpha']:g}. ± in the table: the sample standard "
            "deviation over folds (and seeds).")


def _wrong_table(rows: list[dict], cols: list[str]):
    import pandas as pd
    return pd.DataFrame([{c: ("" if r.get(c) is None else (f"{r[c]:.3f}" if isinstance(r[c], float) else
                                                             "yes" if r[c] is True else "" if r[c] is False else
                                                             str(r[c]))) for c in cols} for r in rows])


def _analysis_parts(analysis: dict) -> list[tuple[str, Any]]:
    """(heading, DataFrame or text) pieces of the error analysis, for the Markdown and HTML reports."""
    if not analysis:
        return []
    parts: list[tuple[str, Any]] = []
    flagged = analysis["all_wrong_flagged"]
    parts.append(("text", f"{len(analysis['all_wrong'])} of {analysis['rows']} val rows are wrong for every model"
                          f" ({', '.join(analysis['models'])}); {flagged} of them have a text the data checks flag "
                          "(also in train, or with conflicting labels): often label noise rather than model error. "
                          f"All in {ANALYSIS_DIR}/all_wrong.csv; per model the {TOP_WRONG} most confidently wrong rows in "
                          f"{ANALYSIS_DIR}/confidently_wrong.csv."))
    if analysis["all_wrong"]:
        shown = sorted(analysis["all_wrong"], key=lambda r: not any(r.get(f) for f in FLAGS))[:TOP_WRONG]
        parts.append((f"Rows every model gets wrong (first {len(shown)}, flagged first)",
                      _wrong_table(shown, ["id", "text", "label", *FLAGS])))
    for label, wrong in analysis["confidently_wrong"].items():
        if wrong:
            parts.append((f"{label}: its {min(5, len(wrong))} most confidently wrong rows",
                          _wrong_table(wrong[:5], ["id", "text", "label", "predicted", "probability", *FLAGS])))
    import pandas as pd
    labels, kappa = analysis["agreement"]["labels"], analysis["agreement"]["kappa"]
    parts.append(("Agreement between models (Cohen's kappa of the predicted labels, val)",
                  pd.DataFrame([{"model": a, **{b: f"{k:.3f}" for b, k in zip(labels, row)}}
                                for a, row in zip(labels, kappa)])))
    return parts


def _calibration_notes(runs: list[tuple[Path, RunRecord]]) -> list[str]:
    """A note for each model whose fitted temperature sits at a bound of its search range: its probabilities carry
    almost no information about correctness (e.g. a model that did not learn), or T is cut off."""
    out = []
    for label in dict.fromkeys(r.label for _, r in runs if r.calibration):
        ts = [r.calibration["temperature"] for _, r in runs if r.label == label and r.calibration]
        if any(min(abs(t - b) / b for b in TEMPERATURE_BOUNDS) < 1e-3 for t in ts):
            out.append(f"{label}: its fitted temperature sits at the bound of its search range {TEMPERATURE_BOUNDS} "
                       f"(T = {', '.join(f'{t:.3g}' for t in ts)}): its probabilities say little about which rows "
                       "it gets right")
    return out


def build_report(folder: Path, storage: str | None = None) -> Path:
    """Write results.csv/json/md, analysis/*.csv, plots/*.png and report.html in `folder`; return report.html.

    Raises LorabenchError when the folder does not exist or holds no run.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LorabenchError(f"report: no such folder: {folder}")
    if (folder / "study.json").is_file():
        return build_sweep_report(folder, storage=storage)
    runs = _current_runs(folder)
    if not runs:
        raise LorabenchError(f"report: no run.json files under {folder}")
    records = [r for _, r in runs]
    tasks = {r.data.get("task", "single_label") for r in records if r.data}
    if len(tasks) > 1:
        raise LorabenchError(f"report: {folder} holds runs of different tasks ({', '.join(sorted(tasks))}); a "
                             "comparison is of one task")
    task = tasks.pop() if tasks else "single_label"
    if task != "single_label":
        order = _order(folder, list(dict.fromkeys(r.label or r.model["name"] for r in records)))
        _, _, ens = _ensemble_row(folder)
        data = json.loads((folder / "data.json").read_text()) if (folder / "data.json").is_file() else None
        return build_task_report(folder, runs, task, order, ens, len((ens or {}).get("members") and
                                 read_ensemble(folder / ENSEMBLE_DIR).run_dirs or []), _statistics_config(folder), data)
    rows = aggregate(records)
    order = _order(folder, [r["label"] for r in rows])
    rows.sort(key=lambda r: order.index(r["label"]))
    ensemble, ensemble_note, ensemble_record = _ensemble_row(folder)
    rows += [ensemble] if ensemble else []
    data = json.loads((folder / "data.json").read_text()) if (folder / "data.json").is_file() else None
    has_test = any(r["test_f1"] is not None for r in rows)
    binary = len(records[0].data.get("label_names") or []) == 2

    stats_cfg = _statistics_config(folder)
    preds, why_not = gather(folder, runs, order, ensemble)
    folded = any(r.get("folds") for r in rows)
    if folded:
        stats = fold_statistics(records, rows, ensemble_record, stats_cfg)
    else:
        stats = split_statistics(preds, rows, stats_cfg) if preds else {}
    _apply_statistics(rows, stats)
    analysis = analyse(folder, preds) if preds else {}
    if not analysis:  # nothing to analyse now: an earlier report's analysis would describe other runs
        shutil.rmtree(folder / ANALYSIS_DIR, ignore_errors=True)
    for r in rows:
        cal = (analysis.get("calibration") or {}).get(r["label"])
        r["val_ece"], r["val_brier"] = (cal["ece"], cal["brier"]) if cal else (None, None)

    write_atomic(folder / "results.csv", _csv_text(rows))
    refit = _refit(folder, rows, order)
    public = [{k: v for k, v in r.items() if k not in ("history", "detail")} for r in rows]
    summary = {k: v for k, v in analysis.items() if k not in ("calibration", "confidently_wrong", "all_wrong")}
    if analysis:
        summary["all_wrong"] = len(analysis["all_wrong"])
        summary["files"] = [f"{ANALYSIS_DIR}/{n}" for n in ("confidently_wrong.csv", "all_wrong.csv", "agreement.csv",
                                                            "calibration.csv")]
    write_json(folder / "results.json", {"models": public, "data": data, "statistics": stats, "analysis": summary,
                                         "runs": [{"run_dir": str(p.relative_to(folder)), "label": r.label,
                                                   "seed": r.seed, **({"fold": r.data["fold"]} if r.data.get("fold") else {}),
                                                   "status": r.status.value,
                                                   "metrics": r.metrics, "train_seconds": r.train_seconds,
                                                   "error": r.error} for p, r in runs],
                                         **({"refit": refit["summary"]} if refit else {})})
    table, details = results_table(rows, has_test, binary), details_table(rows, binary)
    notes = (_notes(rows, data, folder) + _fold_notes(rows) + ([ensemble_note] if ensemble_note else [])
             + ([refit["note"]] if refit else []) + ([why_not] if why_not else []) + stats.get("notes", [])
             + _calibration_notes(runs))
    verdict = stats.get("verdict")
    stats_text = _statistics_text(stats) if stats.get("comparisons") is not None else ""
    level = f"{1 - stats_cfg.alpha:.0%}"
    spread = folded or any(r["runs"] > 1 for r in rows if r.get("kind") == "model")
    key = (f"[low, high]: {level} interval ({'corrected t over folds' if folded else 'bootstrap over the rows of its split'}); "
           + (f"± before it: the sample standard deviation over {'folds and seeds' if folded else 'seeds'}. "
              if spread else "")
           + "Δ F1 vs best: this model minus the best model, with its interval; p (Holm): "
           + ("corrected resampled t-test over folds" if folded else "paired bootstrap")
           + ", Holm-adjusted; * = separable from the best (worse beyond chance). Serving cost, measured once on "
           "this machine after training: rows/s predicting val in batches, median latency of one row, peak memory "
           "while predicting, size of the merged export."
           + (" Calibration (ECE, Brier), McNemar's counts and the error analysis use each model's first seed's run."
              if spread and not folded else ""))
    comparisons = _comparisons_table(stats) if stats.get("comparisons") else None
    analysis_parts = _analysis_parts(analysis)

    md = [f"# {folder.name}: comparison", ""] + ([f"**Verdict:** {verdict}", ""] if verdict else [])
    md += [markdown(table), "", key, "", "## Details", "", markdown(details), ""]
    md += [f"- {n}" for n in notes]
    if comparisons is not None:
        md += ["", "## Is the difference real?", "", markdown(comparisons), "", stats_text]
    if analysis_parts:
        md += ["", "## Where the models fail"]
        for head, part in analysis_parts:
            md += ["", part] if head == "text" else ["", f"### {head}", "", markdown(part)]
    detailed = [r for r in rows if r["detail"]]
    if detailed:
        md += ["", "## Per-class results (val)"]
        for r in detailed:
            md += ["", f"### {r['label']} ({_whose(r)})", "", markdown(per_class_table(r["detail"])),
                   "", f"Confusion matrix (rows: true, columns: predicted; {', '.join(r['detail']['labels'])}): "
                       f"{r['detail']['confusion_matrix']}"]
    write_atomic(folder / "results.md", "\n".join(md) + "\n")

    figures = plots(rows, data, stats, analysis)
    (folder / "plots").mkdir(exist_ok=True)
    for name, png in figures.items():
        write_atomic(folder / "plots" / name, png)
    for old in (folder / "plots").glob("*.png"):  # a figure an earlier report drew and this one does not
        if old.name not in figures:
            old.unlink()
    head = (f"<h1>{html.escape(folder.name)}</h1><p class='sub'>lorabench comparison: "
            f"{len(records)} runs, {sum(r['runs'] for r in rows if r.get('kind', 'model') == 'model')} completed, "
            f"{sum(r['failed'] for r in rows)} failed"
            f"{'; k-fold estimates (' + str(max(r.get('folds') or 0 for r in rows)) + ' folds)' if folded else ''}</p>")
    if verdict:
        head += f"<p class='verdict'><b>Verdict:</b> {html.escape(verdict)}</p>"
    sections = [("", head)]
    sections.append(("Results", _html_frame(table) + f"<p class='sub'>{html.escape(key)}</p>"
                     + (_img(figures["f1.png"], "F1") if "f1.png" in figures else "")))
    sections.append(("Details", _html_frame(details)
                     + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)))
    if comparisons is not None:
        sections.append(("Is the difference real?", _html_frame(comparisons) + f"<p>{html.escape(stats_text)}</p>"))
    if "quality_vs_serving.png" in figures:
        sections.append(("Quality against serving cost", _img(figures["quality_vs_serving.png"], "quality against serving cost")))
    if analysis_parts:
        body = ""
        for h, part in analysis_parts:
            body += f"<p>{html.escape(part)}</p>" if h == "text" else f"<h3>{html.escape(h)}</h3>{_html_frame(part)}"
        sections.append(("Where the models fail", body))
    if "reliability.png" in figures:
        sections.append(("Calibration", "<p>Expected calibration error (ECE, 15 equal-width bins of the top "
                         "probability) and Brier score per model are in the details table; "
                         "<code>train.calibration: temperature</code> fits a temperature on val.</p>"
                         + _img(figures["reliability.png"], "reliability diagram")))
    if data:
        sections.append(("Data", f"<pre>{html.escape(format_summary(data))}</pre>" +
                         (_img(figures["lengths.png"], "text lengths") if "lengths.png" in figures else "")))
    for name, title in (("roc_pr.png", "ROC and precision-recall curves (val)"),
                        ("f1_vs_time.png", "F1 against training time"),
                        ("f1_per_epoch.png", "F1 per epoch"), ("memory.png", "Peak memory")):
        if name in figures:
            sections.append((title, _img(figures[name], title)))
    if detailed:
        parts = []
        for r in detailed:
            png = figures.get(confusion_png(r["label"]))
            parts.append(f"<h3>{html.escape(r['label'])} <span class='sub'>({html.escape(_whose(r))})</span></h3>"
                         f"<div class='pair'>{_html_frame(per_class_table(r['detail']))}"
                         f"{_img(png, 'confusion matrix of ' + r['label']) if png else ''}</div>")
        sections.append(("Per-class results (val)", "".join(parts)))
    failed = [(r["label"], e) for r in rows for e in r["errors"]]
    if failed:
        sections.append(("Failed runs", "<ul>" + "".join(
            f"<li class='fail'>{html.escape(l)}: {html.escape(e)}</li>" for l, e in failed) + "</ul>"))
    sections.append(("Runs", _runs_table(runs, folder)))
    v = records[0].versions
    sections.append(("Environment", f"<pre>{html.escape(json.dumps({'versions': v, 'machine': records[0].machine}, indent=1))}</pre>"))
    return write_atomic(folder / "report.html", _html(f"{folder.name} — lorabench", sections))


def _whose(row: dict) -> str:
    """Which run a row's per-class detail is of: a seed, or an ensemble's mean."""
    detail = row["detail"]
    if detail.get("seed") is not None:
        return _which(detail)
    if detail.get("fold"):  # a k-fold ensemble: its fold's ensemble
        return f"fold {detail['fold']}: mean of its member runs"
    return f"mean of {row['runs']} member runs"


def _ensemble_row(folder: Path) -> tuple[dict | None, str | None, dict | None]:
    """The comparison's ensemble row from `ensemble/ensemble.json` (lorabench.runs.ensemble), a note (how it was
    made, or why there is none) and ensemble.json as read. Shown only when it was built from the runs the config
    picks now."""
    cfg_file = folder / "compare.yaml"
    if not cfg_file.is_file():
        return None, None, None

    cfg = from_dict(CompareConfig, load_yaml(cfg_file.read_text(), str(cfg_file)))
    if not cfg.ensemble_top:
        return None, None, None
    members, reason = choose_members(compare_groups(folder, cfg), cfg.ensemble_top)
    if not members:
        return None, reason, None
    try:
        spec = read_ensemble(folder / ENSEMBLE_DIR)
    except LorabenchError as e:
        return None, f"no ensemble row: {e}; run compare again to rebuild it", None
    if [[d.resolve() for d in dirs] for _, dirs in spec.members] != [[d.resolve() for d in m.run_dirs] for m in members]:
        return None, f"no ensemble row: {ENSEMBLE_DIR}/ was built from other runs; run compare again to rebuild it", None
    ens, labels = spec.record, [label for label, _ in spec.members]
    val, detail = ens["metrics"].get("val", {}), ens.get("evaluation", {}).get("val")
    row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    row.update({"label": ens["label"], "model": " + ".join(labels), "finetune": "ensemble", "kind": "ensemble",
                "runs": len(spec.run_dirs), "failed": 0, "members": labels,
                **{f"val_{k}": val.get(k) for k in METRIC_KEYS}, **{f"val_{k}": (detail or {}).get(k) for k in DETAIL_KEYS},
                "detail": {"seed": None, **detail} if detail else None,
                "test_f1": ens["metrics"].get("test", {}).get("f1"),
                "test_accuracy": ens["metrics"].get("test", {}).get("accuracy"),
                **{f"test_{k}": (ens.get("evaluation", {}).get("test") or {}).get(k) for k in ("mcc", "roc_auc", "pr_auc")},
                "train_seconds": ens.get("train_seconds"),
                "peak_memory_mb": ens.get("peak_memory_mb"), "history": [], "notes": [], "errors": []})
    serving = ens.get("serving") or {}
    if not serving.get("error"):
        row.update(predict_rows_per_second=serving.get("rows_per_second"), latency_ms=serving.get("latency_ms"),
                   predict_peak_memory_mb=serving.get("peak_memory_mb"), export_mb=serving.get("export_mb"))
    if ens.get("folds"):  # k-fold: mean over the folds' ensembles, with their sample std
        std = (ens.get("metrics_std") or {}).get("val", {})
        row.update(folds=len(ens["folds"]), val_f1_std=std.get("f1"),
                   **{f"val_{k}": val.get(k) for k in DETAIL_KEYS},  # the folds' mean, not fold 1's `detail`
                   **{f"val_{k}_std": std.get(k) for k in list(METRIC_KEYS) + list(DETAIL_KEYS) if k != "f1"})
        row["detail"] = {"seed": None, "fold": 1, **detail} if detail else None
    note = (f"{ens['label']}: {RULE}; its members ({', '.join(labels)}) are {CHOSEN_BY}; decided by the {DECISION}. "
            f"{OPTIMISTIC[0].upper()}{OPTIMISTIC[1:]}. Its training time is the sum over its {len(spec.run_dirs)} member "
            f"runs, its peak memory the largest member run's. Saved in {ENSEMBLE_DIR}/ (lorabench predict "
            f"{folder / ENSEMBLE_DIR} --input ... runs it).")
    return row, " ".join([note] + [n for n in ens.get("notes", []) if n != OPTIMISTIC]), ens


def _which(detail: dict) -> str:
    """Which run a per-class table shows: `seed 42`, or `seed 42, fold 1`."""
    return f"seed {detail['seed']}" + (f", fold {detail['fold']}" if detail.get("fold") else "")


def _fold_notes(rows: list[dict]) -> list[str]:
    """What a k-fold table's numbers are."""
    folded = [r for r in rows if r.get("folds")]
    if not folded:
        return []
    k = max(r["folds"] for r in folded)
    return [f"k-fold estimates ({k} folds): each model trained once per fold (and seed) on the same stratified folds "
            "(folds.json); every number is the mean ± the sample standard deviation (ddof=1) over a model's "
            "runs: " + ", ".join(f"{r['label']} n={r['folds']} folds" if r.get("kind") == "ensemble"
                                 else f"{r['label']} n={r['runs']}" for r in folded) + ".",
            "Per-class results, confusion matrices and ROC/PR curves show one run per model (its fold 1 of the first "
            "seed), not pooled out-of-fold predictions."]


def _refit(folder: Path, rows: list[dict], order: list[str]) -> dict | None:
    """The comparison's refit of its best model (compare `refit: true`), if its run folder is there: a note for
    the report and a summary for results.json."""
    cfg_file = folder / "compare.yaml"
    if not cfg_file.is_file():
        return None
    if not (load_yaml(cfg_file.read_text(), str(cfg_file)) or {}).get("refit"):
        return None
    label = winner(rows, order)
    rec = read_run(refit_dir_for(folder, label)) if label else None
    if not rec or "refit" not in rec:
        return None
    r, path = rec["refit"], refit_dir_for(folder, label).name
    if rec.get("status") != "completed":
        return {"note": f"refit of {label} ({path}/) failed: {rec.get('error', '')}",
                "summary": {"label": label, "run_dir": path, "status": rec.get("status"), "error": rec.get("error")}}
    test = rec.get("metrics", {}).get("test")
    epochs = f"{r['epochs']:g} epoch(s) ({r['epochs_rule']})" if r.get("epochs") is not None else "one fit (no epochs)"
    note = (f"refit: {label}, the best mean val F1 ({r['chosen_by']['f1']:.4f} over {r['chosen_by']['runs']} run(s)), "
            f"retrained on all {r['train_rows']} train + val rows for {epochs} in {rec.get('wall_seconds', 0):.0f} s wall "
            f"time -> {path}/; it has no validation score of its own"
            + (f"; test F1 {test['f1']:.4f}" if test else ""))
    return {"note": note, "summary": {"label": label, "run_dir": path, "status": "completed",
                                      "train_rows": r["train_rows"], "epochs": r.get("epochs"),
                                      "epochs_rule": r.get("epochs_rule"), "wall_seconds": rec.get("wall_seconds"),
                                      "chosen_by": r["chosen_by"], "metrics": rec.get("metrics", {})}}


def _current_runs(folder: Path) -> list[tuple[Path, RunRecord]]:
    """The run folders of the comparison as configured now (older runs left in the folder are ignored),
    with their typed records."""
    runs = [(p, RunRecord.from_dict(r)) for p, r in find_runs(folder)]
    cfg_file = folder / "compare.yaml"
    if not cfg_file.is_file():
        return runs

    cfg = from_dict(CompareConfig, load_yaml(cfg_file.read_text(), str(cfg_file)))
    wanted = {run_dir_for(folder, e).resolve() for e in cfg.experiments()}
    return [(p, r) for p, r in runs if p.resolve() in wanted]


def _notes(rows: list[dict], data: dict | None, folder: Path) -> list[str]:
    notes = []
    cfg = folder / "compare.yaml"
    if cfg.is_file():
        text = (load_yaml(cfg.read_text(), str(cfg)) or {}).get("notes")
        if text:
            notes.append(text.strip())
    for r in rows:
        for n in r["notes"]:
            notes.append(f"{r['label']}: {n}")
        if data and r["train_rows"] is not None and r["train_rows"] < data["train_rows"]:
            notes.append(f"{r['label']}: trained on {r['train_rows']} of {data['train_rows']} train rows (subsample)")
    if data:
        notes += [f"data: {n}" for n in data.get("notes", [])]
        notes += [f"data warning: {w}" for w in (data.get("checks") or {}).get("warnings", [])]
    for r in rows:
        at = ((r.get("detail") or {}).get("at_threshold"))
        if at:
            notes.append(f"{r['label']}: the table and per-class results are at the most probable class (0.5); at the "
                         f"run's decision threshold {at['threshold']:.4g} (tuned on val itself, so optimistic): F1 "
                         f"{at['per_class'][at['labels'][1]]['f1']:.4f}, MCC {at['mcc']:.4f}, confusion matrix "
                         f"{at['confusion_matrix']}")
    positive = (data or {}).get("positive_label")
    f1_kind = (f"binary, positive label {positive!r}" if positive is not None else
               "binary (positive = label id 1) for two classes, macro otherwise")
    notes.append("Training time includes per-epoch evaluation; peak memory is the process's peak RSS on CPU "
                 f"(max allocated per GPU on CUDA). F1 is {f1_kind}.")
    return notes


def _runs_table(runs: list[tuple[Path, RunRecord]], folder: Path) -> str:
    rows = []
    for p, r in runs:
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            p.relative_to(folder), r.status.value, r.seed, _fmt(r.val.get("f1")),
            _fmt(r.train_seconds, 1), f"{r.best_epoch:g}" if r.best_epoch is not None else "")) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("run", "status", "seed", "val F1", "train s", "best epoch"))
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
