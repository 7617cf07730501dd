"""Where the models fail, and whether their probabilities can be trusted, from the saved val predictions.

- `confidently_wrong`: per model the val rows it gets wrong with the highest probability on its (wrong) answer;
- `all_wrong`: the val rows every model gets wrong, marked where the data checks found the text also in train
  (`duplicate_in_train`) or carrying more than one label (`conflicting_label`): often label noise, not model error;
- `agreement`: Cohen's kappa between every two models' predicted labels (scikit-learn);
- `calibration`: expected calibration error, Brier score and the reliability curve per model
  (`evaluation.calibration`).

A model with several seeds is represented by its first seed's run (the run the per-class tables show); decisions at
the most probable class. The texts and flags come from `val_rows.csv`, which `compare` writes beside data.json
(`write_val_rows`); a comparison made before it shows ids without texts.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from lorabench.data.checks import row_flags
from lorabench.data.types import Splits
from lorabench.evaluation.calibration import brier_score, expected_calibration_error, reliability_curve
from lorabench.reporting.model_predictions import ModelPredictions
from lorabench.runs.files import write_atomic

VAL_ROWS_FILE = "val_rows.csv"  # in a comparison folder: id, text, label and data-check flags of each val row
ANALYSIS_DIR = "analysis"       # in a comparison folder: the CSV files of this module
TOP_WRONG = 10                  # confidently wrong rows kept per model
FLAGS = ("duplicate_in_train", "conflicting_label")


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def write_val_rows(folder: Path, splits: Splits) -> Path:
    """`val_rows.csv` in `folder`: one row per val row in split order: `id`, `text` (as fed to the model),
    `label` (name), and the data-check flags of `data.checks.row_flags` (true/false)."""
    flags = row_flags(splits)

    def shown(y) -> str:  # the label's name; multi_label: the names of the row's labels; regression: the number
        if splits.task == "multi_label":
            return "" if y is None else json.dumps([n for n, v in zip(splits.label_names, y) if v])
        if splits.task == "regression":
            return "" if y != y else repr(y)
        return splits.label_names[y] if y >= 0 else ""
    rows = [[str(i), t, shown(y), *("true" if flags[f][n] else "false" for f in FLAGS)]
            for n, (i, t, y) in enumerate(zip(splits.val.ids, splits.val.texts, splits.val.labels))]
    return write_atomic(folder / VAL_ROWS_FILE, _csv(["id", "text", "label", *FLAGS], rows))


def read_val_rows(folder: Path) -> dict[str, dict] | None:
    """{id: {text, label, duplicate_in_train, conflicting_label}} from `val_rows.csv`, None when absent."""
    path = folder / VAL_ROWS_FILE
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as f:
        return {r["id"]: {**r, **{k: r.get(k) == "true" for k in FLAGS}} for r in csv.DictReader(f)}


def analyse(folder: Path, preds: dict[str, ModelPredictions]) -> dict:
    """The error analysis and calibration of every model in `preds` (val); writes `analysis/confidently_wrong.csv`,
    `analysis/all_wrong.csv`, `analysis/agreement.csv` and `analysis/calibration.csv` in `folder`. Returns
    {confidently_wrong: {label: [row dicts]}, all_wrong: [row dicts], all_wrong_flagged: int, agreement: {labels,
    kappa (matrix)}, calibration: {label: {ece, brier, curve}}, models: [labels of the models (no ensemble)]}."""
    from sklearn.metrics import cohen_kappa_score

    rows = read_val_rows(folder) or {}
    labels = [lab for lab, m in preds.items() if m.val]
    if not labels:
        return {}
    first = {lab: preds[lab].val[0] for lab in labels}
    ref = first[labels[0]]
    names, y, ids = ref.label_names, ref.labels, ref.ids

    def info(i: int) -> dict:
        r = rows.get(ids[i], {})
        return {"id": ids[i], "text": r.get("text", ""), "label": names[y[i]],
                **{f: r.get(f) for f in FLAGS}}

    wrong: dict[str, list[dict]] = {}
    for lab in labels:
        p = first[lab].probs
        pred = p.argmax(axis=1)
        bad = np.flatnonzero(pred != y)
        top = bad[np.argsort(-p[bad, pred[bad]], kind="stable")][:TOP_WRONG]
        wrong[lab] = [{"model": lab, "rank": k + 1, **info(i), "predicted": names[pred[i]],
                       "probability": float(p[i, pred[i]])} for k, i in enumerate(top)]
    models = [lab for lab in labels if preds[lab].kind == "model"]
    all_wrong: list[dict] = []
    if models:
        predicted = {lab: first[lab].probs.argmax(axis=1) for lab in models}
        every = np.logical_and.reduce([predicted[lab] != y for lab in models])
        all_wrong = [{**info(i), **{f"predicted_{lab}": names[predicted[lab][i]] for lab in models}}
                     for i in np.flatnonzero(every)]
    kappa = [[float(cohen_kappa_score(first[a].probs.argmax(1), first[b].probs.argmax(1))) if a != b else 1.0
              for b in labels] for a in labels]
    calibration = {lab: {"ece": expected_calibration_error(y, first[lab].probs), "brier": brier_score(y, first[lab].probs),
                         "curve": reliability_curve(y, first[lab].probs)} for lab in labels}
    out_dir = folder / ANALYSIS_DIR
    cols = ["model", "rank", "id", "text", "label", "predicted", "probability", *FLAGS]
    write_atomic(out_dir / "confidently_wrong.csv",
                 _csv(cols, [[r[c] for c in cols] for lab in labels for r in wrong[lab]]))
    cols = ["id", "text", "label", *[f"predicted_{lab}" for lab in models], *FLAGS]
    write_atomic(out_dir / "all_wrong.csv", _csv(cols, [[r[c] for c in cols] for r in all_wrong]))
    write_atomic(out_dir / "agreement.csv", _csv(["model", *labels],
                                                 [[a, *(f"{k:.4f}" for k in row)] for a, row in zip(labels, kappa)]))
    write_atomic(out_dir / "calibration.csv", _csv(["model", "ece", "brier"],
                                                   [[lab, f"{c['ece']:.4f}", f"{c['brier']:.4f}"]
                                                    for lab, c in calibration.items()]))
    return {"confidently_wrong": wrong, "all_wrong": all_wrong, "models": models,
            "all_wrong_flagged": sum(1 for r in all_wrong if any(r.get(f) for f in FLAGS)),
            "agreement": {"labels": labels, "kappa": kappa}, "calibration": calibration, "rows": len(y)}
