"""compare = several experiments on one split -> one run folder each -> the report."""
from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

from .config import CompareConfig, ExperimentConfig, dump_yaml, to_dict
from .data import load_splits
from .pipeline import quiet_libraries, run_experiment, safe_name
from .records import read_run, write_atomic, write_json


def run_dir_for(root: Path, exp: ExperimentConfig) -> Path:
    return root / f"{safe_name(exp.label or exp.model.name)}-seed{exp.train.seed}"


def _reusable(run_dir: Path, exp: ExperimentConfig, fingerprint: str) -> dict | None:
    """A finished run of exactly this config on exactly this data, else None."""
    rec = read_run(run_dir)
    if (rec and rec.get("status") == "completed" and rec.get("config") == json.loads(json.dumps(to_dict(exp)))
            and rec.get("data", {}).get("fingerprint") == fingerprint):
        return rec
    return None


def _line(rec: dict) -> str:
    if rec.get("status") != "completed":
        return f"FAILED: {rec.get('error', 'unknown error')}"
    m = rec["metrics"]["val"]
    return (f"val F1 {m['f1']:.4f}  acc {m['accuracy']:.4f}  {rec['train_seconds']:.0f} s  "
            f"peak {rec['peak_memory_mb']:.0f} MB  trainable {rec['params']['trainable_pct']:.3g}%")


def run_compare(cfg: CompareConfig, *, output_dir: str | None = None, force: bool = False) -> Path:
    """Train every (model, seed) on the identical split; a failure is recorded and the rest go on."""
    from .datasummary import format_summary, summarise
    from .report import build_report
    root = Path(output_dir) if output_dir else Path("runs") / safe_name(cfg.name)
    root.mkdir(parents=True, exist_ok=True)
    exps = cfg.experiments()  # validates every entry before anything trains
    quiet_libraries()
    splits = load_splits(cfg.data)
    by_data = {json.dumps(to_dict(cfg.data), sort_keys=True): splits}
    write_atomic(root / "compare.yaml", dump_yaml(cfg))
    summary = summarise(cfg, splits)
    write_json(root / "data.json", summary)
    print(format_summary(summary), flush=True)
    t_all = time.perf_counter()
    for i, exp in enumerate(exps, 1):
        run_dir = run_dir_for(root, exp)
        tag = f"[{i}/{len(exps)}] {exp.label} (seed {exp.train.seed})"
        key = json.dumps(to_dict(exp.data), sort_keys=True)
        if key not in by_data:  # a per-model train subsample of the same split
            by_data[key] = load_splits(exp.data)
        rec = None if force else _reusable(run_dir, exp, by_data[key].fingerprint)
        if rec is not None:
            print(f"{tag}: reused {run_dir}  {_line(rec)}", flush=True)
            continue
        print(f"{tag}: training {exp.model.name} ...", flush=True)
        if (run_dir / "run.json").is_file():  # an outdated or failed run of this entry: replace it
            shutil.rmtree(run_dir)
        try:
            rec = run_experiment(exp, run_dir, splits=by_data[key], keep_failed=True)
        except KeyboardInterrupt:
            raise
        except Exception:
            rec = read_run(run_dir) or {"status": "failed", "error": "no record written"}
        print(f"{tag}: {_line(rec)}", flush=True)
        gc.collect()
    report = build_report(root)
    print(f"compare: {len(exps)} runs in {time.perf_counter() - t_all:.0f} s", flush=True)
    return report

