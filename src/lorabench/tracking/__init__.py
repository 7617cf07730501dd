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
import importlib.metadata
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from lorabench import distributed
from lorabench.config.loading import to_dict
from lorabench.config.schema import TRACKERS  # wandb, mlflow, tensorboard, trackio
from lorabench.console import say
from lorabench.errors import ConfigError
from lorabench.runs.files import write_json
from lorabench.tracking import mlflow as _mlflow
from lorabench.tracking import tensorboard as _tensorboard
from lorabench.tracking import trackio as _trackio
from lorabench.tracking import wandb as _wandb
from lorabench.tracking.base import (
    _GROUP,
    GroupInfo,
    RunContext,
    child_env,
    current_group,
    flatten,
    is_number,
    json_safe,
    redact_url,
    summary,
)

OWN_CALLBACKS = ("tensorboard", "trackio")  # attached by lorabench itself, not through the Trainer's report_to
TRACKING_FILE = "tracking.json"             # in an unfinished run's folder: its tracker run ids, to resume them
KEEP_ON_FAILURE = ("wandb", "tensorboard", "mlflow.db")  # a failed run's folder keeps its tracker data
BACKENDS = {"wandb": _wandb, "mlflow": _mlflow, "tensorboard": _tensorboard, "trackio": _trackio}  # a module each
__all__ = ["BACKENDS", "GroupInfo", "KEEP_ON_FAILURE", "Run", "RunContext", "TRACKERS", "check_environment",
           "child_env", "current_group", "flatten", "group", "json_safe", "redact_url", "requested", "start",
           "summary", "sweep_best", "trainer_report_to", "where_line"]


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
    names = requested(report_to)
    if "mlflow" in names:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][\w+.-]*:", uri) else ""
        file_store = bool(uri) and (scheme == "file" or (not scheme and not uri.startswith("databricks")))
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1", "yes")
        if file_store and not allowed and _mlflow.refuses_file_store():
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
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.metadata.version(f"{dist}-skinny")
        except importlib.metadata.PackageNotFoundError:
            return "?"


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


# --------------------------------------------------------------------------- groups (compare, sweep)
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
        numbers = {k: v for k, v in (numbers or {}).items() if is_number(v)}
        params = json_safe(params or {})
        title = f"{g.name}-{g.kind}"
        for name in g.trackers:
            try:
                BACKENDS[name].table(g, title, df, numbers, params)
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
        _mlflow.group_start(info)
    token = _GROUP.set(info)
    status = "FAILED"
    try:
        yield Group(info)
        status = "FINISHED"
    finally:
        _GROUP.reset(token)
        if info.mlflow_parent:
            with contextlib.suppress(Exception):
                _mlflow.client(info.mlflow_uri).set_terminated(info.mlflow_parent, status)
            _mlflow.forget_store(info.mlflow_uri)
        _wandb.teardown()
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
        parts.append(f"trackio: {_trackio.store_dir()}")
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
                BACKENDS[name].finish(self, handle, numbers, step, error)
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
            _wandb.teardown()
            say(where_line(list(self.handles), self.out_dir, uri))


def start(cfg, folder: Path, out_dir: Path, kind: str = "train") -> Run:
    """Start the tracker runs of `train.report_to` for the run built in `folder` (renamed to `out_dir` when it is
    finished); a no-op `Run` without trackers or off the main process. A run resumed after a kill continues its
    tracker runs (ids kept in `folder/tracking.json`)."""
    names = [n for n in requested(cfg.train.report_to) if n in TRACKERS]
    if not names or not distributed.is_main():
        return Run()
    g = current_group()
    run = Run(Path(folder), Path(out_dir))
    saved = {}
    if (run.folder / TRACKING_FILE).is_file():
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads((run.folder / TRACKING_FILE).read_text())
    ctx = RunContext(out_dir=Path(out_dir), name=Path(out_dir).name, kind="trial" if g and g.kind == "sweep" else kind, group=g,
               project=g.name if g else cfg.name, config=json_safe(to_dict(cfg)), folder=run.folder, saved=saved)
    try:
        for name in names:
            BACKENDS[name].start(run, ctx)
    except BaseException as e:
        run.finish({}, error=e)
        raise
    write_json(run.folder / TRACKING_FILE, {k: v.get("id") or v.get("run_id") for k, v in run.where.items()})
    return run


