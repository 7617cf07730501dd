"""Data checks: duplicated texts within and across splits, conflicting labels, labels equal up to
case, classes absent from val.
"""
from __future__ import annotations

from lorabench.data.types import Split, Splits


def data_checks(splits: Splits) -> dict:
    """Counts of what silently inflates or confuses scores, and the warnings they call for.

    `duplicates`: rows whose exact text (stripped) also occurs earlier in the same split (`train`),
    or in an earlier split (`val_in_train`, `test_in_train`, `test_in_val`); `conflicting_texts`: distinct
    texts that carry more than one label across the labelled splits. Returns
    `{"duplicates": {...}, "conflicting_texts": int, "warnings": [str, ...]}`.
    """
    def keys(split: Split | None) -> list[str]:
        return [t.strip() for t in split.texts] if split is not None else []
    tr, va, te = keys(splits.train), keys(splits.val), keys(splits.test)
    s_tr, s_va = set(tr), set(va)
    dups = {"train": len(tr) - len(s_tr),
            "val_in_train": sum(t in s_tr for t in va),
            "test_in_train": sum(t in s_tr for t in te),
            "test_in_val": sum(t in s_va for t in te)}
    labels_of: dict[str, set[int]] = {}
    for split in (splits.train, splits.val, splits.test):
        if split is not None and split.labelled:
            for t, y in zip(split.texts, split.labels):
                labels_of.setdefault(t.strip(), set()).add(y)
    conflicting = sum(1 for ys in labels_of.values() if len(ys) > 1)
    out: list[str] = []
    if dups["train"]:
        out.append(f"{dups['train']} of {len(tr)} train rows repeat a text that occurs earlier in train: those texts "
                   "weigh more in training")
    if dups["val_in_train"]:
        out.append(f"{dups['val_in_train']} of {len(va)} val rows have a text that is also in train: "
                   "val scores overstate quality on new text")
    if dups["test_in_train"] or dups["test_in_val"]:
        out.append(f"test rows whose text is also in train: {dups['test_in_train']}, in val: {dups['test_in_val']} "
                   f"(of {len(te)})")
    if conflicting:
        out.append(f"{conflicting} distinct text(s) carry more than one label across the splits")
    by_case: dict[str, list[str]] = {}
    for v in splits.label_values:
        if isinstance(v, str):
            by_case.setdefault(v.casefold(), []).append(v)
    for same in by_case.values():
        if len(same) > 1:
            out.append(f"labels {' and '.join(map(repr, same))} differ only in case: they are different classes")
    absent = [n for n, c in zip(splits.label_names, splits.val.class_counts(splits.num_labels)) if c == 0]
    if absent and len(splits.val):  # a refit has no val rows at all
        out.append(f"class(es) absent from val: {', '.join(map(str, absent))} (their recall cannot be measured)")
    return {"duplicates": dups, "conflicting_texts": conflicting, "warnings": out}


def row_flags(splits: Splits, split: str = "val") -> dict[str, list[bool]]:
    """Per row of `split` (in split order), what `data_checks` counts: `duplicate_in_train` (its stripped text also
    occurs in train; for train itself: earlier in train) and `conflicting_label` (its text carries more than one
    label across the labelled splits). Returns {flag: [bool, ...]}."""
    rows = getattr(splits, split)
    train = [t.strip() for t in splits.train.texts]
    labels_of: dict[str, set[int]] = {}
    for part in (splits.train, splits.val, splits.test):
        if part is not None and part.labelled:
            for t, y in zip(part.texts, part.labels):
                labels_of.setdefault(t.strip(), set()).add(y)
    keys = [t.strip() for t in rows.texts]
    if split == "train":
        seen: set[str] = set()
        dup = []
        for k in keys:
            dup.append(k in seen)
            seen.add(k)
    else:
        in_train = set(train)
        dup = [k in in_train for k in keys]
    return {"duplicate_in_train": dup, "conflicting_label": [len(labels_of.get(k, ())) > 1 for k in keys]}
