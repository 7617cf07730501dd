"""Scoring by task (`lorabench.config.tasks`): what a model's outputs mean, how rows are decided, and the metrics.

A model's outputs on n rows are always a (n, k) float64 array, whatever the task:

- single_label: the softmax probability of each of the k classes (a row sums to 1);
- multi_label: the sigmoid probability of each of the k labels (independent);
- regression: k = 1, the predicted number.

Labels as arrays (`label_array`): single_label (n,) int ids; multi_label (n, k) 0/1 ints; regression (n,) float.
Every metric is scikit-learn's (scipy's for the correlations), so a saved predictions file rescored with those
libraries gives the same numbers.
"""
from __future__ import annotations

import math

import numpy as np

from lorabench.config.tasks import METRICS
from lorabench.evaluation.metrics import classification_metrics, predict_labels, softmax, tune_threshold


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, float64, without overflow for large |logits|."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def outputs_from_logits(task: str, logits: np.ndarray) -> np.ndarray:
    """(n, k) logits -> (n, k) float64 outputs: softmax (single_label), sigmoid (multi_label), the value itself
    (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multi_label":
        return sigmoid(logits)
    if task == "regression":
        return logits.reshape(len(logits), -1)
    return softmax(logits)


def label_array(task: str, labels) -> np.ndarray:
    """A split's labels as an array: (n,) int (single_label), (n, k) int (multi_label), (n,) float64
    (regression)."""
    if task == "multi_label":
        return np.asarray([list(y) for y in labels], dtype=int)
    if task == "regression":
        return np.asarray(labels, dtype=np.float64)
    return np.asarray(labels).astype(int)


def thresholds_array(threshold, k: int) -> np.ndarray:
    """multi_label: the decision threshold of each of the k labels ((k,) float64) from one number, a list, or
    None (0.5)."""
    if threshold is None:
        return np.full(k, 0.5)
    if isinstance(threshold, (list, tuple, np.ndarray)):
        return np.asarray(threshold, dtype=np.float64)
    return np.full(k, float(threshold))


def decide(task: str, outputs: np.ndarray, threshold=None) -> np.ndarray:
    """The decision for each row: the label id (single_label: the most probable class, or for two classes
    P(class 1) >= threshold), the 0/1 label set (multi_label: each label's probability >= its threshold, default
    0.5), the value (regression). Returns (n,) int, (n, k) int or (n,) float64."""
    if task == "multi_label":
        return (outputs >= thresholds_array(threshold, outputs.shape[1])[None, :]).astype(int)
    if task == "regression":
        return np.asarray(outputs, dtype=np.float64)[:, 0]
    return predict_labels(outputs, threshold)


def _auc(fn, y: np.ndarray, p: np.ndarray) -> float | None:
    """The macro average of `fn` over the labels whose column holds both classes (None if none does); equals
    scikit-learn's `average="macro"` whenever every label has both."""
    scores = [fn(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(scores)) if scores else None


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def score(task: str, labels, outputs: np.ndarray, num_labels: int, threshold=None) -> dict[str, float | None]:
    """The task's metrics (`config.tasks.METRICS[task]`) of `outputs` (n, k) against `labels` (any form
    `label_array` takes), at `threshold`:

    - single_label: precision, recall, F1 (binary: of label id 1; macro for more classes), accuracy;
    - multi_label: micro / macro / weighted F1, micro precision and recall, subset accuracy (every label of the row
      right), Hamming loss (share of wrong row-label pairs), macro ROC-AUC and PR-AUC (average precision; over the
      labels with both classes in these rows, None if none);
    - regression: RMSE, MAE, R² (scikit-learn), Pearson and Spearman correlation (scipy; None when a side is
      constant).
    """
    if task == "single_label":
        return classification_metrics(label_array(task, labels), decide(task, outputs, threshold), num_labels)
    from sklearn import metrics as m
    y = label_array(task, labels)
    if task == "multi_label":
        pred = decide(task, outputs, threshold)
        out = {f"f1_{avg}": float(m.f1_score(y, pred, average=avg, zero_division=0))
               for avg in ("micro", "macro", "weighted")}
        out["precision_micro"] = float(m.precision_score(y, pred, average="micro", zero_division=0))
        out["recall_micro"] = float(m.recall_score(y, pred, average="micro", zero_division=0))
        out["subset_accuracy"] = float(m.accuracy_score(y, pred))
        out["hamming_loss"] = float(m.hamming_loss(y, pred))
        out["roc_auc_macro"] = _auc(m.roc_auc_score, y, outputs)
        out["pr_auc_macro"] = _auc(m.average_precision_score, y, outputs)
        return {k: out[k] for k in METRICS[task]}
    from scipy import stats
    pred = decide(task, outputs)
    constant = len(y) < 2 or np.ptp(y) == 0 or np.ptp(pred) == 0
    return {"rmse": float(np.sqrt(m.mean_squared_error(y, pred))), "mae": float(m.mean_absolute_error(y, pred)),
            "r2": _finite(m.r2_score(y, pred)) if len(y) > 1 else None,
            "pearson": None if constant else _finite(stats.pearsonr(y, pred).statistic),
            "spearman": None if constant else _finite(stats.spearmanr(y, pred).statistic)}


def tune_thresholds(labels, probs: np.ndarray) -> list[float]:
    """multi_label: each label's F1-best threshold on these rows (`metrics.tune_threshold` on that label alone:
    midway between the best cut and the next lower score), a list of k floats; 0.5 for a label with no positive
    row."""
    y = label_array("multi_label", labels)
    return [tune_threshold(y[:, j], np.stack([1 - probs[:, j], probs[:, j]], axis=1))[0] for j in range(y.shape[1])]


def val_loss(task: str, labels, logits: np.ndarray, weights: list[float] | None, regression_loss: str = "mse") -> float:
    """The training loss over these rows at once (independent of the batch size): multi_label the binary
    cross-entropy with per-label positive weights, averaged over row-label pairs (torch's BCEWithLogitsLoss);
    regression the mean squared error or the Huber loss (delta 1). `logits`: (n, k) float."""
    x = np.asarray(logits, dtype=np.float64)
    if task == "multi_label":
        y = label_array(task, labels).astype(np.float64)
        pw = np.asarray(weights, dtype=np.float64)[None, :] if weights is not None else 1.0
        # -[pw y log s(x) + (1 - y) log(1 - s(x))], with log s(x) = -log(1 + e^-x), log(1 - s(x)) = -log(1 + e^x)
        loss = pw * y * np.logaddexp(0.0, -x) + (1 - y) * np.logaddexp(0.0, x)
        return float(loss.mean()) if loss.size else float("nan")
    y = label_array(task, labels)
    d = x[:, 0] - y
    if regression_loss == "huber":
        a = np.abs(d)
        loss = np.where(a <= 1.0, 0.5 * d * d, a - 0.5)
    else:
        loss = d * d
    return float(loss.mean()) if len(loss) else float("nan")


def detail(task: str, labels, outputs: np.ndarray, names: list[str], threshold=None) -> dict:
    """What a reader needs beyond the headline metrics. multi_label: `per_label` {name: precision, recall, F1,
    support (positive rows), ROC-AUC, PR-AUC, threshold} at the decision `threshold`, and `labels`; regression:
    the residuals' mean, standard deviation and largest absolute value (residual = predicted - true) and the
    target's mean. JSON-ready."""
    y = label_array(task, labels)
    if task == "regression":
        r = decide(task, outputs) - y
        return {"residual_mean": float(r.mean()), "residual_std": float(r.std()),
                "max_abs_residual": float(np.abs(r).max()) if len(r) else None,
                "target_mean": float(y.mean()) if len(y) else None}
    from sklearn import metrics as m
    pred = decide(task, outputs, threshold)
    p, rc, f, sup = m.precision_recall_fscore_support(y, pred, average=None, zero_division=0,
                                                     labels=list(range(len(names))))
    thr = thresholds_array(threshold, len(names))
    per = {}
    for j, n in enumerate(names):
        both = 0 < y[:, j].sum() < len(y)
        per[str(n)] = {"precision": float(p[j]), "recall": float(rc[j]), "f1": float(f[j]), "support": int(sup[j]),
                       "roc_auc": float(m.roc_auc_score(y[:, j], outputs[:, j])) if both else None,
                       "pr_auc": float(m.average_precision_score(y[:, j], outputs[:, j])) if both else None,
                       "threshold": float(thr[j])}
    return {"per_label": per, "labels": [str(n) for n in names], "threshold": threshold}
