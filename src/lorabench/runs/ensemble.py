"""Ensembles: the mean of several runs' class probabilities on the same rows, scored like any run, saved as a
small folder that `predict` runs.

The rule (`combine`), the same at compare time (on the runs' saved val/test probabilities) and at predict
time (on the members' fresh predictions): each model's runs (its seeds) are averaged first, then the models
are weighted equally. The decision is the most probable class (0.5 for two classes); members' own tuned
thresholds do not carry over. Members are picked by mean val F1 over their runs (`choose_members`), on the
val rows the ensemble is then scored on: its val score is optimistic; a labelled test split is the unbiased
check. `build_ensemble` works on any list of run folders of one split (e.g. one fold of a k-fold comparison).

An ensemble folder (`<comparison>/ensemble/`) holds `ensemble.json` (members as run-folder paths relative to
it, the rule, label names, threshold, metrics) and `predictions_val.csv` (and `predictions_test.csv`), in
the format of `runs.predictions`.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lorabench.config.tasks import DISPLAY, greater_is_better, primary
from lorabench.errors import LorabenchError
from lorabench.evaluation.metrics import classification_metrics, predict_labels, split_evaluation
from lorabench.evaluation.tasks import detail, score
from lorabench.runs.files import read_run, write_atomic, write_json
from lorabench.runs.layout import now, run_dir_for
from lorabench.runs.predictions import PREDICTION_FILES, SplitPredictions, predictions_csv, read_predictions

ENSEMBLE_DIR = "ensemble"
ENSEMBLE_FILE = "ensemble.json"
RULE = "mean of class probabilities: each model's runs (seeds) averaged first, then the models weighted equally"
CHOSEN_BY = "the models with the best mean val F1 over their completed runs (chosen on val)"
DECISION = "most probable class (P(positive) > 0.5 for two classes)"
OPTIMISTIC = ("its members were chosen on the same val rows it is scored on, so its val score is optimistic; "
              "a labelled test split (or k-fold) is the unbiased check")


@dataclass
class Member:
    """One model of an ensemble: its label, its run folders (one per seed) and their mean val score by `metric`
    (the task's primary metric, `config.tasks.PRIMARY`: F1, micro F1, RMSE)."""
    label: str
    run_dirs: list[Path]
    val_f1: float
    metric: str = "f1"


@dataclass
class Ensemble:
    """What `build_ensemble` computed. `predictions` maps "val" (and "test" when every member has it) to the
    mean probabilities (n, classes) float64 in split order; `metrics` / `evaluation` map a labelled split to
    `classification_metrics` / `split_evaluation` at the most probable class; `train_seconds` is the sum over
    every member run (s), `peak_memory_mb` the largest member run's (MB; they train one after another)."""
    members: list[Member]
    label_names: list[str]
    label_values: list
    predictions: dict[str, SplitPredictions]
    metrics: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    peak_memory_mb: float | None = None
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    task: str = "single_label"

    @property
    def label(self) -> str:
        return f"Ensemble: mean of top {len(self.members)}"


def combine(per_model: list[list[np.ndarray]]) -> np.ndarray:
    """The ensemble rule: `per_model[m][s]` is model m's run s's probabilities (n, classes); returns the mean
    over models of each model's mean over its runs, (n, classes) float64."""
    return np.mean([np.mean(np.asarray(runs, dtype=np.float64), axis=0) for runs in per_model], axis=0)


def _usable(run_dir: Path) -> dict | None:
    """The record of a completed run that saved its val predictions, else None."""
    rec = read_run(run_dir)
    name = ((rec or {}).get("predictions") or {}).get("val")
    if rec is None or rec.get("status") != "completed" or not name or not (Path(run_dir) / name).is_file():
        return None
    return rec


def choose_members(groups: dict[str, list[Path]], top: int) -> tuple[list[Member], str | None]:
    """The top `top` models of `groups` ({label: run folders}, in config order) by mean val F1 over their
    completed runs with saved val predictions (ties: config order). Returns (members, None), or ([], a
    one-line reason) when fewer than 2 models are usable."""
    found, without = [], []
    metric = "f1"
    for label, dirs in groups.items():
        ok = [(d, rec) for d in dirs if (rec := _usable(d)) is not None]
        if ok:
            metric = primary(ok[0][1]["data"].get("task"))
            found.append(Member(label, [d for d, _ in ok], float(np.mean([r["metrics"]["val"][metric] for _, r in ok])),
                                metric))
        else:
            without.append(label)
    sign = 1 if greater_is_better(metric) else -1
    found.sort(key=lambda m: -sign * m.val_f1)  # stable: ties keep config order
    if len(found) >= 2:
        return found[:top], None
    n = len(found)
    reason = (f"no ensemble row: {n} model{'' if n == 1 else 's'} {'has' if n == 1 else 'have'} completed runs with "
              f"saved val predictions ({', '.join(m.label for m in found) or 'none'}); an ensemble needs 2")
    if without:
        reason += (f"; without: {', '.join(without)} (failed, or run before lorabench saved predictions: "
                   "compare --force re-runs them)")
    return [], reason


def same_rows(recs: dict[Path, dict]) -> list[str]:
    """Check that runs ({run folder: record}) were scored on the same rows: the same label names and the same
    `data.val_fingerprint` / `test_fingerprint` where both have one. Returns their label names. Raises
    `LorabenchError` naming the run that differs: runs on different rows are never averaged or compared."""
    first_dir, first = next(iter(recs.items()))
    names = first["data"]["label_names"]
    task = first["data"].get("task", "single_label")
    for d, rec in recs.items():
        if rec["data"].get("task", "single_label") != task:
            raise LorabenchError(f"{d}: a {rec['data'].get('task', 'single_label')} run, {first_dir} a {task} one; "
                                 "runs of different tasks cannot be averaged or compared")
        if rec["data"]["label_names"] != names:
            raise LorabenchError(f"{d}: label names {rec['data']['label_names']} differ from {names} of {first_dir}; "
                                 "runs of different label sets cannot be averaged or compared")
        for key, what in (("val_fingerprint", "val"), ("test_fingerprint", "test")):
            a, b = rec["data"].get(key), first["data"].get(key)
            if a is not None and b is not None and a != b:
                raise LorabenchError(f"{d}: scored on other {what} rows than {first_dir} (data.{key} {a} vs {b}); "
                                     "runs on different rows cannot be averaged or compared")
    return list(names)


def read_aligned(groups: list[list[Path]], recs: dict[Path, dict], split: str,
                 names: list[str]) -> list[list[SplitPredictions]] | None:
    """The saved `split` predictions of every run of `groups` (lists of run folders, e.g. one per model), checked to
    be of the same rows in the same order (ids and labels). None when some run saved none for `split`. Raises
    `LorabenchError` naming a run whose rows differ."""
    dirs = [d for g in groups for d in g]
    if any(not (recs[d].get("predictions") or {}).get(split) for d in dirs):
        return None
    task = recs[dirs[0]]["data"].get("task", "single_label")
    per = [[read_predictions(d / recs[d]["predictions"][split], names, task) for d in g] for g in groups]
    ref, ref_dir = per[0][0], groups[0][0]
    for g, runs in zip(groups, per):
        for d, p in zip(g, runs):
            if p.ids != ref.ids or not np.array_equal(p.labels, ref.labels, equal_nan=p.task == "regression"):
                raise LorabenchError(f"{d}: its {split} predictions are of other rows than {ref_dir}'s; "
                                     "runs on different rows cannot be averaged or compared")
    return per


def build_ensemble(members: list[Member]) -> Ensemble:
    """Average the saved val (and test) probabilities of `members`' runs by `combine` and score the mean with
    the functions every run uses. Raises `LorabenchError` naming the run when a member run is not usable, has
    other label names, or was scored on other rows (`same_rows`, `read_aligned`): runs on different rows are
    never averaged."""
    if len(members) < 1 or any(not m.run_dirs for m in members):
        raise LorabenchError("ensemble: give at least one member with at least one run folder")
    recs = {}
    for m in members:
        for d in m.run_dirs:
            rec = _usable(d)
            if rec is None:
                raise LorabenchError(f"{d}: not a completed run with saved val predictions")
            recs[d] = rec
    names = same_rows(recs)
    first = next(iter(recs.values()))
    ens = Ensemble(members=members, label_names=list(names), label_values=first["data"].get("label_values") or
                   list(range(len(names))), predictions={},
                   train_seconds=round(sum(float(r.get("train_seconds") or 0.0) for r in recs.values()), 3),
                   peak_memory_mb=max((r.get("peak_memory_mb") or 0.0) for r in recs.values()) or None,
                   data={k: first["data"].get(k) for k in ("val_rows", "test_rows", "val_fingerprint",
                                                           "test_fingerprint") if k in first["data"]},
                   task=first["data"].get("task", "single_label"))
    for split in ("val", "test"):
        per = read_aligned([m.run_dirs for m in members], recs, split, names)
        if per is None:
            have = sum(1 for r in recs.values() if (r.get("predictions") or {}).get(split))
            if have:
                ens.notes.append(f"no test scores: {len(recs) - have} of {len(recs)} member runs saved no "
                                 "test predictions")
            continue
        ref = per[0][0]
        probs = combine([[p.probs for p in runs] for runs in per])
        ens.predictions[split] = SplitPredictions(ref.ids, ref.labels, probs, list(names), ens.task)
        if ref.labelled and ens.task != "single_label":  # decided at 0.5 per label (multi_label), the mean value
            ens.metrics[split] = score(ens.task, ref.label_list(), probs, len(names))
            ens.evaluation[split] = detail(ens.task, ref.label_list(), probs, list(names))
        elif ref.labelled:
            ens.metrics[split] = classification_metrics(ref.labels, predict_labels(probs), len(names))
            ens.evaluation[split] = split_evaluation(ref.labels, probs, list(names))
    return ens


def _swap_in(tmp: Path, folder: Path) -> Path:
    """Replace `folder` (if any) by the finished folder `tmp` beside it: the old one is renamed aside first."""
    old = folder.with_name(f".{folder.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _record(ens: Ensemble, folder: Path, files: dict[str, str], top: int | None) -> dict:
    """ensemble.json's content for `ens`, its member run folders relative to `folder` (where the file will be)."""
    return {
        "kind": "ensemble",
        "label": ens.label,
        "top": top,
        "rule": RULE,
        "chosen_by": CHOSEN_BY,
        "decision": DECISION,
        "threshold": None,
        "members": [{"label": m.label, "runs": [os.path.relpath(Path(d).resolve(), folder.resolve()) for d in m.run_dirs],
                     f"val_{m.metric}": m.val_f1} for m in ens.members],
        **({"task": ens.task} if ens.task != "single_label" else {}),
        "label_names": ens.label_names,
        "label_values": ens.label_values,
        "data": ens.data,
        "metrics": ens.metrics,
        "evaluation": ens.evaluation,
        "train_seconds": ens.train_seconds,
        "peak_memory_mb": ens.peak_memory_mb,
        "predictions": files,
        "notes": [OPTIMISTIC] + ens.notes,
        "created_at": now(),
    }


def write_ensemble(ens: Ensemble, folder: Path, *, top: int | None = None) -> Path:
    """Write `folder/ensemble.json` and its predictions files; a previous ensemble there is replaced as a
    whole (built beside it, then renamed into place). Member paths are stored relative to `folder`."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    files = {}
    for split, p in ens.predictions.items():
        labels = p.label_list() if p.task == "multi_label" else p.labels
        if p.task == "multi_label":  # unlabelled rows (-1) back to None
            labels = [None if min(y) < 0 else y for y in labels]
        write_atomic(tmp / PREDICTION_FILES[split], predictions_csv(p.ids, labels, p.probs, p.label_names, None, p.task))
        files[split] = PREDICTION_FILES[split]
    write_json(tmp / ENSEMBLE_FILE, _record(ens, folder, files, top))
    return _swap_in(tmp, folder)


def remove_ensemble(folder: Path) -> None:
    """Remove what `write_ensemble` wrote in `folder` (and the folder if that leaves it empty); nothing else."""
    folder = Path(folder)
    for name in (ENSEMBLE_FILE, *PREDICTION_FILES.values()):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def compare_groups(root: Path, cfg) -> dict[str, list[Path]]:
    """{model label: its run folders (one per seed)} of comparison `cfg` (a CompareConfig) under `root`, in
    config order."""
    groups: dict[str, list[Path]] = {}
    for exp in cfg.experiments():
        groups.setdefault(exp.label or exp.model.name, []).append(run_dir_for(Path(root), exp))
    return groups


def _fold_of(run_dir: Path) -> int | None:
    rec = read_run(run_dir) or {}
    return (rec.get("data") or {}).get("fold")


def fold_ensembles(members: list[Member]) -> list[tuple[int, Ensemble]]:
    """k-fold comparisons: the ensemble of `members` built on each fold's runs alone (runs of one fold share
    their val rows; runs of different folds never are averaged), as [(fold, Ensemble)] in fold order. Raises
    `LorabenchError` when a member lacks a run of some fold the others have."""
    by_fold: dict[int, dict[str, list[Path]]] = {}
    for m in members:
        for d in m.run_dirs:
            by_fold.setdefault(_fold_of(d), {}).setdefault(m.label, []).append(d)
    out = []
    for fold in sorted(by_fold, key=lambda f: (f is None, f)):
        runs = by_fold[fold]
        missing = [m.label for m in members if m.label not in runs]
        if missing:
            raise LorabenchError(f"{missing[0]} has no completed run of fold {fold}; the fold's ensemble needs every member")
        out.append((fold, build_ensemble([Member(m.label, runs[m.label], m.val_f1, m.metric) for m in members])))
    return out


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    ok = [v for v in values if v is not None]
    if not ok:
        return None, None
    return float(np.mean(ok)), (float(np.std(ok, ddof=1)) if len(ok) > 1 else None)


def write_fold_ensemble(members: list[Member], per_fold: list[tuple[int, Ensemble]], folder: Path,
                        *, top: int | None = None) -> Path:
    """A k-fold comparison's ensemble folder: `fold<i>/` holds fold i's ensemble (its own val predictions and
    scores); `ensemble.json` names every member's runs of all folds (what `predict` averages: each model's K
    fold runs first, then the models) and holds the mean and sample std (ddof=1) over the folds of each val
    number (`metrics.val`, `metrics_std.val`, `folds`), the evaluation shown being fold 1's."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}-kfold")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for fold, ens in per_fold:
        write_ensemble(ens, tmp / f"fold{fold}", top=top)
    first = per_fold[0][1]
    keys = list(first.metrics.get("val", {}))
    detail_keys = [k for k in ("macro_f1", "weighted_f1", "mcc", "roc_auc", "pr_auc")
                   if k in first.evaluation.get("val", {}) and first.task == "single_label"]
    mean, std = {}, {}
    for k in keys:
        mean[k], std[k] = _mean_std([e.metrics["val"].get(k) for _, e in per_fold])
    for k in detail_keys:
        mean[k], std[k] = _mean_std([e.evaluation["val"].get(k) for _, e in per_fold])
    whole = Ensemble(members=members, label_names=first.label_names, label_values=first.label_values, predictions={},
                     task=first.task,
                     metrics={"val": mean}, evaluation={"val": first.evaluation.get("val")},
                     train_seconds=round(sum(e.train_seconds for _, e in per_fold), 3),
                     peak_memory_mb=max((e.peak_memory_mb or 0.0) for _, e in per_fold) or None,
                     notes=[f"k-fold: scored on each of {len(per_fold)} folds by that fold's runs alone; the val "
                            "numbers are the mean over the folds (metrics_std: the sample std), the per-class detail "
                            "fold 1's; predict averages every member's runs of all folds"])
    rec = _record(whole, folder, {}, top)
    rec.update(folds=[{"fold": f, "metrics": e.metrics.get("val")} for f, e in per_fold],
               metrics_std={"val": std})
    write_json(tmp / ENSEMBLE_FILE, rec)
    return _swap_in(tmp, folder)


def update_compare_ensemble(root: Path, cfg) -> str | None:
    """Build (or rebuild, or with `ensemble_top` 0/null remove) the comparison's ensemble folder
    `root/ensemble`; returns the line to print (None when the ensemble is off). With `data.folds` the members
    are the models with the best mean val F1 over all their fold runs, and the ensemble is built and scored
    on each fold alone (`fold_ensembles`, `write_fold_ensemble`)."""
    folder = Path(root) / ENSEMBLE_DIR
    if not cfg.ensemble_top:
        remove_ensemble(folder)
        if cfg.data.folds:  # a k-fold ensemble folder: its fold<i>/ folders too
            shutil.rmtree(folder, ignore_errors=True)
        return None
    groups = compare_groups(root, cfg)
    if len(groups) < 2:  # one model (e.g. `train` with data.folds): nothing to ensemble, nothing to say
        remove_ensemble(folder)
        return None
    members, reason = choose_members(groups, cfg.ensemble_top)
    if members and cfg.data.folds:
        try:
            per_fold = fold_ensembles(members)
        except LorabenchError as e:
            shutil.rmtree(folder, ignore_errors=True)
            return f"no ensemble row: {e}"
        write_fold_ensemble(members, per_fold, folder, top=cfg.ensemble_top)
        metric = members[0].metric
        f1 = [e.metrics["val"][metric] for _, e in per_fold]
        sd = f" ± {np.std(f1, ddof=1):.4f}" if len(f1) > 1 else ""
        return (f"ensemble: mean of top {len(members)} ({', '.join(m.label for m in members)}): {len(per_fold)}-fold "
                f"val {DISPLAY[metric]} {np.mean(f1):.4f}{sd} (optimistic: chosen on val) -> {folder}")
    try:
        ens = build_ensemble(members) if members else None
    except LorabenchError as e:
        ens, reason = None, f"no ensemble row: {e}"
    if ens is None:
        remove_ensemble(folder)
        return reason
    write_ensemble(ens, folder, top=cfg.ensemble_top)
    metric = members[0].metric
    f1 = ens.metrics["val"][metric]
    return (f"ensemble: mean of top {len(members)} ({', '.join(m.label for m in members)}): val {DISPLAY[metric]} "
            f"{f1:.4f} (optimistic: chosen on val) -> {folder}")


# --------------------------------------------------------------------------- a saved ensemble, for predict
@dataclass
class EnsembleSpec:
    """A validated ensemble folder: `members` [(label, [run folder, ...])], `label_names`, `label_values`,
    `threshold` (None: the most probable class), `record` (ensemble.json as read)."""
    path: Path
    members: list[tuple[str, list[Path]]]
    label_names: list[str]
    label_values: list
    threshold: float | None
    record: dict

    @property
    def run_dirs(self) -> list[Path]:
        return [d for _, dirs in self.members for d in dirs]


def is_ensemble(path: str | Path) -> bool:
    """True for a folder holding `ensemble.json`."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


def read_ensemble(path: str | Path) -> EnsembleSpec:
    """Read and check an ensemble folder. Raises `LorabenchError` (one line, naming ensemble.json and the key
    or member at fault) for unreadable JSON, missing or malformed keys, a missing member folder, a member
    that is not a completed run, or members whose label names or values differ from the ensemble's."""
    import json
    path = Path(path)
    file = path / ENSEMBLE_FILE
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LorabenchError(f"{file}: not a valid ensemble file ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise LorabenchError(f"{file}: not a valid ensemble file (expected a JSON object)")
    members = raw.get("members")
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("runs"), list) and m["runs"]
            and all(isinstance(r, str) for r in m["runs"]) for m in members):
        raise LorabenchError(f"{file}: members must be a non-empty list of {{label, runs: [run folder, ...]}}")
    names = raw.get("label_names")
    fewest = 1 if raw.get("task") == "regression" else 2
    if not isinstance(names, list) or len(names) < fewest:
        raise LorabenchError(f"{file}: label_names must be a list of at least {fewest} names")
    values = raw.get("label_values") or list(range(len(names)))
    threshold = raw.get("threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or not 0 < threshold < 1 or len(names) != 2):
        raise LorabenchError(f"{file}: threshold must be null, or a number in (0, 1) for two classes; got {threshold!r}")
    out = []
    for i, m in enumerate(members):
        dirs = []
        for r in m["runs"]:
            d = Path(os.path.normpath(path / r))  # relative to the ensemble folder (absolute paths stay)
            rec = read_run(d)
            if rec is None:
                raise LorabenchError(f"{file}: member run folder {r} ({d}) not found or without run.json")
            if rec.get("status") != "completed":
                raise LorabenchError(f"{file}: member run {r} has status {rec.get('status')!r}, not completed")
            got = rec.get("data", {})
            if got.get("label_names") != names or (got.get("label_values") or list(range(len(names)))) != values:
                raise LorabenchError(f"{file}: member run {r} has labels {got.get('label_names')} "
                                     f"(values {got.get('label_values')}), the ensemble {names} (values {values}): "
                                     "members must share one label set")
            dirs.append(d)
        out.append((str(m.get("label") or f"member {i + 1}"), dirs))
    return EnsembleSpec(path=path, members=out, label_names=list(names), label_values=list(values),
                        threshold=threshold, record=raw)


def ensemble_probs(spec: EnsembleSpec, member_probs: Callable[[Path], np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities (n, classes) float64 from `member_probs(run_dir)` (each member run's
    (n, classes) probabilities on the same rows), by `combine`: the rule the ensemble was scored with."""
    return combine([[member_probs(d) for d in dirs] for _, dirs in spec.members])
