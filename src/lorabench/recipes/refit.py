"""`lorabench refit RUN` / `lorabench.refit`: retrain a finished run on its train + val rows with its settings, for
the epoch count its val evaluation picked (`pipeline.refit`)."""
from __future__ import annotations

from pathlib import Path

from lorabench.pipeline.refit import run_refit
from lorabench.runs.layout import default_refit_dir
from lorabench.runs.record import RunRecord


def refit(run_dir: str | Path, output_dir: str | Path | None = None) -> tuple[RunRecord, Path]:
    """(the refit's record, its folder: default `<run_dir>-refit`). The record has no val metrics of its own:
    `record.refit` holds `from`, `epochs`, `chosen_by` (the source's val metrics), `train_rows`. Raises
    `LorabenchError` for a folder that is not a finished run, `DataError` when its data changed since."""
    out = Path(output_dir) if output_dir is not None else default_refit_dir(Path(run_dir))
    return RunRecord.from_dict(run_refit(run_dir, out)), out
