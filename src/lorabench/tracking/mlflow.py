"""MLflow: an SQLite store `mlflow.db` in the run folder (or the comparison's / sweep's folder for its runs) unless
MLFLOW_TRACKING_URI says otherwise; a comparison or sweep is a parent run with the runs as its children."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from lorabench.tracking.base import GroupInfo, RunContext, error_line, flatten, metric_key, redact_url


@contextlib.contextmanager
def quiet():
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


def forget_store(uri: str | None) -> None:
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


def client(uri: str | None):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri) if uri else MlflowClient()


def experiment(client, name: str, artifacts: Path | None) -> str:
    """The id of experiment `name` (MLFLOW_EXPERIMENT_NAME wins), created if missing; in a store lorabench chose,
    its artifacts go to `artifacts` (not MLflow's default ./mlruns in the working directory)."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or name
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri() if artifacts else None)


def user_uri() -> bool:
    import mlflow
    return mlflow.is_tracking_uri_set()


def group_start(g: GroupInfo) -> None:
    with quiet():
        _group_start(g)


def _group_start(g: GroupInfo) -> None:
    folder = Path(g.folder)
    if not user_uri():
        g.mlflow_uri = f"sqlite:///{folder / 'mlflow.db'}"
    store = client(g.mlflow_uri)
    g.mlflow_experiment = experiment(store, g.name, folder / "mlartifacts" if g.mlflow_uri else None)
    parent = store.create_run(g.mlflow_experiment, run_name=f"{g.name}-{g.kind}",
                               tags={"lorabench.kind": g.kind, "lorabench.group": g.name})
    g.mlflow_parent = parent.info.run_id


def start(run, ctx: RunContext) -> None:
    with quiet():
        _start(run, ctx)


def _start(run, ctx: RunContext) -> None:
    import mlflow
    g = ctx.group
    uri = None
    if not user_uri():  # the Trainer's MLflowCallback logs through mlflow's global tracking URI
        uri = g.mlflow_uri if g and g.mlflow_uri else f"sqlite:///{ctx.folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        run._undo.append(lambda: (mlflow.set_tracking_uri(None), forget_store(uri)))
    store = client(uri)
    if ctx.saved.get("mlflow"):
        active = mlflow.start_run(run_id=ctx.saved["mlflow"])
    else:
        exp = g.mlflow_experiment if g and g.mlflow_experiment else experiment(
            store, ctx.project, ctx.folder / "mlartifacts" if uri else None)
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


def finish(run, run_id: str, numbers: dict, step: int, error) -> None:
    import mlflow
    status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    try:
        if numbers:
            mlflow.log_metrics({metric_key(k): float(v) for k, v in numbers.items()}, step=step, run_id=run_id)
        if error is not None:
            mlflow.MlflowClient().set_tag(run_id, "lorabench.error", error_line(error)[:5000])
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)  # also waits for the Trainer callback's asynchronous logging
        else:
            mlflow.MlflowClient().set_terminated(run_id, status)


def table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    store = client(g.mlflow_uri)
    store.log_table(g.mlflow_parent, df, f"{g.kind}.json")
    for k, v in numbers.items():
        store.log_metric(g.mlflow_parent, metric_key(k), float(v))
    for k, v in flatten(params).items():
        store.log_param(g.mlflow_parent, metric_key(f"best.{k}"), v)


def refuses_file_store() -> bool:
    """Whether the installed MLflow refuses file stores by default (it has the MLFLOW_ALLOW_FILE_STORE switch)."""
    try:
        from mlflow import environment_variables
    except ImportError:
        return False
    return hasattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE")
