"""Tests of "is model A better than model B?" on the same rows or folds, from statsmodels and scipy.

- `mcnemar_exact`: McNemar's exact test on the rows where two models' correctness differs (Dietterich 1998,
  "Approximate statistical tests for comparing supervised classification learning algorithms"; statsmodels'
  `mcnemar(exact=True)`, a binomial test on the discordant rows).
- `corrected_t_test`: the corrected resampled t-test over paired per-fold scores (Nadeau and Bengio 2003,
  "Inference for the generalization error"; as in Bouckaert and Frank 2004): the variance of the mean difference
  is inflated by n_test/n_train because the folds' training sets overlap; a plain t-test over folds is
  overconfident.
- `holm`: Holm's step-down adjustment of several p-values (statsmodels' `multipletests(method="holm")`).
"""
from __future__ import annotations

import math

import numpy as np


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test of equal error rates. `correct_a`, `correct_b`: (n,) bool, whether each model got each
    row right. Returns {p, a_only, b_only}: the two-sided exact p-value and the counts of rows only A (only B) got
    right. No discordant row: p = 1."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    table = [[int(np.sum(a & b)), a_only], [b_only, int(np.sum(~a & ~b))]]
    p = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"p": min(p, 1.0), "a_only": a_only, "b_only": b_only}


def holm(pvalues: list[float | None], alpha: float = 0.05) -> list[float | None]:
    """Holm-adjusted p-values (same order; None entries kept and not counted as comparisons)."""
    from statsmodels.stats.multitest import multipletests

    present = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if present:
        adjusted = multipletests([pvalues[i] for i in present], alpha=alpha, method="holm")[1]
        for i, p in zip(present, adjusted):
            out[i] = float(p)
    return out


def corrected_t_test(differences: list[float], test_train_ratio: float, alpha: float = 0.05) -> dict:
    """The corrected resampled t-test of mean difference 0 over J paired scores (folds x seeds).

    t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), var with ddof=1, J - 1 degrees of freedom (Nadeau and
    Bengio 2003, eq. for the corrected resampled t; Bouckaert and Frank 2004). `differences` (J,) per-fold
    score differences A - B; `test_train_ratio`: val rows / train rows of a fold. Returns {difference (the mean),
    low, high (the 1 - alpha interval of the mean), p (two-sided), t, df}; J < 2: p and interval None. Zero
    variance: p = 1 for a zero mean, else 0.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    j = len(d)
    mean = float(d.mean()) if j else float("nan")
    if j < 2:
        return {"difference": mean, "low": None, "high": None, "p": None, "t": None, "df": max(j - 1, 0)}
    var = float(d.var(ddof=1))
    se = math.sqrt((1 / j + test_train_ratio) * var)
    if se == 0:
        return {"difference": mean, "low": mean, "high": mean, "p": 1.0 if mean == 0 else 0.0,
                "t": None, "df": j - 1}
    t = mean / se
    half = float(stats.t.ppf(1 - alpha / 2, j - 1)) * se
    return {"difference": mean, "low": mean - half, "high": mean + half,
            "p": float(2 * stats.t.sf(abs(t), j - 1)), "t": float(t), "df": j - 1}


def corrected_t_interval(scores: list[float], test_train_ratio: float, alpha: float = 0.05) -> tuple:
    """The 1 - alpha interval of a k-fold mean score with the corrected variance (`corrected_t_test` of the scores
    against 0, shifted): (low, high), or (None, None) with fewer than two scores."""
    r = corrected_t_test(scores, test_train_ratio, alpha)
    return r["low"], r["high"]
