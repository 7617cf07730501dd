"""trackio: a small forwarder of the Trainer's logs into lorabench's own trackio run (transformers' TrackioCallback
opens a run of its own and closes it when training ends, before lorabench has its final metrics); trackio's
local store ($TRACKIO_DIR, default $HF_HOME/trackio: trackio reads it once, at import)."""
from __future__ import annotations

import contextlib
import io
import os

from lorabench.models.hub_code import import_peft
from lorabench.tracking.base import GroupInfo, RunContext, is_number


def store_dir() -> str:
    with contextlib.suppress(Exception):
        from trackio.utils import TRACKIO_DIR
        return str(TRACKIO_DIR)
    return os.environ.get("TRACKIO_DIR", "$HF_HOME/trackio")


@contextlib.contextmanager
def scope():
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


def logs_callback(r):
    import_peft()
    from transformers import TrainerCallback
    from transformers.integrations.integration_utils import rewrite_logs

    class TrackioLogs(TrainerCallback):
        """The Trainer's logs (training loss, per-epoch val metrics) into lorabench's trackio run."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                scalars = {k: v for k, v in logs.items() if is_number(v)}
                r.log({**rewrite_logs(scalars), "train/global_step": state.global_step}, step=state.global_step)

    return TrackioLogs()


def start(run, ctx: RunContext) -> None:
    import trackio
    with scope():
        r = trackio.init(project=ctx.project, name=ctx.name, group=ctx.group.name if ctx.group else None,
                         config=ctx.config, resume="allow" if ctx.saved.get("trackio") else "never")
    run.handles["trackio"] = r
    run._callbacks.append(logs_callback(r))
    run.where["trackio"] = {"project": ctx.project, "run": r.name, "id": r.id, "dir": store_dir()}


def finish(run, r, numbers: dict, step: int, error) -> None:
    with scope():
        try:
            if numbers:
                r.log(numbers)
        finally:
            r.finish()


def table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    import trackio
    with scope():
        r = trackio.init(project=g.name, name=title, group=g.name, config={"best_params": params} if params else None)
        try:
            r.log({g.kind: trackio.Table(dataframe=df), **numbers})
        finally:
            r.finish()
