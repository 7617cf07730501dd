"""The run record (`run.json`) as one typed object that both writes and reads it: the pipeline builds a run's record
and writes it with `RunRecord.write`; every reader (the reports, the ensemble, predict, the Python API) reads it with
`RunRecord.read`, which brings a record of an older schema to the current one (`migrate`). The schema's history is
`SCHEMA_HISTORY` (docs/run-record.md shows it as a table)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from lorabench.config.tasks import DISPLAY, primary
from lorabench.errors import LorabenchError
from lorabench.runs.files import RUN_FILE, not_a_run, read_run, write_json

SCHEMA_VERSION = 7
SCHEMA_HISTORY: dict[int, str] = {
    1: "records before issue 13: no schema_version key",
    2: "+ schema_version, resumed_from (a run resumed after a kill)",
    3: "+ evaluation (per-class results, confusion matrix, ROC-AUC, PR-AUC, MCC), parallel, quantization",
    4: "+ predictions ({split: file} of the per-row val/test probabilities), data.test_fingerprint, data.folds / "
       "data.fold (k-fold runs), refit runs (a `refit` block, no metrics.val)",
    5: "every field of `RunRecord` written, null where it does not apply (a typed record: precision, parallel, "
       "batch, versions, machine, ... are fields, no longer extras)",
    6: "+ serving (what predicting costs: rows/s, latency of one row, peak memory, merged export size), "
       "calibration (train.calibration temperature: T and val log loss before and after)",
    7: "+ data.task for multi_label and regression runs (absent: single_label): metrics, evaluation (per_label, or "
       "residuals), predictions files and history by task; threshold a list (one per label) for multi_label",
}


class RunStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"


@dataclass
class RunRecord:
    """One run: what was trained, on what, how it scored and what it cost. Units: seconds for `*_seconds`, MB for
    `peak_memory_mb`, rows/s and tokens/s in `throughput`; metrics are floats in [0, 1] unless named otherwise.

    - what: `status`, `name`, `label`, `seed`, `model` ({name, kind, source, architecture, decoder, finetune,
      lora_target_modules, head, ...}), `config` (the resolved config, `config.to_dict`), `data` (`Splits.summary`:
      rows, labels, class weights, fingerprints, checks), `params` ({trainable, total, trainable_pct}),
      `precision` (`models.precision.Precision.to_dict`), `quantization`, `device_map`, `parallel` (processes and
      batch sizes), `batch` (the batch and learning rate trained with, and why), `speed_levers`
    - how it scored: `metrics` ({split: {precision, recall, f1, accuracy}} for `val`, `test`, `val_at_threshold`,
      `test_at_threshold`), `evaluation` ({split: per-class results, confusion matrix, MCC, ROC-AUC, PR-AUC, curves}),
      `threshold` (binary decision threshold, None: most probable class; multi_label: one per label), `calibration` (train.calibration
      temperature: {method, temperature, log_loss_before, log_loss_after, fitted_on}; None: uncalibrated), `history` (one dict per evaluation),
      `best_epoch`, `epochs_run`, `steps`, `predictions` ({split: file} of per-row probabilities)
    - what it cost: `train_seconds` (training with per-epoch evaluation), `pure_train_seconds`, `eval_seconds`,
      `load_seconds`, `wall_seconds`, `peak_memory_mb`, `peak_memory` (how it was measured), `throughput`,
      `serving` (what predicting costs, `inference.serving.measure`: rows_per_second, latency_ms, peak_memory_mb,
      export_mb, ...; None: not measured)
    - where and when: `run_dir`, `started_at`, `finished_at`, `versions`, `machine`, `resumed_from` (the epoch a
      resumed run continued after), `refit` (a refit: what it was chosen by), `sweep` (a trial: its study and
      parameters), `tracking` (the tracker runs: ids and redacted locations), `error` and `traceback` (a failed run)

    Keys this class does not name (written by a newer lorabench) are kept in `extra`, so nothing is lost.
    """
    status: RunStatus
    name: str
    label: str
    model: dict
    data: dict
    config: dict
    schema_version: int = SCHEMA_VERSION
    seed: int | None = None
    metrics: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    threshold: float | list[float] | None = None  # multi_label: one per label
    calibration: dict | None = None
    predictions: dict | None = None
    history: list = field(default_factory=list)
    best_epoch: float | None = None
    epochs_run: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    pure_train_seconds: float | None = None
    eval_seconds: float | None = None
    load_seconds: float | None = None
    wall_seconds: float | None = None
    peak_memory_mb: float | None = None
    peak_memory: dict | None = None
    throughput: dict = field(default_factory=dict)
    serving: dict | None = None
    params: dict = field(default_factory=dict)
    precision: dict | None = None
    quantization: str | None = None
    device_map: dict | None = None
    parallel: dict | None = None
    batch: dict | None = None
    speed_levers: dict | None = None
    resumed_from: float | None = None
    refit: dict | None = None
    sweep: dict | None = None
    tracking: dict | None = None
    versions: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    run_dir: str | None = None
    error: str | None = None
    traceback: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> RunRecord:
        """A record from run.json's content (of any schema version: `migrate` brings it to this one)."""
        raw = migrate(raw)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        known["status"] = RunStatus(known.get("status", "failed"))
        known.setdefault("name", "")
        known.setdefault("label", known.get("name", ""))
        for section in ("model", "data", "config"):
            known.setdefault(section, {})
        return cls(**known, extra={k: v for k, v in raw.items() if k not in names})

    def to_dict(self) -> dict:
        """run.json's content: every field (null where it does not apply), then the `extra` keys."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["status"] = self.status.value
        return {**out, **self.extra}

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """The record of a run folder. Raises `LorabenchError` if it has no readable run.json."""
        raw = read_run(run_dir)
        if raw is None:
            raise LorabenchError(not_a_run(run_dir))
        return cls.from_dict(raw)

    def write(self, run_dir: str | Path) -> Path:
        """Write run.json into `run_dir` (atomically: a temp file renamed); returns its path."""
        return write_json(Path(run_dir) / RUN_FILE, self.to_dict())

    @property
    def val(self) -> dict[str, float]:
        """Val metrics (precision, recall, f1, accuracy); empty for a failed run or a refit."""
        return self.metrics.get("val", {})

    def __getitem__(self, key: str) -> Any:  # record["metrics"], as the run.json dict reads
        return self.to_dict()[key]


def migrate(raw: dict) -> dict:
    """run.json's content of any schema version (1 to `SCHEMA_VERSION`) brought to the current one, as a new dict:
    the keys a later version added get what an old run means by them (none resumed, no per-class evaluation,
    unquantized, no saved predictions, ...). The one place that knows older records (`SCHEMA_HISTORY`)."""
    out = dict(raw)
    version = int(out.get("schema_version") or 1)
    if version < 2:
        out.setdefault("resumed_from", None)
    if version < 3:
        out.setdefault("evaluation", {})
        out.setdefault("parallel", None)
        out.setdefault("quantization", "none" if out.get("model", {}).get("kind") == "transformer" else None)
    if version < 4:
        out.setdefault("predictions", None)
    if version < 6:  # not measured then: the report shows blanks
        out.setdefault("serving", None)
        out.setdefault("calibration", None)
    out["schema_version"] = SCHEMA_VERSION
    return out


def refit_line(rec: dict) -> str:
    """One line about a finished refit: rows, epochs, time, and the val score it was chosen by (not its own)."""
    r = rec["refit"]
    c = r["chosen_by"]
    head = primary(rec.get("data", {}).get("task"))
    name = DISPLAY[head]
    spread = f" ± {c[f'{head}_std']:.4f} over {c['runs']} runs" if c.get(f"{head}_std") is not None else ""
    epochs = f" for {r['epochs']:g} epoch(s)" if r.get("epochs") is not None else ""
    test = rec.get("metrics", {}).get("test")
    return (f"refit on {r['train_rows']} rows (train + val){epochs} in {rec.get('train_seconds') or 0:.0f} s; no validation "
            f"score of its own; chosen by val {name} {c[head]:.4f}{spread}"
            + (f"; test {name} {test[head]:.4f}" if test else ""))
