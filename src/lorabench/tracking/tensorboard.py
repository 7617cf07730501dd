"""TensorBoard: transformers' TensorBoardCallback writing into `<run>/tensorboard/` (TENSORBOARD_LOGGING_DIR wins);
`tensorboard --logdir` on a comparison folder shows all its runs."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from lorabench.models.hub_code import import_peft
from lorabench.reporting.tables import markdown
from lorabench.tracking.base import GroupInfo, RunContext, error_line


def log_dir(folder: Path) -> Path:
    return Path(os.environ["TENSORBOARD_LOGGING_DIR"]) if os.environ.get("TENSORBOARD_LOGGING_DIR") \
        else folder / "tensorboard"


def start(run, ctx: RunContext) -> None:
    import_peft()  # transformers.integrations imports peft, peft bitsandbytes (lorabench.models.hub_code)
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    d = log_dir(ctx.folder)
    writer = SummaryWriter(log_dir=str(d))
    writer.add_text("lorabench/config", "```\n" + json.dumps(ctx.config, indent=2) + "\n```")
    writer.flush()
    run._callbacks.append(TensorBoardCallback(tb_writer=writer))  # the Trainer's losses and per-epoch val metrics
    run.handles["tensorboard"] = (d, writer)
    run.where["tensorboard"] = {"dir": "tensorboard" if d == ctx.folder / "tensorboard" else str(d)}


def finish(run, handle, numbers: dict, step: int, error) -> None:
    from torch.utils.tensorboard import SummaryWriter
    d, first = handle
    first.close()  # closed already if the Trainer ran (its callback closes it at the end of training)
    with contextlib.closing(SummaryWriter(log_dir=str(d))) as w:
        for k, v in numbers.items():
            w.add_scalar(k, v, step)
        if error is not None:
            w.add_text("lorabench/error", error_line(error))


def table(g: GroupInfo, title: str, df, numbers: dict, params: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter
    with contextlib.closing(SummaryWriter(log_dir=str(log_dir(Path(g.folder))))) as w:
        w.add_text(f"{g.kind}/table", markdown(df))
        if params:
            w.add_text(f"{g.kind}/best_params", "```\n" + json.dumps(params, indent=2) + "\n```")
        for k, v in numbers.items():
            w.add_scalar(f"{g.kind}/{k}", v, 0)
