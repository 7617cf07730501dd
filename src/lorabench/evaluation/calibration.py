"""Calibration: do a model's probabilities mean what they say? Expected calibration error, Brier score, the
reliability curve, and temperature scaling (Guo, Pleiss, Sun and Weinberger 2017, "On calibration of modern neural
networks": one scalar T > 0 fitted on val by log loss; the probabilities become softmax(log p / T), which keeps
the most probable class of every row).
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15  # Guo et al. 2017 use 15 equal-width bins
TEMPERATURE_BOUNDS = (0.05, 20.0)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: rows binned by the probability of their most probable class into `bins` equal-width bins
    over (0, 1]; the sum over bins of (rows in bin / rows) * |accuracy in bin - mean confidence in bin|.
    `labels` (n,) int; `probs` (n, k). 0 is perfectly calibrated."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # bin b holds (b/bins, (b+1)/bins]
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """scikit-learn's `brier_score_loss`: for two classes the mean squared error of P(label id 1), for more the
    mean over rows of the summed squared error over classes. Lower is better."""
    from sklearn.metrics import brier_score_loss

    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    if k == 2:
        return float(brier_score_loss(np.asarray(labels), probs[:, 1]))
    return float(brier_score_loss(np.asarray(labels), probs, labels=list(range(k))))


def reliability_curve(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    """Points of a reliability diagram (scikit-learn's `calibration_curve`, uniform bins): for two classes the
    share of label id 1 against mean P(label id 1); for more, top-label accuracy against top-label confidence.
    Returns {"mean_predicted": [...], "observed": [...], "kind": "positive" | "top-label"}."""
    from sklearn.calibration import calibration_curve

    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape[1] == 2:
        y, p, kind = (labels == 1).astype(int), probs[:, 1], "positive"
    else:
        y, p, kind = (probs.argmax(axis=1) == labels).astype(int), probs.max(axis=1), "top-label"
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    return {"mean_predicted": [round(float(x), 5) for x in predicted], "observed": [round(float(x), 5) for x in observed],
            "kind": kind}


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), (n, k) float64: the same as dividing the logits by T (softmax ignores a shift of the
    logits). T = 1 returns the probabilities unchanged."""
    from scipy.special import softmax

    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float64)
    return softmax(_log_probs(probs) / temperature, axis=1)


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (nats per row)."""
    logp = _log_probs(probs)
    return float(-logp[np.arange(len(labels)), np.asarray(labels, dtype=int)].mean())


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> dict:
    """The temperature T in TEMPERATURE_BOUNDS minimising the log loss of `apply_temperature(probs, T)` on these
    rows (scipy's bounded scalar minimisation over log T). Returns {temperature, log_loss_before, log_loss_after}
    (nats per row); log_loss_after <= log_loss_before (T = 1 is a candidate). `labels` (n,) int; `probs` (n, k)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    y = np.asarray(labels, dtype=int)
    logp = _log_probs(probs)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logp / np.exp(log_t), axis=1)[rows, y].mean())

    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    before = nll(0.0)
    t, after = (float(np.exp(res.x)), float(res.fun)) if res.fun < before else (1.0, before)
    return {"temperature": t, "log_loss_before": before, "log_loss_after": after}


def calibration_for(method: str, val_labels, val_probs: np.ndarray | None, fixed: float | None = None) -> dict | None:
    """What `train.calibration` asks of a finished run: None for `none`; for `temperature` the fit on val
    (`fit_temperature`, plus {"method": "temperature", "fitted_on": "val"}), or, for a run without val rows (a refit),
    the temperature `fixed` it inherits ({"method", "temperature", "fitted_on": "the runs it was refit from"}).
    Raises `ValueError` for a run with neither."""
    if method == "none":
        return None
    if val_probs is not None and len(val_probs):
        return {"method": "temperature", **fit_temperature(np.asarray(val_labels), val_probs), "fitted_on": "val"}
    if fixed is None:
        raise ValueError("train.calibration: temperature is fitted on val rows, and this run has none")
    return {"method": "temperature", "temperature": float(fixed), "fitted_on": "the runs it was refit from"}
