"""The only place the steps meet: config -> data -> model -> train -> evaluate -> record.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from lorabench import console, distributed, tracking
from lorabench.config.loading import dump_yaml, from_dict, load_yaml, to_dict
from lorabench.config.schema import ExperimentConfig, task_problem
from lorabench.config.tasks import primary
from lorabench.data.splits import load_splits
from lorabench.data.types import Splits
from lorabench.errors import ConfigError, LorabenchError, LorabenchWarning
from lorabench.inference import serving
from lorabench.models.build import build_classifier, load_model_config
from lorabench.models.hub_code import without_bitsandbytes
from lorabench.models.precision import Precision, decide
from lorabench.models.sources import check_model_name
from lorabench.runs.files import LOCK_FILE, folder_lock, read_run, write_atomic
from lorabench.runs.layout import now, partial_dir
from lorabench.runs.predictions import save_predictions
from lorabench.runs.record import SCHEMA_VERSION, RunRecord
from lorabench.runs.resources import machine, versions
from lorabench.training.baseline import run_tfidf_logreg
from lorabench.training.checkpoint import RESUME_FILE, last_complete_checkpoint
from lorabench.training.trainer import train


def reusable_run(run_dir: Path, cfg: ExperimentConfig, fingerprint: str) -> dict | None:
    """The record of a finished run in `run_dir` of exactly `cfg` on exactly the data `fingerprint`, else None.
    A record written before a config key existed counts as having that key's default (its config is read
    back through the schema), so adding a key does not re-train finished runs."""
    rec = read_run(run_dir)
    if not rec or rec.get("status") != "completed" or rec.get("data", {}).get("fingerprint") != fingerprint:
        return None
    now_cfg = json.loads(json.dumps(to_dict(cfg)))
    if rec.get("config") == now_cfg:
        return rec
    try:
        then = json.loads(json.dumps(to_dict(from_dict(type(cfg), rec.get("config")))))
    except LorabenchError:
        return None
    task = rec.get("data", {}).get("task")
    return rec if _metric_resolved(then, task) == _metric_resolved(now_cfg, task) else None


def _metric_resolved(cfg: dict, task: str | None) -> dict:
    """A config dict with train.metric_for_best_model null read as the task's metric: a run recorded with `f1`
    (the default before issue 25 made it null) is the same run as one with null."""
    train = cfg.get("train") or {}
    if train.get("metric_for_best_model") is None:
        return {**cfg, "train": {**train, "metric_for_best_model": primary(task)}}
    return cfg


def _record_base(cfg: ExperimentConfig, splits: Splits) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "name": cfg.name,
        "label": cfg.label or cfg.model.name,
        "model": {"name": cfg.model.name, "kind": cfg.model.kind},
        "data": splits.summary(),
        "seed": cfg.train.seed,
        "config": to_dict(cfg),
        "versions": versions(),
        "machine": machine(),
        "started_at": now(),
    }

def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The first dotted key whose value differs between two nested dicts (None if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
        return None
    return None if a == b else (prefix or "config")


FINGERPRINT_FILE = "data_fingerprint.txt"  # in the partial folder: the data an unfinished run trained on
LOG_FILE = "run.log"  # in a run folder: lorabench's lines and the libraries' output while it was built


def stale_partial(partial: Path, cfg: ExperimentConfig, fingerprint: str) -> str | None:
    """Why the unfinished run in `partial` cannot be resumed with `cfg` on data `fingerprint`: a sentence
    naming the first differing config key (or the data), or None when it can (or there is none)."""
    saved = partial / "config.yaml"
    if not saved.is_file():
        return None
    before = load_yaml(saved.read_text(encoding="utf-8"), str(saved)) or {}
    now_cfg = json.loads(json.dumps(to_dict(cfg)))
    key = first_difference(before, now_cfg)
    if key:
        return f"another config ({key}: {_get(before, key)!r} there, {_get(now_cfg, key)!r} now)"
    fp = partial / FINGERPRINT_FILE
    if fp.is_file() and fp.read_text().strip() != fingerprint:
        return (f"other data (data fingerprint {fp.read_text().strip()} there, {fingerprint} now: "
                "the data files changed)")
    return None


def _resume_point(partial: Path, cfg: ExperimentConfig, out_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint to resume from in an unfinished run of the same config and data; None to start
    afresh. Raises `ConfigError` naming the first differing key (or the data) otherwise."""
    why = stale_partial(partial, cfg, fingerprint)
    if why:
        raise ConfigError(f"{out_dir} holds an unfinished run of {why}; re-run it with its own config and data "
                          f"to resume, choose another --output-dir, or delete {partial}")
    if not (partial / "config.yaml").is_file():
        return None
    return last_complete_checkpoint(partial / "checkpoints")


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, *, splits: Splits | None = None,
                   callbacks: list | None = None, keep_failed: bool = False, token_cache: dict | None = None,
                   extra: dict | None = None, precision: Precision | None = None) -> dict:
    """Train and evaluate one model; write the run folder atomically; return its record.

    The run is built in `.<out_dir>-partial` beside `out_dir` (its config first, then a checkpoint per
    epoch) and renamed to `out_dir` when finished. If the process is killed, the same call (same config,
    same `out_dir`) resumes from the last complete checkpoint; the record then has `resumed_from` (the
    epoch it continued after). A Python error or Ctrl-C removes the unfinished run. The precision-and-device
    decision (`models.precision.decide`) is made here, once, and handed down to the model build and the Trainer
    (`precision`: one the caller made, e.g. a comparison that checked every entry with it). With `keep_failed`,
    a failure is recorded as a run folder with `status: failed` (what `compare` wants) and re-raised.
    Raises `LorabenchError` when `out_dir` is a finished run or another config's unfinished one.
    """
    out_dir = Path(out_dir)
    distributed.init()
    tracking.check_environment(cfg.train.report_to)  # e.g. an MLflow file store: one line now, not after training
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise LorabenchError(f"output folder {out_dir} exists and is not empty; choose another --output-dir")
    if cfg.model.kind == "transformer":  # an unknown model name fails before any data is read (and before torch)
        check_model_name(cfg.model)
    splits = splits or load_splits(cfg.data)
    problem = task_problem(cfg, splits.task)  # e.g. a metric of another task, now that the data said which
    if problem:
        raise ConfigError(problem)
    if cfg.model.kind == "transformer":  # then what needs torch and the model's config.json, before training
        precision = precision or decide(cfg.model, full_finetune=cfg.lora is None)  # the run's only decision
        with distributed.main_first():  # a model cache (tiny model, GGUF conversion) is built once
            load_model_config(cfg.model, cfg.lora)  # model.max_length within the model's position limit
    check_parallelism(cfg, precision)
    if cfg.train.threshold != 0.5 and splits.num_labels != 2 and splits.task == "single_label" and distributed.is_main():
        warnings.warn(f"train.threshold: {cfg.train.threshold!r} applies to binary tasks only; this task has "
                      f"{splits.num_labels} classes, so predictions take the most probable class", LorabenchWarning,
                      stacklevel=2)
    record = {**_record_base(cfg, splits), **(extra or {})}
    if cfg.train.calibration != "none" and not len(splits.val) and _inherited_temperature(record) is None:
        raise ConfigError("train.calibration: temperature is fitted on val rows, and this run has none (a refit "
                          "takes the temperature of the runs it is refit from: use lorabench refit)")
    partial = partial_dir(out_dir)
    if not distributed.is_main():  # data parallel: every process trains, the main one alone writes
        resume = distributed.broadcast(None)
        if isinstance(resume, BaseException):
            raise resume
        record = _build_run(cfg, splits, partial, out_dir, record, resume=resume, callbacks=callbacks,
                            keep_failed=keep_failed, token_cache=token_cache, precision=precision)
        distributed.barrier()  # the main process has renamed the run into place (on an error: no barrier, the
        return record          # process exits and the launcher stops the others, instead of a hang)
    with folder_lock(partial, "train"):
        try:
            resume = _resume_point(partial, cfg, out_dir, splits.fingerprint)
        except LorabenchError as e:
            distributed.broadcast(e)  # the other processes stop with the same error
            raise
        if resume is None:
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            write_atomic(partial / "config.yaml", dump_yaml(cfg))
            write_atomic(partial / FINGERPRINT_FILE, splits.fingerprint)
        else:
            console.say(f"  {cfg.label or cfg.model.name}: resuming after epoch {_resume_epoch(resume)} (the unfinished "
                        f"run of this config and data in {partial})")
        distributed.broadcast(resume)
        record = _build_run(cfg, splits, partial, out_dir, record, resume=resume, callbacks=callbacks,
                            keep_failed=keep_failed, token_cache=token_cache, precision=precision)
        distributed.barrier()
        return record


def check_parallelism(cfg: ExperimentConfig, precision: Precision | None = None) -> None:
    """Refuse settings that cannot run under this launcher: a device map (one model spread over this machine's
    GPUs) inside data parallel (a copy of the model per process), an accelerate launch whose mixed precision
    differs from the run's `precision` (decided from the config when not given). Raises `ConfigError`."""
    if distributed.fsdp_requested():
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("FSDP (accelerate launch --use_fsdp / an FSDP config) needs GPUs: accelerate shards models "
                              "on GPUs only, and on CPU it would fall back to plain data parallel with weights loaded "
                              "on one process; on CPU launch with torchrun (data parallel) instead")
        warnings.warn("FSDP with lorabench's LoRA + modules_to_save head has not been verified on GPUs yet; "
                      "compare its val metrics with a data-parallel or device_map run before trusting it",
                      LorabenchWarning, stacklevel=2)
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launched not in ("no", "") and cfg.model.kind == "transformer":
        ours = (precision or decide(cfg.model, full_finetune=cfg.lora is None)).autocast or "no"
        if launched != ours:
            raise ConfigError(f"accelerate launch --mixed_precision {launched} (or its config file) differs from this "
                              f"run's precision ({ours}, from model.dtype {cfg.model.dtype!r} on this machine); "
                              "set model.dtype (bfloat16 / float16) and launch with --mixed_precision no")
    if distributed.world_size() > 1 and cfg.model.device_map is not None:
        raise ConfigError(f"model.device_map: {cfg.model.device_map!r} spreads one model over the GPUs of a machine, "
                          f"which cannot be combined with data parallel ({distributed.world_size()} processes); "
                          "launch one process, or drop model.device_map")


def _build_run(cfg: ExperimentConfig, splits: Splits, tmp: Path, out_dir: Path, record: dict, *,
               resume: Path | None, callbacks, keep_failed: bool, token_cache, precision: Precision | None) -> dict:
    """`_build_run_logged` with the run's log file (`run.log`: lorabench's lines and what the libraries printed,
    logged and warned meanwhile; continued by a resumed run), written by the main process."""
    if not distributed.is_main():
        return _build_run_logged(cfg, splits, tmp, out_dir, record, resume=resume, callbacks=callbacks,
                                 keep_failed=keep_failed, token_cache=token_cache, precision=precision)
    title = f"{cfg.label or cfg.model.name}: " + (f"resumed after epoch {_resume_epoch(resume)}" if resume else "run")
    with console.log_to(tmp / LOG_FILE, title):
        return _build_run_logged(cfg, splits, tmp, out_dir, record, resume=resume, callbacks=callbacks,
                                 keep_failed=keep_failed, token_cache=token_cache, precision=precision)


def _resume_epoch(checkpoint: Path) -> str:
    try:
        return f"{json.loads((checkpoint / RESUME_FILE).read_text())['epoch']:g}"
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def _build_run_logged(cfg: ExperimentConfig, splits: Splits, tmp: Path, out_dir: Path, record: dict, *,
                      resume: Path | None, callbacks, keep_failed: bool, token_cache,
                      precision: Precision | None) -> dict:
    t0 = time.perf_counter()
    trk = tracking.Run()
    try:
        trk = tracking.start(cfg, tmp, out_dir)  # train.report_to: tracker runs, before the Trainer (main process)
        if cfg.model.kind == "tfidf-logreg":
            if not distributed.is_main():  # one process fits the baseline; the others have nothing to do
                return record
            record.update(run_tfidf_logreg(cfg, splits, tmp, temperature=_inherited_temperature(record),
                                           thresholds=_inherited_thresholds(record)))
        else:
            record.update(_run_transformer(cfg, splits, tmp, trk.callbacks(callbacks), token_cache, resume, precision,
                                           _inherited_temperature(record), _inherited_thresholds(record)))
        record["status"] = "completed"
        trk.finish(record)  # tracking: final metrics, params, timings, peak memory; close the tracker runs
        if not distributed.is_main():
            return record
    except BaseException as e:
        trk.finish(record, error=e)  # tracking: close the tracker runs as failed (no-op if finished)
        if not distributed.is_main():
            raise
        if not keep_failed or isinstance(e, KeyboardInterrupt):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        record.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0],
                      traceback=traceback.format_exc(limit=8))
        for child in tmp.iterdir():  # keep only the record of a failed run (its log and its tracker data too)
            if child.name not in (LOCK_FILE, LOG_FILE) and child.name not in tracking.KEEP_ON_FAILURE:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        _finish(record, cfg, tmp, out_dir, t0)
        raise
    try:
        _finish(record, cfg, tmp, out_dir, t0)
    except BaseException:  # e.g. a full disk while writing the record: leave no half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if cfg.train.serving_cost:
        measure_serving(record, out_dir, splits.val.texts or splits.train.texts)  # a refit has no val rows
    return record


def measure_serving(record: dict, run_dir: Path, texts: list[str]) -> None:
    """What predicting with the finished run in `run_dir` costs (`inference.serving`, in a fresh process), into
    `record["serving"]` and its run.json (rewritten atomically). A failed measurement is recorded as
    {"error": ...} and said; the run stays valid."""
    label = record.get("label") or record.get("name")
    console.note(f"  {label}: measuring what predicting costs (a fresh process, as predict) ...")
    record["serving"] = serving.in_fresh_process(run_dir, texts)
    RunRecord.from_dict(record).write(run_dir)
    console.say(f"  {label}: {serving_line(record['serving'])}")


def serving_line(s: dict | None) -> str:
    """One line about a `serving` block: rows/s, latency, memory, export size (or why it is missing)."""
    if not s:
        return "serving cost not measured"
    if s.get("error"):
        return f"serving cost not measured: {s['error']}"
    export = f", merged export {_mb(s['export_mb'])}" if s.get("export_mb") is not None else ""
    return (f"predicts {s['rows_per_second']:.0f} rows/s, {s['latency_ms']:.1f} ms for one row, peak memory "
            f"{s['peak_memory_mb']:.0f} MB{export}")


def _mb(x: float) -> str:
    return f"{x:.0f} MB" if x >= 10 else f"{x:.2g} MB"


def _finish(record: dict, cfg: ExperimentConfig, tmp: Path, out_dir: Path, t0: float) -> None:
    record["finished_at"] = now()
    record["wall_seconds"] = round(time.perf_counter() - t0, 2)
    record["run_dir"] = str(out_dir)
    write_atomic(tmp / "config.yaml", dump_yaml(cfg))
    RunRecord.from_dict(record).write(tmp)  # every field of the typed record (runs.record)
    (tmp / LOCK_FILE).unlink(missing_ok=True)  # still held by our open descriptor until the `with` ends
    (tmp / FINGERPRINT_FILE).unlink(missing_ok=True)  # run.json has it (data.fingerprint)
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked at the start): never delete anything else
    tmp.rename(out_dir)


def _inherited_temperature(record: dict) -> float | None:
    """A refit's calibration temperature: the one its plan took from the runs it was refit from (None otherwise)."""
    return (record.get("refit") or {}).get("temperature")


def _inherited_thresholds(record: dict) -> list[float] | None:
    """A multi_label refit's per-label thresholds (train.threshold: tune): the medians its plan took from the runs it
    was refit from (None otherwise)."""
    value = ((record.get("refit") or {}).get("threshold") or {}).get("value")
    return value if isinstance(value, list) else None


def _run_transformer(cfg: ExperimentConfig, splits: Splits, tmp: Path, callbacks, token_cache,
                     resume: Path | None, precision: Precision, temperature: float | None,
                     thresholds: list[float] | None = None) -> dict:
    with without_bitsandbytes(keep_out=not precision.quantization):  # no Hub kernel: models.hub_code
        return _train_transformer(cfg, splits, tmp, callbacks, token_cache, resume, precision, temperature, thresholds)


def _train_transformer(cfg: ExperimentConfig, splits: Splits, tmp: Path, callbacks, token_cache,
                       resume: Path | None, precision: Precision, temperature: float | None,
                       thresholds: list[float] | None = None) -> dict:
    built = build_classifier(cfg.model, cfg.lora, splits.label_names, seed=cfg.train.seed, precision=precision,
                             task=splits.task)
    res = train(built, splits, cfg.train, tmp, max_length=cfg.model.max_length, callbacks=callbacks,
                token_cache=token_cache, resume_from=resume, label=cfg.label or cfg.model.name,
                report_to=tracking.trainer_report_to(cfg.train.report_to), temperature=temperature,
                long_text=cfg.data.long_text, stride=cfg.data.stride, thresholds=thresholds)
    predictions = None
    if distributed.is_main():
        built.model.save_pretrained(tmp, safe_serialization=True)  # adapter + head (or the full model)
        built.tokenizer.save_pretrained(tmp)
        predictions = save_predictions(
            tmp, splits, {"val": res.val.probs if res.val is not None else None,  # a refit has no val
                          "test": res.test.probs if res.test else None},
            res.threshold)  # per-row probabilities (what an ensemble averages)
    metrics = {"val": res.val.metrics} if res.val is not None else {}  # a refit has no val
    if res.test is not None and res.test.metrics:
        metrics["test"] = res.test.metrics
    if res.val_at_threshold:
        metrics["val_at_threshold"] = res.val_at_threshold
    if res.test_at_threshold:
        metrics["test_at_threshold"] = res.test_at_threshold
    return {
        "model": {"name": cfg.model.name, "kind": "transformer", "source": built.source.path,
                  "source_kind": built.source.kind, "architecture": built.architecture,
                  "decoder": built.arch.decoder, "note": built.source.note,
                  "finetune": "lora" if cfg.lora is not None else "full",
                  "lora_target_modules": list(cfg.lora.target_modules or built.arch.target_modules) if cfg.lora else None,
                  "head": built.arch.head},
        "metrics": metrics,
        "evaluation": {k: v for k, v in (("val", res.val_detail), ("test", res.test_detail)) if v is not None},
        "threshold": res.threshold,
        "calibration": res.calibration,
        "predictions": predictions,
        "history": res.history,
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "steps": res.steps,
        "train_seconds": round(res.train_seconds, 2),
        "pure_train_seconds": round(res.pure_train_seconds, 2),
        "eval_seconds": round(res.eval_seconds, 2),
        "load_seconds": round(built.load_seconds, 2),
        "peak_memory_mb": res.peak_memory_mb["mb"],
        "peak_memory": res.peak_memory_mb,
        "speed_levers": res.speed,
        "params": built.params,
        "precision": built.precision.to_dict() if built.precision else None,
        "quantization": cfg.model.quantization,
        "device_map": _device_map(built.model, cfg.model.device_map),
        "parallel": res.parallel,
        "batch": res.batch,
        "resumed_from": res.resumed_from,
        "throughput": {"train_samples_per_second": round(res.train_samples_per_second, 2),
                       "train_tokens_per_second": round(res.train_tokens_per_second, 1)},
    }


def _device_map(model, requested) -> dict | None:
    """Where the modules went under `model.device_map` ({module: device}; {"": device} when all landed on one,
    e.g. on a machine without GPUs), None when no device map was asked for."""
    if requested is None:
        return None
    found = getattr(model, "hf_device_map", None)
    if found:
        return {str(k): str(v) for k, v in found.items()}
    devices = sorted({str(p.device) for p in model.parameters()})
    return {"": devices[0]} if len(devices) == 1 else {"": ", ".join(devices)}
