"""`train.batch_size: auto`: the batch (and learning rate) a run actually trains with.

Batch 32 trains ~1.2x faster per sample than the study's batch 8 on CPU, but one epoch of a small train split then
makes a quarter of the optimiser steps, and the model learns less per epoch (BENCHMARKS.md, "Defaults at equal
epochs": 1500 rows, one epoch, val F1 0.7507 at batch 32 vs 0.7764 for the study's recipe). `auto` keeps batch 32
where an epoch still makes `train.min_steps_per_epoch` optimiser steps, and lowers the batch (not below the study's
8) where it would not; the learning rate is scaled linearly with the batch (the same rate per sample, the rule by
which the default 4e-4 at batch 32 is the study's 1e-4 at batch 8). An integer `batch_size` is used as given.
"""
from __future__ import annotations

import dataclasses
import math

from lorabench.config.schema import TrainConfig

AUTO_BATCH = 32    # the largest batch `auto` picks; `learning_rate` is the rate at this batch
MIN_AUTO_BATCH = 8  # the smallest: the study's batch
MIN_BUCKET_BATCH = 16  # `group_by_length: auto` groups by length from this global batch up (BENCHMARKS.md,
                       # "Defaults at equal epochs": length-alike batches of 8 made a noisier model, ~1.3x faster)


def _buckets(cfg: TrainConfig, global_batch: int) -> TrainConfig:
    """`cfg` with `group_by_length: auto` decided for `global_batch` (the rows of one optimiser step, which is
    what a length bucket holds: `trainer.BucketSampler`)."""
    if cfg.group_by_length != "auto":
        return cfg
    return dataclasses.replace(cfg, group_by_length=global_batch >= MIN_BUCKET_BATCH)


def resolve_batch(cfg: TrainConfig, train_rows: int, world_size: int = 1) -> tuple[TrainConfig, dict]:
    """The train settings a run uses and how they were chosen (also `group_by_length: auto`: length buckets from
    a global batch of 16 rows up).

    `train_rows`: rows in the train split (all processes together); `world_size`: data-parallel processes.
    Returns (`cfg` with an integer `batch_size` and the learning rate it trains with, a record dict:
    `batch_size` (per device), `learning_rate`, `steps_per_epoch` (optimiser steps of one epoch),
    `group_by_length`, `rule`).
    With an integer `cfg.batch_size` the settings are returned unchanged. With `auto`: the largest per-device batch
    b in [8, 32] whose epoch makes at least `cfg.min_steps_per_epoch` optimiser steps
    (ceil(rows / (b x gradient_accumulation_steps x world_size))), or 8 when none does; `learning_rate` (the rate at
    a global batch of 32) x the global batch b x gradient_accumulation_steps x world_size / 32.
    """
    acc, world = cfg.gradient_accumulation_steps, max(world_size, 1)

    def steps(b: int) -> int:
        return math.ceil(train_rows / (b * acc * world)) if train_rows else 0

    if cfg.batch_size != "auto":
        out = _buckets(cfg, cfg.batch_size * acc * world)
        return out, {"batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                     "steps_per_epoch": steps(cfg.batch_size), "group_by_length": out.group_by_length,
                     "rule": "as configured"}
    b = next((b for b in range(AUTO_BATCH, MIN_AUTO_BATCH - 1, -1) if steps(b) >= cfg.min_steps_per_epoch),
             MIN_AUTO_BATCH)
    lr = cfg.learning_rate * b * acc * world / AUTO_BATCH  # the rate applies to the global batch
    if b == AUTO_BATCH:
        rule = f"auto: batch {AUTO_BATCH} makes >= {cfg.min_steps_per_epoch} optimiser steps per epoch"
    else:
        rule = (f"auto: batch {b} instead of {AUTO_BATCH} so that one epoch of {train_rows} rows makes "
                f"{steps(b)} optimiser steps (train.min_steps_per_epoch {cfg.min_steps_per_epoch}"
                f"{'; 8 is the smallest auto batch' if steps(b) < cfg.min_steps_per_epoch else ''}); "
                f"learning rate {cfg.learning_rate:g} x {b * acc * world}/{AUTO_BATCH} (global batch) = {lr:.3g}")
    # evaluation makes no optimiser steps: it keeps batch 32 unless eval_batch_size says otherwise
    out = _buckets(dataclasses.replace(cfg, batch_size=b, learning_rate=lr,
                                       eval_batch_size=cfg.eval_batch_size or AUTO_BATCH), b * acc * world)
    return out, {"batch_size": b, "learning_rate": lr, "steps_per_epoch": steps(b),
                 "group_by_length": out.group_by_length, "rule": rule}
