"""The Python API: what a notebook calls. Each call leaves the caller's process as it found it
(warning filters, logging levels, progress-bar switches, plotting backend, transformers' attention
registry) and raises `lorabench.errors` exceptions that keep their cause.

    import lorabench
    result = lorabench.compare("examples/quickstart.yaml")
    result.table                 # pandas DataFrame, one row per model
    run = lorabench.load_run(result.records[0].run_dir)
    run.predict(["forest fire near la ronge"])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lorabench.config import (
    CompareConfig,
    ExperimentConfig,
    SweepConfig,
    apply_overrides,
    from_dict,
    resolve_paths,
    to_dict,
)
from lorabench.config import load_config as load_yaml_config
from lorabench.errors import ConfigError, LorabenchError
from lorabench.evaluation.metrics import predict_labels
from lorabench.evaluation.tasks import decide
from lorabench.inference.predict import load_run as _load
from lorabench.inference.predict import predict_probs
from lorabench.pipeline.comparison import Comparison
from lorabench.quiet import quiet
from lorabench.recipes import compare as _compare
from lorabench.recipes import experiment as _experiment
from lorabench.recipes import refit as _refit
from lorabench.recipes.sweep import SweepResult, run_sweep
from lorabench.runs.ensemble import ensemble_probs, is_ensemble, read_ensemble
from lorabench.runs.record import RunRecord

__all__ = ["Comparison", "EnsembleRun", "Run", "SweepResult", "compare", "load_config", "load_run", "refit", "sweep",
           "train"]

ConfigLike = Any  # a YAML path (str or Path), a dict of sections, or a config object


def load_config(config: ConfigLike, kind: type | None = None, overrides: list[str] | None = None) -> Any:
    """A validated config object of `kind` (ExperimentConfig by default) from a YAML path, a dict of
    sections or a config object. `overrides`: `["train.epochs=1", ...]` as `--set`. Raises `ConfigError`."""
    kind = kind or ExperimentConfig
    if isinstance(config, (str, Path)):
        return load_yaml_config(kind, config, overrides or [])
    if isinstance(config, dict):
        raw = apply_overrides(config, overrides or [])
        return from_dict(kind, resolve_paths(raw, Path.cwd()))
    if isinstance(config, kind):
        return from_dict(kind, apply_overrides(to_dict(config), overrides or [])) if overrides else config
    raise ConfigError(f"config: expected a YAML path, a dict or a {kind.__name__}, got {type(config).__name__}")


def train(config: ConfigLike, output_dir: str | Path | None = None) -> RunRecord | Comparison:
    """Fine-tune one model (`lorabench train`): returns its record; the run folder is `record.run_dir`
    (default `runs/<name>/<label>-<time>`). Re-running with the same `output_dir` after a crash resumes. With
    `data.folds` (and no `data.fold`) every fold trains, as `lorabench train` does: returns the k-fold
    `Comparison` of this one model (its row: the mean ± sample std over the folds)."""
    cfg = load_config(config, ExperimentConfig)
    with quiet():
        result = _experiment.train(cfg, output_dir)
    return result.folds if result.folds is not None else result.record


def refit(run_dir: str | Path, output_dir: str | Path | None = None) -> RunRecord:
    """Retrain the finished run `run_dir` on its train + val rows with its settings, for the epoch count its
    val evaluation picked (`best_epoch`; a tuned threshold is kept), as `lorabench refit`: returns the refit's
    record (default folder `<run_dir>-refit`). It has no val metrics of its own: `record.refit` holds
    `from`, `epochs`, `chosen_by` (the source's val metrics), `train_rows`. Raises `LorabenchError` for a
    folder that is not a finished run, `DataError` when its data changed."""
    with quiet():
        return _refit.refit(run_dir, output_dir)[0]


def compare(config: ConfigLike, output_dir: str | Path | None = None, *, force: bool = False) -> Comparison:
    """Train several models on one split and build the report (`lorabench compare`). With `data.folds` every
    model trains on each fold and `table` adds FOLD_COLUMNS (folds, sample std of each metric); with
    `refit: true` the best model is then refit on train + val (`<folder>/refit-<label>`). Runs that fail at run
    time are in `Comparison.failed` (and the table's `failed` column); the others finish."""
    cfg = load_config(config, CompareConfig)
    with quiet():
        return _compare.compare(cfg, output_dir, force=force)


def sweep(config: ConfigLike, output_dir: str | Path | None = None, *, trials: int | None = None,
          storage: str | None = None, workers: int = 1) -> SweepResult:
    """Hyperparameter search with Optuna (`lorabench sweep`; W&B sweep sections accepted)."""
    cfg = load_config(config, SweepConfig)
    if workers != 1 and not isinstance(config, (str, Path)):
        raise ConfigError("sweep: workers > 1 start `lorabench sweep` processes and need the config as a YAML path")
    with quiet():
        return run_sweep(cfg, config_path=str(config) if isinstance(config, (str, Path)) else "", overrides=[],
                         output_dir=str(output_dir) if output_dir is not None else None, storage=storage,
                         study=None, trials=trials, workers=workers)


class Run:
    """A finished run, loaded for prediction (`lorabench.load_run(path)`)."""

    def __init__(self, loaded) -> None:
        self._loaded = loaded
        self.record = RunRecord.from_dict(loaded.record)
        self.path = loaded.run_dir

    @property
    def label_names(self) -> list[str]:
        return list(self._loaded.label_names)

    def predict(self, texts: list[str] | str, *, threshold: float | None = None, batch_size: int = 64) -> pd.DataFrame:
        """One row per text, in order: `label` (the label value, as in the training data), `label_name`,
        `probability` (of that label) and `prob_<name>` per class (floats summing to 1). Binary runs use
        `threshold` on P(positive), else the run's tuned threshold, else argmax. Texts are the model's
        input as-is (a run trained on a template expects text rendered the same way)."""
        return _predict(lambda t: predict_probs(self._loaded, t, progress=False, batch_size=batch_size), texts,
                        self.label_names, self.record.data.get("label_values"), self.record.threshold, threshold,
                        self.record.data.get("task", "single_label"))


class EnsembleRun:
    """A saved ensemble folder (`<comparison>/ensemble/`, written by `compare`), loaded for prediction with
    `lorabench.load_run(path)`: every member run is held in memory; `predict` averages their probabilities by
    the ensemble's rule (each model's runs first, then the models equally: `lorabench.runs.ensemble.combine`)."""

    def __init__(self, spec, loaded: dict) -> None:
        self.spec, self._loaded = spec, loaded
        self.record = spec.record      # ensemble.json as read
        self.path = spec.path

    @property
    def label_names(self) -> list[str]:
        return list(self.spec.label_names)

    @property
    def members(self) -> list[tuple[str, list[Path]]]:
        """(model label, its run folders) of every member."""
        return list(self.spec.members)

    def predict(self, texts: list[str] | str, *, threshold: float | None = None, batch_size: int = 64) -> pd.DataFrame:
        """As `Run.predict`, with the ensemble's probabilities; the decision is the most probable class unless
        `threshold` (binary tasks) is given."""

        def probs(t: list[str]):
            return ensemble_probs(self.spec, lambda d: predict_probs(self._loaded[d], t, progress=False,
                                                                     batch_size=batch_size))
        return _predict(probs, texts, self.label_names, self.spec.label_values, self.spec.threshold, threshold,
                        self.record.get("task", "single_label"))


def _predict(probs_of, texts: list[str] | str, names: list[str], values: list | None, own_threshold: float | None,
             threshold: float | None, task: str = "single_label") -> pd.DataFrame:
    """The prediction frame of `Run.predict` from `probs_of(texts)` ((rows, classes) float64). multi_label:
    `labels` (the label values whose probability reaches their threshold, a list per row) and `prob_<name>` per
    label; regression: `prediction` (the number)."""
    import numpy as np

    texts = [texts] if isinstance(texts, str) else list(texts)
    thr = threshold if threshold is not None else own_threshold
    if task != "single_label":
        if threshold is not None and task == "regression":
            raise LorabenchError("threshold is a decision threshold; this run is a regression")
        with quiet():
            outputs = probs_of(texts)
        if task == "regression":
            return pd.DataFrame({"prediction": outputs[:, 0]})
        decided = decide("multi_label", outputs, thr)
        values = values or list(names)
        frame = pd.DataFrame({"labels": pd.Series([[values[j] for j in np.flatnonzero(r)] for r in decided],
                                                  dtype=object)})
        for j, n in enumerate(names):
            frame[f"prob_{n}"] = outputs[:, j]
        return frame
    if threshold is not None and len(names) != 2:
        raise LorabenchError("threshold applies to binary tasks only")
    with quiet():
        probs = probs_of(texts)
    ids = predict_labels(probs, thr if len(names) == 2 else None)
    values = values or list(range(len(names)))
    out = pd.DataFrame({"label": pd.Series([values[i] for i in ids], dtype=object),
                        "label_name": [names[i] for i in ids],
                        "probability": probs[np.arange(len(ids)), ids]})
    for i, n in enumerate(names):
        out[f"prob_{n}"] = probs[:, i]
    return out


def load_run(path: str | Path, *, merge: bool = True) -> Run | EnsembleRun:
    """Load a finished run folder (base weights + adapter + head, merged by default) for `.predict`; an
    ensemble folder (`ensemble.json`) gives an `EnsembleRun` with every member loaded. Raises `LorabenchError`
    for a folder that is neither, or an ensemble whose members are missing or of other label sets."""
    with quiet():
        if is_ensemble(path):
            spec = read_ensemble(path)
            return EnsembleRun(spec, {d: _load(d, merge=merge) for d in spec.run_dirs})
        return Run(_load(path, merge=merge))
