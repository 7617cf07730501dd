"""Run-folder layout and names: where a run, a comparison's runs and an unfinished run live.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from lorabench import distributed
from lorabench.config.schema import ExperimentConfig


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """`runs/<name>/<label>-<time>`; under a data-parallel launcher every process gets the main one's time."""
    distributed.init()
    stamp = distributed.broadcast(dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Path(root) / safe_name(cfg.name) / f"{safe_name(cfg.label or cfg.model.name)}-{stamp}"


def safe_name(text: str) -> str:
    """`text` as one path component: letters, digits, `-_.` only, no leading/trailing dots or dashes, so a
    run name or label can never point outside its folder ("../x" -> "x", ".." -> "run")."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-.") or "run"

def run_dir_for(root: Path, exp: ExperimentConfig) -> Path:
    """A comparison's run folder of one experiment: `<label>-seed<seed>`, `-fold<i>` appended for a k-fold run."""
    fold = f"-fold{exp.data.fold}" if exp.data.fold is not None else ""
    return root / f"{safe_name(exp.label or exp.model.name)}-seed{exp.train.seed}{fold}"


def refit_dir_for(root: Path, label: str) -> Path:
    """Where a comparison's refit of the model `label` goes: `<root>/refit-<label>`."""
    return root / f"refit-{safe_name(label)}"

def partial_dir(out_dir: Path) -> Path:
    """Where the run for `out_dir` is built (and its checkpoints kept) until it is renamed into place."""
    return out_dir.parent / f".{out_dir.name}-partial"


def default_refit_dir(run_dir: Path) -> Path:
    """Where `lorabench refit RUN_DIR` (and `train --refit`) write by default: `<run_dir>-refit`, beside it."""
    run_dir = Path(run_dir)
    if run_dir.name in ("", ".", ".."):  # `lorabench refit .`: name the folder, not "."
        run_dir = run_dir.resolve()
    return run_dir.parent / f"{run_dir.name}-refit"
