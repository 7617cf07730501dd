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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lorabench.errors import ConfigError
from lorabench.runs.record import RunRecord

ConfigLike = Any  # a YAML path (str or Path), a dict of sections, or a config object


def load_config(config: ConfigLike, kind: type | None = None, overrides: list[str] | None = None) -> Any:
    """A validated config object of `kind` (ExperimentConfig by default) from a YAML path, a dict of
    sections or a config object. `overrides`: `["train.epochs=1", ...]` as `--set`. Raises `ConfigError`."""
    from lorabench.config import ExperimentConfig, apply_overrides, from_dict
    from lorabench.config import load_config as load_yaml_config
    from lorabench.config import resolve_paths, to_dict
    kind = kind or ExperimentConfig
    if isinstance(config, (str, Path)):
        return load_yaml_config(kind, config, overrides or [])
    if isinstance(config, dict):
        raw = apply_overrides(config, overrides or [])
        return from_dict(kind, resolve_paths(raw, Path.cwd()))
    if isinstance(config, kind):
        return from_dict(kind, apply_overrides(to_dict(config), overrides or [])) if overrides else config
    raise ConfigError(f"config: expected a YAML path, a dict or a {kind.__name__}, got {type(config).__name__}")


def train(config: ConfigLike, output_dir: str | Path | None = None) -> RunRecord:
    """Fine-tune one model (`lorabench train`): returns its record; the run folder is `record.run_dir`
    (default `runs/<name>/<label>-<time>`). Re-running with the same `output_dir` after a crash resumes."""
    from lorabench.config import ExperimentConfig
    from lorabench.pipeline import run_experiment
    from lorabench.quiet import quiet
    from lorabench.runs.layout import default_run_dir
    cfg = load_config(config, ExperimentConfig)
    if cfg.data.folds and cfg.data.fold is None:
        raise ConfigError(f"data.folds: {cfg.data.folds} trains one run per fold: use lorabench.compare (a `models:` "
                          "list), `lorabench train` on the command line, or set data.fold for one fold")
    out = Path(output_dir) if output_dir is not None else default_run_dir(cfg)
    with quiet():
        return RunRecord.from_dict(run_experiment(cfg, out))


def refit(run_dir: str | Path, output_dir: str | Path | None = None) -> RunRecord:
    """Retrain the finished run `run_dir` on its train + val rows with its settings, for the epoch count its
    val evaluation picked (`best_epoch`; a tuned threshold is kept), as `lorabench refit`: returns the refit's
    record (default folder `<run_dir>-refit`). It has no val metrics of its own: `record.extra["refit"]` holds
    `from`, `epochs`, `chosen_by` (the source's val metrics), `train_rows`. Raises `LorabenchError` for a
    folder that is not a finished run, `DataError` when its data changed."""
    from lorabench.pipeline import run_refit
    from lorabench.quiet import quiet
    from lorabench.runs.layout import default_refit_dir
    out = Path(output_dir) if output_dir is not None else default_refit_dir(Path(run_dir))
    with quiet():
        return RunRecord.from_dict(run_refit(run_dir, out))


@dataclass
class Comparison:
    """What `compare` returns. `table`: one row per model (the report's columns: val F1 mean and std over
    seeds, precision, recall, accuracy, test F1, training seconds, peak MB, trainable params...), then the
    ensemble row when there is one (`kind` "ensemble", the others "model"; see `lorabench.ensemble`);
    `records`: every run of the current config; `report_path`: report.html."""
    table: pd.DataFrame
    records: list[RunRecord]
    report_path: Path
    folder: Path


def compare(config: ConfigLike, output_dir: str | Path | None = None, *, force: bool = False) -> Comparison:
    """Train several models on one split and build the report (`lorabench compare`). With `data.folds` every
    model trains on each fold and `table` adds FOLD_COLUMNS (folds, sample std of each metric); with
    `refit: true` the best model is then refit on train + val (`<folder>/refit-<label>`)."""
    import json

    from lorabench.config import CompareConfig
    from lorabench.quiet import quiet
    from lorabench.recipes.compare import run_compare
    from lorabench.reporting.report import CSV_COLUMNS, FOLD_COLUMNS
    cfg = load_config(config, CompareConfig)
    with quiet():
        report = run_compare(cfg, output_dir=str(output_dir) if output_dir is not None else None, force=force)
    folder = report.parent
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    table = pd.DataFrame(results["models"])
    table = table[CSV_COLUMNS + [c for c in FOLD_COLUMNS if c in table.columns]]  # k-fold: + folds and the stds
    records = [RunRecord.read(folder / r["run_dir"]) for r in results["runs"]]
    return Comparison(table=table, records=records, report_path=report, folder=folder)


@dataclass
class SweepResult:
    """What `sweep` returns: every trial (`trials`, one row each: number, state, value, params), the best
    trial's ready-to-train config (`best_config`, a path) and the report."""
    trials: pd.DataFrame
    best_config: Path | None
    report_path: Path
    folder: Path


def sweep(config: ConfigLike, output_dir: str | Path | None = None, *, trials: int | None = None,
          storage: str | None = None, workers: int = 1) -> SweepResult:
    """Hyperparameter search with Optuna (`lorabench sweep`; W&B sweep sections accepted)."""
    from lorabench.config import SweepConfig
    from lorabench.config.space import metric_key, to_distributions, trial_config, validate_space
    from lorabench.quiet import quiet
    from lorabench.recipes.sweep import run_sweep
    cfg = load_config(config, SweepConfig)
    dists, fixed = to_distributions(cfg.sweep.parameters)
    metric_key(cfg.sweep.metric.name)
    trial_config(cfg.base(), fixed)
    validate_space(cfg.base(), dists, fixed)
    if workers != 1 and not isinstance(config, (str, Path)):
        raise ConfigError("sweep: workers > 1 start `lorabench sweep` processes and need the config as a YAML path")
    with quiet():
        report = run_sweep(cfg, config_path=str(config) if isinstance(config, (str, Path)) else "",
                           overrides=[], output_dir=str(output_dir) if output_dir is not None else None,
                           storage=storage, study=None, trials=trials, workers=workers)
    folder = report.parent
    table = pd.read_csv(folder / "trials.csv") if (folder / "trials.csv").is_file() else pd.DataFrame()
    best = folder / "best.yaml"
    return SweepResult(trials=table, best_config=best if best.is_file() else None, report_path=report, folder=folder)


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
        from lorabench.inference.predict import predict_probs
        return _predict(lambda t: predict_probs(self._loaded, t, progress=False, batch_size=batch_size), texts,
                        self.label_names, self.record.data.get("label_values"), self.record.threshold, threshold)


class EnsembleRun:
    """A saved ensemble folder (`<comparison>/ensemble/`, written by `compare`), loaded for prediction with
    `lorabench.load_run(path)`: every member run is held in memory; `predict` averages their probabilities by
    the ensemble's rule (each model's runs first, then the models equally: `lorabench.ensemble.combine`)."""

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
        from lorabench.ensemble import ensemble_probs
        from lorabench.inference.predict import predict_probs

        def probs(t: list[str]):
            return ensemble_probs(self.spec, lambda d: predict_probs(self._loaded[d], t, progress=False,
                                                                     batch_size=batch_size))
        return _predict(probs, texts, self.label_names, self.spec.label_values, self.spec.threshold, threshold)


def _predict(probs_of, texts: list[str] | str, names: list[str], values: list | None, own_threshold: float | None,
             threshold: float | None) -> pd.DataFrame:
    """The prediction frame of `Run.predict` from `probs_of(texts)` ((rows, classes) float64)."""
    import numpy as np

    from lorabench.errors import LorabenchError
    from lorabench.quiet import quiet
    from lorabench.training.metrics import predict_labels
    texts = [texts] if isinstance(texts, str) else list(texts)
    thr = threshold if threshold is not None else own_threshold
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
    from lorabench.ensemble import is_ensemble, read_ensemble
    from lorabench.inference.predict import load_run as _load
    from lorabench.quiet import quiet
    with quiet():
        if is_ensemble(path):
            spec = read_ensemble(path)
            return EnsembleRun(spec, {d: _load(d, merge=merge) for d in spec.run_dirs})
        return Run(_load(path, merge=merge))
