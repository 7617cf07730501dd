"""k-fold estimates (issue 16): data.folds / data.fold, `compare --folds K` (the same folds for every model,
mean ± sample std in the report) and `train` with data.folds."""
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lorabench.cli import main
from lorabench.config import DataConfig
from lorabench.data.splits import fold_ids, load_splits
from lorabench.errors import ConfigError, DataError

HERE = Path(__file__).resolve().parent


def tweets(n: int, seed: int = 0) -> pd.DataFrame:
    """n rows of the bundled tweets (id, keyword, location, text, target), shuffled."""
    from lorabench.data.sources import bundled_path
    return pd.read_csv(bundled_path("train.csv")).sample(n, random_state=seed).reset_index(drop=True)


def one_line_error(argv, capsys) -> str:
    """Run the CLI; it must exit 2 with exactly one `lorabench: error:` line and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if not x.startswith("lorabench: warning:")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lorabench: error: ") and "Traceback" not in err, err
    return lines[0]


def test_folds_are_stratified_disjoint_complete_and_deterministic(tmp_path):
    frame = tweets(90)
    frame.to_csv(tmp_path / "d.csv", index=False)
    cfg = DataConfig(source=str(tmp_path / "d.csv"), folds=3)
    splits = [load_splits(DataConfig(source=cfg.source, folds=3, fold=i)) for i in (1, 2, 3)]
    vals = [set(s.val.ids) for s in splits]
    everything = set(frame["id"].astype(str))
    assert set.union(*vals) == everything and sum(map(len, vals)) == 90  # disjoint, every row val once
    for s, v in zip(splits, vals):
        assert set(s.train.ids) == everything - v  # train = the other folds
        assert s.summary()["folds"] == 3 and s.summary()["fold"] in (1, 2, 3)
        share = np.mean(s.val.labels)  # stratified: each fold's positive share is the file's, up to one row
        assert abs(share * len(s.val) - frame["target"].mean() * len(s.val)) <= 1
    assert [set(x) for x in fold_ids(cfg)] == vals  # what folds.json lists
    again = load_splits(DataConfig(source=cfg.source, folds=3, fold=2))
    assert again.val.ids == splits[1].val.ids and again.fingerprint == splits[1].fingerprint
    other_seed = load_splits(DataConfig(source=cfg.source, folds=3, fold=2, split_seed=7))
    assert set(other_seed.val.ids) != vals[1]
    # the documented rule: sklearn's StratifiedKFold(K, shuffle=True, random_state=split_seed) in file order
    from sklearn.model_selection import StratifiedKFold
    ref = [set(frame["id"].astype(str)[va]) for _, va in
           StratifiedKFold(3, shuffle=True, random_state=42).split(frame, frame["target"])]
    assert ref == vals
    # subsamples apply within the fold; the runs' no-fold config and too many folds are errors
    sub = load_splits(DataConfig(source=cfg.source, folds=3, fold=1, max_train_samples=20, max_eval_samples=10))
    assert len(sub.train) == 20 and set(sub.val.ids) <= vals[0] and len(sub.val) == 10
    with pytest.raises(ConfigError, match=r"data.folds: 3 needs data.fold \(1..3\)"):
        load_splits(cfg)
    with pytest.raises(DataError, match="fewer than data.folds 60"):
        load_splits(DataConfig(source=cfg.source, folds=60, fold=1))


@pytest.mark.parametrize("argv, given, expect", [
    (["compare", "c.yaml", "--folds", "1"], {}, "data.folds must be >= 2"),
    (["train", "t.yaml", "--set", "data.folds=3", "--set", "data.fold=4"], {}, "data.fold must be in 1..3"),
    (["train", "t.yaml", "--set", "data.fold=1"], {}, "data.fold picks one fold of data.folds"),
    (["compare", "c.yaml", "--folds", "3", "--set", "data.fold=1"], {}, "compare runs every fold"),
    (["train", "t.yaml", "--set", "data.folds=3", "--set", "data.val=d.csv"], {}, "cannot be combined with data.val"),
    (["compare", "c.yaml", "--folds", "60"], {}, "fewer than data.folds 60"),
    (["sweep", "s.yaml", "--set", "data.folds=3"], {}, "a sweep scores each trial on one split"),
])
def test_bad_fold_settings_are_one_line_errors_that_write_nothing(argv, given, expect, tmp_path, monkeypatch, capsys):
    tweets(90).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "c.yaml").write_text("data: {source: d.csv}\nmodels: [{name: tfidf-logreg}]\n")
    (tmp_path / "t.yaml").write_text("data: {source: d.csv}\nmodel: {name: tfidf-logreg}\n")
    (tmp_path / "s.yaml").write_text("data: {source: d.csv}\nmodel: {name: tiny-bert}\n"
                                     "sweep: {parameters: {lora_rank: {values: [2, 4]}}}\n")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert expect in one_line_error(argv, capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


COMPARE = """
name: kf
data: {source: d.csv}
model: {max_length: 32}
train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3, logging_steps: 5}
lora: {r: 4}
models:
  - name: tfidf-logreg
  - name: tiny-bert
"""


def test_compare_folds_same_folds_for_every_model_mean_std_reuse_and_refit(tmp_path, capsys):
    import lorabench
    from lorabench.config.loading import from_dict
    from lorabench.config.schema import ExperimentConfig
    from lorabench.pipeline.refit import plan_refit
    from lorabench.reporting.report import CSV_COLUMNS, FOLD_COLUMNS
    frame = tweets(150)
    frame.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "c.yaml").write_text(COMPARE)
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "c.yaml"), "--folds", "3", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[6/6] tiny-bert (seed 42, fold 3)" in printed and "fold 1 of 3" in printed

    # the folds: written once, disjoint, every labelled row val once, stratified
    folds = json.loads((out / "folds.json").read_text())
    assert folds["folds"] == 3 and folds["seed"] == 42 and "StratifiedKFold" in folds["rule"]
    val_ids = [set(v) for v in folds["val_ids"]]
    assert set.union(*val_ids) == set(frame["id"].astype(str)) and sum(map(len, val_ids)) == 150
    pos = set(frame.loc[frame["target"] == 1, "id"].astype(str))
    for v in val_ids:
        assert abs(len(v & pos) - len(pos) / 3) <= 1
    # ... and identical for every model: each fold run's val rows are that fold's, whatever the model
    records = {}
    for model in ("tfidf-logreg", "tiny-bert"):
        for i in (1, 2, 3):
            run = out / f"{model}-seed42-fold{i}"
            rec = json.loads((run / "run.json").read_text())
            assert rec["status"] == "completed" and rec["data"]["folds"] == 3 and rec["data"]["fold"] == i
            exp = from_dict(ExperimentConfig, rec["config"])
            assert set(load_splits(exp.data).val.ids) == val_ids[i - 1]
            assert rec["data"]["val_rows"] == len(val_ids[i - 1])
            records[model, i] = rec
    for i in (1, 2, 3):
        assert records["tfidf-logreg", i]["data"]["val_fingerprint"] == records["tiny-bert", i]["data"]["val_fingerprint"]

    # the report: one row per model, every number the mean ± sample std (ddof=1) of its fold runs
    with (out / "results.csv").open() as f:
        reader = csv.reader(f)
        assert next(reader) == CSV_COLUMNS + FOLD_COLUMNS
    rows = {r["label"]: r for r in csv.DictReader((out / "results.csv").open())}
    models = {m["label"]: m for m in json.loads((out / "results.json").read_text())["models"]}
    for model in ("tfidf-logreg", "tiny-bert"):
        recs = [records[model, i] for i in (1, 2, 3)]
        assert rows[model]["runs"] == "3" and rows[model]["folds"] == "3"
        for key, values in {"val_f1": [r["metrics"]["val"]["f1"] for r in recs],
                            "val_precision": [r["metrics"]["val"]["precision"] for r in recs],
                            "val_accuracy": [r["metrics"]["val"]["accuracy"] for r in recs],
                            "val_mcc": [r["evaluation"]["val"]["mcc"] for r in recs],
                            "val_roc_auc": [r["evaluation"]["val"]["roc_auc"] for r in recs],
                            "train_seconds": [r["train_seconds"] for r in recs],
                            "peak_memory_mb": [r["peak_memory_mb"] for r in recs]}.items():
            assert models[model][key] == pytest.approx(np.mean(values), abs=1e-12), key
            assert models[model][f"{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), key
            digits = {"train_seconds": 1, "peak_memory_mb": 0}.get(key, 4)  # results.csv's rounding
            assert float(rows[model][key]) == pytest.approx(np.mean(values), abs=0.51 * 10 ** -digits), key
    html = (out / "report.html").read_text()
    md = (out / "results.md").read_text()
    assert "k-fold estimates (3 folds)" in html and "sample standard deviation (ddof=1)" in md
    f1 = models["tiny-bert"]
    assert f"{f1['val_f1']:.4f} ± {f1['val_f1_std']:.4f}" in md and "(seed 42, fold 1)" in md
    assert "tiny-bert-seed42-fold3" in html  # the per-fold runs stay listed
    assert (out / "plots" / "f1.png").stat().st_size > 0

    # the ensemble row (ensemble_top, default on): built and scored on each fold alone, the row is the mean ± std
    from lorabench.runs.predictions import read_predictions
    names = records["tiny-bert", 1]["data"]["label_names"]
    fold_records = []
    for i in (1, 2, 3):
        ens = read_predictions(out / "ensemble" / f"fold{i}" / "predictions_val.csv", names)
        members = [read_predictions(out / f"{m}-seed42-fold{i}" / "predictions_val.csv", names)
                   for m in ("tfidf-logreg", "tiny-bert")]
        assert all(p.ids == ens.ids for p in members) and set(ens.ids) == val_ids[i - 1]
        np.testing.assert_allclose(ens.probs, np.mean([p.probs for p in members], axis=0), rtol=0, atol=1e-12)
        fold_records.append(json.loads((out / "ensemble" / f"fold{i}" / "ensemble.json").read_text()))
    ens_row = next(m for m in models.values() if m["kind"] == "ensemble")
    assert ens_row["folds"] == 3
    # every number of the row is the mean ± std over the folds' ensembles (not fold 1's, which the detail shows)
    for key in ("f1", "precision", "recall", "accuracy", "macro_f1", "weighted_f1", "mcc", "roc_auc", "pr_auc"):
        values = [e["metrics"]["val"][key] if key in e["metrics"]["val"] else e["evaluation"]["val"][key]
                  for e in fold_records]
        assert ens_row[f"val_{key}"] == pytest.approx(np.mean(values), abs=1e-12), key
        assert ens_row[f"val_{key}_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), key
        assert float(rows[ens_row["label"]][f"val_{key}"]) == pytest.approx(np.mean(values), abs=0.51e-4), key
    models = {k: m for k, m in models.items() if m["kind"] == "model"}

    # re-running reuses every finished fold run; --refit then refits the winner on all rows
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*-fold*/run.json")}
    assert main(["compare", str(tmp_path / "c.yaml"), "--folds", "3", "--output-dir", str(out), "--refit"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reused") == 6 and mtimes == {p: p.stat().st_mtime_ns for p in out.glob("*-fold*/run.json")}
    best = max(models.values(), key=lambda m: m["val_f1"])["label"]
    refit = json.loads((out / f"refit-{best}" / "run.json").read_text())
    assert "no validation score of its own" in printed
    assert refit["status"] == "completed" and "val" not in refit["metrics"]
    assert refit["data"]["train_rows"] == 150 and refit["data"]["val_rows"] == 0  # every labelled row
    chosen = refit["refit"]["chosen_by"]
    assert chosen["runs"] == 3 and chosen["f1"] == pytest.approx(models[best]["val_f1"], abs=1e-12)
    assert chosen["f1_std"] == pytest.approx(models[best]["val_f1_std"], abs=1e-12)
    results = json.loads((out / "results.json").read_text())
    assert results["refit"]["label"] == best and results["refit"]["train_rows"] == 150
    assert f"refit: {best}" in (out / "results.md").read_text()
    assert [r["label"] for r in results["models"] if r["kind"] == "model"] == ["tfidf-logreg", "tiny-bert"]  # the refit is no row

    # with folds the epochs are the lower median of the fold runs' best epochs
    plan = plan_refit([out / f"tiny-bert-seed42-fold{i}" for i in (1, 2, 3)])
    best_epochs = [records["tiny-bert", i]["best_epoch"] for i in (1, 2, 3)]
    assert plan.info["epochs"] == statistics.median_low(best_epochs) == plan.cfg.train.epochs
    assert plan.info["train_rows"] == 150 and len(plan.splits.val) == 0

    # the Python API: the same config reuses every run (the refit too) and returns the table with the fold columns
    (tmp_path / "c3.yaml").write_text(COMPARE.replace("data: {source: d.csv}", "data: {source: d.csv, folds: 3}")
                                      + "refit: true\n")
    result = lorabench.compare(str(tmp_path / "c3.yaml"), out)
    assert "reused" in capsys.readouterr().out
    assert list(result.table.columns) == CSV_COLUMNS + FOLD_COLUMNS
    assert result.table.set_index("label").loc["tiny-bert", "val_mcc_std"] == pytest.approx(models["tiny-bert"]["val_mcc_std"])
    assert len(result.records) == 6


def test_train_with_folds_runs_every_fold_and_prints_mean_and_std(tmp_path, capsys):
    import lorabench
    tweets(90).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "t.yaml").write_text("name: t\ndata: {source: d.csv, folds: 3}\nmodel: {name: tfidf-logreg}\n")
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "t.yaml"), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    f1s = [json.loads((out / f"tfidf-logreg-seed42-fold{i}" / "run.json").read_text())["metrics"]["val"]["f1"]
           for i in (1, 2, 3)]
    assert f"3-fold val F1 {np.mean(f1s):.4f} ± {np.std(f1s, ddof=1):.4f}" in printed
    assert (out / "folds.json").is_file() and (out / "report.html").is_file()
    result = lorabench.train(str(tmp_path / "t.yaml"), tmp_path / "api")  # the API does what the command does
    assert isinstance(result, lorabench.Comparison) and len(result.records) == 3
    row = result.table.iloc[0]
    assert (row["val_f1"], row["val_f1_std"]) == pytest.approx((np.mean(f1s), np.std(f1s, ddof=1)))


def test_a_record_from_before_the_fold_keys_is_still_reused(tmp_path):
    """Adding data.folds/data.fold must not re-train every finished run: a record without them counts as null."""
    from lorabench.config import ExperimentConfig, to_dict
    from lorabench.pipeline.run import reusable_run
    cfg = ExperimentConfig()
    old = to_dict(cfg)
    for key in ("folds", "fold"):
        del old["data"][key]
    (tmp_path / "run.json").write_text(json.dumps({"status": "completed", "config": old, "data": {"fingerprint": "f"}}))
    assert reusable_run(tmp_path, cfg, "f") is not None
    assert reusable_run(tmp_path, cfg, "other data") is None
    changed = ExperimentConfig(data=DataConfig(folds=3, fold=1))
    assert reusable_run(tmp_path, changed, "f") is None


def test_data_and_plan_commands_show_fold_1_of_a_k_fold_config(tmp_path, capsys):
    tweets(90).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "t.yaml").write_text("name: t\ndata: {source: d.csv, folds: 3}\nmodel: {name: tiny-bert, max_length: 32}\n")
    assert main(["data", str(tmp_path / "t.yaml")]) == 0
    assert "rows: train 60, val 30, test 0; fold 1 of 3" in capsys.readouterr().out
    assert main(["plan", str(tmp_path / "t.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["error"] is None
