"""Is the difference real? Intervals on every headline number, every model against the best, and a verdict.

One split (val, and a labelled test split): a seeded bootstrap over the rows, the same resamples for every model
(`evaluation.bootstrap`): percentile intervals per model and paired differences to the best model with their
p-values; McNemar's exact test on correctness (`evaluation.significance`); both Holm-adjusted across the
comparisons. A model with several seeds is scored by its mean over the seeds on each resample (the number the
table shows). k-fold: the corrected resampled t-test over the folds' paired scores (each fold's score the mean over
seeds) and corrected-t intervals of each model's mean.

The best is the model with the best val F1 (the selection metric), never the ensemble row, whose val score is
optimistic (its members were chosen on the same rows); the ensemble is compared with the best like any model.
The verdict: the models not significantly worse than the best (Holm-adjusted p >= alpha) form a group; among them
the cheapest to run (most predicted rows per second, `inference.serving`) is named with how much cheaper it is.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lorabench.config.schema import StatisticsConfig
from lorabench.evaluation.bootstrap import (
    BOOTSTRAP_METRICS,
    Resamples,
    bootstrap,
    paired_difference,
    percentile_interval,
    point,
)
from lorabench.evaluation.significance import corrected_t_interval, corrected_t_test, holm, mcnemar_exact
from lorabench.reporting.model_predictions import ModelPredictions
from lorabench.runs.record import RunRecord, RunStatus

SELECTION_METRIC = "f1"  # binary F1 of the positive label, macro F1 for more classes: what picks the best model


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def split_statistics(preds: dict[str, ModelPredictions], rows: list[dict], cfg: StatisticsConfig) -> dict:
    """Bootstrap statistics of a single-split comparison. `preds`: {label: ModelPredictions} (config order, the
    ensemble last); `rows`: the report's rows (val_f1 and serving numbers are read from them). Returns the
    `statistics` block of results.json: {method, alpha, resamples, seed, rows, intervals {label: {split: {metric:
    [low, high]}}}, best, comparisons [{label, metric, difference, low, high, p_bootstrap, p_bootstrap_holm,
    p_mcnemar, p_mcnemar_holm, only_this_right, only_best_right}], group, verdict}."""
    labels = list(preds)
    out: dict[str, Any] = {"method": "bootstrap", "alpha": cfg.alpha, "resamples": cfg.bootstrap_resamples,
                           "seed": cfg.bootstrap_seed, "intervals": {}}
    samples: dict[str, dict[str, np.ndarray]] = {}
    points: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        have = [lab for lab in labels if getattr(preds[lab], split)]
        if not have:
            continue
        y = getattr(preds[have[0]], split)[0].labels
        draws = Resamples(len(y), cfg.bootstrap_resamples, cfg.bootstrap_seed)
        for lab in have:
            probs = [p.probs for p in getattr(preds[lab], split)]
            s = bootstrap(y, probs, draws, BOOTSTRAP_METRICS)
            out["intervals"].setdefault(lab, {})[split] = {m: list(percentile_interval(v, cfg.alpha)) for m, v in s.items()}
            if split == "val":
                samples[lab], points[lab] = s, point(y, probs, BOOTSTRAP_METRICS)
        if split == "val":
            out["rows"] = len(y)
    if not points:
        return out
    models = [lab for lab in points if preds[lab].kind == "model"] or list(points)
    best = max(models, key=lambda lab: (points[lab][SELECTION_METRIC], -labels.index(lab)))
    out["best"] = best
    y = preds[best].val[0].labels
    right = {lab: preds[lab].val[0].probs.argmax(axis=1) == y for lab in points}  # first seed's run
    comps = []
    for lab in points:
        if lab == best:
            continue
        d = paired_difference(samples[lab][SELECTION_METRIC], samples[best][SELECTION_METRIC],
                              points[lab][SELECTION_METRIC], points[best][SELECTION_METRIC], cfg.alpha)
        mc = mcnemar_exact(right[lab], right[best])
        comps.append({"label": lab, "metric": SELECTION_METRIC, "difference": d["difference"], "low": d["low"],
                      "high": d["high"], "p_bootstrap": d["p"], "p_mcnemar": mc["p"],
                      "only_this_right": mc["a_only"], "only_best_right": mc["b_only"]})
    for key in ("p_bootstrap", "p_mcnemar"):
        for c, p in zip(comps, holm([c[key] for c in comps], cfg.alpha)):
            c[f"{key}_holm"] = p
    out["comparisons"] = comps
    out["group"] = [best] + [c["label"] for c in comps if c["p_bootstrap_holm"] >= cfg.alpha]
    out["notes"] = [f"{c['label']}: McNemar's test on correctness separates it from {best} (Holm-adjusted p = "
                    f"{_fmt_p(c['p_mcnemar_holm'])}; right on {c['only_this_right']} rows where {best} is wrong, wrong on "
                    f"{c['only_best_right']} where it is right) though F1's paired bootstrap does not (p = "
                    f"{_fmt_p(c['p_bootstrap_holm'])}): they test different things, accuracy of every decision against "
                    "F1 of the positive class; the verdict follows F1"
                    for c in comps if c["p_bootstrap_holm"] >= cfg.alpha and c["p_mcnemar_holm"] < cfg.alpha]
    out["verdict"] = verdict(best, comps, "p_bootstrap_holm", rows, cfg.alpha, f"these {out['rows']} val rows")
    return out


def _fold_scores(records: list[RunRecord], metric: str) -> dict[int, float]:
    """{fold: the mean over seeds of the metric} of one model's completed k-fold runs."""
    per: dict[int, list[float]] = {}
    for r in records:
        v = r.val.get(metric) if metric in r.val else (r.evaluation.get("val") or {}).get(metric)
        if v is not None:
            per.setdefault(r.data.get("fold") or 0, []).append(float(v))
    return {f: float(np.mean(v)) for f, v in per.items()}


def fold_statistics(records: list[RunRecord], rows: list[dict], ensemble: dict | None, cfg: StatisticsConfig) -> dict:
    """Statistics of a k-fold comparison from its run records (and the ensemble's per-fold scores, ensemble.json
    `folds`): corrected-t intervals of each model's mean, the corrected resampled t-test of each model against the
    best over the folds both have, Holm-adjusted; the group and verdict as for one split."""
    by: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.status == RunStatus.COMPLETED and r.refit is None:
            by.setdefault(r.label, []).append(r)
    if not by:
        return {}
    ratios = [r.data["val_rows"] / r.data["train_rows"] for rs in by.values() for r in rs if r.data.get("train_rows")]
    ratio = float(np.mean(ratios)) if ratios else 0.0
    scores = {lab: {m: _fold_scores(rs, m) for m in BOOTSTRAP_METRICS} for lab, rs in by.items()}
    if ensemble and ensemble.get("folds"):
        scores[ensemble["label"]] = {m: {f["fold"]: f["metrics"][m] for f in ensemble["folds"]
                                         if (f.get("metrics") or {}).get(m) is not None} for m in BOOTSTRAP_METRICS}
    order = [r["label"] for r in rows if r["label"] in scores]
    out: dict[str, Any] = {"method": "corrected resampled t-test", "alpha": cfg.alpha, "test_train_ratio": ratio,
                           "folds": max(len(s[SELECTION_METRIC]) for s in scores.values()), "intervals": {}}
    for lab in order:
        out["intervals"][lab] = {"val": {m: list(corrected_t_interval(list(v.values()), ratio, cfg.alpha))
                                         for m, v in scores[lab].items() if v}}
    means = {lab: float(np.mean(list(scores[lab][SELECTION_METRIC].values()))) for lab in order
             if scores[lab][SELECTION_METRIC]}
    if not means:
        return out
    ensemble_label = ensemble.get("label") if ensemble else None
    models = [lab for lab in means if lab != ensemble_label] or list(means)
    best = max(models, key=lambda lab: (means[lab], -order.index(lab)))
    out["best"] = best
    comps = []
    for lab in means:
        if lab == best:
            continue
        mine, theirs = scores[lab][SELECTION_METRIC], scores[best][SELECTION_METRIC]
        common = sorted(set(mine) & set(theirs))
        t = corrected_t_test([mine[f] - theirs[f] for f in common], ratio, cfg.alpha)
        comps.append({"label": lab, "metric": SELECTION_METRIC, "difference": t["difference"], "low": t["low"],
                      "high": t["high"], "p_t_corrected": t["p"], "folds": len(common)})
    for c, p in zip(comps, holm([c["p_t_corrected"] for c in comps], cfg.alpha)):
        c["p_t_corrected_holm"] = p
    out["comparisons"] = comps
    out["group"] = [best] + [c["label"] for c in comps
                             if c["p_t_corrected_holm"] is None or c["p_t_corrected_holm"] >= cfg.alpha]
    out["verdict"] = verdict(best, comps, "p_t_corrected_holm", rows, cfg.alpha, f"{out['folds']} folds")
    return out


def verdict(best: str, comps: list[dict], key: str, rows: list[dict], alpha: float, on: str,
            higher_is_better: bool = True) -> str:
    """One sentence a person can act on: which models cannot be told apart from the best on `on` (e.g. "these
    1523 val rows"), and which of them is cheapest to run (most rows/s predicted) and by how much; and a row that
    scores better than the best beyond chance (only the ensemble can: the best is chosen among the models), with
    the reminder that its score is optimistic."""
    same = [c for c in comps if c[key] is None or c[key] >= alpha]
    sign = 1 if higher_is_better else -1
    above = [c for c in comps if c[key] is not None and c[key] < alpha and sign * c["difference"] > 0]
    extra = "".join(f"; {c['label']} scores better than {best} (p = {_fmt_p(c[key])}), optimistic: its members were "
                    "chosen on these rows" for c in above)
    if not comps:
        return f"{best}: the only model with predictions to compare"
    if not same:
        worst = max(c[key] for c in comps)
        bound = "< 0.001" if worst < 0.001 else f"<= {_fmt_p(worst)}"
        worse = "every other model is worse" if not above else "the others are worse or the ensemble"
        head = f"{best} is the best: {worse} on {on} (Holm-adjusted p {bound}, alpha {alpha:g})"
    else:
        ps = ", ".join(f"{c['label']} (p = {_fmt_p(c[key])})" for c in same)
        head = (f"{best}, {ps}: not separable on {on} (Holm-adjusted p against the best, {best}, alpha {alpha:g})")
    return head + _cost_clause(best, [best] + [c["label"] for c in same], rows) + extra


def _cost_clause(best: str, group: list[str], rows: list[dict]) -> str:
    """`; TF-IDF predicts 400x cheaper (9120 vs 23 rows/s)`: the cheapest of the group against the best; says which
    models' serving cost is unknown (runs from before it was measured, or `train.serving_cost: false`)."""
    speed = {r["label"]: r.get("predict_rows_per_second") for r in rows}
    known = [lab for lab in group if speed.get(lab)]
    unknown = [lab for lab in group if not speed.get(lab)]
    if not known:
        return "; serving cost not measured"
    missing = f" (serving cost not measured for {', '.join(unknown)})" if unknown else ""
    cheapest = max(known, key=lambda lab: speed[lab])
    if cheapest == best:
        return (f"; {best} is also the cheapest to run" if len(group) > 1 else "") + missing
    if not speed.get(best):
        return f"; {cheapest} is the cheapest to run of those measured{missing}"
    factor = speed[cheapest] / speed[best]
    return (f"; {cheapest} predicts {factor:.0f}x cheaper than {best} ({speed[cheapest]:.0f} vs {speed[best]:.0f} "
            f"rows/s)" if factor >= 2 else f"; {cheapest} predicts {factor:.1f}x as many rows/s as {best}") + missing
