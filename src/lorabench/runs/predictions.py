"""Per-row predictions of a run's val and test splits: `predictions_val.csv`, `predictions_test.csv`.

What an ensemble (or any later analysis) averages, without loading a model again. One row per split row,
in split order; columns `id` (as in the data), `label` (the true label's name; empty when the row is
unlabelled), `prob_<label name>` per class in label-id order, `prediction` (the predicted label's name by
the run's decision rule: its binary threshold when it has one, else the most probable class). Probabilities
are written as the shortest decimal that reads back to the same float64 (Python's repr), so a mean of
the saved probabilities is reproducible to the last bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorabench.errors import LorabenchError
from lorabench.evaluation.metrics import predict_labels
from lorabench.runs.files import write_atomic

PREDICTION_FILES = {"val": "predictions_val.csv", "test": "predictions_test.csv"}


@dataclass
class SplitPredictions:
    """One split's saved predictions: `ids` (n,) as written (strings), `labels` (n,) int label ids
    (-1 = unlabelled), `probs` (n, classes) float64, `label_names` in id order."""
    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    label_names: list[str]


def predictions_csv(ids: list[Any], labels: list[int] | np.ndarray | None, probs: np.ndarray,
                    label_names: list[str], threshold: float | None = None) -> str:
    """The CSV text of one split's predictions. `ids` (n,), `labels` (n,) int label ids or None/-1 for
    unlabelled rows, `probs` (n, classes) float; `threshold`: the binary decision threshold on
    P(label id 1) (None: the most probable class). Raises `LorabenchError` on mismatched shapes."""
    import pandas as pd

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(ids), len(label_names)):
        raise LorabenchError(f"predictions: probabilities of shape {probs.shape} for {len(ids)} rows and "
                             f"{len(label_names)} classes")
    y = [-1] * len(ids) if labels is None or len(labels) == 0 else [int(v) for v in labels]
    decided = predict_labels(probs, threshold if len(label_names) == 2 else None)
    cols: dict[str, Any] = {"id": [str(i) for i in ids],
                            "label": [label_names[v] if v >= 0 else "" for v in y]}
    for j, name in enumerate(label_names):
        cols[f"prob_{name}"] = probs[:, j]
    cols["prediction"] = [label_names[v] for v in decided]
    return pd.DataFrame(cols).to_csv(index=False, lineterminator="\n")


def save_predictions(out_dir: Path, splits, probs: dict[str, np.ndarray | None],
                     threshold: float | None = None) -> dict[str, str]:
    """Write `predictions_<split>.csv` in `out_dir` for each split of `probs` ({"val": (n, k) array,
    "test": array or None}) that has probabilities; returns {split: file name} for run.json `predictions`."""
    written = {}
    for split, p in probs.items():
        rows = getattr(splits, split)
        if p is None or rows is None:
            continue
        write_atomic(out_dir / PREDICTION_FILES[split],
                     predictions_csv(rows.ids, rows.labels, p, splits.label_names, threshold))
        written[split] = PREDICTION_FILES[split]
    return written


def read_predictions(path: Path, label_names: list[str]) -> SplitPredictions:
    """Read a predictions file written by `predictions_csv` for a run with `label_names`. Raises
    `LorabenchError` naming the file when it is missing, unreadable, or its columns or labels do not match."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise LorabenchError(f"{path}: no such predictions file")
    try:  # pandas >= 3 reads floats back exactly; labels and ids as written
        frame = pd.read_csv(path, dtype={"id": str, "label": str, "prediction": str}, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise LorabenchError(f"{path}: unreadable predictions file ({str(e).splitlines()[0]})") from e
    cols = [f"prob_{n}" for n in label_names]
    missing = [c for c in ["id", "label", *cols] if c not in frame.columns]
    if missing:
        raise LorabenchError(f"{path}: no column {missing[0]!r} (label names {label_names})")
    index = {n: i for i, n in enumerate(label_names)}
    unknown = sorted(set(frame["label"]) - set(index) - {""})
    if unknown:
        raise LorabenchError(f"{path}: label {unknown[0]!r} is not one of {label_names}")
    try:
        probs = frame[cols].to_numpy(dtype=np.float64)
    except ValueError as e:
        raise LorabenchError(f"{path}: a probability is not a number ({str(e).splitlines()[0]})") from e
    return SplitPredictions(ids=frame["id"].tolist(),
                            labels=np.asarray([index.get(v, -1) for v in frame["label"]], dtype=int),
                            probs=probs, label_names=list(label_names))
