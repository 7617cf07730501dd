"""Bootstrap over rows: the same resamples for every model, so intervals are comparable and differences paired.

A resample draws n of the n rows with replacement; it is held as per-row counts (how often each row was drawn),
so every metric is a weighted metric of the original rows and one draw serves every model (Koehn 2004, "Statistical
significance tests for machine translation evaluation"; Berg-Kirkpatrick, Burkett and Klein 2012, "An empirical
investigation of statistical significance in NLP"). The metrics are computed for all resamples of a chunk at once
from weighted confusion counts (accuracy, F1, MCC) and weighted rank sums (ROC-AUC, PR-AUC as average precision);
`tests/test_statistics.py` checks each against scikit-learn with `sample_weight` set to the counts. Intervals are
percentile intervals (Efron and Tibshirani 1993, ch. 13).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lorabench.evaluation.metrics import predict_labels

RESAMPLES = 1000  # the default number of resamples (Koehn 2004 uses 1000)
BOOTSTRAP_METRICS = ("f1", "accuracy", "mcc", "roc_auc", "pr_auc")  # roc_auc, pr_auc: two classes only


@dataclass(frozen=True)
class Resamples:
    """`resamples` bootstrap draws of `n` rows, reproducible from `seed`: iterating gives the same count matrices,
    (chunk, n) float64 (how often each row was drawn; each row sums to n), in the same order every time. Every model
    of a comparison is scored on the same draws."""
    n: int
    resamples: int = RESAMPLES
    seed: int = 0
    chunk: int = 100

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.resamples, self.chunk):
            b = min(self.chunk, self.resamples - start)
            idx = rng.integers(0, self.n, size=(b, self.n))
            flat = (idx + np.arange(b)[:, None] * self.n).ravel()
            yield np.bincount(flat, minlength=b * self.n).reshape(b, self.n).astype(np.float64)


def weighted_metrics(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray,
                     metrics: tuple[str, ...] = BOOTSTRAP_METRICS) -> dict[str, np.ndarray]:
    """Each metric under each row weighting. `labels` (n,) int label ids; `probs` (n, k) float; `weights` (b, n)
    non-negative (bootstrap counts; a row of ones gives the plain metric). Decisions at the most probable class.

    Returns {metric: (b,) float64}: `accuracy`; `f1` (binary F1 of label id 1 for k = 2, else macro F1 over all k
    classes, a class never true nor predicted scoring 0, as scikit-learn's zero_division=0); `mcc` (scikit-learn's
    multiclass Matthews correlation, 0 where undefined); for k = 2 `roc_auc` and `pr_auc` (average precision), nan
    in a weighting without both classes. Metrics not defined for k classes are left out.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    k = probs.shape[1]
    pred = predict_labels(probs)
    cells = labels * k + pred
    conf = np.stack([w[:, cells == c].sum(axis=1) for c in range(k * k)], axis=1).reshape(-1, k, k)  # (b, true, pred)
    total = conf.sum(axis=(1, 2))
    tp = np.diagonal(conf, axis1=1, axis2=2)
    true_n, pred_n = conf.sum(axis=2), conf.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "accuracy" in metrics:
            out["accuracy"] = tp.sum(axis=1) / total
        if "f1" in metrics:
            denom = true_n + pred_n
            f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
            out["f1"] = f1[:, 1] if k == 2 else f1.mean(axis=1)
        if "mcc" in metrics:
            c = tp.sum(axis=1)
            cov_tp = c * total - (true_n * pred_n).sum(axis=1)
            cov_pp = total ** 2 - (pred_n ** 2).sum(axis=1)
            cov_tt = total ** 2 - (true_n ** 2).sum(axis=1)
            denom = np.sqrt(cov_pp * cov_tt)
            out["mcc"] = np.where(denom > 0, cov_tp / np.where(denom > 0, denom, 1), 0.0)
        if k == 2 and ("roc_auc" in metrics or "pr_auc" in metrics):
            out.update(_ranked(labels, probs[:, 1], w, metrics))
    return out


def _ranked(labels: np.ndarray, score: np.ndarray, w: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """Weighted ROC-AUC (ties count one half) and average precision (scikit-learn's step rule: the sum over
    distinct thresholds, highest first, of the recall gained times the precision there) for every weighting."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of equal scores, highest first
    pos_w = (w[:, order] * (labels[order] == 1)).astype(np.float64)
    neg_w = w[:, order] - pos_w
    pos_g = np.add.reduceat(pos_w, starts, axis=1)  # (b, groups)
    neg_g = np.add.reduceat(neg_w, starts, axis=1)
    p_total, n_total = pos_g.sum(axis=1), neg_g.sum(axis=1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = (p_total > 0) & (n_total > 0)
        if "roc_auc" in metrics:
            neg_below = n_total[:, None] - np.cumsum(neg_g, axis=1)  # negatives scored lower than the group
            auc = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1) / (p_total * n_total)
            out["roc_auc"] = np.where(defined, auc, np.nan)
        if "pr_auc" in metrics:
            tps, fps = np.cumsum(pos_g, axis=1), np.cumsum(neg_g, axis=1)
            precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
            ap = (pos_g * precision).sum(axis=1) / p_total
            out["pr_auc"] = np.where(defined, ap, np.nan)
    return out


def bootstrap(labels: np.ndarray, runs_probs: list[np.ndarray], resamples: Resamples,
              metrics: tuple[str, ...] = BOOTSTRAP_METRICS) -> dict[str, np.ndarray]:
    """The metrics of one model on every resample: with several runs (seeds) of the model on these rows, their
    mean per resample (the number the table shows is the mean over seeds). `runs_probs`: list of (n, k) arrays;
    returns {metric: (resamples,) float64}."""
    parts: dict[str, list[np.ndarray]] = {}
    for w in resamples:
        per_run = [weighted_metrics(labels, p, w, metrics) for p in runs_probs]
        for m in per_run[0]:
            parts.setdefault(m, []).append(np.mean([r[m] for r in per_run], axis=0))
    return {m: np.concatenate(v) for m, v in parts.items()}


def point(labels: np.ndarray, runs_probs: list[np.ndarray], metrics: tuple[str, ...] = BOOTSTRAP_METRICS) -> dict:
    """The metrics on the rows as they are (every weight 1), averaged over the runs: {metric: float}."""
    ones = np.ones((1, len(labels)))
    per_run = [weighted_metrics(labels, p, ones, metrics) for p in runs_probs]
    return {m: float(np.mean([r[m][0] for r in per_run])) for m in per_run[0]}


def percentile_interval(samples: np.ndarray, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """The (alpha/2, 1 - alpha/2) percentiles of the bootstrap samples (resamples where the metric is undefined left
    out); (None, None) when none is defined."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not len(s):
        return None, None
    lo, hi = np.quantile(s, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, a_point: float, b_point: float,
                      alpha: float = 0.05) -> dict:
    """Model A minus model B on the same resamples: the observed difference, its percentile interval and a
    two-sided p-value for "no difference".

    The p-value shifts the bootstrap distribution of the difference to the null (Berg-Kirkpatrick et al. 2012,
    two-sided): the share of resamples whose difference lies at least |observed| from the observed one, with the
    observed sample counted in ((1 + count) / (1 + resamples), Davison and Hinkley 1997, eq. 4.11), so it is never 0;
    identical predictions give difference 0 and p = 1. `a`, `b`: (resamples,) metric samples. Returns
    {difference, low, high, p}.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    observed = float(a_point - b_point)
    lo, hi = percentile_interval(d, alpha)
    extreme = int(np.sum(np.abs(d - observed) >= abs(observed) - 1e-12))
    return {"difference": observed, "low": lo, "high": hi, "p": (1 + extreme) / (1 + len(d))}
