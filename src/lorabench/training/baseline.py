"""The non-neural baseline `tfidf-logreg`: does this task need a transformer at all?
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lorabench.config.schema import ExperimentConfig
from lorabench.data.splits import Splits
from lorabench.evaluation.calibration import apply_temperature, calibration_for
from lorabench.evaluation.metrics import classification_metrics, predict_labels, split_evaluation, tune_threshold
from lorabench.runs.files import write_json
from lorabench.runs.predictions import save_predictions
from lorabench.runs.resources import PeakMemory

VECTORIZER = dict(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
WEIGHTS_FILE = "tfidf_logreg.safetensors"   # idf (n_features,), coef (1 or k, n_features), intercept, classes
VOCAB_FILE = "tfidf_logreg.json"            # {"vectorizer": settings, "vocabulary": {term: column}}


def save_baseline(clf, out: Path) -> None:
    """Write a fitted pipeline as safetensors + JSON (no pickle: loading it runs no code)."""
    from safetensors.numpy import save_file

    vec, lr = clf[0], clf[-1]
    save_file({"idf": np.ascontiguousarray(vec.idf_), "coef": np.ascontiguousarray(lr.coef_),
               "intercept": np.ascontiguousarray(lr.intercept_), "classes": np.asarray(lr.classes_, dtype=np.int64)},
              str(out / WEIGHTS_FILE))
    write_json(out / VOCAB_FILE, {"vectorizer": VECTORIZER, "vocabulary": {k: int(v) for k, v in vec.vocabulary_.items()}})


def load_baseline(run_dir: Path):
    """The pipeline `save_baseline` wrote, rebuilt from safetensors + JSON; `predict_proba` as at training."""
    import json

    from safetensors.numpy import load_file
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    meta = json.loads((run_dir / VOCAB_FILE).read_text(encoding="utf-8"))
    w = load_file(str(run_dir / WEIGHTS_FILE))
    settings = {**meta["vectorizer"], "ngram_range": tuple(meta["vectorizer"]["ngram_range"])}
    vec = TfidfVectorizer(**settings, vocabulary=meta["vocabulary"])
    vec.idf_ = w["idf"]
    lr = LogisticRegression()
    lr.coef_, lr.intercept_, lr.classes_ = w["coef"], w["intercept"], w["classes"]
    return make_pipeline(vec, lr)


def run_tfidf_logreg(cfg: ExperimentConfig, splits: Splits, out: Path, temperature: float | None = None) -> dict:
    """Word 1-2-gram TF-IDF + class-weighted logistic regression; same record fields as a transformer (with
    train.calibration temperature: fitted on val, or `temperature` for a refit, which has no val rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    weights = splits.class_weights
    clf = make_pipeline(
        TfidfVectorizer(**VECTORIZER),
        LogisticRegression(C=1.0, max_iter=2000, random_state=cfg.train.seed,
                           class_weight={i: w for i, w in enumerate(weights)} if weights else None),
    )
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        clf.fit(splits.train.texts, splits.train.labels)
        seconds = time.perf_counter() - t0
    k = splits.num_labels
    has_val = len(splits.val) > 0  # a refit (train = train + val) has none
    val_probs = clf.predict_proba(splits.val.texts) if has_val else None
    test_probs = clf.predict_proba(splits.test.texts) if splits.test is not None and splits.test.labelled else None
    calibration = calibration_for(cfg.train.calibration, splits.val.labels, val_probs, fixed=temperature)
    if calibration:  # as for a transformer (training.trainer): calibrated before the threshold is tuned
        val_probs, test_probs = (None if p is None else apply_temperature(p, calibration["temperature"])
                                 for p in (val_probs, test_probs))
    metrics = {"val": classification_metrics(np.asarray(splits.val.labels), predict_labels(val_probs), k)} \
        if has_val else {}
    threshold = None
    if cfg.train.threshold == "tune" and k == 2 and has_val:
        threshold, _ = tune_threshold(np.asarray(splits.val.labels), val_probs)
    elif cfg.train.threshold not in (0.5, "tune") and k == 2:
        threshold = float(cfg.train.threshold)
    if threshold is not None and has_val:
        metrics["val_at_threshold"] = classification_metrics(
            np.asarray(splits.val.labels), predict_labels(val_probs, threshold), 2)
    if test_probs is not None:
        metrics["test"] = classification_metrics(np.asarray(splits.test.labels), predict_labels(test_probs), k)
        if threshold is not None:
            metrics["test_at_threshold"] = classification_metrics(
                np.asarray(splits.test.labels), predict_labels(test_probs, threshold), 2)
    evaluation = {"val": split_evaluation(splits.val.labels, val_probs, splits.label_names, threshold)} if has_val else {}
    if "test" in metrics:
        evaluation["test"] = split_evaluation(splits.test.labels, test_probs, splits.label_names, threshold)
    save_baseline(clf, out)
    predictions = save_predictions(out, splits, {"val": val_probs, "test": test_probs if "test" in metrics else None},
                                   threshold)  # per-row probabilities (what an ensemble averages)
    n_features = len(clf[0].vocabulary_)
    n_params = int(clf[-1].coef_.size + clf[-1].intercept_.size)
    return {
        "model": {"name": "tfidf-logreg", "kind": "tfidf-logreg", "source": "scikit-learn",
                  "source_kind": "baseline", "architecture": "tfidf+logistic-regression",
                  "finetune": "full", "n_features": n_features},
        "metrics": metrics,
        "evaluation": evaluation,
        "threshold": threshold,
        "calibration": calibration,
        "predictions": predictions,
        "history": [],
        "train_seconds": round(seconds, 3),
        "pure_train_seconds": round(seconds, 3),
        "peak_memory_mb": peak.result["mb"],
        "peak_memory": peak.result,
        "params": {"trainable": n_params, "total": n_params, "trainable_pct": 100.0},
        "throughput": {"train_samples_per_second": round(len(splits.train) / seconds, 1) if seconds else None},
    }
