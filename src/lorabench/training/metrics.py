"""Classification metrics from scikit-learn (no network, no reloads per evaluation).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

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
    average = "binary" if num_labels == 2 else "macro"
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average=average, zero_division=0,
                                                 labels=None if average == "binary" else list(range(num_labels)))
    return {"precision": float(p), "recall": float(r), "f1": float(f),
            "accuracy": float(accuracy_score(labels, preds))}


def tune_threshold(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """The P(positive) threshold with the best binary F1 on these rows: (threshold, f1)."""
    candidates = np.unique(np.round(probs[:, 1], 4))
    if len(candidates) > 400:
        candidates = np.quantile(probs[:, 1], np.linspace(0.0, 1.0, 401))
    best_t, best_f = 0.5, -1.0
    for t in candidates:
        f = f1_score(labels, (probs[:, 1] >= t).astype(int), zero_division=0)
        if f > best_f + 1e-12:
            best_t, best_f = float(t), float(f)
    return best_t, best_f
