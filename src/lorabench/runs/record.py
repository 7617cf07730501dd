"""The run record (`run.json`) as a typed object: what every reader (reports, the Python API) relies on."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 4  # 1: records before issue 13 (no schema_version key); 2: + schema_version, resumed_from;
                    # 3: + evaluation (per-class results, confusion matrix, AUCs, MCC), parallel, quantization;
                    # 4: + predictions ({split: file} of the per-row val/test probabilities), data.test_fingerprint,
                    #    data.folds / data.fold (k-fold runs), refit runs (a `refit` block, no metrics.val)


class RunStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"


@dataclass
class RunRecord:
    """One run: what was trained, on what, how it scored and what it cost.

    `metrics` maps a split (`val`, `test`, `val_at_threshold`, `test_at_threshold`) to
    {precision, recall, f1, accuracy} (floats in [0, 1]); `train_seconds` is wall time of training
    with per-epoch evaluation (seconds); `peak_memory_mb` the process's peak RSS on CPU or max
    allocated per GPU (MB); `params` {trainable, total, trainable_pct}; `history` one dict per
    evaluation (epoch, step, val metrics, loss); `evaluation` maps `val`/`test` to the detail a reader
    needs beyond F1 (`evaluation.metrics.evaluation_detail`: per-class precision/recall/F1/support, confusion
    matrix, macro and weighted F1, MCC, ROC-AUC/PR-AUC and curves for binary tasks; absent in runs from
    before schema 3); `resumed_from` the epoch a resumed run continued after; `extra["predictions"]` names the
    per-row val/test probability files (`runs.predictions`, schema 4). A refit (schema 4, `pipeline.run_refit`) has
    no `metrics["val"]`; `extra["refit"]` says what it was chosen by. Keys this class does not name are kept in
    `extra`, so nothing in run.json is lost.
    """
    status: RunStatus
    name: str
    label: str
    model: dict
    data: dict
    config: dict
    schema_version: int = 1
    seed: int | None = None
    metrics: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    threshold: float | None = None
    history: list = field(default_factory=list)
    train_seconds: float | None = None
    peak_memory_mb: float | None = None
    params: dict = field(default_factory=dict)
    throughput: dict = field(default_factory=dict)
    epochs_run: float | None = None
    best_epoch: float | None = None
    resumed_from: float | None = None
    run_dir: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        known["status"] = RunStatus(known.get("status", "failed"))
        return cls(**known, extra={k: v for k, v in raw.items() if k not in names})

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["status"] = self.status.value
        return {**out, **self.extra}

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunRecord":
        """The record of a run folder. Raises `LorabenchError` if it has no readable run.json."""
        from lorabench.errors import LorabenchError
        from lorabench.runs.files import not_a_run, read_run
        raw = read_run(run_dir)
        if raw is None:
            raise LorabenchError(not_a_run(run_dir))
        return cls.from_dict(raw)

    @property
    def val(self) -> dict[str, float]:
        """Val metrics (precision, recall, f1, accuracy); empty for a failed run."""
        return self.metrics.get("val", {})

    def __getitem__(self, key: str) -> Any:  # record["metrics"], as the run.json dict reads
        return self.to_dict()[key]


def refit_line(rec: dict) -> str:
    """One line about a finished refit: rows, epochs, time, and the val score it was chosen by (not its own)."""
    r = rec["refit"]
    c = r["chosen_by"]
    spread = f" ± {c['f1_std']:.4f} over {c['runs']} runs" if c.get("f1_std") is not None else ""
    epochs = f" for {r['epochs']:g} epoch(s)" if r.get("epochs") is not None else ""
    test = rec.get("metrics", {}).get("test")
    return (f"refit on {r['train_rows']} rows (train + val){epochs} in {rec.get('train_seconds', 0):.0f} s; no validation "
            f"score of its own; chosen by val F1 {c['f1']:.4f}{spread}" + (f"; test F1 {test['f1']:.4f}" if test else ""))
