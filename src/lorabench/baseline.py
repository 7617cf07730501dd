"""The non-neural baseline `tfidf-logreg`: does this task need a transformer at all?"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import ExperimentConfig
from .data import Splits
from .metrics import classification_metrics, predict_labels, tune_threshold
from .resources import PeakMemory


def run_tfidf_logreg(cfg: ExperimentConfig, splits: Splits, out: Path) -> dict:
    """Word 1-2-gram TF-IDF + class-weighted logistic regression; same record fields as a transformer."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    weights = splits.class_weights
    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True),
        LogisticRegression(C=1.0, max_iter=2000, random_state=cfg.train.seed,
                           class_weight={i: w for i, w in enumerate(weights)} if weights else None),
    )
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        clf.fit(splits.train.texts, splits.train.labels)
        seconds = time.perf_counter() - t0
    k = splits.num_labels
    val_probs = clf.predict_proba(splits.val.texts)
    metrics = {"val": classification_metrics(np.asarray(splits.val.labels), predict_labels(val_probs), k)}
    threshold = None
    if cfg.train.threshold == "tune" and k == 2:
        threshold, _ = tune_threshold(np.asarray(splits.val.labels), val_probs)
        metrics["val_at_threshold"] = classification_metrics(
            np.asarray(splits.val.labels), predict_labels(val_probs, threshold), 2)
    if splits.test is not None and splits.test.labelled:
        test_probs = clf.predict_proba(splits.test.texts)
        metrics["test"] = classification_metrics(np.asarray(splits.test.labels), predict_labels(test_probs), k)
    joblib.dump(clf, out / "model.joblib")
    n_features = len(clf[0].vocabulary_)
    n_params = int(clf[-1].coef_.size + clf[-1].intercept_.size)
    return {
        "model": {"name": "tfidf-logreg", "kind": "tfidf-logreg", "source": "scikit-learn",
                  "source_kind": "baseline", "architecture": "tfidf+logistic-regression",
                  "finetune": "full", "n_features": n_features},
        "metrics": metrics,
        "threshold": threshold,
        "history": [],
        "train_seconds": round(seconds, 3),
        "pure_train_seconds": round(seconds, 3),
        "peak_memory_mb": peak.result["mb"],
        "peak_memory": peak.result,
        "params": {"trainable": n_params, "total": n_params, "trainable_pct": 100.0},
        "throughput": {"train_samples_per_second": round(len(splits.train) / seconds, 1) if seconds else None},
    }
