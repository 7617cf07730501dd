"""The data types every step passes on: `Split` (the rows of one split) and `Splits` (train/val/test with their
labels, class weights, checks and fingerprint). Built by `data.splits.load_splits`; read by the data checks,
training, the run record and the reports."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Split:
    """Rows of one split: the text fed to the model, label ids (-1 = unlabelled), ids."""
    texts: list[str]
    labels: list[int]
    ids: list[Any]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and all(y >= 0 for y in self.labels)

    def class_counts(self, k: int) -> list[int]:
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
        if self.num_labels == 2:
            out["positive_label"] = self.label_names[1]
        if self.folds:
            out["folds"], out["fold"] = self.folds["folds"], self.folds["fold"]
        if self.checks:
            out["checks"] = self.checks
        if self.notes:
            out["notes"] = self.notes
        return out


def fingerprint(splits: Splits, parts: tuple[str, ...] = ("train", "val")) -> str:
    """Short hash of the split contents: runs with equal fingerprints saw identical data."""
    h = hashlib.sha256()
    for split in (getattr(splits, p) for p in parts):
        for t, y in zip(split.texts, split.labels):
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00%d\x01" % y)
        h.update(b"|")
    return h.hexdigest()[:16]
