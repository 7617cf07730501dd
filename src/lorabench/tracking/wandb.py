"""Weights & Biases: offline runs in the run folder unless WANDB_MODE / WANDB_DIR say otherwise; W&B's system metadata
off (it holds the command line, which may carry a password)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lorabench.tracking.base import GroupInfo, RunContext, error_line


def init_kwargs(name: str, job_type: str, group: str | None, folder: Path, config: dict | None) -> dict:
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


def start(run, ctx: RunContext) -> None:
    import wandb
    kw = init_kwargs(ctx.name, ctx.kind, ctx.group.name if ctx.group else None, ctx.folder, ctx.config)
    if ctx.saved.get("wandb"):
        kw.update(id=ctx.saved["wandb"], resume="allow")
    r = wandb.init(**kw)
    run.handles["wandb"] = r
    run.where["wandb"] = {"project": r.project, "group": kw["group"], "id": r.id, "mode": r.settings.mode}


def finish(run, r, numbers: dict, step: int, error) -> None:
    r.summary.update({**numbers, **({"error": error_line(error)} if error is not None else {})})
    r.finish(exit_code=1 if error is not None else 0)


def table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    import wandb
    r = wandb.init(**init_kwargs(title, g.kind, g.name, Path(g.folder), {"best_params": params} if params else None))
    try:
        r.log({g.kind: wandb.Table(dataframe=df)})
        r.summary.update(numbers)
    finally:
        r.finish()


def teardown() -> None:
    """Shut down W&B's service process once lorabench's runs are finished (unless the caller has a run open)."""
    import sys
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is None:
        with contextlib.suppress(Exception):
            wandb.teardown()
