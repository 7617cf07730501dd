"""Several runs of one comparison into one folder: every (model, seed, fold) of a `CompareConfig` on the identical
split, each an ordinary run folder (`pipeline.run`), finished runs reused, changed ones kept aside, killed ones
resumed; then the ensemble row (`runs.ensemble`), the refit of the best model (`pipeline.refit`) and the report
(`reporting.report`). What `lorabench compare` and `lorabench train` with data.folds run (`lorabench.recipes`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lorabench import console, distributed, tracking
from lorabench.config.loading import dump_yaml, to_dict
from lorabench.config.schema import CompareConfig, ExperimentConfig, task_problem
from lorabench.config.tasks import DISPLAY, primary
from lorabench.data.sources import read_source
from lorabench.data.splits import detect_task, fold_ids, load_splits, representative
from lorabench.errors import ConfigError, LorabenchError
from lorabench.inference import serving
from lorabench.models.hub_code import without_bitsandbytes
from lorabench.models.precision import Precision, decide
from lorabench.models.sources import check_model_name
from lorabench.pipeline.refit import plan_refit, reusable_refit
from lorabench.pipeline.run import (
    check_parallelism,
    measure_serving,
    reusable_run,
    run_experiment,
    serving_line,
    stale_partial,
)
from lorabench.planning.plan import inventory
from lorabench.quiet import quiet
from lorabench.reporting.data_summary import format_summary, summarise
from lorabench.reporting.error_analysis import write_val_rows
from lorabench.reporting.report import CSV_COLUMNS, FOLD_COLUMNS, aggregate, build_report, verdict, winner
from lorabench.reporting.task_report import task_rows
from lorabench.runs.ensemble import ENSEMBLE_DIR, ENSEMBLE_FILE, update_compare_ensemble
from lorabench.runs.files import folder_lock, read_run, write_atomic, write_json
from lorabench.runs.layout import partial_dir, refit_dir_for, run_dir_for, safe_name
from lorabench.runs.record import RunRecord, RunStatus, refit_line

say = console.say
LOG_FILE = "compare.log"  # in a comparison folder: the command's lines and the libraries' output, every run


def _reusable(run_dir: Path, exp: ExperimentConfig, fingerprint: str) -> dict | None:
    """A finished run of exactly this config on exactly this data, else None."""
    return reusable_run(run_dir, exp, fingerprint)


def _why_replaced(old: dict | None, fingerprint: str, force: bool) -> str:
    """Why a finished run of this entry is being replaced: the suffix of the name it is kept under."""
    if force:
        return "forced-rerun"
    if old and old.get("data", {}).get("fingerprint") != fingerprint:
        return "data-changed"
    return "config-changed"


def kept_name(run_dir: Path, reason: str) -> Path:
    """Where a replaced run is kept: `<run>.<reason>-<time of the replacement>`, beside the new one."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{reason}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.{reason}-{stamp}-{n}")
    return target


@contextlib.contextmanager
def _replacing(run_dir: Path, reason: str):
    """Keep a finished run of this entry (moved to `kept_name`, never deleted) while its replacement
    trains. A failed one (a record only) is moved aside and put back if the replacement never arrives
    (Ctrl-C, a crash), or deleted once the new run folder is in place."""
    aside = run_dir.with_name(f".{run_dir.name}.replaced")
    if not run_dir.exists() and aside.is_dir():  # a previous process died mid-replacement
        aside.rename(run_dir)
    old = read_run(run_dir) if run_dir.exists() else None
    if old is not None and old.get("status") == "completed":
        kept = kept_name(run_dir, reason)
        run_dir.rename(kept)
        say(f"  kept the previous run as {kept.name}")
    elif run_dir.exists():
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)
    try:
        yield
    finally:
        if aside.exists():
            if run_dir.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.rename(run_dir)


def _failed_record(exp: ExperimentConfig, run_dir: Path, e: BaseException) -> dict:
    """The record of a run that failed before it wrote one (its folder holds only this run.json): the report lists
    it as failed, with the reason, as every other failed run."""
    rec = RunRecord(status=RunStatus.FAILED, name=exp.name, label=exp.label or exp.model.name,
                    model={"name": exp.model.name, "kind": exp.model.kind}, data={}, config=to_dict(exp),
                    seed=exp.train.seed, error=_reason(e), run_dir=str(run_dir))
    if not run_dir.exists():
        run_dir.mkdir(parents=True)
        rec.write(run_dir)
    return rec.to_dict()


def _reason(e: BaseException) -> str:
    """One line for a run that failed before it wrote its record (as run.json's `error`)."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _line(rec: dict) -> str:
    if rec.get("status") != "completed":
        return f"FAILED: {rec.get('error', 'unknown error')}"
    m = rec["metrics"]["val"]
    speed = (rec.get("serving") or {}).get("rows_per_second")
    task = rec.get("data", {}).get("task")
    head = primary(task) if task else "f1"
    quality = (f"val F1 {m['f1']:.4f}  acc {m['accuracy']:.4f}" if head == "f1" else
               f"val {DISPLAY[head]} {m[head]:.4f}")
    return (f"{quality}  {rec['train_seconds']:.0f} s  "
            f"peak {rec['peak_memory_mb']:.0f} MB  trainable {rec['params']['trainable_pct']:.3g}%"
            + (f"  predicts {speed:.0f} rows/s" if speed else ""))


def _entries(cfg: CompareConfig, exps: list[ExperimentConfig]) -> list[tuple[int, ExperimentConfig]]:
    """(entry index, its first experiment) for every `models:` entry: seeds and folds do not change what a model
    needs."""
    labels = [e.label or e.name for e in cfg.models]
    first: dict[int, ExperimentConfig] = {}
    for exp in exps:
        first.setdefault(labels.index(exp.label), exp)
    return sorted(first.items())


def _named(i: int, exp: ExperimentConfig, e: LorabenchError) -> ConfigError:
    return ConfigError(f"models[{i}] ({exp.label}): {e}")


def check_model_names(cfg: CompareConfig, exps: list[ExperimentConfig]) -> None:
    """Before any data is read or torch imported: every entry's model name resolves (a built-in, a folder, a .gguf
    file, a hub id reachable or cached). Raises `ConfigError` naming `models[i]`."""
    for i, exp in _entries(cfg, exps):
        if exp.model.kind == "transformer":
            try:
                check_model_name(exp.model)
            except LorabenchError as e:
                raise _named(i, exp, e) from e


def check_experiments(cfg: CompareConfig, exps: list[ExperimentConfig], num_labels: int,
                      task: str = "single_label") -> dict[str, Precision]:
    """Before anything trains: what `plan` checks without weights, for every entry. Its config.json is read (a
    tiny model or GGUF conversion built into the cache), its precision decided on this machine (fp16 needs a GPU),
    model.max_length checked against its position limit, and the classifier built on the meta device with LoRA
    attached (target modules that exist, a head it can find). Returns {label: its precision decision}, which its
    runs then use (one decision per model). Raises `ConfigError` naming `models[i]`; a run that fails later, at
    run time, is recorded as failed and the others go on."""
    decided = {}
    for i, exp in _entries(cfg, exps):
        problem = task_problem(exp, task)  # e.g. an entry's metric of another task, now that the data said which
        if problem:
            raise _named(i, exp, ConfigError(problem))
        if exp.model.kind != "transformer":
            continue
        try:
            decided[exp.label] = decide(exp.model, full_finetune=exp.lora is None)
            with without_bitsandbytes(keep_out=exp.model.quantization == "none"):
                inventory(exp, num_labels)
        except LorabenchError as e:
            raise _named(i, exp, e) from e
    return decided


def failed_runs(root: Path) -> list[str]:
    """`<run folder>: <error>` of every failed run of the comparison in `root` (its current runs, not those kept
    aside), for the command's exit status."""
    out = []
    for run_dir in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        rec = read_run(run_dir)
        if rec is not None and rec.get("status") == "failed":
            out.append(f"{run_dir.name}: {rec.get('error') or 'unknown error'}")
    return out


@dataclass
class Comparison:
    """What a comparison produced. `table`: one row per model (the report's columns: val F1 mean and std over
    seeds, precision, recall, accuracy, test F1, training seconds, peak MB, trainable params...; with data.folds
    also FOLD_COLUMNS), then the ensemble row when there is one (`kind` "ensemble", the others "model");
    `records`: every current run; `statistics`: is the difference real (intervals, every model against the best,
    the group not separable from it and the one-sentence `verdict`; `reporting.uncertainty`); `failed`: "<run folder>: <error>" of each run that failed at run time (the others
    finished); `report_path`: report.html; `folder`: the comparison folder."""
    table: pd.DataFrame
    records: list[RunRecord]
    failed: list[str]
    report_path: Path
    folder: Path
    statistics: dict = field(default_factory=dict)  # results.json `statistics`: intervals, tests, group, verdict

    @classmethod
    def read(cls, folder: Path) -> Comparison:
        """The comparison in `folder`, from its results.json and run records (what its report shows)."""
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        table = pd.DataFrame(results["models"])
        if results.get("task"):  # multi_label / regression: the task's columns (reporting.task_report)
            table = table[results["columns"]]
        else:
            table = table[CSV_COLUMNS + [c for c in FOLD_COLUMNS if c in table.columns]]
        records = [RunRecord.read(folder / r["run_dir"]) for r in results["runs"]]
        return cls(table=table, records=records, failed=failed_runs(folder), report_path=folder / "report.html",
                   folder=folder, statistics=results.get("statistics") or {})


def run_comparison(cfg: CompareConfig, *, output_dir: str | Path | None = None, force: bool = False) -> Comparison:
    """Train every (model, seed) on the identical split (with `data.folds`: every (model, seed, fold) on the
    identical folds, listed in folds.json); a failure is recorded and the rest go on. With `cfg.refit`, the
    model with the best mean val F1 is then refit on train + val into `refit-<label>` (`pipeline.refit`).

    Returns the `Comparison` (on a data-parallel run's other processes: its folder and report path only, the main
    process writes and reads the records). One process at a time per output folder (`folder_lock`). Raises
    `ConfigError` / `DataError` before anything trains when the config, an entry or the data is unusable.
    """
    root = Path(output_dir) if output_dir is not None else Path("runs") / safe_name(cfg.name)
    exps = cfg.experiments()  # validates every entry's settings before anything trains
    distributed.init()
    for exp in exps:
        check_parallelism(exp)
        tracking.check_environment(exp.train.report_to)
    check_model_names(cfg, exps)
    with quiet():
        splits = load_splits(representative(cfg.data))  # k-fold: fold 1's split stands for the data summary
        with distributed.main_first():  # model caches are built by one process
            precisions = check_experiments(cfg, exps, splits.num_labels, splits.task)
        # data parallel: every process trains every model; the main one alone decides, writes and reports
        with folder_lock(root) if distributed.is_main() else contextlib.nullcontext():
            # tracking (train.report_to): the runs join a group (W&B group, MLflow parent run, trackio project)
            log = console.log_to(root / LOG_FILE, f"compare {cfg.name}") if distributed.is_main() \
                else contextlib.nullcontext()
            with log, tracking.group("compare", cfg.name, root, [e.train.report_to for e in exps]) as group:
                report = _run_all(cfg, exps, splits, root, force, precisions)
                group.log_table(root / "results.csv")  # the comparison table
    if not distributed.is_main():
        return Comparison(pd.DataFrame(), [], [], report, root)
    return Comparison.read(root)


def _run_all(cfg: CompareConfig, exps: list[ExperimentConfig], splits, root: Path, force: bool,
             precisions: dict[str, Precision]) -> Path:
    main = distributed.is_main()
    by_data = {json.dumps(to_dict(representative(cfg.data)), sort_keys=True): splits}
    if main:
        write_atomic(root / "compare.yaml", dump_yaml(cfg))
        summary = summarise(cfg, splits)
        write_json(root / "data.json", summary)
        write_val_rows(root, splits)  # texts and data-check flags of the val rows, for the report's error analysis
        say(format_summary(summary))
        if cfg.data.folds:
            _write_folds(cfg, root)
    t_all = time.perf_counter()
    for i, exp in enumerate(exps, 1):
        run_dir = run_dir_for(root, exp)
        tag = f"[{i}/{len(exps)}] {exp.label} (seed {exp.train.seed}{f', fold {exp.data.fold}' if exp.data.fold else ''})"
        key = json.dumps(to_dict(exp.data), sort_keys=True)
        if key not in by_data:  # a per-model train subsample of the same split
            by_data[key] = load_splits(exp.data)
        rec = None if force or not main else _reusable(run_dir, exp, by_data[key].fingerprint)
        if distributed.broadcast(rec is not None):
            if main:
                if exp.train.serving_cost and not rec.get("serving"):  # a run from before serving cost was measured
                    measure_serving(rec, run_dir, by_data[key].val.texts or by_data[key].train.texts)
                say(f"{tag}: reused {run_dir}  {_line(rec)}")
            continue
        if main:
            _set_aside_stale(run_dir, exp, by_data[key].fingerprint, tag)
            say(f"{tag}: training {exp.model.name} ...")
        replacing = _replacing(run_dir, _why_replaced(read_run(run_dir), by_data[key].fingerprint, force)) \
            if main else contextlib.nullcontext()
        with replacing:
            try:
                rec = run_experiment(exp, run_dir, splits=by_data[key], keep_failed=True,
                                     precision=precisions.get(exp.label))
            except Exception as e:
                if distributed.world_size() > 1:
                    # data parallel: the processes cannot agree to go on (a failure may be one process's
                    # alone, e.g. out of memory on one GPU); stop here. The failure is recorded, finished
                    # runs are kept and reused when the comparison runs again.
                    raise
                rec = read_run(run_dir) or _failed_record(exp, run_dir, e)
        if main:
            say(f"{tag}: {_line(rec)}")
        gc.collect()
    if cfg.refit:
        _refit_best(cfg, exps, root, force)
    if not main:
        return root / "report.html"  # written by the main process
    old = _read_ensemble_record(root)
    said = update_compare_ensemble(root, cfg)  # the ensemble row (cfg.ensemble_top): from the runs' saved predictions
    if said:
        say(said)
    if all(e.train.serving_cost for e in exps):
        _ensemble_serving(root, old, splits.val.texts)
    t_report = time.perf_counter()
    report = build_report(root)
    said = verdict(root)
    if said:
        say(f"verdict: {said}")
    say(f"compare: {len(exps)} runs in {time.perf_counter() - t_all:.0f} s (report with statistics "
        f"{time.perf_counter() - t_report:.1f} s)")
    return report


def _read_ensemble_record(root: Path) -> dict | None:
    path = root / ENSEMBLE_DIR / ENSEMBLE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _ensemble_serving(root: Path, old: dict | None, texts: list[str]) -> None:
    """Measure what predicting with the comparison's ensemble costs (`inference.serving`) into its ensemble.json;
    the previous measurement is kept when the ensemble has the same members as before."""
    rec = _read_ensemble_record(root)
    if rec is None:
        return
    if old and old.get("serving") and not old["serving"].get("error") and old.get("members") == rec.get("members"):
        rec["serving"] = old["serving"]
    else:
        rec["serving"] = serving.in_fresh_process(root / ENSEMBLE_DIR, texts)
        say(f"  {rec['label']}: {serving_line(rec['serving'])}")
    write_json(root / ENSEMBLE_DIR / ENSEMBLE_FILE, rec)


def _set_aside_stale(run_dir: Path, exp: ExperimentConfig, fingerprint: str, tag: str) -> None:
    """A killed run of an older config or data is kept aside (this one starts afresh); a killed run of
    this config and data is resumed by `run_experiment`."""
    partial = partial_dir(run_dir)
    why = stale_partial(partial, exp, fingerprint)
    if why:
        kept = kept_name(run_dir, "unfinished-" + ("data-changed" if why.startswith("other data") else "config-changed"))
        partial.rename(kept)
        say(f"{tag}: an unfinished run of {why} was kept as {kept.name}")


def _fold_rule(data) -> tuple[str, str]:
    """(the splitter, what it stratifies by) of k-fold for the task of `data` (read once)."""
    task = detect_task(data, read_source(data.source, data)[0])
    return ({"multi_label": "iterstrat MultilabelStratifiedKFold"}.get(task, "sklearn StratifiedKFold"),
            {"multi_label": "label set (iterative stratification)",
             "regression": "up to 10 quantile bins of the target"}.get(task, "label"))


def _write_folds(cfg: CompareConfig, root: Path) -> None:
    """folds.json: how the rows were split into folds and the ids of each fold's val rows (before subsamples)."""
    ids = fold_ids(cfg.data)
    splitter, basis = _fold_rule(cfg.data)
    write_json(root / "folds.json", {
        "folds": cfg.data.folds, "seed": cfg.data.split_seed, "source": cfg.data.source,
        "rule": f"{splitter}(n_splits={cfg.data.folds}, shuffle=True, random_state={cfg.data.split_seed}) "
                f"over the labelled rows of data.source in file order, stratified by {basis}; fold i "
                "(1-based) is val in the runs named -fold<i>, the other folds train",
        "ids": "the id column's values, or 0-based row numbers in file order when the file has no id column",
        "val_ids": ids})


def _refit_best(cfg: CompareConfig, exps: list[ExperimentConfig], root: Path, force: bool) -> None:
    """Refit the model with the best mean val F1 (the report's rule, `reporting.report.winner`) on train + val,
    from all its finished runs, into `refit-<label>`; reused when its config and data are unchanged."""
    dirs = [run_dir_for(root, e) for e in exps]
    label = None
    if distributed.is_main():
        recs = [RunRecord.from_dict(r) for r in map(read_run, dirs) if r is not None]
        task = next((r.data.get("task") for r in recs if r.data), None) or "single_label"
        rows = aggregate(recs) if task == "single_label" else task_rows(recs, task)
        label = winner(rows, [e.label for e in exps], primary(task))
    label = distributed.broadcast(label)
    if label is None:
        say("refit: no model finished; nothing to refit")
        return
    sources = [d for d, e in zip(dirs, exps) if e.label == label and (read_run(d) or {}).get("status") == "completed"]
    plan = plan_refit(sources)
    out = refit_dir_for(root, label)
    tag = f"refit {label}"
    rec = None if force or not distributed.is_main() else reusable_refit(out, plan)  # refit again if chosen anew
    if distributed.broadcast(rec is not None):
        say(f"{tag}: reused {out}")
        return
    if distributed.is_main():
        _set_aside_stale(out, plan.cfg, plan.splits.fingerprint, tag)
        say(f"{tag}: training on train + val ...")
    replacing = _replacing(out, _why_replaced(read_run(out), plan.splits.fingerprint, force)) \
        if distributed.is_main() else contextlib.nullcontext()
    with replacing:
        try:
            rec = run_experiment(plan.cfg, out, splits=plan.splits, extra={"refit": plan.info}, keep_failed=True)
        except Exception as e:
            if distributed.world_size() > 1:
                raise
            rec = read_run(out) or {"status": "failed", "error": _reason(e)}
    if distributed.is_main():
        say(f"{tag}: {refit_line(rec) if rec.get('status') == 'completed' else _line(rec)}")
