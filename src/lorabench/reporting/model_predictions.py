"""Every model's saved per-row predictions of a comparison, checked to be of the same rows: what the statistics,
the error analysis and the calibration of a report are computed from (nothing is predicted again)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lorabench.errors import LorabenchError
from lorabench.runs.ensemble import ENSEMBLE_DIR, read_aligned, same_rows
from lorabench.runs.predictions import PREDICTION_FILES, SplitPredictions, read_predictions
from lorabench.runs.record import RunRecord, RunStatus


@dataclass
class ModelPredictions:
    """One table row's predictions. `val` / `test`: one `SplitPredictions` per completed run (its seeds; the
    ensemble: one), in seed order, of one split (a k-fold comparison: fold 1's runs, the split `val_rows.csv`
    describes); `test` empty when not every run has labelled test predictions. `kind`: "model" or "ensemble"."""
    label: str
    kind: str
    val: list[SplitPredictions] = field(default_factory=list)
    test: list[SplitPredictions] = field(default_factory=list)


def _labelled(p: SplitPredictions) -> bool:
    return len(p.labels) > 0 and bool((p.labels >= 0).all())


def gather(folder: Path, runs: list[tuple[Path, RunRecord]], labels: list[str],
           ensemble_row: dict | None) -> tuple[dict[str, ModelPredictions], str | None]:
    """The predictions of every row label in `labels` (config order) from its completed runs of one split (in a
    k-fold comparison the runs of fold 1), and of the ensemble row when there is one. Returns ({label:
    ModelPredictions}, None), or ({}, a one-line reason) when they cannot be compared (runs of other rows, or of
    other label sets: `runs.ensemble.same_rows`, `read_aligned`). Models without saved predictions are left out."""
    by_label: dict[str, list[tuple[Path, RunRecord]]] = {}
    for path, rec in runs:
        if rec.status == RunStatus.COMPLETED and rec.refit is None and (rec.predictions or {}).get("val") \
                and (rec.data.get("fold") or 1) == 1:
            by_label.setdefault(rec.label, []).append((path, rec))
    groups = {lab: sorted(by_label[lab], key=lambda x: x[1].seed or 0) for lab in labels if lab in by_label}
    if not groups:
        return {}, None
    recs = {p: r.to_dict() for g in groups.values() for p, r in g}
    try:
        names = same_rows(recs)
        dirs = [[p for p, _ in g] for g in groups.values()]
        out = {}
        for split in ("val", "test"):
            per = read_aligned(dirs, recs, split, names)
            for lab, preds in zip(groups, per or [[] for _ in groups]):
                m = out.setdefault(lab, ModelPredictions(lab, "model"))
                if preds and all(_labelled(p) for p in preds):
                    setattr(m, split, preds)
        if ensemble_row is not None:
            ens = _ensemble_predictions(folder, ensemble_row, names, out)
            if ens is not None:
                out[ensemble_row["label"]] = ens
    except LorabenchError as e:
        return {}, f"no statistics: {e}"
    return out, None


def _ensemble_predictions(folder: Path, row: dict, names: list[str],
                          models: dict[str, ModelPredictions]) -> ModelPredictions | None:
    """The ensemble row's saved predictions (a k-fold ensemble: its fold 1's), checked against the models' rows."""
    where = folder / ENSEMBLE_DIR / ("fold1" if row.get("folds") else "")
    ref = next(iter(models.values()), None)
    out = ModelPredictions(row["label"], "ensemble")
    for split in ("val", "test"):
        path = where / PREDICTION_FILES[split]
        if not path.is_file():
            continue
        p = read_predictions(path, names)
        theirs = getattr(ref, split) if ref else []
        if theirs and (p.ids != theirs[0].ids or list(p.labels) != list(theirs[0].labels)):
            raise LorabenchError(f"{path}: of other rows than the models' {split} predictions")
        if _labelled(p):
            setattr(out, split, [p])
    return out if out.val else None
