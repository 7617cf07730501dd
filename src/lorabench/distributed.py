"""Rank awareness for data-parallel runs (`torchrun` / `accelerate launch`): which process this is, and
the few collective steps the pipeline needs so that every process trains and only the main one writes.

One process: every function is a no-op answer (rank 0 of 1) and nothing imports torch.distributed.
Several: the launcher sets RANK / WORLD_SIZE / LOCAL_RANK; `init()` joins the process group through
accelerate's `PartialState` (NCCL on GPUs, gloo on CPU), the same state the Trainer then uses.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, TypeVar

T = TypeVar("T")


def world_size() -> int:
    """Processes in the run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank, 0..world_size()-1."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (its GPU index)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the one process that writes run folders, reports and logs."""
    return rank() == 0


def fsdp_requested() -> bool:
    """True when launched for FSDP (`accelerate launch --use_fsdp`, or an accelerate config with FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1", "yes")


def local_device() -> int | str:
    """This process's device for placing a whole model: its GPU index, or "cpu"."""
    import torch
    return local_rank() if torch.cuda.is_available() else "cpu"


def init() -> None:
    """Join the process group when launched with several processes (idempotent); no-op otherwise.
    On CPU gloo is used; set GLOO_SOCKET_IFNAME=lo on machines whose hostname does not resolve."""
    if world_size() > 1:
        from accelerate import PartialState
        PartialState()


def _group_ready() -> bool:
    if world_size() <= 1:
        return False
    import torch.distributed as td
    return td.is_available() and td.is_initialized()


def barrier() -> None:
    """Wait until every process reaches this point (no-op with one process)."""
    if _group_ready():
        import torch.distributed as td
        td.barrier()


def broadcast(value: T) -> T:
    """The main process's `value` in every process (any picklable object); `value` itself with one."""
    if not _group_ready():
        return value
    import torch.distributed as td
    box = [value if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list:
    """Every process's `value`, in rank order, in every process (`[value]` with one)."""
    if not _group_ready():
        return [value]
    import torch.distributed as td
    out: list = [None] * world_size()
    td.all_gather_object(out, value)
    return out


@contextlib.contextmanager
def main_first():
    """The main process runs the block first (e.g. building a model cache), the others after it has
    finished, so they find its result instead of racing to write the same files. No-op with one process."""
    if not _group_ready():
        yield
        return
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
