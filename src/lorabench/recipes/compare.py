"""`lorabench compare` / `lorabench.compare`: several models on one split, each (model, seed, fold) an ordinary run
folder, then the ensemble row, the refit of the best model (`refit: true`) and the report (`pipeline.comparison`)."""
from __future__ import annotations

from pathlib import Path

from lorabench.config.schema import CompareConfig
from lorabench.pipeline.comparison import Comparison, run_comparison


def compare(cfg: CompareConfig, output_dir: str | Path | None = None, *, force: bool = False) -> Comparison:
    """Run the comparison `cfg` into `output_dir` (default `runs/<name>`): finished runs of an unchanged config are
    reused (`force` re-trains them, keeping the old ones aside). Returns the `Comparison` (its table, records, the
    runs that failed at run time, the report). Raises `ConfigError` / `DataError` before anything trains."""
    return run_comparison(cfg, output_dir=output_dir, force=force)
