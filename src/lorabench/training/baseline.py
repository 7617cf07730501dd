"""The non-neural baseline `tfidf-logreg`: does this task need a transformer at all?

single_label: TF-IDF + class-weighted logistic regression; multi_label: one-vs-rest (scikit-learn's
`OneVsRestClassifier`, a logistic regression per label, each balanced over its own positives and negatives with
`class_weights: balanced`); regression: TF-IDF + ridge regression.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lorabench.config.schema import ExperimentConfig
from lorabench.data.splits import Splits
from lorabench.evaluation.calibration import apply_temperature, calibration_for
from lorabench.evaluation.metrics import classification_metrics, predict_labels, split_evaluation, tune_threshold
from lorabench.evaluation.tasks import label_array, score, sigmoid
from lorabench.runs.files import write_json
from lorabench.runs.predictions import save_predictions
from lorabench.runs.resources import PeakMemory
from lorabench.training.trainer import EvalOutput, TrainResult, decide_and_score

VECTORIZER = dict(ngram_range=(1, 2), min_df=2, sublinear_tf=True, lowercase=True)
WEIGHTS_FILE = "tfidf_logreg.safetensors"   # idf (n_features,), coef (1 or k, n_features), intercept, classes
VOCAB_FILE = "tfidf_logreg.json"            # {"vectorizer": settings, "vocabulary": {term: column}}


def _linear(clf, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef (k or 1, n_features), intercept, classes) of the fitted estimator at the end of `clf`."""
    est = clf[-1]
    if task == "multi_label":  # OneVsRestClassifier: one logistic regression per label
        coef = np.vstack([e.coef_ for e in est.estimators_])
        return coef, np.concatenate([e.intercept_ for e in est.estimators_]), np.arange(len(est.estimators_))
    if task == "regression":
        return np.atleast_2d(est.coef_), np.atleast_1d(np.asarray(est.intercept_, dtype=np.float64)), np.zeros(1)
    return est.coef_, est.intercept_, np.asarray(est.classes_)


def save_baseline(clf, out: Path, task: str = "single_label") -> None:
    """Write a fitted pipeline as safetensors + JSON (no pickle: loading it runs no code)."""
    from safetensors.numpy import save_file

    vec = clf[0]
    coef, intercept, classes = _linear(clf, task)
    save_file({"idf": np.ascontiguousarray(vec.idf_), "coef": np.ascontiguousarray(coef, dtype=np.float64),
               "intercept": np.ascontiguousarray(intercept, dtype=np.float64),
               "classes": np.asarray(classes, dtype=np.int64)}, str(out / WEIGHTS_FILE))
    write_json(out / VOCAB_FILE, {"vectorizer": VECTORIZER, "task": task,
                                  "vocabulary": {k: int(v) for k, v in vec.vocabulary_.items()}})


class LinearOutputs:
    """A saved multi_label or regression baseline: TF-IDF features, then `coef @ x + intercept` per label, through
    a sigmoid (multi_label) or as is (regression). `predict_proba(texts)` -> (n, k) float64 outputs, as at
    training."""

    def __init__(self, vec, coef: np.ndarray, intercept: np.ndarray, task: str):
        self.vec, self.coef, self.intercept, self.task = vec, coef, intercept, task

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        z = np.asarray(self.vec.transform(texts) @ self.coef.T, dtype=np.float64) + self.intercept[None, :]
        return sigmoid(z) if self.task == "multi_label" else z


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
    task = meta.get("task", "single_label")
    if task != "single_label":
        return LinearOutputs(vec, w["coef"], w["intercept"], task)
    lr = LogisticRegression()
    lr.coef_, lr.intercept_, lr.classes_ = w["coef"], w["intercept"], w["classes"]
    return make_pipeline(vec, lr)


def _fit_task(cfg: ExperimentConfig, splits: Splits, out: Path, thresholds: list[float] | None = None) -> dict:
    """multi_label (one-vs-rest logistic regression) and regression (ridge) baselines: the same record fields as
    the single_label one and as a transformer."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    task = splits.task
    if task == "multi_label":
        head = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=2000, random_state=cfg.train.seed,
                                                      class_weight="balanced" if splits.class_weights else None))
    else:
        head = Ridge(alpha=1.0)
    clf = make_pipeline(TfidfVectorizer(**VECTORIZER), head)
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        clf.fit(splits.train.texts, label_array(task, splits.train.labels))
        seconds = time.perf_counter() - t0
    save_baseline(clf, out, task)
    model = load_baseline(out)  # the outputs predict will compute, from the saved weights
    has_val = len(splits.val) > 0
    res = TrainResult()
    if has_val:
        p = model.predict_proba(splits.val.texts)
        res.val = EvalOutput(score(task, splits.val.labels, p, splits.num_labels), p)
    if splits.test is not None and splits.test.labelled:
        p = model.predict_proba(splits.test.texts)
        res.test = EvalOutput(score(task, splits.test.labels, p, splits.num_labels), p)
    decide_and_score(res, splits, cfg.train.threshold, has_val, thresholds)
    metrics = {"val": res.val.metrics} if has_val else {}
    if res.test is not None:
        metrics["test"] = res.test.metrics
    if res.val_at_threshold:
        metrics["val_at_threshold"] = res.val_at_threshold
    if res.test_at_threshold:
        metrics["test_at_threshold"] = res.test_at_threshold
    predictions = save_predictions(out, splits, {"val": res.val.probs if has_val else None,
                                                 "test": res.test.probs if res.test is not None else None},
                                   res.threshold)
    coef, intercept, _ = _linear(clf, task)
    n_params = int(coef.size + intercept.size)
    return _record("tfidf+one-vs-rest-logistic-regression" if task == "multi_label" else "tfidf+ridge",
                   len(clf[0].vocabulary_), n_params, seconds, peak.result, len(splits.train),
                   metrics=metrics, threshold=res.threshold, calibration=None, predictions=predictions,
                   evaluation={k: v for k, v in (("val", res.val_detail), ("test", res.test_detail)) if v is not None})


def _record(architecture: str, n_features: int, n_params: int, seconds: float, peak: dict, train_rows: int,
            **scored) -> dict:
    """The baseline's run record fields (those of a transformer run): `scored` holds metrics, evaluation,
    threshold, calibration and predictions; `seconds` the fit's wall time (s), `peak` the PeakMemory result."""
    return {
        "model": {"name": "tfidf-logreg", "kind": "tfidf-logreg", "source": "scikit-learn", "source_kind": "baseline",
                  "architecture": architecture, "finetune": "full", "n_features": n_features},
        **scored,
        "history": [],
        "train_seconds": round(seconds, 3),
        "pure_train_seconds": round(seconds, 3),
        "peak_memory_mb": peak["mb"],
        "peak_memory": peak,
        "params": {"trainable": n_params, "total": n_params, "trainable_pct": 100.0},
        "throughput": {"train_samples_per_second": round(train_rows / seconds, 1) if seconds else None},
    }


def run_tfidf_logreg(cfg: ExperimentConfig, splits: Splits, out: Path, temperature: float | None = None,
                     thresholds: list[float] | None = None) -> dict:
    """Word 1-2-gram TF-IDF + class-weighted logistic regression (multi_label: one-vs-rest; regression: ridge);
    same record fields as a transformer (with train.calibration temperature: fitted on val, or `temperature` for a
    refit, which has no val rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if splits.task != "single_label":
        return _fit_task(cfg, splits, out, thresholds)
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
    return _record("tfidf+logistic-regression", n_features, n_params, seconds, peak.result, len(splits.train),
                   metrics=metrics, evaluation=evaluation, threshold=threshold, calibration=calibration,
                   predictions=predictions)
