"""Rows -> splits: the text of each row, label ids, the train/val/test split (the study's by
default), class weights, subsamples and a fingerprint of what was trained on.

`load_splits(cfg.data)` is the only entry point the pipeline needs. The default split is the
study's: `datasets.Dataset.train_test_split(train_size=0.8, seed=42)` of the labelled rows in
file order (bundled data: train 6090 / val 1523, first train row id 5285). With `data.folds = K`
and `data.fold = i`, val is fold i of scikit-learn's `StratifiedKFold(K, shuffle=True,
random_state=split_seed)` over the same rows (`kfold_indices`), train the other folds. `refit_splits`
turns a run's splits into its refit's: train = train + val, no val.
"""
from __future__ import annotations

import dataclasses
import math
import re
import string
import warnings
from typing import Any

import numpy as np
import pandas as pd

from lorabench.config.schema import DataConfig
from lorabench.data.checks import data_checks
from lorabench.data.sources import BUNDLED, BUNDLED_LABEL_NAMES, DELIMITERS, bundled_path, read_source, read_table
from lorabench.data.types import Split, Splits, fingerprint
from lorabench.errors import ConfigError, DataError, DataWarning


def template_fields(template: str) -> list[str]:
    """Column names a text setting needs: the column itself, or the template's fields."""
    if "{" not in template:
        return [template]
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def build_texts(frame: pd.DataFrame, template: str, where: str) -> list[str]:
    cols = template_fields(template)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} for data.text (columns: "
                        f"{', '.join(map(str, frame.columns))}){_delimiter_hint(frame)}")
    if "{" not in template:
        return [_as_text(v) for v in frame[template].tolist()]
    values = {c: [_as_text(v) for v in frame[c].tolist()] for c in cols}
    return [template.format_map({c: values[c][i] for c in cols}) for i in range(len(frame))]


_INTEGRAL_FLOAT = re.compile(r"[+-]?\d+\.0+")


def _delimiter_hint(frame: pd.DataFrame) -> str:
    """A hint when a CSV was split on the wrong delimiter: one column whose name holds another one."""
    if len(frame.columns) == 1 and any(d in str(frame.columns[0]) for d in DELIMITERS):
        return "; is data.delimiter right?"
    return ""


def _as_text(v: Any) -> str:
    """A cell as text. Missing -> "". An integral float renders as an integer (101.0 -> "101"), as a
    typed value (JSON, Parquet) and as a CSV cell that holds only such a number: pandas and Parquet
    writers widen an integer column with gaps to float, so the same value renders `101` in every
    split, file format and in predict. Every other cell renders as written."""
    if _missing(v):
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    text = str(v)
    if _INTEGRAL_FLOAT.fullmatch(text):
        return text.split(".")[0]
    return text


def _missing(v: Any) -> bool:
    """None, NaN, pandas' NA/NaT: an empty cell in any reader."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _label_missing(v: Any) -> bool:
    return _missing(v) or (isinstance(v, str) and not v.strip())


def label_vocabulary(values: list[Any], where: str, column: str) -> list[Any]:
    """Sorted distinct label values: ints as ints, strings as strings."""
    if not values:
        raise DataError(f"{where}: no rows")
    empty = sum(1 for v in values if _label_missing(v))
    if empty:
        raise DataError(f"{where}: label column {column!r} has {empty} empty value(s)")
    normalised = [_normalise_label(v) for v in values]
    distinct = sorted(set(normalised), key=lambda v: (isinstance(v, str), v))
    if len(distinct) < 2:
        raise DataError(f"{where}: label column {column!r} has a single class ({distinct[0]!r}); need at least 2")
    return distinct


def _normalise_label(v: Any) -> Any:
    """One label value: integers (also `1.0` and the text "1" / "1.0" of a CSV cell) as int, else stripped text."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    text = str(v).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and not text.lower().startswith(("nan", "inf", "-inf", "+inf")) else text


def _ordered_vocabulary(distinct: list[Any], cfg: DataConfig, where: str) -> list[Any]:
    """Label values in id order: sorted, except that `data.positive_label` takes id 1 in a binary task
    (binary F1, precision and recall, and the decision threshold, are about id 1)."""
    if cfg.positive_label is None:
        return distinct
    pos = _normalise_label(cfg.positive_label)
    if pos not in distinct:
        raise DataError(f"data.positive_label {cfg.positive_label!r} is not a label of {where} (labels: {distinct})")
    if len(distinct) != 2:
        raise DataError(f"data.positive_label applies to binary tasks only; {where} has {len(distinct)} labels")
    return [v for v in distinct if v != pos] + [pos]


def _label_ids(frame: pd.DataFrame, cfg: DataConfig, vocab: list[Any], where: str, *, required: bool) -> list[int]:
    if cfg.label not in frame.columns:
        if required:
            raise DataError(f"{where}: no label column {cfg.label!r} (columns: {', '.join(map(str, frame.columns))})")
        return [-1] * len(frame)
    index = {v: i for i, v in enumerate(vocab)}
    ids = []
    for v in frame[cfg.label].tolist():
        if _label_missing(v):
            if required:
                raise DataError(f"{where}: label column {cfg.label!r} has empty values")
            ids.append(-1)
            continue
        key = _normalise_label(v)
        if key not in index:
            raise DataError(f"{where}: label {key!r} in column {cfg.label!r} is not among the train labels {vocab}")
        ids.append(index[key])
    return ids


def _ids(frame: pd.DataFrame) -> list[Any]:
    if "id" in frame.columns:
        return [_as_text(v) for v in frame["id"].tolist()]  # exactly as written ("0007")
    return list(range(len(frame)))


def _split(frame: pd.DataFrame, cfg: DataConfig, vocab: list[Any], where: str, *, required: bool) -> Split:
    return Split(texts=build_texts(frame, cfg.text, where),
                 labels=_label_ids(frame, cfg, vocab, where, required=required),
                 ids=_ids(frame))

# --------------------------------------------------------------------------- tasks: what a row's target is
def _is_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray))


def _cell_list(v: Any) -> Any:
    """A cell holding a JSON list written as text (a CSV cell '["fire", "flood"]') as a list; else `v`."""
    if isinstance(v, str) and v.strip().startswith("["):
        import json
        try:
            parsed = json.loads(v)
        except ValueError:
            return v
        return parsed if isinstance(parsed, list) else v
    return v


def detect_task(cfg: DataConfig, frame: pd.DataFrame | None = None) -> str:
    """The task of `cfg`: data.task when set; multi_label when data.label names several columns, data.label_separator
    is set or the label column holds lists (JSON/Parquet lists, or JSON list text); else single_label."""
    if cfg.task:
        return cfg.task
    if isinstance(cfg.label, list) or cfg.label_separator is not None:
        return "multi_label"
    if frame is not None and cfg.label in frame.columns:
        values = [_cell_list(v) for v in frame[cfg.label].head(1000).tolist() if not _missing(v)]
        if values and any(_is_list(v) for v in values):
            return "multi_label"
    return "single_label"


def _label_columns(cfg: DataConfig) -> list[str]:
    return list(cfg.label) if isinstance(cfg.label, list) else [cfg.label]


def _row_where(where: str, i: int, frame: pd.DataFrame | None = None) -> str:
    """Where row i (0-based) of `frame` is: `file row N` (data rows from 1, the header not counted) for a whole file;
    a split part of one (`... (val part)`, `... (fold 2 of 5)`) names the row by its id, or says which part."""
    if "(" not in where:
        return f"{where} row {i + 1}"
    if frame is not None and "id" in frame.columns:
        return f"{where}, the row with id {_as_text(frame['id'].iloc[i])}"
    return f"{where}, its row {i + 1}"


def _label_sets(frame: pd.DataFrame, cfg: DataConfig, where: str, *, required: bool) -> list[list[Any] | None]:
    """multi_label: each row's labels as a list (None: unlabelled), from a list column, a string split at
    data.label_separator, or one 0/1 column per label (the column names are the labels). Raises `DataError` naming
    the file, row, column and value at fault."""
    cols = _label_columns(cfg)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        if required:
            raise DataError(f"{where}: no label column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
        return [None] * len(frame)
    out: list[list[Any] | None] = []
    if isinstance(cfg.label, list):
        table = {c: frame[c].tolist() for c in cols}
        for i in range(len(frame)):
            row, empty = [], 0
            for c in cols:
                v = table[c][i]
                if _label_missing(v):
                    empty += 1
                    continue
                flag = _normalise_label(v)
                if isinstance(flag, str) and flag.lower() in ("true", "false"):
                    flag = int(flag.lower() == "true")
                if flag not in (0, 1):
                    raise DataError(f"{_row_where(where, i, frame)}: label column {c!r} holds {v!r}; one-column-per-label "
                                    "data needs 0 or 1 in each")
                if flag:
                    row.append(c)
            if empty and (required or empty != len(cols)):
                raise DataError(f"{_row_where(where, i, frame)}: label columns {cols} have {empty} empty value(s)")
            out.append(None if empty else row)
        return out
    for i, v in enumerate(frame[cfg.label].tolist()):
        v = _cell_list(v) if cfg.label_separator is None else v
        if _is_list(v) and cfg.label_separator is not None:
            raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} holds a list {list(v)!r}; "
                            "data.label_separator splits strings: leave it out for list labels")
        if _is_list(v):
            items = list(v)
        elif _label_missing(v):
            if cfg.label_separator is not None:  # an empty cell with a separator: no labels (CSV cannot say [])
                out.append([])
                continue
            if required:
                raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} is empty (a row with no labels "
                                "is an empty list [], or an empty string with data.label_separator)")
            out.append(None)
            continue
        elif cfg.label_separator is not None:
            items = [x for x in str(v).split(cfg.label_separator) if x.strip()]
        else:
            raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} holds {v!r}, not a list; multi_label "
                            "labels are lists, a string split at data.label_separator, or one 0/1 column per label")
        labels = []
        for x in items:
            if _label_missing(x) or _is_list(x):
                raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} holds {v!r}: an empty or nested "
                                "label in the list")
            labels.append(_normalise_label(x))
        if len(set(labels)) != len(labels):
            raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} holds {v!r}: a label twice")
        out.append(labels)
    return out


def _multi_vocabulary(sets: list[list[Any] | None], cfg: DataConfig, where: str) -> list[Any]:
    """multi_label: the labels in id order: data.label's columns, data.label_names when given for list labels
    (the whole label set: one outside it is an error), else the sorted labels of the train rows. Raises
    `DataError` for fewer than 2 labels."""
    if isinstance(cfg.label, list):
        return list(cfg.label)
    if cfg.label_names is not None:
        return [_normalise_label(n) for n in cfg.label_names]
    seen = {x for s in sets if s for x in s}
    vocab = sorted(seen, key=lambda v: (isinstance(v, str), v))
    if len(vocab) < 2:
        raise DataError(f"{where}: label column {cfg.label!r} holds {len(vocab)} distinct label(s) {vocab}; "
                        "multi_label needs at least 2")
    return vocab


def _multi_hot(sets: list[list[Any] | None], vocab: list[Any], cfg: DataConfig, where: str,
               frame: pd.DataFrame | None = None) -> list[tuple | None]:
    index = {v: i for i, v in enumerate(vocab)}
    out: list[tuple | None] = []
    for i, labels in enumerate(sets):
        if labels is None:
            out.append(None)
            continue
        row = [0] * len(vocab)
        for x in labels:
            if x not in index:
                raise DataError(f"{_row_where(where, i, frame)}: label {x!r} in column {cfg.label!r} is not among the "
                                f"labels {vocab}" + ("" if cfg.label_names is not None else " (those of train)"))
            row[index[x]] = 1
        out.append(tuple(row))
    return out


def _targets(frame: pd.DataFrame, cfg: DataConfig, where: str, *, required: bool) -> list[float]:
    """regression: each row's number (NaN: unlabelled). Raises `DataError` naming the row, column and value that is
    not a number (or is empty where a target is required)."""
    if cfg.label not in frame.columns:
        if required:
            raise DataError(f"{where}: no label column {cfg.label!r} (columns: {', '.join(map(str, frame.columns))})")
        return [float("nan")] * len(frame)
    out = []
    for i, v in enumerate(frame[cfg.label].tolist()):
        if _label_missing(v):
            if required:
                raise DataError(f"{_row_where(where, i, frame)}: target column {cfg.label!r} is empty")
            out.append(float("nan"))
            continue
        if _is_list(v) or isinstance(v, (bool, np.bool_)):
            raise DataError(f"{_row_where(where, i, frame)}: target column {cfg.label!r} holds {v!r}, not a number "
                            "(data.task: regression)")
        try:
            x = float(str(v).strip()) if isinstance(v, str) else float(v)
        except (TypeError, ValueError):
            raise DataError(f"{_row_where(where, i, frame)}: target column {cfg.label!r} holds {v!r}, not a number "
                            "(data.task: regression)") from None
        if not math.isfinite(x):
            raise DataError(f"{_row_where(where, i, frame)}: target column {cfg.label!r} holds {v!r}, not a finite number")
        out.append(x)
    return out


def _check_single_values(frame: pd.DataFrame, cfg: DataConfig, where: str) -> None:
    """single_label: a list in the label column (e.g. data.task: single_label set for list labels) is an error."""
    for i, v in enumerate(frame[cfg.label].tolist()):
        if _is_list(v):
            raise DataError(f"{_row_where(where, i, frame)}: label column {cfg.label!r} holds a list {list(v)!r}; "
                            "single_label needs one label per row (data.task: multi_label for label sets)")


def _check_label_columns(train: Split, names: list[str], where: str) -> None:
    """multi_label: every label needs train rows with it and without it (a label on no row or on every row has
    nothing to learn: its classifier is a constant). Raises `DataError` naming the label."""
    counts, n = train.class_counts(len(names)), len(train)
    for name, c in zip(names, counts):
        if c == 0 or c == n:
            raise DataError(f"{where}: label {name!r} is on {'no' if c == 0 else 'every'} train row ({c} of {n}): "
                            "nothing to learn; drop it (data.label_names / the label columns) or add rows "
                            f"{'with' if c == 0 else 'without'} it")


def pos_weights(cfg: DataConfig, counts: list[int], n: int, names: list[str]) -> list[float] | None:
    """multi_label: each label's positive weight in the binary cross-entropy: `balanced` = negatives / positives over
    the train rows (torch's BCEWithLogitsLoss pos_weight), `none`, or the explicit list. Raises `DataError` when a
    label has no positive train row (balanced) or the list's length differs."""
    if cfg.class_weights == "none":
        return None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != len(counts):
            raise DataError(f"data.class_weights has {len(cfg.class_weights)} values for {len(counts)} labels")
        return [float(w) for w in cfg.class_weights]
    empty = [names[i] for i, c in enumerate(counts) if c == 0]
    if empty:
        raise DataError(f"train split has no row with label {empty[0]!r}: cannot balance its weight (drop the label, "
                        "or set data.class_weights: none)")
    return [(n - c) / c for c in counts]


def _fold_codes(frame: pd.DataFrame, cfg: DataConfig, task: str, where: str) -> np.ndarray:
    """What k-fold stratifies on: multi_label the (rows, labels) 0/1 matrix; regression the quantile bin of each
    target (at most 10 bins, each with at least `folds` rows)."""
    if task == "multi_label":
        sets = _label_sets(frame, cfg, where, required=True)
        vocab = _multi_vocabulary(sets, cfg, where)
        y = np.asarray(_multi_hot(sets, vocab, cfg, where), dtype=int)
        small = np.flatnonzero(y.sum(axis=0) < cfg.folds)
        if len(small):
            raise DataError(f"{where}: label {vocab[small[0]]!r} is on {int(y[:, small[0]].sum())} row(s), fewer than "
                            f"data.folds {cfg.folds}: some folds' val would lack it; lower data.folds")
        return y
    y = np.asarray(_targets(frame, cfg, where, required=True))
    bins = max(1, min(10, len(y) // (2 * cfg.folds)))
    codes = pd.qcut(pd.Series(y).rank(method="first"), bins, labels=False) if bins > 1 else np.zeros(len(y))
    return np.asarray(codes, dtype=int)


def _task_split(frame: pd.DataFrame, cfg: DataConfig, task: str, vocab: list[Any], where: str, *,
                required: bool) -> Split:
    if task == "multi_label":
        labels: list[Any] = _multi_hot(_label_sets(frame, cfg, where, required=required), vocab, cfg, where, frame)
    else:
        labels = _targets(frame, cfg, where, required=required)
    return Split(texts=build_texts(frame, cfg.text, where), labels=labels, ids=_ids(frame))



def study_split(n: int, *, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of `datasets.Dataset.train_test_split(train_size, seed)` over n rows in file order."""
    import datasets
    ds = datasets.Dataset.from_dict({"i": list(range(n))})
    parts = ds.train_test_split(train_size=train_size, seed=seed)
    return np.asarray(parts["train"]["i"]), np.asarray(parts["test"]["i"])


def kfold_indices(frame: pd.DataFrame, cfg: DataConfig, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) row positions (int arrays, file order) of each of the `cfg.folds` folds of `frame`:
    `StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.split_seed)` on the label values (multi_label:
    iterative stratification, iterstrat's `MultilabelStratifiedKFold`; regression: on quantile bins of the target),
    so the same file and settings give the same folds for every model. Raises `DataError` when a class (a label)
    has fewer rows than folds (some fold's val would lack it)."""
    from sklearn.model_selection import StratifiedKFold
    task = detect_task(cfg, frame)
    if task == "multi_label":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold  # Sechidis et al. 2011, iterative stratification
        y = _fold_codes(frame, cfg, task, where)
        kfold = MultilabelStratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.split_seed)
        return [(np.sort(np.asarray(tr)), np.sort(np.asarray(va))) for tr, va in kfold.split(np.zeros(len(y)), y)]
    if task == "regression":
        codes = _fold_codes(frame, cfg, task, where)
        kfold = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.split_seed)
        return [(np.asarray(tr), np.asarray(va)) for tr, va in kfold.split(np.zeros(len(codes)), codes)]
    labels = frame[cfg.label].tolist()
    label_vocabulary(labels, where, cfg.label)  # empty values, a single class: the usual errors
    codes, values = pd.factorize(pd.Series([_normalise_label(v) for v in labels], dtype=object))
    counts = np.bincount(codes)
    if counts.min() < cfg.folds:
        small = int(np.argmin(counts))
        raise DataError(f"{where}: label {values[small]!r} has {counts[small]} row(s), fewer than data.folds "
                        f"{cfg.folds}: some folds' val would lack it; lower data.folds")
    kfold = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.split_seed)
    return [(np.asarray(tr), np.asarray(va)) for tr, va in kfold.split(np.zeros(len(codes)), codes)]


def fold_ids(cfg: DataConfig) -> list[list[Any]]:
    """The ids of each fold's val rows (fold 1 first; the `id` column as written, else the 0-based row
    number in file order), before any subsample: what `folds.json` shows. Raises `DataError`."""
    frame, where = read_source(cfg.source, cfg)
    ids = _ids(frame)
    return [[ids[i] for i in va] for _, va in kfold_indices(frame, cfg, where)]


def representative(cfg: DataConfig) -> DataConfig:
    """The data config whose split stands for `cfg` in a summary or plan: fold 1 of a k-fold config
    without `fold`, else `cfg` itself."""
    return dataclasses.replace(cfg, fold=1) if cfg.folds and cfg.fold is None else cfg


def class_weights(cfg: DataConfig, counts: list[int]) -> list[float] | None:
    """`balanced`: n / (k * count[c]) over the train split; `none`; or the explicit list."""
    k = len(counts)
    if cfg.class_weights == "none":
        return None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != k:
            raise DataError(f"data.class_weights has {len(cfg.class_weights)} values for {k} classes")
        return [float(w) for w in cfg.class_weights]
    n = sum(counts)
    if any(c == 0 for c in counts):
        empty = [i for i, c in enumerate(counts) if c == 0]
        raise DataError(f"train split has no rows of class id {empty[0]}: cannot balance class weights")
    return [n / (k * c) for c in counts]


def _weights(cfg: DataConfig, task: str, train: Split, names: list[str]) -> list[float] | None:
    """The loss weights over the rows trained on: class weights (single_label), positive weights per label
    (multi_label), none (regression)."""
    if task == "regression":
        return None
    counts = train.class_counts(len(names))
    if task == "multi_label":
        return pos_weights(cfg, counts, len(train), names)
    return class_weights(cfg, counts)


def _subsample(split: Split, n: int | None, seed: int) -> Split:
    if n is None or n >= len(split):
        return split
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(split), size=n, replace=False))
    return Split([split.texts[i] for i in keep],
                 [split.labels[i] for i in keep] if split.labels else [],
                 [split.ids[i] for i in keep])


def _take(frame: pd.DataFrame, idx: np.ndarray) -> pd.DataFrame:
    return frame.iloc[idx].reset_index(drop=True)


def load_splits(cfg: DataConfig) -> Splits:
    """Read, split and check the data of `cfg`: what every experiment trains and is scored on.

    Returns `Splits` (texts, label ids, ids per split; label names and values in id order; class
    weights; data checks). Raises `DataError` naming the file, column or value at fault. Problems that
    do not stop a run (duplicates across splits, conflicting labels, labels equal up to case, a class
    absent from val) are issued as `DataWarning`s and recorded in `Splits.checks`.
    """
    frame, described = read_source(cfg.source, cfg)
    where = described
    if len(frame) == 0:
        raise DataError(f"{where}: no rows")
    build_texts(frame.head(1), cfg.text, where)  # fail early on a missing text column
    for column in _label_columns(cfg):
        if column not in frame.columns:
            raise DataError(f"{where}: no label column {column!r} (columns: {', '.join(map(str, frame.columns))})"
                            f"{_delimiter_hint(frame)}")
    task = detect_task(cfg, frame)
    if task == "single_label":
        _check_single_values(frame, cfg, where)
    elif task == "multi_label":  # every row of the file checked before the split: errors name the file's row
        _label_sets(frame, cfg, where, required=True)
        if cfg.positive_label is not None:
            raise DataError(f"data.positive_label applies to single-label binary tasks; {where} holds multi_label "
                            "label sets")
    else:
        _targets(frame, cfg, where, required=True)
    notes: list[str] = []
    if cfg.task is None and task == "multi_label":
        why = ("data.label names one 0/1 column per label" if isinstance(cfg.label, list) else
               "data.label_separator is set" if cfg.label_separator is not None else
               f"label column {cfg.label!r} holds lists")
        notes.append(f"task: multi_label, detected ({why}); set data.task to say so")
    if cfg.folds and cfg.fold is None:
        raise ConfigError(f"data.folds: {cfg.folds} needs data.fold (1..{cfg.folds}) to pick one fold's split here; "
                          "`lorabench compare` and `lorabench train` run every fold")
    if cfg.val:
        val_frame, vwhere = read_source(cfg.val, cfg)
        train_frame = frame
    elif cfg.folds:
        tr, va = kfold_indices(frame, cfg, where)[cfg.fold - 1]
        train_frame, val_frame, vwhere = _take(frame, tr), _take(frame, va), f"{where} (fold {cfg.fold} of {cfg.folds})"
    else:
        tr, va = study_split(len(frame), train_size=cfg.train_size, seed=cfg.split_seed)
        train_frame, val_frame, vwhere = _take(frame, tr), _take(frame, va), f"{where} (val part)"
    if task == "single_label":
        vocab = _ordered_vocabulary(label_vocabulary(train_frame[cfg.label].tolist(), where, cfg.label), cfg, where)
        make = _split
    else:
        vocab = _multi_vocabulary(_label_sets(train_frame, cfg, where, required=True), cfg, where) \
            if task == "multi_label" else []

        def make(f, c, v, w, *, required):
            return _task_split(f, c, task, v, w, required=required)
    train = make(train_frame, cfg, vocab, where, required=True)
    if len(val_frame) == 0:
        raise DataError(f"{vwhere}: validation split is empty")
    val = make(val_frame, cfg, vocab, vwhere, required=True)

    test = None
    if cfg.test:
        test_frame, twhere = read_source(cfg.test, cfg)
        test = make(test_frame, cfg, vocab, twhere, required=False)
    elif cfg.source == BUNDLED:
        test = make(read_table(bundled_path("test.csv")), cfg, vocab, "bundled test.csv", required=False)

    names = _label_names(cfg, vocab) if task != "regression" else [str(cfg.label)]
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        notes.append(f"train subsampled to {cfg.max_train_samples} of {len(train)} rows (seed {cfg.sample_seed})")
    train = _subsample(train, cfg.max_train_samples, cfg.sample_seed)
    if cfg.max_eval_samples and cfg.max_eval_samples < len(val):
        notes.append(f"val subsampled to {cfg.max_eval_samples} of {len(val)} rows (seed {cfg.sample_seed})")
    val = _subsample(val, cfg.max_eval_samples, cfg.sample_seed)
    if test is not None:
        test = _subsample(test, cfg.max_eval_samples, cfg.sample_seed)
    if task == "multi_label":
        _check_label_columns(train, names, where)
    weights = _weights(cfg, task, train, names)  # over the rows actually trained on
    splits = Splits(train=train, val=val, test=test, label_names=names, label_values=vocab,
                    class_weights=weights, source=described, text_template=cfg.text, notes=notes,
                    folds={"folds": cfg.folds, "fold": cfg.fold, "seed": cfg.split_seed} if cfg.folds else None,
                    task=task)
    splits.checks = data_checks(splits)
    for message in splits.checks["warnings"]:
        warnings.warn(message, DataWarning, stacklevel=2)
    splits.fingerprint = fingerprint(splits)
    return splits

def refit_splits(splits: Splits, cfg: DataConfig) -> Splits:
    """The splits of a refit of a run on `splits`: train = its train rows then its val rows (as the run
    used them, subsamples included), val empty (the refit trains without evaluation), test unchanged;
    class weights recomputed over the new train rows as `cfg.class_weights` says."""
    train = Split(splits.train.texts + splits.val.texts, splits.train.labels + splits.val.labels,
                  splits.train.ids + splits.val.ids)
    out = Splits(train=train, val=Split([], [], []), test=splits.test, label_names=splits.label_names,
                 label_values=splits.label_values, class_weights=_weights(cfg, splits.task, train, splits.label_names),
                 source=splits.source, text_template=splits.text_template, folds=splits.folds, task=splits.task,
                 notes=splits.notes + [f"refit: train = the {len(splits.train)} train + {len(splits.val)} val rows; "
                                       "no val rows"])
    out.checks = data_checks(out)
    out.fingerprint = fingerprint(out)
    return out


def _label_names(cfg: DataConfig, vocab: list[Any]) -> list[str]:
    if cfg.label_names is not None and isinstance(cfg.label, list):  # one 0/1 column per label, renamed
        if len(cfg.label_names) != len(cfg.label):
            raise DataError(f"data.label_names has {len(cfg.label_names)} names for {len(cfg.label)} label columns")
        return list(cfg.label_names)
    if cfg.label_names is not None:
        if len(cfg.label_names) != len(vocab):
            raise DataError(f"data.label_names has {len(cfg.label_names)} names for {len(vocab)} labels {vocab}")
        return list(cfg.label_names)
    if cfg.source == BUNDLED and vocab == [0, 1]:
        return list(BUNDLED_LABEL_NAMES)
    return [str(v) for v in vocab]
