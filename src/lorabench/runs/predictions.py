"""Per-row predictions of a run's val and test splits: `predictions_val.csv`, `predictions_test.csv`.

What an ensemble (or any later analysis) averages, without loading a model again. One row per split row,
in split order; columns `id` (as in the data), `label` (the true label's name; empty when the row is
unlabelled), `prob_<label name>` per class in label-id order, `prediction` (the predicted label's name by
the run's decision rule: its binary threshold when it has one, else the most probable class). Probabilities
are written as the shortest decimal that reads back to the same float64 (Python's repr), so a mean of
the saved probabilities is reproducible to the last bit.

By task (`config.tasks`): multi_label rows have `label` and `prediction` as JSON lists of label names
(`["fire", "flood"]`, `[]` for none; `label` empty when unlabelled) and `prob_<label>` per label; regression rows
have `label` (the true number, empty when unlabelled) and `prediction` (the predicted number), no `prob_` columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lorabench.errors import LorabenchError
from lorabench.evaluation.metrics import predict_labels
from lorabench.evaluation.tasks import decide
from lorabench.runs.files import write_atomic

PREDICTION_FILES = {"val": "predictions_val.csv", "test": "predictions_test.csv"}


@dataclass
class SplitPredictions:
    """One split's saved predictions: `ids` (n,) as written (strings), `labels` (n,) int label ids
    (-1 = unlabelled; multi_label (n, k) 0/1 with rows of -1 unlabelled; regression (n,) float, NaN unlabelled),
    `probs` (n, classes) float64 (regression: (n, 1) the predicted values), `label_names` in id order."""
    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    label_names: list[str]
    task: str = "single_label"

    @property
    def labelled(self) -> bool:
        """Every row has its true label."""
        if not len(self.labels):
            return False
        if self.task == "regression":
            return bool(np.isfinite(self.labels).all())
        return bool((np.asarray(self.labels) >= 0).all())

    def label_list(self) -> list:
        """The labels in the form `Split.labels` has (tuples for multi_label)."""
        if self.task == "multi_label":
            return [tuple(int(x) for x in row) for row in self.labels]
        return self.labels.tolist()


def _task_csv(ids, labels, probs: np.ndarray, label_names: list[str], threshold, task: str) -> str:
    import json

    import pandas as pd

    n = len(ids)
    cols: dict[str, Any] = {"id": [str(i) for i in ids]}
    if task == "regression":
        y = [float("nan")] * n if labels is None or len(labels) == 0 else [float(v) for v in labels]
        cols["label"] = ["" if v != v else repr(v) for v in y]
        cols["prediction"] = probs[:, 0]
        return pd.DataFrame(cols).to_csv(index=False, lineterminator="\n")
    rows = [None] * n if labels is None or len(labels) == 0 else list(labels)
    cols["label"] = ["" if y is None or min(y) < 0 else json.dumps([label_names[j] for j, v in enumerate(y) if v])
                     for y in rows]
    for j, name in enumerate(label_names):
        cols[f"prob_{name}"] = probs[:, j]
    decided = decide(task, probs, threshold)
    cols["prediction"] = [json.dumps([label_names[j] for j in np.flatnonzero(r)]) for r in decided]
    return pd.DataFrame(cols).to_csv(index=False, lineterminator="\n")


def predictions_csv(ids: list[Any], labels: list[int] | np.ndarray | None, probs: np.ndarray,
                    label_names: list[str], threshold: float | list[float] | None = None,
                    task: str = "single_label") -> str:
    """The CSV text of one split's predictions. `ids` (n,), `labels` (n,) int label ids or None/-1 for
    unlabelled rows (multi_label: 0/1 tuples or None; regression: floats, NaN unlabelled), `probs` (n, classes)
    float; `threshold`: the binary decision threshold on P(label id 1) (None: the most probable class; multi_label:
    one per label, None: 0.5). Raises `LorabenchError` on mismatched shapes."""
    import pandas as pd

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(ids), len(label_names)):
        raise LorabenchError(f"predictions: probabilities of shape {probs.shape} for {len(ids)} rows and "
                             f"{len(label_names)} classes")
    if task != "single_label":
        return _task_csv(ids, labels, probs, label_names, threshold, task)
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
                     predictions_csv(rows.ids, rows.labels, p, splits.label_names, threshold, splits.task))
        written[split] = PREDICTION_FILES[split]
    return written


def read_predictions(path: Path, label_names: list[str], task: str = "single_label") -> SplitPredictions:
    """Read a predictions file written by `predictions_csv` for a run with `label_names` and `task`. Raises
    `LorabenchError` naming the file when it is missing, unreadable, or its columns or labels do not match."""
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise LorabenchError(f"{path}: no such predictions file")
    try:  # pandas >= 3 reads floats back exactly; labels and ids as written
        frame = pd.read_csv(path, dtype={"id": str, "label": str, "prediction": str}, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise LorabenchError(f"{path}: unreadable predictions file ({str(e).splitlines()[0]})") from e
    if task != "single_label":
        return _read_task(path, frame, label_names, task)
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


def _read_task(path: Path, frame, label_names: list[str], task: str) -> SplitPredictions:
    import json
    cols = [f"prob_{n}" for n in label_names] if task == "multi_label" else ["prediction"]
    missing = [c for c in ["id", "label", *cols] if c not in frame.columns]
    if missing:
        raise LorabenchError(f"{path}: no column {missing[0]!r} (label names {label_names}, task {task})")
    try:
        probs = np.asarray(frame[cols].to_numpy(dtype=np.float64)).reshape(len(frame), len(cols))
        if task == "regression":
            labels = np.asarray([float(v) if v != "" else float("nan") for v in frame["label"]], dtype=np.float64)
        else:
            index = {n: i for i, n in enumerate(label_names)}
            labels = np.full((len(frame), len(label_names)), -1, dtype=int)
            for i, v in enumerate(frame["label"]):
                if v != "":
                    labels[i] = 0
                    for name in json.loads(v):
                        labels[i, index[name]] = 1
    except (ValueError, KeyError, TypeError) as e:
        raise LorabenchError(f"{path}: a label or value that does not read back ({str(e).splitlines()[0]})") from e
    return SplitPredictions(ids=frame["id"].tolist(), labels=labels, probs=probs, label_names=list(label_names),
                            task=task)
