"""Refit: retrain a finished run (or every seed/fold run of one model) on its train + val rows, for the epoch count
val picked, as an ordinary run folder (`pipeline.run.run_experiment`)."""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from lorabench.config.loading import from_dict
from lorabench.config.schema import ExperimentConfig
from lorabench.config.tasks import METRICS as TASK_METRICS
from lorabench.config.tasks import primary
from lorabench.data.splits import load_splits, refit_splits
from lorabench.data.types import Splits
from lorabench.errors import DataError, LorabenchError
from lorabench.pipeline.run import first_difference, reusable_run, run_experiment
from lorabench.runs.files import not_a_run, read_run


@dataclasses.dataclass
class RefitPlan:
    """What a refit trains: `cfg` (the source's config with train.epochs = the chosen epoch count, no early
    stopping, max_steps null and a tuned threshold fixed to its value), `splits` (train = the source's train +
    val rows, no val) and `info` (the record's `refit` block)."""
    cfg: ExperimentConfig
    splits: Splits
    info: dict


def plan_refit(sources: list[str | Path]) -> RefitPlan:
    """The refit of the finished run(s) `sources` (one run, or every seed/fold run of one model): its config
    is the first run's. Epochs: the run's `best_epoch`, for several runs the lower median of theirs (an epoch
    count some run picked); a TF-IDF baseline has none. A run that tuned its threshold (`train.threshold:
    tune`) passes it on (several: the median). Raises `LorabenchError` for a folder that is not a finished
    run (or is itself a refit), runs of different settings, and `DataError` when the data changed since."""
    recs = [(Path(d), _finished_source(Path(d))) for d in sources]
    if not recs:
        raise LorabenchError("refit: no run to refit")
    first_dir, first = recs[0]
    cfg = from_dict(ExperimentConfig, first["config"], "config")
    same = _without_seed_and_fold(first["config"])
    for d, rec in recs[1:]:
        key = first_difference(same, _without_seed_and_fold(rec["config"]))
        if key:
            raise LorabenchError(f"refit: {d} differs from {first_dir} in {key}; refit runs of one model's settings")
    splits = load_splits(cfg.data)
    if splits.fingerprint != first["data"].get("fingerprint"):
        raise DataError(f"refit: the data of {first_dir} changed since it ran (fingerprint {first['data'].get('fingerprint')} "
                        f"then, {splits.fingerprint} now); the refit would not train on the rows it was chosen on")
    train = {"early_stopping_patience": None, "max_steps": None}
    epochs, best = None, [rec.get("best_epoch") for _, rec in recs]
    if cfg.model.kind == "transformer":
        missing = [d for (d, _), b in zip(recs, best) if b is None]
        if missing:
            raise LorabenchError(f"refit: {missing[0]} records no best_epoch (no val evaluation to pick an epoch count)")
        epochs = statistics.median_low(best)
        train["epochs"] = epochs
    used = first.get("batch")  # train.batch_size auto: the batch and learning rate the chosen run trained with,
    kept_batch = None
    if cfg.train.batch_size == "auto" and used:  # not the ones auto would pick for the larger refit split
        train.update(batch_size=used["batch_size"], learning_rate=used["learning_rate"])
        kept_batch = {"batch_size": used["batch_size"], "learning_rate": used["learning_rate"],
                      "rule": f"kept from {first_dir.name} (train.batch_size auto there: {used.get('rule')})"}
    task = splits.task
    tuned = [rec["threshold"] for _, rec in recs if rec.get("threshold") is not None]
    threshold = None
    if task == "multi_label" and cfg.train.threshold == "tune":  # no val rows to tune on: each label's median
        if len(tuned) != len(recs):
            raise LorabenchError("refit: a source run of train.threshold: tune records no thresholds; re-run it")
        threshold = [statistics.median(t[j] for t in tuned) for j in range(len(tuned[0]))]
    elif task == "multi_label":
        threshold = cfg.train.threshold if cfg.train.threshold != 0.5 else None
    elif cfg.train.threshold == "tune" and tuned:
        threshold = statistics.median(tuned)
        train["threshold"] = threshold
    elif cfg.train.threshold != "tune":
        threshold = cfg.train.threshold if cfg.train.threshold != 0.5 else None
    refit_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    data = refit_splits(splits, cfg.data)
    vals = [rec["metrics"]["val"] for _, rec in recs]
    head = primary(task)
    chosen = {"split": "val", "runs": len(vals),
              **{k: statistics.fmean(v[k] for v in vals) for k in TASK_METRICS[task] if all(v.get(k) is not None
                                                                                          for v in vals)}}
    if len(vals) > 1:
        chosen[f"{head}_std"] = statistics.stdev(v[head] for v in vals)  # sample std (ddof=1)
    rule = (None if epochs is None else "the run's best epoch" if len(recs) == 1 else
            f"the lower median of the best epochs of {len(recs)} runs")
    info = {"from": str(first_dir), "runs": [str(d) for d, _ in recs], "epochs": epochs, "epochs_rule": rule,
            "best_epochs": best if epochs is not None else None,
            "epoch_metric": cfg.train.metric_for_best_model if epochs is not None else None,
            "chosen_by": chosen, "train_rows": len(data.train), "source_train_rows": len(splits.train),
            "source_val_rows": len(splits.val),
            "threshold": None if threshold is None else {
                "value": threshold, "from": "tuned on val by the source run(s)" if cfg.train.threshold == "tune"
                else "train.threshold"}}
    if kept_batch:
        info["batch"] = kept_batch
    temperatures = [(rec.get("calibration") or {}).get("temperature") for _, rec in recs]
    if cfg.train.calibration != "none":  # no val rows to fit on: the median of the sources' fitted temperatures
        if any(t is None for t in temperatures):
            raise LorabenchError(f"refit: train.calibration is {cfg.train.calibration!r} but a source run records no "
                                 "fitted temperature (it ran before lorabench calibrated); re-run it")
        info["temperature"] = statistics.median(temperatures)
    return RefitPlan(refit_cfg, data, info)


def _finished_source(run_dir: Path) -> dict:
    rec = read_run(run_dir)
    if rec is None:
        raise LorabenchError(f"refit: {not_a_run(run_dir)}")
    if rec.get("refit"):
        raise LorabenchError(f"refit: {run_dir} is itself a refit (of {rec['refit'].get('from')}); refit that run instead")
    if rec.get("status") != "completed":
        raise LorabenchError(f"refit: {run_dir} has status {rec.get('status')!r}, not completed; only a finished run "
                             "can be refit")
    if not (rec.get("metrics") or {}).get("val"):
        raise LorabenchError(f"refit: {run_dir} has no val metrics to be chosen by")
    return rec


def _without_seed_and_fold(config: dict) -> dict:
    out = json.loads(json.dumps(config))
    out.get("train", {}).pop("seed", None)
    out.get("data", {}).pop("fold", None)
    return out


def reusable_refit(out_dir: Path, plan: RefitPlan) -> dict | None:
    """The record of a finished refit in `out_dir` of exactly `plan` (config, data and the runs it was chosen
    from), else None."""
    rec = reusable_run(out_dir, plan.cfg, plan.splits.fingerprint)
    return rec if rec is not None and rec.get("refit") == json.loads(json.dumps(plan.info)) else None


def run_refit(sources: str | Path | list[str | Path], out_dir: str | Path, *, keep_failed: bool = False) -> dict:
    """Refit (`plan_refit`) and train it in `out_dir` as an ordinary run folder (resumable, atomic): returns its
    record, which has no val metrics of its own and a `refit` block: `from` (the run whose config it is),
    `runs`, `epochs` (None for the TF-IDF baseline), `epochs_rule`, `best_epochs`, `chosen_by` (split "val",
    the runs' mean val f1/precision/recall/accuracy, `f1_std` over several), `train_rows` (= the source's
    train + val rows), `threshold`. Test metrics when the test split is labelled. Raises as `plan_refit`
    and `run_experiment`."""
    plan = plan_refit(list(sources) if isinstance(sources, (list, tuple)) else [sources])
    return run_experiment(plan.cfg, out_dir, splits=plan.splits, extra={"refit": plan.info}, keep_failed=keep_failed)
