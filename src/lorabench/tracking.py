"""Experiment trackers for `train.report_to`: wandb, mlflow, tensorboard, trackio (any subset), offline by default.

One lorabench run = one run in each tracker, started here on the main process *before* the Trainer, so that the
Trainer's own integrations (transformers' `WandbCallback`, `MLflowCallback`) log the training loss and the per-epoch
val metrics into it. TensorBoard is transformers' `TensorBoardCallback` writing into `<run>/tensorboard/`; trackio is
a small forwarder of the Trainer's logs (transformers' `TrackioCallback` always opens a run of its own and closes it
when training ends, before lorabench has its final metrics). lorabench adds what the integrations do not know: the
resolved config (`to_dict(cfg)`, at the start) and, at the end (`Run.finish`), the final val/test metrics, per-class
detail, parameter counts, timings and peak memory. A `compare` or a `sweep` is a `group`: a W&B group, an MLflow
parent run with the runs as child runs, one trackio project; its end logs the comparison table or the trials and
the best trial.

Where the data go when the user set nothing (their WANDB_MODE, WANDB_DIR, WANDB_PROJECT, MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME, TENSORBOARD_LOGGING_DIR, TRACKIO_DIR win):
  wandb        offline, in the run folder (`<run>/wandb/offline-run-*`; upload later with `wandb sync`)
  mlflow       an SQLite store `mlflow.db` in the run folder, or in the compare / sweep folder for its runs
  tensorboard  `<run>/tensorboard/` (`tensorboard --logdir` on a compare folder shows all its runs)
  trackio      trackio's local store (`$TRACKIO_DIR`, default `$HF_HOME/trackio`: trackio reads it once, at import)

Nothing from the environment or the command line is logged: only the config and the run record's numbers. W&B's
system metadata is off, because it holds the command line (a sweep's `--storage` URL may carry a password).
Only the main process of a data-parallel run logs. Library calls leave the process as they found it: the tracker
runs are finished, MLflow's tracking URI and trackio's current project are restored, W&B's service is shut down.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorabench import distributed
from lorabench.config.schema import TRACKERS  # wandb, mlflow, tensorboard, trackio
from lorabench.console import say

OWN_CALLBACKS = ("tensorboard", "trackio")  # attached by lorabench itself, not through the Trainer's report_to
TRACKING_FILE = "tracking.json"             # in an unfinished run's folder: its tracker run ids, to resume them
KEEP_ON_FAILURE = ("wandb", "tensorboard", "mlflow.db")  # a failed run's folder keeps its tracker data
GROUP_ENV = "LORABENCH_TRACKING_GROUP"      # a sweep's group, for its worker processes


def requested(report_to: Any) -> list[str]:
    """The trackers `train.report_to` names ("all": every installed one of lorabench's `TRACKERS`)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "all" in names:
        import importlib.util
        names = [n for n in TRACKERS if importlib.util.find_spec(n) is not None]
    return [n for n in dict.fromkeys(names) if n not in ("none", "all")]


WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # wandb.Settings.mode (wandb 0.31)


def check_environment(report_to: Any) -> None:
    """Refuse, before anything trains, tracker settings in the environment that would fail the run at its start or
    its end: one `ConfigError` line naming the variable, its value and the fix. Checked, for the trackers
    `report_to` names: MLFLOW_TRACKING_URI pointing at MLflow's file store (a `file:` URI or a plain path), which
    MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE=true (use an `sqlite:///` URI); WANDB_MODE outside W&B's modes;
    WANDB_DIR, TENSORBOARD_LOGGING_DIR and TRACKIO_DIR naming a file or a folder that cannot be written."""
    from lorabench.errors import ConfigError
    names = requested(report_to)
    if "mlflow" in names:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][\w+.-]*:", uri) else ""
        file_store = bool(uri) and (scheme == "file" or (not scheme and not uri.startswith("databricks")))
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1", "yes")
        if file_store and not allowed and _mlflow_refuses_file_store():
            raise ConfigError(f"MLFLOW_TRACKING_URI={uri}: MLflow {_version('mlflow')} refuses its file store; set "
                              "MLFLOW_TRACKING_URI to a database such as sqlite:////abs/path/mlflow.db (or unset it: "
                              "lorabench then keeps an SQLite store in the run folder), or set MLFLOW_ALLOW_FILE_STORE=true")
    if "wandb" in names:
        mode = os.environ.get("WANDB_MODE")
        if mode is not None and mode.strip().lower() not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE={mode}: not a W&B mode (one of {', '.join(WANDB_MODES)}); unset it for "
                              "lorabench's default, offline runs in the run folder")
    for name, var in (("wandb", "WANDB_DIR"), ("tensorboard", "TENSORBOARD_LOGGING_DIR"), ("trackio", "TRACKIO_DIR")):
        value = os.environ.get(var)
        if name in names and value:
            problem = _unwritable_folder(Path(value).expanduser())
            if problem:
                raise ConfigError(f"{var}={value}: {problem}; point it at a folder you can write, or unset it")


def _version(dist: str) -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.metadata.version(f"{dist}-skinny")
        except importlib.metadata.PackageNotFoundError:
            return "?"


def _mlflow_refuses_file_store() -> bool:
    """Whether the installed MLflow refuses file stores by default (it has the MLFLOW_ALLOW_FILE_STORE switch)."""
    try:
        from mlflow import environment_variables
    except ImportError:
        return False
    return hasattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE")


def _unwritable_folder(path: Path) -> str | None:
    """Why `path` cannot serve as a folder to write into (None if it can, or can be created)."""
    if path.exists() and not path.is_dir():
        return "a file, not a folder"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def trainer_report_to(report_to: Any) -> list[str] | str:
    """What the Trainer's `report_to` gets: the integrations less those lorabench attaches as callbacks."""
    rest = [n for n in requested(report_to) if n not in OWN_CALLBACKS]
    return rest or "none"


# --------------------------------------------------------------------------- what is logged
def json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{"train": {"seed": 42}} -> {"train.seed": 42}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        out.update(flatten(v, key, sep) if isinstance(v, dict) and v else {key: v})
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summary(record: dict) -> dict[str, float]:
    """The numbers a finished run adds to its tracker runs: final metrics per split (`final/val/f1`,
    `final/test_at_threshold/recall`...), per-class results, confusion-matrix counts, MCC and AUCs
    (`final/val/class/<name>/f1`, `final/val/confusion/<true>/<predicted>`), parameter counts (`params/...`),
    timings, peak memory and throughput (`run/...`)."""
    out: dict[str, float] = {}
    for split, m in (record.get("metrics") or {}).items():
        out.update({f"final/{split}/{k}": v for k, v in (m or {}).items() if _number(v)})
    for split, d in (record.get("evaluation") or {}).items():
        out.update({f"final/{split}/{k}": v for k, v in d.items() if _number(v)})
        for name, m in (d.get("per_class") or {}).items():
            out.update({f"final/{split}/class/{name}/{k}": v for k, v in m.items() if _number(v)})
        labels = d.get("labels") or []
        for i, row in enumerate(d.get("confusion_matrix") or []):
            for j, n in enumerate(row):
                if i < len(labels) and j < len(labels):
                    out[f"final/{split}/confusion/{labels[i]}/{labels[j]}"] = n
    out.update({f"params/{k}": v for k, v in (record.get("params") or {}).items() if _number(v)})
    for k in ("train_seconds", "pure_train_seconds", "eval_seconds", "load_seconds", "peak_memory_mb",
              "best_epoch", "epochs_run", "steps", "threshold"):
        if _number(record.get(k)):
            out[f"run/{k}"] = record[k]
    out.update({f"run/{k}": v for k, v in (record.get("throughput") or {}).items() if _number(v)})
    return out


def redact_url(url: str | None) -> str | None:
    """A URL with its password (user part, or a query key naming a password/token/secret/key) masked."""
    if not url:
        return url
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    try:
        p = urlsplit(url)
        netloc, pairs = p.netloc, parse_qsl(p.query, keep_blank_values=True)
        secret_query = any(re.search("pass|token|secret|key", k, re.I) for k, _ in pairs)
        if not ("@" in netloc and ":" in netloc.split("@", 1)[0]) and not secret_query:
            return url
        if "@" in netloc and ":" in netloc.split("@", 1)[0]:
            netloc = netloc.split(":", 1)[0] + ":***@" + netloc.rsplit("@", 1)[1]
        query = urlencode([(k, "***" if re.search("pass|token|secret|key", k, re.I) else v) for k, v in pairs],
                          safe="*")
        return urlunsplit((p.scheme, netloc, p.path, query, p.fragment))
    except ValueError:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def _metric_key(key: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", key)  # MLflow's allowed characters


# --------------------------------------------------------------------------- groups (compare, sweep)
@dataclass
class GroupInfo:
    """What a run needs of its group; JSON-able (a sweep passes it to its worker processes)."""
    kind: str                          # compare | sweep
    name: str                          # the comparison's or study's name: W&B group, trackio project
    folder: str                        # the compare / sweep folder
    trackers: list[str] = field(default_factory=list)
    mlflow_uri: str | None = None      # the store lorabench chose (None: the user's)
    mlflow_experiment: str | None = None
    mlflow_parent: str | None = None


_GROUP: contextvars.ContextVar[GroupInfo | None] = contextvars.ContextVar("lorabench_tracking_group", default=None)


def current_group() -> GroupInfo | None:
    """The group of the compare or sweep this process runs for (None for a lone run)."""
    g = _GROUP.get()
    if g is None and os.environ.get(GROUP_ENV):
        g = GroupInfo(**json.loads(os.environ[GROUP_ENV]))
    return g


def child_env() -> dict[str, str]:
    """Environment for a worker process that runs the current group's runs (a sweep's --workers)."""
    g = _GROUP.get()
    return {GROUP_ENV: json.dumps(asdict(g))} if g else {}


class Group:
    """A compare's or sweep's tracker-level records; `log_table` at its end. A no-op without trackers."""

    def __init__(self, info: GroupInfo | None):
        self.info = info

    def log_table(self, csv_path: Path, numbers: dict | None = None, params: dict | None = None) -> None:
        """Log the comparison table (results.csv) or the trials (trials.csv), with summary `numbers` (e.g. the
        best value) and `params` (e.g. the best trial's) to every tracker of the group."""
        g = self.info
        if g is None or not Path(csv_path).is_file():
            return
        import pandas as pd
        df = pd.read_csv(csv_path)
        numbers = {k: v for k, v in (numbers or {}).items() if _number(v)}
        params = json_safe(params or {})
        title = f"{g.name}-{g.kind}"
        for name in g.trackers:
            try:
                _GROUP_TABLE[name](g, title, df, numbers, params)
            except Exception as e:  # a tracker that cannot log the table fails nothing that was trained
                warnings.warn(f"{name}: could not log the {g.kind} table: {type(e).__name__}: {e}", stacklevel=2)


def sweep_best(folder: Path) -> tuple[dict, dict]:
    """(numbers, params) of a sweep's best trial, from the sweep_summary.json its report wrote."""
    try:
        s = json.loads((Path(folder) / "sweep_summary.json").read_text())
    except (OSError, ValueError):
        return {}, {}
    best = s.get("best") or {}
    numbers = {f"trials/{k}": v for k, v in (s.get("counts") or {}).items()}
    if best:
        numbers.update({"best/value": best.get("value"), "best/trial": best.get("number")})
    return numbers, best.get("params") or {}


@contextlib.contextmanager
def group(kind: str, name: str, folder: Path, report_to_lists: list):
    """A compare or sweep (main process): its runs join the group; yields a `Group`."""
    names = [n for rt in report_to_lists for n in requested(rt) if n in TRACKERS]
    names = list(dict.fromkeys(names))
    if not names or not distributed.is_main():
        yield Group(None)
        return
    info = GroupInfo(kind, name, str(Path(folder).resolve()), names)
    if "mlflow" in names:
        _mlflow_group_start(info)
    token = _GROUP.set(info)
    status = "FAILED"
    try:
        yield Group(info)
        status = "FINISHED"
    finally:
        _GROUP.reset(token)
        if info.mlflow_parent:
            with contextlib.suppress(Exception):
                _mlflow_client(info.mlflow_uri).set_terminated(info.mlflow_parent, status)
            _forget_mlflow_store(info.mlflow_uri)
        _teardown_wandb()
        say(where_line(info.trackers, Path(info.folder), info.mlflow_uri))


def where_line(trackers: list[str], folder: Path, mlflow_uri: str | None) -> str:
    """One line: where each tracker's data went and how to look at it."""
    parts = []
    if "wandb" in trackers:
        mode = os.environ.get("WANDB_MODE") or "offline"
        parts.append(f"wandb: {mode} runs under {os.environ.get('WANDB_DIR') or folder}"
                     + (" (upload each .../wandb/offline-run-* folder with `wandb sync`)" if mode == "offline" else ""))
    if "mlflow" in trackers:
        parts.append(f"mlflow: {redact_url(mlflow_uri or os.environ.get('MLFLOW_TRACKING_URI') or '')}")
    if "tensorboard" in trackers:
        parts.append(f"tensorboard --logdir {os.environ.get('TENSORBOARD_LOGGING_DIR') or folder}")
    if "trackio" in trackers:
        parts.append(f"trackio: {_trackio_dir()}")
    return "trackers: " + "; ".join(parts)


# --------------------------------------------------------------------------- one run
class Run:
    """The tracker runs of one lorabench run. `callbacks()` for the Trainer; `finish(record)` at the end."""

    def __init__(self, folder: Path | None = None, out_dir: Path | None = None):
        self.folder, self.out_dir = folder, out_dir
        self.handles: dict[str, Any] = {}
        self.where: dict[str, dict] = {}
        self._callbacks: list = []
        self._undo: list = []
        self._done = False

    def callbacks(self, extra: list | None = None) -> list:
        """The caller's callbacks plus the TensorBoard and trackio ones of this run."""
        return [*(extra or []), *self._callbacks]

    def finish(self, record: dict, error: BaseException | None = None) -> None:
        """Log the run's final numbers (on success) and close its tracker runs; idempotent. Records where the runs
        went in `record["tracking"]` (ids and redacted locations only)."""
        if self._done:
            return
        self._done = True
        numbers = summary(record) if error is None else {"run/failed": 1}
        step = int(record.get("steps") or 0)
        for name, handle in self.handles.items():
            try:
                _FINISH[name](self, handle, numbers, step, error)
            except Exception as e:
                warnings.warn(f"{name}: could not log the final metrics: {type(e).__name__}: {e}", stacklevel=2)
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
        uri = self.where.get("mlflow", {}).pop("_uri", None)
        if self.where:
            record["tracking"] = self.where
        if self.folder is not None:
            (self.folder / TRACKING_FILE).unlink(missing_ok=True)
        if current_group() is None and self.handles:  # a lone run: say where its data went
            _teardown_wandb()
            say(where_line(list(self.handles), self.out_dir, uri))


def start(cfg, folder: Path, out_dir: Path, kind: str = "train") -> Run:
    """Start the tracker runs of `train.report_to` for the run built in `folder` (renamed to `out_dir` when it is
    finished); a no-op `Run` without trackers or off the main process. A run resumed after a kill continues its
    tracker runs (ids kept in `folder/tracking.json`)."""
    names = [n for n in requested(cfg.train.report_to) if n in TRACKERS]
    if not names or not distributed.is_main():
        return Run()
    from lorabench.config.loading import to_dict
    g = current_group()
    run = Run(Path(folder), Path(out_dir))
    saved = {}
    if (run.folder / TRACKING_FILE).is_file():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads((run.folder / TRACKING_FILE).read_text())
    ctx = _Ctx(out_dir=Path(out_dir), name=Path(out_dir).name, kind="trial" if g and g.kind == "sweep" else kind, group=g,
               project=g.name if g else cfg.name, config=json_safe(to_dict(cfg)), folder=run.folder, saved=saved)
    try:
        for name in names:
            _START[name](run, ctx)
    except BaseException as e:
        run.finish({}, error=e)
        raise
    from lorabench.runs.files import write_json
    write_json(run.folder / TRACKING_FILE, {k: v.get("id") or v.get("run_id") for k, v in run.where.items()})
    return run


@dataclass
class _Ctx:
    out_dir: Path  # where the run folder lands (it is built in `folder`)
    name: str
    kind: str
    group: GroupInfo | None
    project: str
    config: dict
    folder: Path
    saved: dict


# --------------------------------------------------------------------------- wandb
def _wandb_init_kwargs(name: str, job_type: str, group: str | None, folder: Path, config: dict | None) -> dict:
    """wandb.init's arguments: offline in `folder` unless WANDB_MODE / WANDB_DIR say otherwise."""
    import wandb
    settings: dict = {"x_disable_meta": True}  # W&B's metadata holds the command line (it may carry a password)
    if "WANDB_SILENT" not in os.environ:
        settings["silent"] = True            # lorabench prints where the runs went
    if "WANDB_CONSOLE" not in os.environ:
        settings["console"] = "off"          # no capture of every progress-bar write
    kw: dict = {"project": os.environ.get("WANDB_PROJECT") or "lorabench", "name": name, "job_type": job_type,
                "group": group, "config": config, "settings": wandb.Settings(**settings)}
    if not os.environ.get("WANDB_MODE"):
        kw["mode"] = "offline"
    if not os.environ.get("WANDB_DIR"):
        kw["dir"] = str(folder)
    return kw


def _wandb_start(run: Run, ctx: _Ctx) -> None:
    import wandb
    kw = _wandb_init_kwargs(ctx.name, ctx.kind, ctx.group.name if ctx.group else None, ctx.folder, ctx.config)
    if ctx.saved.get("wandb"):
        kw.update(id=ctx.saved["wandb"], resume="allow")
    r = wandb.init(**kw)
    run.handles["wandb"] = r
    run.where["wandb"] = {"project": r.project, "group": kw["group"], "id": r.id, "mode": r.settings.mode}


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]  # as run.json's `error`


def _wandb_finish(run: Run, r, numbers: dict, step: int, error) -> None:
    r.summary.update({**numbers, **({"error": _error(error)} if error is not None else {})})
    r.finish(exit_code=1 if error is not None else 0)


def _wandb_table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    import wandb
    r = wandb.init(**_wandb_init_kwargs(title, g.kind, g.name, Path(g.folder), {"best_params": params} if params else None))
    try:
        r.log({g.kind: wandb.Table(dataframe=df)})
        r.summary.update(numbers)
    finally:
        r.finish()


def _teardown_wandb() -> None:
    """Shut down W&B's service process once lorabench's runs are finished (unless the caller has a run open)."""
    import sys
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is None:
        with contextlib.suppress(Exception):
            wandb.teardown()


# --------------------------------------------------------------------------- mlflow
@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow logs at INFO while it creates a store ("Creating initial MLflow database tables..."): not here."""
    import importlib
    import logging
    importlib.import_module("mlflow")  # first: importing mlflow configures its logger
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _forget_mlflow_store(uri: str | None) -> None:
    """Close MLflow's cached connections to a store lorabench created: the run folder holding it is renamed or
    may be deleted, and a later run at the same path must open the new file, not the old one through a pooled
    connection."""
    if uri:
        with contextlib.suppress(Exception):
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
            from mlflow.tracking._tracking_service.utils import _tracking_store_registry
            engine = SqlAlchemyStore._engine_map.pop(uri, None)
            if engine is not None:
                engine.dispose()
                _tracking_store_registry._get_store_with_resolved_uri.cache_clear()  # stores bound to the engine


def _mlflow_client(uri: str | None):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri) if uri else MlflowClient()


def _mlflow_experiment(client, name: str, artifacts: Path | None) -> str:
    """The id of experiment `name` (MLFLOW_EXPERIMENT_NAME wins), created if missing; in a store lorabench chose,
    its artifacts go to `artifacts` (not MLflow's default ./mlruns in the working directory)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri() if artifacts else None)


def _user_mlflow_uri() -> bool:
    import mlflow
    return mlflow.is_tracking_uri_set()


def _mlflow_group_start(g: GroupInfo) -> None:
    with _quiet_mlflow():
        _mlflow_group_start_(g)


def _mlflow_group_start_(g: GroupInfo) -> None:
    folder = Path(g.folder)
    if not _user_mlflow_uri():
        g.mlflow_uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = _mlflow_client(g.mlflow_uri)
    g.mlflow_experiment = _mlflow_experiment(client, g.name, folder / "mlartifacts" if g.mlflow_uri else None)
    parent = client.create_run(g.mlflow_experiment, run_name=f"{g.name}-{g.kind}",
                               tags={"lorabench.kind": g.kind, "lorabench.group": g.name})
    g.mlflow_parent = parent.info.run_id


def _mlflow_start(run: Run, ctx: _Ctx) -> None:
    with _quiet_mlflow():
        _mlflow_start_(run, ctx)


def _mlflow_start_(run: Run, ctx: _Ctx) -> None:
    import mlflow
    g = ctx.group
    uri = None
    if not _user_mlflow_uri():  # the Trainer's MLflowCallback logs through mlflow's global tracking URI
        uri = g.mlflow_uri if g and g.mlflow_uri else f"sqlite:///{ctx.folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        run._undo.append(lambda: (mlflow.set_tracking_uri(None), _forget_mlflow_store(uri)))
    client = _mlflow_client(uri)
    if ctx.saved.get("mlflow"):
        active = mlflow.start_run(run_id=ctx.saved["mlflow"])
    else:
        exp = g.mlflow_experiment if g and g.mlflow_experiment else _mlflow_experiment(
            client, ctx.project, ctx.folder / "mlartifacts" if uri else None)
        active = mlflow.start_run(experiment_id=exp, run_name=ctx.name, nested=mlflow.active_run() is not None,
                                  parent_run_id=g.mlflow_parent if g else None,
                                  tags={"lorabench.kind": ctx.kind, **({"lorabench.group": g.name} if g else {})})
        params = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                  for k, v in flatten(ctx.config).items()}
        mlflow.log_params(params)
    run.handles["mlflow"] = active.info.run_id
    final = uri.replace(str(ctx.folder), str(ctx.out_dir)) if uri else None  # the store once the run is in place
    run.where["mlflow"] = {"tracking_uri": redact_url(final or mlflow.get_tracking_uri()), "_uri": final,
                           "experiment_id": active.info.experiment_id, "run_id": active.info.run_id,
                           "parent_run_id": g.mlflow_parent if g else None}


def _mlflow_finish(run: Run, run_id: str, numbers: dict, step: int, error) -> None:
    import mlflow
    status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    try:
        if numbers:
            mlflow.log_metrics({_metric_key(k): float(v) for k, v in numbers.items()}, step=step, run_id=run_id)
        if error is not None:
            mlflow.MlflowClient().set_tag(run_id, "lorabench.error", _error(error)[:5000])
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)  # also waits for the Trainer callback's asynchronous logging
        else:
            mlflow.MlflowClient().set_terminated(run_id, status)


def _mlflow_table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    client = _mlflow_client(g.mlflow_uri)
    client.log_table(g.mlflow_parent, df, f"{g.kind}.json")
    for k, v in numbers.items():
        client.log_metric(g.mlflow_parent, _metric_key(k), float(v))
    for k, v in flatten(params).items():
        client.log_param(g.mlflow_parent, _metric_key(f"best.{k}"), v)


# --------------------------------------------------------------------------- tensorboard
def _tb_dir(folder: Path) -> Path:
    return Path(os.environ["TENSORBOARD_LOGGING_DIR"]) if os.environ.get("TENSORBOARD_LOGGING_DIR") \
        else folder / "tensorboard"


def _tb_start(run: Run, ctx: _Ctx) -> None:
    from lorabench.models.hub_code import import_peft
    import_peft()  # transformers.integrations imports peft, peft bitsandbytes (lorabench.models.hub_code)
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    d = _tb_dir(ctx.folder)
    writer = SummaryWriter(log_dir=str(d))
    writer.add_text("lorabench/config", "```\n" + json.dumps(ctx.config, indent=2) + "\n```")
    writer.flush()
    run._callbacks.append(TensorBoardCallback(tb_writer=writer))  # the Trainer's losses and per-epoch val metrics
    run.handles["tensorboard"] = (d, writer)
    run.where["tensorboard"] = {"dir": "tensorboard" if d == ctx.folder / "tensorboard" else str(d)}


def _tb_finish(run: Run, handle, numbers: dict, step: int, error) -> None:
    from torch.utils.tensorboard import SummaryWriter
    d, first = handle
    first.close()  # closed already if the Trainer ran (its callback closes it at the end of training)
    with contextlib.closing(SummaryWriter(log_dir=str(d))) as w:
        for k, v in numbers.items():
            w.add_scalar(k, v, step)
        if error is not None:
            w.add_text("lorabench/error", _error(error))


def _tb_table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter
    with contextlib.closing(SummaryWriter(log_dir=str(_tb_dir(Path(g.folder))))) as w:
        w.add_text(f"{g.kind}/table", _markdown(df))
        if params:
            w.add_text(f"{g.kind}/best_params", "```\n" + json.dumps(params, indent=2) + "\n```")
        for k, v in numbers.items():
            w.add_scalar(f"{g.kind}/{k}", v, 0)


def _markdown(df) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- trackio
def _trackio_dir() -> str:
    with contextlib.suppress(Exception):
        from trackio.utils import TRACKIO_DIR
        return str(TRACKIO_DIR)
    return os.environ.get("TRACKIO_DIR", "$HF_HOME/trackio")


@contextlib.contextmanager
def _trackio_scope():
    """trackio.init/finish print several lines and set trackio's current project: keep both local."""
    from trackio import context_vars as cv
    names = ("current_run", "current_project", "current_server", "current_space_id", "current_server_write_token")
    before = {n: getattr(cv, n).get() for n in names if hasattr(cv, n)}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for n, v in before.items():
            getattr(cv, n).set(v)


def _trackio_callback(r):
    from lorabench.models.hub_code import import_peft
    import_peft()
    from transformers import TrainerCallback
    from transformers.integrations.integration_utils import rewrite_logs

    class TrackioLogs(TrainerCallback):
        """The Trainer's logs (training loss, per-epoch val metrics) into lorabench's trackio run."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                scalars = {k: v for k, v in logs.items() if _number(v)}
                r.log({**rewrite_logs(scalars), "train/global_step": state.global_step}, step=state.global_step)

    return TrackioLogs()


def _trackio_start(run: Run, ctx: _Ctx) -> None:
    import trackio
    with _trackio_scope():
        r = trackio.init(project=ctx.project, name=ctx.name, group=ctx.group.name if ctx.group else None,
                         config=ctx.config, resume="allow" if ctx.saved.get("trackio") else "never")
    run.handles["trackio"] = r
    run._callbacks.append(_trackio_callback(r))
    run.where["trackio"] = {"project": ctx.project, "run": r.name, "id": r.id, "dir": _trackio_dir()}


def _trackio_finish(run: Run, r, numbers: dict, step: int, error) -> None:
    with _trackio_scope():
        try:
            if numbers:
                r.log(numbers)
        finally:
            r.finish()


def _trackio_table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    import trackio
    with _trackio_scope():
        r = trackio.init(project=g.name, name=title, group=g.name, config={"best_params": params} if params else None)
        try:
            r.log({g.kind: trackio.Table(dataframe=df), **numbers})
        finally:
            r.finish()


_START = {"wandb": _wandb_start, "mlflow": _mlflow_start, "tensorboard": _tb_start, "trackio": _trackio_start}
_FINISH = {"wandb": _wandb_finish, "mlflow": _mlflow_finish, "tensorboard": _tb_finish, "trackio": _trackio_finish}
_GROUP_TABLE = {"wandb": _wandb_table, "mlflow": _mlflow_table, "tensorboard": _tb_table, "trackio": _trackio_table}
