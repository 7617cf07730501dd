"""`lorabench train` / `lorabench.train`: one experiment into one run folder, and with `refit` its refit on train +
val; with `data.folds` (and no `data.fold`) every fold (`recipes.kfold` does the same through `kfold`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lorabench import distributed
from lorabench.config.schema import CompareConfig, ExperimentConfig
from lorabench.config.tasks import primary
from lorabench.data.splits import load_splits
from lorabench.errors import LorabenchError
from lorabench.pipeline.comparison import Comparison, run_comparison
from lorabench.pipeline.refit import plan_refit, reusable_refit
from lorabench.pipeline.run import reusable_run, run_experiment
from lorabench.runs.layout import default_refit_dir, default_run_dir
from lorabench.runs.record import RunRecord


@dataclass
class Experiment:
    """What `train` produced: `record` of the run in `folder`, and with refit the refit's record in `refit_folder`.
    With data.folds: `folds`, the k-fold comparison (one row for the model, mean ± std over the folds), and
    `record` is None."""
    folder: Path
    record: RunRecord | None = None
    refit: RunRecord | None = None
    refit_folder: Path | None = None
    folds: Comparison | None = None


def train(cfg: ExperimentConfig, output_dir: str | Path | None = None, *, refit: bool = False) -> Experiment:
    """Train `cfg` into `output_dir` (default `runs/<name>/<label>-<time>`; the same folder again resumes a killed
    run or reuses a finished one when refitting), then with `refit` retrain on train + val into
    `<output_dir>-refit` for the epoch count val picked. With `data.folds` and no `data.fold`, every fold is a run
    under `output_dir` (`kfold`). Raises `LorabenchError` (config, data, an existing folder of another config)."""
    out = Path(output_dir) if output_dir is not None else default_run_dir(cfg)
    if cfg.data.folds and cfg.data.fold is None:
        return Experiment(folder=out, folds=kfold(cfg, out, refit=refit))
    rec = None
    if refit:  # the same `train --refit` again: the finished validated run is reused, the refit resumes
        rec = reusable_run(out, cfg, load_splits(cfg.data).fingerprint)
    rec = RunRecord.from_dict(rec or run_experiment(cfg, out))
    if not refit:
        return Experiment(folder=out, record=rec)
    target, plan = default_refit_dir(out), plan_refit([out])
    done = reusable_refit(target, plan) or run_experiment(plan.cfg, target, splits=plan.splits,
                                                          extra={"refit": plan.info})
    return Experiment(folder=out, record=rec, refit=RunRecord.from_dict(done), refit_folder=target)


def kfold(cfg: ExperimentConfig, output_dir: str | Path, *, refit: bool = False) -> Comparison:
    """Every fold of `cfg`'s `data.folds` as an ordinary run folder under `output_dir`: a comparison of this one
    model (folds.json, results, report), whose table row is the mean ± sample std over the folds; with `refit`
    the model is then refit on all its rows. Raises `LorabenchError` when every fold failed."""
    result = run_comparison(dataclasses.replace(CompareConfig.from_experiment(cfg), refit=refit), output_dir=output_dir)
    head = "val_" + primary(next((r.data.get("task") for r in result.records if r.data), None))
    if distributed.is_main() and (not len(result.table) or pd.isna(result.table.iloc[0][head])):
        errors = [r.error for r in result.records if r.error]
        raise LorabenchError(f"{cfg.label or cfg.model.name}: every fold failed ({errors[0] if errors else ''}); "
                             f"see {output_dir}")
    return result
