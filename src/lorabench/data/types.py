"""The data types every step passes on: `Split` (the rows of one split) and `Splits` (train/val/test with their
labels, class weights, checks and fingerprint). Built by `data.splits.load_splits`; read by the data checks,
training, the run record and the reports."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def has_label(y: Any) -> bool:
    """Whether one row's target is known: a label id >= 0 (single_label), a tuple of 0/1 (multi_label) or a
    number that is not NaN (regression)."""
    if y is None:
        return False
    if isinstance(y, tuple):
        return True
    if isinstance(y, float):
        return y == y
    return y >= 0


@dataclass
class Split:
    """Rows of one split: the text fed to the model, its target and its id. `labels` per task: an int label id
    (-1 = unlabelled) for single_label; a tuple of 0/1 ints, one per label (None = unlabelled) for multi_label; a
    float (NaN = unlabelled) for regression."""
    texts: list[str]
    labels: list[Any]
    ids: list[Any]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and all(has_label(y) for y in self.labels)

    def class_counts(self, k: int) -> list[int]:
        """Rows per class (single_label), positive rows per label (multi_label); [] for regression."""
        if any(isinstance(y, tuple) for y in self.labels):
            return [int(sum(y[c] for y in self.labels if y is not None)) for c in range(k)]
        if any(isinstance(y, float) for y in self.labels):
            return []
        return [int(sum(1 for y in self.labels if y == c)) for c in range(k)]


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split | None
    label_names: list[str]
    label_values: list[Any]  # the raw label value of each id, as in the file
    class_weights: list[float] | None
    source: str
    text_template: str
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    checks: dict = field(default_factory=dict)   # data_checks(): duplicates, conflicting labels, warnings
    folds: dict | None = None  # k-fold: {"folds": K, "fold": i (1-based), "seed": split_seed}
    task: str = "single_label"  # lorabench.config.tasks.TASKS

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict:
        k = self.num_labels
        out = {
            "source": self.source,
            "text": self.text_template,
            "train_rows": len(self.train),
            "val_rows": len(self.val),
            "test_rows": len(self.test) if self.test is not None else 0,
            "test_labelled": bool(self.test is not None and self.test.labelled),
            "label_names": self.label_names,
            "label_values": self.label_values,
            "train_class_counts": self.train.class_counts(k),
            "val_class_counts": self.val.class_counts(k),
            "class_weights": self.class_weights,
            "fingerprint": self.fingerprint,
            "val_fingerprint": fingerprint(self, parts=("val",)),
        }
        if self.test is not None:
            out["test_fingerprint"] = fingerprint(self, parts=("test",))
        if self.num_labels == 2 and self.task == "single_label":
            out["positive_label"] = self.label_names[1]
        if self.task != "single_label":
            out["task"] = self.task
        if self.task == "regression":
            out["train_target"] = _stats(self.train.labels)
            out["val_target"] = _stats(self.val.labels)
        if self.folds:
            out["folds"], out["fold"] = self.folds["folds"], self.folds["fold"]
        if self.checks:
            out["checks"] = self.checks
        if self.notes:
            out["notes"] = self.notes
        return out


def _stats(values: list[float]) -> dict | None:
    """Mean, standard deviation (ddof=0), min and max of the known values of a regression target."""
    import numpy as np
    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def fingerprint(splits: Splits, parts: tuple[str, ...] = ("train", "val")) -> str:
    """Short hash of the split contents: runs with equal fingerprints saw identical data."""
    h = hashlib.sha256()
    for split in (getattr(splits, p) for p in parts):
        for t, y in zip(split.texts, split.labels):
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00%d\x01" % y if not isinstance(y, (tuple, float)) else b"\x00" + repr(y).encode() + b"\x01")
        h.update(b"|")
    return h.hexdigest()[:16]
