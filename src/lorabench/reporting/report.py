"""Reports from run records alone: tables (CSV/JSON/Markdown), PNG plots, one offline HTML page.

Nothing here trains or loads a model; every number comes from a run.json (or the
data.json summary that `compare` writes beside them).
"""
from __future__ import annotations

import csv
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from lorabench.config.loading import from_dict, load_yaml
from lorabench.config.schema import CompareConfig
from lorabench.errors import LorabenchError
from lorabench.reporting.data_summary import format_summary
from lorabench.reporting.html import _html, _img
from lorabench.reporting.sweep_report import build_sweep_report
from lorabench.reporting.tables import markdown
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
from lorabench.runs.layout import refit_dir_for, run_dir_for, safe_name
from lorabench.runs.record import RunRecord, RunStatus

METRIC_KEYS = ("f1", "precision", "recall", "accuracy")
DETAIL_KEYS = ("macro_f1", "weighted_f1", "mcc", "roc_auc", "pr_auc")
CSV_COLUMNS = ["label", "model", "finetune", "runs", "failed", "val_f1", "val_f1_std", "val_precision", "val_recall",
               "val_accuracy", "val_macro_f1", "val_weighted_f1", "val_mcc", "val_roc_auc", "val_pr_auc", "test_f1", "train_seconds", "peak_memory_mb", "trainable_params", "total_params",
               "trainable_pct", "compute_precision", "quantization", "world_size", "train_samples_per_second", "train_rows", "epochs",
               "kind"]  # kind: model, or ensemble (the mean of the top models' probabilities, lorabench.runs.ensemble)
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
    by: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.refit is None:
            by.setdefault(r.label or r.model["name"], []).append(r)
    rows = []
    for label, recs in by.items():
        ok = sorted((r for r in recs if r.status == RunStatus.COMPLETED), key=lambda r: r.data.get("fold") or 0)
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


def winner(rows: list[dict], order: list[str] | None = None) -> str | None:
    """The label of the row with the best mean val F1 (on a tie the first in `order`, else in row order);
    None when no model finished. What `compare --refit` refits (a model, never the ensemble row)."""
    ok = [r for r in rows if r["val_f1"] is not None and r.get("kind", "model") == "model"]
    if order:
        ok.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))
    return max(ok, key=lambda r: r["val_f1"])["label"] if ok else None


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


def _f1_cell(r: dict) -> str:
    if r["val_f1"] is None:
        return "failed"
    return f"{r['val_f1']:.4f}" + (f" ± {r['val_f1_std']:.4f}" if r["runs"] > 1 and r["val_f1_std"] is not None else "")


def results_table(rows: list[dict], has_test: bool, binary: bool):
    """The comparison table as a pandas DataFrame of display strings, one row per model. Binary tasks: F1,
    precision and recall of the positive label, with the threshold-free ROC-AUC and PR-AUC and MCC beside;
    more classes: macro F1 (and weighted F1), macro precision and recall, MCC."""
    import pandas as pd
    out = []
    for r in rows:
        name = r["label"] + (f" ({', '.join(r['members'])})" if r.get("members") else "")  # an ensemble's members
        cells = {"model": name, ("val F1" if binary else "val macro F1"): _f1_cell(r)}
        if not binary:
            cells["weighted F1"] = _pm(r, "val_weighted_f1")
        cells.update({("precision" if binary else "macro precision"): _pm(r, "val_precision"),
                      ("recall" if binary else "macro recall"): _pm(r, "val_recall"),
                      "accuracy": _pm(r, "val_accuracy")})
        if binary:
            cells.update({"ROC-AUC": _pm(r, "val_roc_auc"), "PR-AUC": _pm(r, "val_pr_auc")})
        cells["MCC"] = _pm(r, "val_mcc")
        if has_test:
            cells["test F1" if binary else "test macro F1"] = _pm(r, "test_f1")
        cells.update({
            "training time": _pm(r, "train_seconds", 1, " s"),
            "peak memory": _pm(r, "peak_memory_mb", 0, " MB"),
            "trainable": f"{r['trainable_pct']:.3g}% of {_count(r['total_params'])}" if r["total_params"] else "",
            "computed in": ", ".join(x for x in (r["compute_precision"] or "",
                                               "" if r["quantization"] in (None, "none") else f"{r['quantization']} weights",
                                               f"{r['world_size']} processes" if (r["world_size"] or 1) > 1 else "") if x),
            "train samples/s": _fmt(r["train_samples_per_second"], 1),
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


# --------------------------------------------------------------------------- plots
def _plots(rows: list[dict], data: dict | None) -> dict[str, bytes]:
    # Figure objects, no pyplot: the caller's plotting backend and open figures are left alone
    import matplotlib
    from matplotlib.figure import Figure
    out: dict[str, bytes] = {}
    ok = [r for r in rows if r["val_f1"] is not None]
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]

    def subplots(figsize):  # a standalone Figure with one Axes; pyplot is never touched
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        out[name] = buf.getvalue()

    if ok:
        fig, ax = subplots(figsize=(7, 3.6))
        xs = range(len(ok))
        ax.bar(xs, [r["val_f1"] for r in ok], yerr=[r["val_f1_std"] or 0 for r in ok], capsize=5,
               color=[colors[i % len(colors)] for i in xs])
        for i, r in enumerate(ok):
            ax.text(i, r["val_f1"] + (r["val_f1_std"] or 0) + 0.005, f"{r['val_f1']:.3f}", ha="center", fontsize=9)
        ax.set_xticks(list(xs), [r["label"] for r in ok], rotation=15)
        lo = min(r["val_f1"] - (r["val_f1_std"] or 0) for r in ok)  # room for the error bars and their labels
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, max(r["val_f1"] + (r["val_f1_std"] or 0) for r in ok) + 0.05))
        ax.set_ylabel("val F1 (mean ± std over " + ("folds and seeds)" if any(r.get("folds") for r in ok) else "seeds)"))
        ax.set_title("Quality")
        save(fig, "f1.png")

        fig, ax = subplots(figsize=(7, 3.6))
        for i, r in enumerate(ok):
            ax.errorbar(r["train_seconds"], r["val_f1"], yerr=r["val_f1_std"] or 0, fmt="o", ms=8,
                        color=colors[i % len(colors)], label=r["label"], capsize=4)
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter, NullFormatter
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis run into each other
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel("val F1")
        ax.set_title("Quality against cost")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "f1_vs_time.png")

        fig, ax = subplots(figsize=(7, 3.6))
        ax.bar(list(xs), [r["peak_memory_mb"] or 0 for r in ok], color=[colors[i % len(colors)] for i in xs])
        ax.set_xticks(list(xs), [r["label"] for r in ok], rotation=15)
        ax.set_ylabel("peak memory (MB)")
        ax.set_title("Peak memory during training")
        save(fig, "memory.png")

        curves = [(i, r) for i, r in enumerate(ok) if any(r["history"])]
        if curves:
            fig, ax = subplots(figsize=(7, 3.6))
            for i, r in curves:
                for j, h in enumerate(r["history"]):
                    if h:
                        ax.plot([x["epoch"] for x in h], [x["f1"] for x in h], marker="o", alpha=0.85,
                                color=colors[i % len(colors)], label=r["label"] if j == 0 else None)
            ax.set_xlabel("epoch")
            ax.set_ylabel("val F1")
            ax.set_title("Val F1 per epoch (one line per " + ("run)" if any(r.get("folds") for r in ok) else "seed)"))
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            save(fig, "f1_per_epoch.png")

    for i, r in enumerate(ok):
        if r.get("detail"):
            save(_confusion_figure(subplots, r["label"], r["detail"]), _confusion_png(r["label"]))
    curves = [(i, r) for i, r in enumerate(ok) if (r.get("detail") or {}).get("curves")]
    if curves:
        fig = Figure(figsize=(9, 3.8))
        roc_ax, pr_ax = fig.subplots(1, 2)
        for i, r in curves:
            c, d = colors[i % len(colors)], r["detail"]
            roc_ax.plot(d["curves"]["roc"]["fpr"], d["curves"]["roc"]["tpr"], color=c,
                        label=f"{r['label']} (AUC {d['roc_auc']:.3f})")
            pr_ax.plot(d["curves"]["pr"]["recall"], d["curves"]["pr"]["precision"], color=c,
                       label=f"{r['label']} (AP {d['pr_auc']:.3f})")
        roc_ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
        roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (val)")
        pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (val)", ylim=(0, 1.02))
        for ax in (roc_ax, pr_ax):
            ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
            ax.grid(alpha=0.3)
        save(fig, "roc_pr.png")

    if data and data.get("char_histogram"):
        h = data["char_histogram"]
        fig, ax = subplots(figsize=(7, 3))
        edges = h["edges"]
        ax.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge",
               color=colors[0], edgecolor="white")
        ax.set_xlabel("text length (characters)")
        ax.set_ylabel("rows (train + val)")
        ax.set_title("Text lengths")
        save(fig, "lengths.png")
    return out

def _confusion_png(label: str) -> str:
    return f"confusion_{safe_name(label)}.png"


def _confusion_figure(subplots, label: str, detail: dict):
    """A confusion matrix as counts, shaded by the share of each true class (rows sum to 1)."""
    import numpy as np
    cm = np.asarray(detail["confusion_matrix"])
    names = detail["labels"]
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.7 * len(names)
    fig, ax = subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, f"{n}", ha="center", va="center", color="white" if share[i, j] > 0.6 else "#222", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{label}: confusion matrix (val)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return fig


def build_report(folder: Path, storage: str | None = None) -> Path:
    """Write results.csv/json/md, plots/*.png and report.html in `folder`; return report.html."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LorabenchError(f"report: no such folder: {folder}")
    if (folder / "study.json").is_file():
        return build_sweep_report(folder, storage=storage)
    runs = _current_runs(folder)
    if not runs:
        raise LorabenchError(f"report: no run.json files under {folder}")
    records = [r for _, r in runs]
    rows = aggregate(records)
    order = _order(folder, [r["label"] for r in rows])
    rows.sort(key=lambda r: order.index(r["label"]))
    ensemble, ensemble_note = _ensemble_row(folder)
    rows += [ensemble] if ensemble else []
    data = json.loads((folder / "data.json").read_text()) if (folder / "data.json").is_file() else None
    has_test = any(r["test_f1"] is not None for r in rows)
    binary = len(records[0].data.get("label_names") or []) == 2

    write_atomic(folder / "results.csv", _csv_text(rows))
    refit = _refit(folder, rows, order)
    public = [{k: v for k, v in r.items() if k not in ("history", "detail")} for r in rows]
    write_json(folder / "results.json", {"models": public, "data": data,
                                         "runs": [{"run_dir": str(p.relative_to(folder)), "label": r.label,
                                                   "seed": r.seed, **({"fold": r.data["fold"]} if r.data.get("fold") else {}),
                                                   "status": r.status.value,
                                                   "metrics": r.metrics, "train_seconds": r.train_seconds,
                                                   "error": r.error} for p, r in runs],
                                         **({"refit": refit["summary"]} if refit else {})})
    table = results_table(rows, has_test, binary)
    notes = (_notes(rows, data, folder) + _fold_notes(rows) + ([ensemble_note] if ensemble_note else [])
             + ([refit["note"]] if refit else []))
    md = [f"# {folder.name}: comparison", "", markdown(table), ""]
    md += [f"- {n}" for n in notes]
    detailed = [r for r in rows if r["detail"]]
    if detailed:
        md += ["", "## Per-class results (val)"]
        for r in detailed:
            md += ["", f"### {r['label']} ({_whose(r)})", "", markdown(per_class_table(r["detail"])),
                   "", f"Confusion matrix (rows: true, columns: predicted; {', '.join(r['detail']['labels'])}): "
                       f"{r['detail']['confusion_matrix']}"]
    write_atomic(folder / "results.md", "\n".join(md) + "\n")

    plots = _plots(rows, data)
    (folder / "plots").mkdir(exist_ok=True)
    for name, png in plots.items():
        write_atomic(folder / "plots" / name, png)
    sections = [("", f"<h1>{html.escape(folder.name)}</h1><p class='sub'>lorabench comparison: "
                     f"{len(records)} runs, {sum(r['runs'] for r in rows if r.get('kind', 'model') == 'model')} completed, "
                     f"{sum(r['failed'] for r in rows)} failed"
                     f"{'; k-fold estimates (' + str(max(r.get('folds') or 0 for r in rows)) + ' folds)' if any(r.get('folds') for r in rows) else ''}"
                     "</p>")]
    if data:
        sections.append(("Data", f"<pre>{html.escape(format_summary(data))}</pre>" +
                         (_img(plots["lengths.png"], "text lengths") if "lengths.png" in plots else "")))
    sections.append(("Results", _html_frame(table) + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)))
    for name, title in (("f1.png", "F1"), ("roc_pr.png", "ROC and precision-recall curves (val)"),
                        ("f1_vs_time.png", "F1 against training time"),
                        ("f1_per_epoch.png", "F1 per epoch"), ("memory.png", "Peak memory")):
        if name in plots:
            sections.append((title, _img(plots[name], title)))
    if detailed:
        parts = []
        for r in detailed:
            png = plots.get(_confusion_png(r["label"]))
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


def _ensemble_row(folder: Path) -> tuple[dict | None, str | None]:
    """The comparison's ensemble row from `ensemble/ensemble.json` (lorabench.runs.ensemble), and a note: how it was
    made, or why there is none. Shown only when it was built from the runs the config picks now."""
    cfg_file = folder / "compare.yaml"
    if not cfg_file.is_file():
        return None, None

    cfg = from_dict(CompareConfig, load_yaml(cfg_file.read_text(), str(cfg_file)))
    if not cfg.ensemble_top:
        return None, None
    members, reason = choose_members(compare_groups(folder, cfg), cfg.ensemble_top)
    if not members:
        return None, reason
    try:
        spec = read_ensemble(folder / ENSEMBLE_DIR)
    except LorabenchError as e:
        return None, f"no ensemble row: {e}; run compare again to rebuild it"
    if [[d.resolve() for d in dirs] for _, dirs in spec.members] != [[d.resolve() for d in m.run_dirs] for m in members]:
        return None, f"no ensemble row: {ENSEMBLE_DIR}/ was built from other runs; run compare again to rebuild it"
    ens, labels = spec.record, [label for label, _ in spec.members]
    val, detail = ens["metrics"].get("val", {}), ens.get("evaluation", {}).get("val")
    row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
    row.update({"label": ens["label"], "model": " + ".join(labels), "finetune": "ensemble", "kind": "ensemble",
                "runs": len(spec.run_dirs), "failed": 0, "members": labels,
                **{f"val_{k}": val.get(k) for k in METRIC_KEYS}, **{f"val_{k}": (detail or {}).get(k) for k in DETAIL_KEYS},
                "detail": {"seed": None, **detail} if detail else None,
                "test_f1": ens["metrics"].get("test", {}).get("f1"), "train_seconds": ens.get("train_seconds"),
                "peak_memory_mb": ens.get("peak_memory_mb"), "history": [], "notes": [], "errors": []})
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
    return row, " ".join([note] + [n for n in ens.get("notes", []) if n != OPTIMISTIC])


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
