"""Classification metrics from scikit-learn (no network, no reloads per evaluation). scikit-learn is imported when a
metric is computed, not with this module: `predict` and `serve` (which import it for their decisions) start ~0.6 s
sooner without it.
"""
from __future__ import annotations

import numpy as np

METRICS = ("precision", "recall", "f1", "accuracy")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict_labels(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Argmax, or for two classes P(class 1) >= threshold."""
    if threshold is not None and probs.shape[-1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=-1)


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> dict[str, float]:
    """Precision, recall, F1 (binary for two classes, positive = id 1; macro otherwise), accuracy."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    average = "binary" if num_labels == 2 else "macro"
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average=average, zero_division=0,
                                                 labels=None if average == "binary" else list(range(num_labels)))
    return {"precision": float(p), "recall": float(r), "f1": float(f),
            "accuracy": float(accuracy_score(labels, preds))}


def tune_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """The P(positive) threshold with the best binary F1 on these rows: (threshold, f1).

    One pass over the sorted scores (scikit-learn's `precision_recall_curve`): every distinct score s is a
    candidate cut (`P(positive) >= s` is positive), ties go to the lowest cut. The threshold returned lies
    midway between the best cut and the next lower distinct score (or 0): the same rows are positive, and a
    row whose probability is recomputed later (predict, another device) with rounding noise does not flip.
    `labels`: (rows,) ints in {0, 1}; `probs`: (rows, 2). With no positive row there is nothing to tune:
    (0.5, 0.0).
    """
    from sklearn.metrics import precision_recall_curve
    labels = np.asarray(labels)
    if not (labels == 1).any():
        return 0.5, 0.0
    precision, recall, thresholds = precision_recall_curve(labels, probs[:, 1])
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    i = int(np.argmax(f1))  # thresholds ascend: the first maximum is the lowest threshold
    lower = float(thresholds[i - 1]) if i > 0 else 0.0  # every row positive: midway down to 0
    cut = float(thresholds[i])
    return ((cut + lower) / 2 if lower < cut else cut), float(f1[i])


def evaluation_detail(labels: np.ndarray, probs: np.ndarray, label_names: list[str],
                      threshold: float | None = None, curve_points: int = 200) -> dict:
    """What a reader of one run's results needs beyond F1, on these rows, at the run's decision rule
    (`threshold` for binary tasks, else the most probable class).

    labels: (rows,) int label ids; probs: (rows, classes) float. Returns a JSON-ready dict:
    `per_class` {name: {precision, recall, f1, support}} (scikit-learn's `classification_report`),
    `macro_f1`, `weighted_f1`, `mcc` (Matthews correlation), `confusion_matrix` (rows = true label, columns =
    predicted, in `label_names` order); for two classes also the threshold-free `roc_auc` and `pr_auc`
    (average precision) and `curves` {roc: {fpr, tpr}, pr: {recall, precision}} with at most
    `curve_points` points each. AUCs are None when the rows hold one class only.
    """
    from sklearn.metrics import (
        average_precision_score,
        classification_report,
        confusion_matrix,
        matthews_corrcoef,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )
    labels = np.asarray(labels).astype(int)
    k = len(label_names)
    preds = predict_labels(probs, threshold)
    report = classification_report(labels, preds, labels=list(range(k)), target_names=[str(n) for n in label_names],
                                   output_dict=True, zero_division=0)
    out: dict = {
        "per_class": {str(n): {"precision": report[str(n)]["precision"], "recall": report[str(n)]["recall"],
                               "f1": report[str(n)]["f1-score"], "support": int(report[str(n)]["support"])}
                      for n in label_names},
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "mcc": float(matthews_corrcoef(labels, preds)) if len(labels) else None,
        "confusion_matrix": confusion_matrix(labels, preds, labels=list(range(k))).tolist(),
        "labels": [str(n) for n in label_names],
        "threshold": threshold,
    }
    if k == 2:
        both = len(np.unique(labels)) == 2
        score = probs[:, 1]
        out["roc_auc"] = float(roc_auc_score(labels, score)) if both else None
        out["pr_auc"] = float(average_precision_score(labels, score)) if both else None
        if both:
            fpr, tpr, _ = roc_curve(labels, score)
            prec, rec, _ = precision_recall_curve(labels, score)
            out["curves"] = {"roc": _thin({"fpr": fpr, "tpr": tpr}, curve_points),
                             "pr": _thin({"recall": rec, "precision": prec}, curve_points)}
    return out


def _thin(curve: dict[str, np.ndarray], n: int) -> dict[str, list[float]]:
    """At most `n` points of a curve, first and last kept (for plots; the AUCs use every point)."""
    size = len(next(iter(curve.values())))
    keep = np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(int))
    return {k: [round(float(x), 5) for x in v[keep]] for k, v in curve.items()}


def split_evaluation(labels, probs: np.ndarray, label_names: list[str], threshold: float | None = None) -> dict:
    """`evaluation_detail` by the same rule as a split's `metrics` (the most probable class), so one report row
    agrees with itself; with a binary decision threshold also the detail at that threshold, under
    `at_threshold` (without curves: they do not depend on it)."""
    y = np.asarray(labels)
    out = evaluation_detail(y, probs, label_names)
    if threshold is not None and len(label_names) == 2:
        out["at_threshold"] = evaluation_detail(y, probs, label_names, threshold)
        out["at_threshold"].pop("curves", None)
    return out
