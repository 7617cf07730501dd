"""The comparison report of a multi_label or a regression task (`config.tasks`): the same files as a single-label
comparison's (results.csv/json/md, plots/*.png, report.html), with the task's metrics as columns.

Is the difference real: a seeded bootstrap over the val rows (the same resamples for every model, as
`reporting.uncertainty` does for single-label tasks) of the task's primary metric (micro F1, RMSE), percentile
intervals per model and the paired difference of each model to the best with a Holm-adjusted p-value; with k-fold
the corrected resampled t-test over the folds instead. The best model (never the ensemble row) is the one with the
best mean val primary metric; the verdict names the models not separable from it and the cheapest to run.
"""
from __future__ import annotations

import csv
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from lorabench.config.schema import StatisticsConfig
from lorabench.config.tasks import DISPLAY, METRICS, greater_is_better, primary
from lorabench.evaluation.bootstrap import Resamples, paired_difference, percentile_interval
from lorabench.evaluation.significance import corrected_t_interval, corrected_t_test, holm
from lorabench.evaluation.tasks import decide, label_array
from lorabench.reporting.data_summary import format_summary
from lorabench.reporting.html import _html, _img
from lorabench.reporting.tables import markdown
from lorabench.reporting.uncertainty import verdict
from lorabench.runs.files import write_atomic, write_json
from lorabench.runs.predictions import read_predictions
from lorabench.runs.record import RunRecord, RunStatus

COST_COLUMNS = ["train_seconds", "peak_memory_mb", "trainable_params", "total_params", "trainable_pct",
                "predict_rows_per_second", "latency_ms", "predict_peak_memory_mb", "export_mb"]


def columns(task: str) -> list[str]:
    """results.csv's columns for `task`: every val metric, its std over runs, the test metrics, the 1 - alpha interval
    of the primary metric, the difference to the best and its p-values, cost."""
    m, head = METRICS[task], primary(task)
    return (["label", "model", "finetune", "kind", "runs", "failed"] + [f"val_{k}" for k in m]
            + [f"val_{head}_std", f"val_{head}_low", f"val_{head}_high"] + [f"test_{k}" for k in m]
            + [f"delta_{head}", f"delta_{head}_low", f"delta_{head}_high", "p", "p_holm", "not_separable_from_best"]
            + COST_COLUMNS + ["folds"])


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None)


def by_model(records: list[RunRecord]) -> list[tuple[str, list[RunRecord], list[RunRecord]]]:
    """(label, its runs, its completed runs in fold order) per model label, in first-appearance order; refit runs
    (no val score of their own) are left out."""
    by: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.refit is None:
            by.setdefault(r.label or r.model["name"], []).append(r)
    return [(label, recs, sorted((r for r in recs if r.status == RunStatus.COMPLETED),
                                 key=lambda r: r.data.get("fold") or 0)) for label, recs in by.items()]


def task_rows(records: list[RunRecord], task: str) -> list[dict]:
    """One row per model label: the mean over its completed runs (seeds, folds) of every val and test metric of the
    task, the sample std of the primary metric, cost; the first run's detail (per-label results or residuals)."""
    head = primary(task)
    rows = []
    for label, recs, ok in by_model(records):
        row: dict[str, Any] = {"label": label, "model": recs[0].model["name"], "kind": "model",
                               "finetune": (ok or recs)[0].model.get("finetune", ""), "runs": len(ok),
                               "failed": len(recs) - len(ok)}
        for k in METRICS[task]:
            row[f"val_{k}"] = _mean([r.val.get(k) for r in ok])
            row[f"test_{k}"] = _mean([(r.metrics.get("test") or {}).get(k) for r in ok])
        row[f"val_{head}_std"] = _std([r.val.get(head) for r in ok])
        row["train_seconds"] = _mean([r.train_seconds for r in ok])
        row["peak_memory_mb"] = _mean([r.peak_memory_mb for r in ok])
        p = ok[0].params if ok else {}
        row.update(trainable_params=p.get("trainable"), total_params=p.get("total"), trainable_pct=p.get("trainable_pct"))
        serving = [r.serving for r in ok if r.serving and not r.serving.get("error")]
        for col, key in (("predict_rows_per_second", "rows_per_second"), ("latency_ms", "latency_ms"),
                         ("predict_peak_memory_mb", "peak_memory_mb"), ("export_mb", "export_mb")):
            row[col] = _mean([s.get(key) for s in serving])
        folds = max((r.data.get("folds") or 0 for r in recs), default=0)
        row["folds"] = folds or None
        first = next((r for r in ok if r.evaluation.get("val")), None)
        row["detail"] = {"seed": first.seed, **first.evaluation["val"]} if first else None
        row["errors"] = [r.error or "" for r in recs if r.status != RunStatus.COMPLETED]
        rows.append(row)
    return rows


def ensemble_row(ens: dict, task: str, run_count: int) -> dict:
    """The ensemble's row from its ensemble.json (the mean of its members' per-label probabilities or values)."""
    val, test = ens["metrics"].get("val", {}), ens["metrics"].get("test", {})
    row: dict[str, Any] = {"label": ens["label"], "model": " + ".join(m["label"] for m in ens["members"]),
                           "finetune": "ensemble", "kind": "ensemble", "runs": run_count, "failed": 0,
                           "train_seconds": ens.get("train_seconds"), "peak_memory_mb": ens.get("peak_memory_mb"),
                           "detail": None, "errors": [], "folds": len(ens["folds"]) if ens.get("folds") else None}
    for k in METRICS[task]:
        row[f"val_{k}"], row[f"test_{k}"] = val.get(k), test.get(k)
    row[f"val_{primary(task)}_std"] = (ens.get("metrics_std") or {}).get("val", {}).get(primary(task))
    serving = ens.get("serving") or {}
    if not serving.get("error"):
        row.update(predict_rows_per_second=serving.get("rows_per_second"), latency_ms=serving.get("latency_ms"),
                   predict_peak_memory_mb=serving.get("peak_memory_mb"), export_mb=serving.get("export_mb"))
    return row


def weighted_primary(task: str, labels, outputs: np.ndarray, weights: np.ndarray, threshold=None) -> np.ndarray:
    """The task's primary metric under each row weighting (bootstrap counts, `evaluation.bootstrap.Resamples`):
    micro F1 = 2 TP / (2 TP + FP + FN) over the weighted row-label pairs (multi_label), RMSE = sqrt(sum w e² /
    sum w) (regression). `weights` (b, n); returns (b,) float64 (nan where undefined)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    y = label_array(task, labels)
    if task == "regression":
        err = (decide(task, outputs) - y) ** 2
        return np.sqrt(w @ err / w.sum(axis=1))
    pred = decide(task, outputs, threshold)
    tp, fp, fn = w @ (y & pred).sum(axis=1), w @ ((1 - y) & pred).sum(axis=1), w @ (y & (1 - pred)).sum(axis=1)
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / den, 0.0)


def _predictions(folder: Path, runs: list[tuple[Path, RunRecord]], rows: list[dict], task: str,
                 ensemble: dict | None) -> dict[str, list]:
    """{label: [(labels, outputs, threshold) per completed run]} of the val rows, read from the runs' saved
    predictions (and the ensemble's); models whose runs saved none are left out."""
    out: dict[str, list] = {}
    for p, r in runs:
        name = (r.predictions or {}).get("val")
        if r.status != RunStatus.COMPLETED or r.refit is not None or not name or not (p / name).is_file():
            continue
        sp = read_predictions(p / name, r.data["label_names"], task)
        out.setdefault(r.label, []).append((sp.label_list(), sp.probs, None))  # at 0.5, as the table's metrics
    if ensemble and (folder / "ensemble" / "predictions_val.csv").is_file() and not ensemble.get("folds"):
        sp = read_predictions(folder / "ensemble" / "predictions_val.csv", ensemble["label_names"], task)
        out[ensemble["label"]] = [(sp.label_list(), sp.probs, None)]
    return {r["label"]: out[r["label"]] for r in rows if r["label"] in out}


def task_statistics(folder: Path, runs: list[tuple[Path, RunRecord]], rows: list[dict], task: str,
                    ensemble: dict | None, cfg: StatisticsConfig, preds: dict[str, list] | None = None) -> dict:
    """results.json `statistics` of a multi_label / regression comparison (see the module doc); `preds`: the val
    predictions `_predictions` read (read here when not given)."""
    head = primary(task)
    sign = 1.0 if greater_is_better(head) else -1.0
    models = [r["label"] for r in rows if r["kind"] == "model" and r.get(f"val_{head}") is not None]
    if not models:
        return {}
    folded = any(r.get("folds") for r in rows)
    out: dict[str, Any] = {"metric": head, "alpha": cfg.alpha, "intervals": {}}
    comps = []
    if folded:
        per: dict[str, dict[int, list[float]]] = {}
        for _, r in runs:
            if r.status == RunStatus.COMPLETED and r.refit is None and r.val.get(head) is not None:
                per.setdefault(r.label, {}).setdefault(r.data.get("fold") or 0, []).append(r.val[head])
        for f in (ensemble or {}).get("folds") or []:
            if (f.get("metrics") or {}).get(head) is not None:
                per.setdefault(ensemble["label"], {})[f["fold"]] = [f["metrics"][head]]
        scores = {lab: {f: float(np.mean(v)) for f, v in d.items()} for lab, d in per.items()}
        ratios = [r.data["val_rows"] / r.data["train_rows"] for _, r in runs if r.data.get("train_rows")]
        ratio = float(np.mean(ratios)) if ratios else 0.0
        out.update(method="corrected resampled t-test", test_train_ratio=ratio,
                   folds=max(len(v) for v in scores.values()))
        for lab, s in scores.items():
            out["intervals"][lab] = {"val": {head: list(corrected_t_interval(list(s.values()), ratio, cfg.alpha))}}
        best = max((m for m in models if m in scores), key=lambda m: sign * np.mean(list(scores[m].values())))
        for lab, s in scores.items():
            if lab != best:
                common = sorted(set(s) & set(scores[best]))
                t = corrected_t_test([s[f] - scores[best][f] for f in common], ratio, cfg.alpha)
                comps.append({"label": lab, "metric": head, "difference": t["difference"], "low": t["low"],
                              "high": t["high"], "p": t["p"], "folds": len(common)})
        on = f"{out['folds']} folds"
    else:
        preds = preds if preds is not None else _predictions(folder, runs, rows, task, ensemble)
        if not preds:
            return {}
        n = len(next(iter(preds.values()))[0][1])
        draws = Resamples(n, cfg.bootstrap_resamples, cfg.bootstrap_seed)
        samples, points = {}, {}
        for lab, per_run in preds.items():
            parts = [np.mean([weighted_primary(task, y, p, w, t) for y, p, t in per_run], axis=0) for w in draws]
            samples[lab] = np.concatenate(parts)
            points[lab] = float(np.mean([weighted_primary(task, y, p, np.ones((1, n)), t)[0] for y, p, t in per_run]))
            out["intervals"][lab] = {"val": {head: list(percentile_interval(samples[lab], cfg.alpha))}}
        out.update(method="bootstrap", resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed, rows=n)
        best = max((m for m in models if m in points), key=lambda m: sign * points[m])
        for lab in points:
            if lab != best:
                d = paired_difference(samples[lab], samples[best], points[lab], points[best], cfg.alpha)
                comps.append({"label": lab, "metric": head, "difference": d["difference"], "low": d["low"],
                              "high": d["high"], "p": d["p"]})
        on = f"these {n} val rows"
    for c, p in zip(comps, holm([c["p"] for c in comps], cfg.alpha)):
        c["p_holm"] = p
    out["best"] = best
    out["comparisons"] = comps
    out["group"] = [best] + [c["label"] for c in comps if c["p_holm"] is None or c["p_holm"] >= cfg.alpha]
    out["verdict"] = verdict(best, comps, "p_holm", rows, cfg.alpha, on, greater_is_better(head))
    return out


def _apply(rows: list[dict], stats: dict, task: str) -> None:
    head = primary(task)
    by = {r["label"]: r for r in rows}
    group = set(stats.get("group") or [])
    for r in rows:
        lo, hi = ((stats.get("intervals") or {}).get(r["label"], {}).get("val", {}).get(head) or [None, None])
        r[f"val_{head}_low"], r[f"val_{head}_high"] = lo, hi
        r["not_separable_from_best"] = (r["label"] in group) if group else None
        r["is_best"] = r["label"] == stats.get("best")
    for c in stats.get("comparisons") or []:
        by[c["label"]].update({f"delta_{head}": c["difference"], f"delta_{head}_low": c["low"],
                               f"delta_{head}_high": c["high"], "p": c["p"], "p_holm": c["p_holm"]})


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return ""
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _table(rows: list[dict], task: str, has_test: bool):
    """The results table (DataFrame of display strings): every val metric of the task, the primary one with its
    spread and interval, the difference to the best and its Holm-adjusted p, test primary metric, cost."""
    import pandas as pd
    head = primary(task)
    out = []
    for r in rows:
        v = r.get(f"val_{head}")
        cell = "failed" if v is None else f"{v:.4f}"
        if v is not None and (r["runs"] > 1 or r.get("folds")) and r.get(f"val_{head}_std") is not None:
            cell += f" ± {r[f'val_{head}_std']:.4f}"
        if r.get(f"val_{head}_low") is not None:
            cell += f" [{r[f'val_{head}_low']:.3f}, {r[f'val_{head}_high']:.3f}]"
        d = r.get(f"delta_{head}")
        p = r.get("p_holm")
        cells = {"model": r["label"], f"val {DISPLAY[head]}": cell,
                 f"Δ {DISPLAY[head]} vs best": ("best" if r.get("is_best") else "") if d is None else f"{d:+.4f}",
                 "p (Holm)": "" if p is None else (("< 0.001" if p < 0.001 else f"{p:.2g}")
                                                   + ("" if r.get("not_separable_from_best") else " *"))}
        for k in METRICS[task]:
            if k != head:
                cells[DISPLAY[k]] = _fmt(r.get(f"val_{k}"))
        if has_test:
            cells[f"test {DISPLAY[head]}"] = _fmt(r.get(f"test_{head}"))
        cells.update({"train time": "" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f} s",
                      "train memory": "" if r.get("peak_memory_mb") is None else f"{r['peak_memory_mb']:.0f} MB",
                      "predict rows/s": _fmt(r.get("predict_rows_per_second"), 0),
                      "trainable": "" if r.get("trainable_pct") is None else f"{r['trainable_pct']:.3g}%"})
        out.append(cells)
    return pd.DataFrame(out)


def _per_label_table(detail: dict):
    import pandas as pd
    return pd.DataFrame([{"label": n, "precision": _fmt(m["precision"]), "recall": _fmt(m["recall"]),
                          "F1": _fmt(m["f1"]), "support": str(m["support"]), "ROC-AUC": _fmt(m["roc_auc"], 3),
                          "PR-AUC": _fmt(m["pr_auc"], 3), "threshold": _fmt(m["threshold"], 3)}
                         for n, m in detail["per_label"].items()])


def _figures(rows: list[dict], preds: dict[str, list], task: str) -> dict[str, bytes]:
    """regression: predicted_vs_true.png and residuals.png (val, first run of each model); multi_label:
    per_label_f1.png (val F1 of each label per model, first run)."""
    from matplotlib.figure import Figure
    out: dict[str, bytes] = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
        out[name] = buf.getvalue()
    shown = [(lab, runs[0]) for lab, runs in preds.items()]
    if task == "regression" and shown:
        n = len(shown)
        for name, title in (("predicted_vs_true.png", "Predicted against true (val)"),
                            ("residuals.png", "Residuals against predicted (val)")):
            fig = Figure(figsize=(3.2 * n, 3.2))
            axes = np.atleast_1d(fig.subplots(1, n, sharex=True, sharey=True))
            for ax, (lab, (y, p, _)) in zip(axes, shown):
                y, v = np.asarray(y, dtype=np.float64), p[:, 0]
                if name == "predicted_vs_true.png":
                    ax.scatter(y, v, s=8, alpha=0.6)
                    lo, hi = float(min(y.min(), v.min())), float(max(y.max(), v.max()))
                    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
                    ax.set_xlabel("true")
                    ax.set_ylabel("predicted")
                else:
                    ax.scatter(v, v - y, s=8, alpha=0.6)
                    ax.axhline(0, color="grey", lw=1)
                    ax.set_xlabel("predicted")
                    ax.set_ylabel("predicted - true")
                ax.set_title(lab, fontsize=9)
            fig.suptitle(title, fontsize=10)
            save(fig, name)
    details = [r for r in rows if r.get("detail") and r["detail"].get("per_label")]
    if task == "multi_label" and details:
        names = list(details[0]["detail"]["per_label"])
        fig = Figure(figsize=(7, 3.6))
        ax = fig.subplots()
        width = 0.8 / len(details)
        for i, r in enumerate(details):
            ax.bar(np.arange(len(names)) + i * width, [r["detail"]["per_label"][n]["f1"] for n in names], width,
                   label=r["label"])
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=15)
        ax.set_ylabel("val F1")
        ax.set_title("F1 per label (val)")
        ax.legend(fontsize=8)
        save(fig, "per_label_f1.png")
    return out


def build_task_report(folder: Path, runs: list[tuple[Path, RunRecord]], task: str, order: list[str],
                      ensemble: dict | None, ensemble_runs: int, stats_cfg: StatisticsConfig,
                      data: dict | None) -> Path:
    """Write results.csv/json/md, plots/*.png and report.html of a multi_label or regression comparison in
    `folder`; return report.html. `runs`: the comparison's current runs; `order`: labels in config order;
    `ensemble`: ensemble.json as read (None without an ensemble row)."""
    records = [r for _, r in runs]
    rows = task_rows(records, task)
    rows.sort(key=lambda r: order.index(r["label"]) if r["label"] in order else len(order))
    if ensemble:
        rows.append(ensemble_row(ensemble, task, ensemble_runs))
    folded = any(r.get("folds") for r in rows)
    preds = {} if folded else _predictions(folder, runs, rows, task, ensemble)  # read once: statistics and plots
    stats = task_statistics(folder, runs, rows, task, ensemble, stats_cfg, preds)
    _apply(rows, stats, task)
    cols = columns(task)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in cols])
    write_atomic(folder / "results.csv", buf.getvalue())
    public = [{c: r.get(c) for c in cols} for r in rows]
    write_json(folder / "results.json", {
        "task": task, "columns": cols, "models": public, "data": data, "statistics": stats,
        "runs": [{"run_dir": str(p.relative_to(folder)), "label": r.label, "seed": r.seed,
                  **({"fold": r.data["fold"]} if r.data.get("fold") else {}), "status": r.status.value,
                  "metrics": r.metrics, "train_seconds": r.train_seconds, "error": r.error} for p, r in runs]})
    has_test = any(r.get(f"test_{primary(task)}") is not None for r in rows)
    table = _table(rows, task, has_test)
    head = primary(task)
    key = (f"{DISPLAY[head]}: the task's primary metric ({'lower' if not greater_is_better(head) else 'higher'} is "
           "better), mean over a model's runs (± their sample std with several seeds or folds) and its "
           f"{1 - stats_cfg.alpha:.0%} interval ({stats.get('method', 'not computed')}); Δ: difference to the best "
           "model, p: Holm-adjusted; * = separable from the best.")
    if task == "multi_label":
        key += (" Every label decided at probability 0.5 (the per-label tables: at each run's own threshold, "
                "train.threshold); subset accuracy = every label of a row right; Hamming loss = share of wrong "
                "row-label pairs.")
    verdict_text = stats.get("verdict")
    md = [f"# {folder.name}: comparison ({task})", ""] + ([f"**Verdict:** {verdict_text}", ""] if verdict_text else [])
    md += [markdown(table), "", key]
    detailed = [r for r in rows if r.get("detail") and r["detail"].get("per_label")]
    for r in detailed:
        md += ["", f"## {r['label']}: per label (val, seed {r['detail']['seed']})", "", markdown(_per_label_table(r["detail"]))]
    write_atomic(folder / "results.md", "\n".join(md) + "\n")
    models = {r["label"] for r in rows if r["kind"] == "model"}
    figures = _figures(rows, {k: v for k, v in preds.items() if k in models}, task)
    (folder / "plots").mkdir(exist_ok=True)
    for name, png in figures.items():
        write_atomic(folder / "plots" / name, png)
    for old in (folder / "plots").glob("*.png"):
        if old.name not in figures:
            old.unlink()
    top = (f"<h1>{html.escape(folder.name)}</h1><p class='sub'>lorabench comparison ({task}): {len(records)} runs, "
           f"{sum(r['runs'] for r in rows if r['kind'] == 'model')} completed, {sum(r['failed'] for r in rows)} failed</p>")
    if verdict_text:
        top += f"<p class='verdict'><b>Verdict:</b> {html.escape(verdict_text)}</p>"
    frame = f"<div class='scroll'>{table.to_html(index=False, escape=True, border=0)}</div>"
    sections = [("", top), ("Results", frame + f"<p class='sub'>{html.escape(key)}</p>")]
    for name, title in (("predicted_vs_true.png", "Predicted against true"), ("residuals.png", "Residuals"),
                        ("per_label_f1.png", "F1 per label")):
        if name in figures:
            sections.append((title, _img(figures[name], title)))
    for r in detailed:
        sections.append((f"{r['label']}: per label (val)",
                         _per_label_table(r["detail"]).to_html(index=False, escape=True, border=0)))
    if data:
        sections.append(("Data", f"<pre>{html.escape(format_summary(data))}</pre>"))
    failed = [(r["label"], e) for r in rows for e in r.get("errors", [])]
    if failed:
        sections.append(("Failed runs", "<ul>" + "".join(f"<li class='fail'>{html.escape(lab)}: {html.escape(e)}</li>"
                                                         for lab, e in failed) + "</ul>"))
    sections.append(("Environment", f"<pre>{html.escape(json.dumps({'versions': records[0].versions}, indent=1))}</pre>"))
    return write_atomic(folder / "report.html", _html(f"{folder.name} — lorabench", sections))
