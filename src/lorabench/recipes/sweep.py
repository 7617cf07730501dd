"""sweep = many experiments chosen by Optuna around `run_experiment`.

W&B sweep files are accepted as written (method, metric, parameters, run_cap). Storage is an
SQLite file in the sweep folder by default, or any SQLAlchemy URL (PostgreSQL for many
machines); the same command on another machine joins the same study, a rerun after a crash
resumes, and a trial whose worker died is marked failed (heartbeat) and retried.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lorabench import console, distributed, tracking
from lorabench.config.loading import dump_yaml, load_config
from lorabench.config.schema import SweepConfig
from lorabench.config.space import metric_goal, metric_key, to_distributions, trial_config, validate_space
from lorabench.data.sources import read_source
from lorabench.data.splits import detect_task, load_splits
from lorabench.errors import ConfigError, LorabenchError, ModelError
from lorabench.models.build import load_model_config
from lorabench.models.hub_code import import_peft
from lorabench.pipeline.run import run_experiment
from lorabench.quiet import quiet
from lorabench.reporting.sweep_report import build_sweep_report
from lorabench.runs.files import read_run, write_atomic, write_json
from lorabench.runs.layout import safe_name
from lorabench.runs.record import RunRecord, RunStatus

TRIALS_DIR = "trials"
LOG_FILE = "sweep.log"  # in a sweep folder: the command's lines and the libraries' output
STORAGE_ENV = "LORABENCH_SWEEP_STORAGE"
MAX_FAILURES_IN_A_ROW = 3

@dataclass
class SweepPlan:
    cfg: SweepConfig
    folder: Path
    storage: str
    study_name: str
    n_trials: int
    metric: str
    direction: str
    distributions: dict
    fixed: dict


@dataclass
class SweepResult:
    """What a sweep produced: every trial (`trials`, one row each: number, state, value, params), the best
    trial's ready-to-train config (`best_config`, a path) and the report."""
    trials: pd.DataFrame
    best_config: Path | None
    report_path: Path
    folder: Path

    @classmethod
    def read(cls, folder: Path) -> SweepResult:
        table = pd.read_csv(folder / "trials.csv") if (folder / "trials.csv").is_file() else pd.DataFrame()
        best = folder / "best.yaml"
        return cls(trials=table, best_config=best if best.is_file() else None, report_path=folder / "report.html",
                   folder=folder)


def load_sweep_config(path: str | Path, overrides: list[str]) -> SweepConfig:
    """The sweep config at `path` (`run_sweep` checks its whole space, `check_sweep`). Raises `ConfigError`."""
    return load_config(SweepConfig, path, overrides)


def check_sweep(cfg: SweepConfig) -> None:
    """Check the whole search space before any trial runs: the metric, every parameter's ends as configs, and for
    `model.*` parameters what the model allows (max_length within its position limit). A model that cannot be
    found fails in its trial, as in a plain run. Raises `ConfigError` naming the parameter."""
    dists, fixed = to_distributions(cfg.sweep.parameters)
    metric_key(cfg.sweep.metric.name, _task(cfg))
    start = trial_config(cfg.base(), fixed)
    ends = validate_space(cfg.base(), dists, fixed)
    checks = [(None, None, start)] + [(k, v, t) for k, v, t in ends if k.startswith("model.")]
    for key, value, trial in checks:
        if trial.model.kind != "transformer":
            continue
        try:
            load_model_config(trial.model, trial.lora)
        except ModelError:
            pass
        except ConfigError as e:
            raise ConfigError(f"sweep.parameters ({key} = {value!r}): {e}" if key else str(e)) from e


def plan(cfg: SweepConfig, *, output_dir: str | None, storage: str | None, study: str | None,
         trials: int | None) -> SweepPlan:
    """Where and how the sweep runs. Raises `ConfigError` under a data-parallel launcher (a sweep runs one
    process per trial; its own --workers / shared --storage are its parallelism)."""
    if distributed.world_size() > 1:
        raise ConfigError(f"sweep runs one process per trial, not under a data-parallel launcher ({distributed.world_size()} "
                          "processes): use --workers N on one machine, or several machines sharing --storage")
    folder = Path(output_dir) if output_dir else Path("runs") / safe_name(cfg.name)
    folder.mkdir(parents=True, exist_ok=True)
    n = trials or cfg.sweep.n_trials or 30
    dists, fixed = to_distributions(cfg.sweep.parameters)
    url = storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{(folder / 'study.db').resolve()}"
    metric = metric_key(cfg.sweep.metric.name, _task(cfg))
    return SweepPlan(cfg, folder, url, study or cfg.name, n, metric, metric_goal(metric, cfg.sweep.metric.goal),
                     dists, fixed)


def _task(cfg: SweepConfig) -> str:
    """The sweep's task: data.task, what data.label implies, else what the data file's label column holds."""
    if cfg.data.task or isinstance(cfg.data.label, list) or cfg.data.label_separator is not None:
        return detect_task(cfg.data)
    frame, _ = read_source(cfg.data.source, cfg.data)
    return detect_task(cfg.data, frame)


def _storage(p: SweepPlan):
    """Open (or create) the study's database. Workers started together on a new database each create its tables;
    optuna's creation is not atomic, so all but one may fail ("table ... already exists", "UNIQUE constraint
    failed: alembic_version"): such a failure is retried, by then the tables exist. Raises `LorabenchError`
    naming the (password-masked) URL when the database cannot be opened."""
    import optuna.storages as storages
    from sqlalchemy.exc import IntegrityError, OperationalError
    hb = p.cfg.sweep.heartbeat_seconds
    engine = {"connect_args": {"timeout": 60}} if p.storage.startswith("sqlite") else {"pool_pre_ping": True}
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9 (the older name is deprecated)
        retry = {"heartbeat_stale_trial_callback":
                 storages.RetryHeartbeatStaleTrialCallback(max_retry=p.cfg.sweep.max_retries)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=p.cfg.sweep.max_retries)}
    storage_class = _storage_class()
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return storage_class(p.storage, heartbeat_interval=hb, grace_period=2 * hb, engine_kwargs=engine, **retry)
        except (ImportError, ModuleNotFoundError) as e:
            raise LorabenchError(f"--storage {_redact(p.storage)}: database driver missing ({e})") from None
        except Exception as e:
            if (isinstance(e, (IntegrityError, OperationalError)) and attempt + 1 < _OPEN_ATTEMPTS
                    and _created_concurrently(e)):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise LorabenchError(f"--storage: cannot open {_redact(p.storage)}: {str(e).splitlines()[0]}") from None


_OPEN_ATTEMPTS = 5


def _storage_class():
    """optuna's `RDBStorage`, which finds a running trial stale only by an old heartbeat, made to find stale also
    a trial with no heartbeat at all that started more than the grace period ago: its worker died between
    creating it and recording its first heartbeat, and without this it stayed RUNNING for good (reruns waited
    for it forever). Such a trial is then failed and retried like any stale one (`optuna.storages.
    fail_stale_trials`). Reads optuna's `trial_heartbeats` table by name."""
    from datetime import datetime, timedelta

    import sqlalchemy
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    class Storage(RDBStorage):
        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = list(super()._get_stale_trial_ids(study_id))
            grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
            started_long_ago = [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False,
                                                                          states=(TrialState.RUNNING,))
                                if t._trial_id not in stale and t.datetime_start is not None
                                and datetime.now() - t.datetime_start > grace]  # optuna: datetime.now() too
            if started_long_ago:
                with self.engine.connect() as c:
                    beating = {r[0] for r in c.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}
                stale += [t for t in started_long_ago if t not in beating]
            return stale

    return Storage


def _created_concurrently(e: Exception) -> bool:
    """Whether opening a storage failed because another process was creating its tables at the same moment."""
    text = str(getattr(e, "orig", e)).lower()
    return any(k in text for k in ("already exists", "unique constraint", "duplicate key", "database is locked"))


def _redact(url: str) -> str:
    """The storage URL with its password (in the user part or the query) masked: safe to print or save."""
    try:
        from sqlalchemy.engine import make_url
        u = make_url(url)
        query = {k: ("***" if "pass" in k.lower() else v) for k, v in u.query.items()}
        return u.set(query=query).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def open_study(p: SweepPlan):
    import optuna
    s = p.cfg.sweep
    if s.method == "grid":
        bad = [k for k, d in p.distributions.items() if not isinstance(d, optuna.distributions.CategoricalDistribution)]
        if bad:
            raise ConfigError(f"sweep.method grid: parameter {bad[0]!r} needs a `values` list")
        sampler = optuna.samplers.GridSampler({k: d.choices for k, d in p.distributions.items()}, seed=s.seed)
    elif s.method == "random":
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=min(10, max(2, p.n_trials // 3)))
    pruner_name = "hyperband" if s.early_terminate and s.pruner == "median" else s.pruner
    epochs = max(1, int(math.ceil(p.cfg.train.epochs)))
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
              "none": optuna.pruners.NopPruner()}[pruner_name]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # lorabench prints one line per trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.create_study(study_name=p.study_name, storage=_storage(p), load_if_exists=True,
                               direction=p.direction, sampler=sampler, pruner=pruner)


# --------------------------------------------------------------------------- worker
def suggest(trial, name: str, dist):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


class _PruningCallback:
    """Reports val metrics per epoch to Optuna; stops training when the pruner says so."""

    def __new__(cls, trial, metric: str):
        import_peft()
        from transformers import TrainerCallback

        class Impl(TrainerCallback):
            pruned = False

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                if not metrics or f"eval_{metric}" not in metrics:
                    return
                step = int(round(state.epoch or 0)) or 1
                trial.report(float(metrics[f"eval_{metric}"]), step)
                if trial.should_prune():
                    Impl.pruned = True
                    control.should_training_stop = True
        return Impl()


def _counts(study) -> dict:
    from optuna.trial import TrialState
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def run_worker(p: SweepPlan, worker: int = 0, *, log: bool = False) -> None:
    """Run trials until the study holds n_trials finished (complete or pruned) trials. With `log` (a worker
    process of `--workers N`), its lines and the libraries' output go to `worker-<worker>.log` in the sweep folder
    too (each trial's run folder has its own run.log)."""
    with console.log_to(p.folder / f"worker-{worker}.log", f"sweep {p.study_name} worker {worker}") if log \
            else contextlib.nullcontext(), quiet():
        _work(p, worker)


def _work(p: SweepPlan, worker: int) -> None:
    import optuna
    from optuna.trial import TrialState

    study = open_study(p)
    splits = load_splits(p.cfg.data)           # data loaded once per worker ...
    token_cache: dict = {}                      # ... and tokenised once per (model, max_length)
    base = p.cfg.base()
    trials_dir = p.folder / TRIALS_DIR
    failures = 0

    def objective(trial):
        values = {k: suggest(trial, k, d) for k, d in p.distributions.items()}
        cfg = dataclasses.replace(trial_config(base, {**p.fixed, **values}), label=f"trial-{trial.number:04d}")
        cb = _PruningCallback(trial, p.metric)
        out = trials_dir / f"{safe_name(p.study_name)}-trial-{trial.number:04d}"
        t0 = time.process_time()
        try:
            rec = run_experiment(cfg, out, splits=splits, callbacks=[cb], token_cache=token_cache,
                                 extra={"sweep": {"study": p.study_name, "trial": trial.number, "params": values}})
        except Exception as e:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            trial.set_user_attr("error", msg)
            console.say(f"worker {worker}: trial {trial.number} failed: {msg}", err=True)
            raise
        trial.set_user_attr("run_dir", str(out.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("cpu_seconds", time.process_time() - t0)
        value = rec["metrics"]["val"][p.metric]
        console.say(f"worker {worker}: trial {trial.number} {'pruned' if cb.pruned else 'done'}: "
                    f"val {p.metric} {value:.4f}  {_fmt_params(values)}")
        if cb.pruned:
            _mark(out, "pruned")
            raise optuna.TrialPruned()
        return value

    while True:
        optuna.storages.fail_stale_trials(study)
        c = _counts(study)
        done = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        if done >= p.n_trials:
            break
        if done + c[TrialState.RUNNING] >= p.n_trials and not c[TrialState.WAITING]:
            time.sleep(min(5, p.cfg.sweep.heartbeat_seconds))  # others are finishing the last trials
            continue
        if p.cfg.sweep.method == "grid" and study.sampler.is_exhausted(study) and not c[TrialState.WAITING]:
            break
        ended: list = []
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                       callbacks=[lambda st, tr: ended.append(tr.state)])
        failures = failures + 1 if ended and ended[0] == TrialState.FAIL else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise LorabenchError(f"sweep: {failures} trials in a row failed; last: {_last_error(study)}")


def _last_error(study) -> str:
    from optuna.trial import TrialState
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    return failed[-1].user_attrs.get("error", "unknown") if failed else "unknown"


def _mark(run_dir: Path, status: str) -> None:
    """Set the status of the trial run in `run_dir` (a pruned trial finished early but is not a completed run)."""
    if read_run(run_dir) is not None:
        rec = RunRecord.read(run_dir)
        rec.status = RunStatus(status)
        rec.write(run_dir)


def _fmt_params(values: dict) -> str:
    return "  ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in values.items())


# --------------------------------------------------------------------------- driver
def run_sweep(cfg: SweepConfig, *, config_path: str, overrides: list[str], output_dir: str | None,
              storage: str | None, study: str | None, trials: int | None, workers: int) -> SweepResult:
    """Run the sweep `cfg` (its space checked first, `check_sweep`): trials in this process, or in `workers`
    processes of `lorabench sweep <config_path> --worker-only`, until `trials` finished. Returns the
    `SweepResult`. Raises `ConfigError` before any trial runs, `LorabenchError` when workers fail."""
    check_sweep(cfg)
    p = plan(cfg, output_dir=output_dir, storage=storage, study=study, trials=trials)
    write_atomic(p.folder / "sweep.yaml", dump_yaml(cfg))
    write_json(p.folder / "study.json", {"storage": _redact(p.storage),
                                         "study_name": p.study_name, "n_trials": p.n_trials,
                                         "metric": p.metric, "direction": p.direction})
    tracking.check_environment(cfg.train.report_to)
    with console.log_to(p.folder / LOG_FILE, f"sweep {p.study_name}"):
        _run_sweep(p, cfg, config_path, overrides, workers)
    return SweepResult.read(p.folder)


def _run_sweep(p: SweepPlan, cfg: SweepConfig, config_path: str, overrides: list[str], workers: int) -> Path:
    with quiet():
        open_study(p)  # create it (or join it) before any worker starts
    console.say(f"sweep {p.study_name}: {p.n_trials} trials, {cfg.sweep.method}, pruner {cfg.sweep.pruner}, "
                f"storage {_redact(p.storage)}, {workers} worker(s)")
    # tracking (train.report_to): the trials join a group (W&B group, MLflow parent run, trackio project)
    with tracking.group("sweep", p.study_name, p.folder, [cfg.train.report_to]) as group:
        if workers <= 1:
            run_worker(p)
        else:
            procs = []
            threads = max(1, (os.cpu_count() or 1) // workers)
            for w in range(workers):
                cmd = [sys.executable, "-m", "lorabench.cli", "sweep", config_path, "--worker-only",
                       "--output-dir", str(p.folder), "--study", p.study_name,
                       "--trials", str(p.n_trials), "--worker-id", str(w)]
                for o in overrides:
                    cmd += ["--set", o]
                if console.verbose():
                    cmd.append("--verbose")
                # the storage URL may hold a password: pass it in the environment, not on the command line
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                       STORAGE_ENV: p.storage, **tracking.child_env()}  # tracking: the workers' trials join the group
                procs.append(subprocess.Popen(cmd, env=env))
            codes = [pr.wait() for pr in procs]
            if any(codes):
                build_sweep_report(p.folder, storage=p.storage)
                raise LorabenchError(f"sweep: {sum(1 for c in codes if c)} of {workers} workers failed "
                                     f"(exit codes {codes}); rerun the same command to resume")
        report = build_sweep_report(p.folder, storage=p.storage)
        group.log_table(p.folder / "trials.csv", *tracking.sweep_best(p.folder))  # tracking: the trials and the best
    return report
