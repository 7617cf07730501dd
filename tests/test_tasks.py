"""Any labelled text (issue 25, items 1, 2 and 4): multi_label and regression through train, compare, k-fold,
predict, the ensemble and the API; every metric equals scikit-learn's (scipy's) on the saved predictions.

The made-up data: texts of filler words plus keywords; each of 3 labels (fire, flood, storm) is on a row when one
of its keywords is (labels co-occur); the regression target is the number of keywords in the text."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from lorabench import load_run
from lorabench.cli import main
from lorabench.config.schema import DataConfig
from lorabench.data.splits import load_splits
from lorabench.data.windows import pool
from lorabench.evaluation.tasks import score

WORDS = {"fire": ["fire", "smoke", "flames"], "flood": ["flood", "water", "rain"], "storm": ["storm", "wind", "thunder"]}
FILLER = ["the", "a", "today", "city", "people", "road", "news", "we", "saw"]
TRAIN = "train: {epochs: 12, batch_size: 16, learning_rate: 1.0e-2, serving_cost: false}\n"


def rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = [lab for lab in WORDS if rng.random() < 0.4]
        toks = list(rng.choice(FILLER, 3)) + [str(rng.choice(WORDS[lab])) for lab in labels]
        rng.shuffle(toks)
        out.append({"id": f"r{i:03d}", "text": " ".join(toks), "labels": labels, "count": float(len(labels))})
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    df = rows(300)
    with open(tmp / "ml.jsonl", "w") as f:
        for r in df.to_dict("records"):
            f.write(json.dumps(r) + "\n")
    flat = df.assign(labels=df["labels"].map("|".join))
    for lab in WORDS:
        flat[lab] = df["labels"].map(lambda s, lab=lab: int(lab in s))
    flat.to_csv(tmp / "ml.csv", index=False)
    return tmp


def _train(tmp, name: str, data: str, model: str = "{name: tiny-bert, max_length: 16}", train: str = TRAIN) -> dict:
    (tmp / f"{name}.yaml").write_text(f"name: {name}\ndata: {data}\nmodel: {model}\n{train}")
    assert main(["train", str(tmp / f"{name}.yaml"), "--output-dir", str(tmp / name)]) == 0
    return json.loads((tmp / name / "run.json").read_text())


@pytest.fixture(scope="module")
def multi(files):
    return {fmt: _train(files, f"ml_{fmt}", data) for fmt, data in (
        ("list", "{source: ml.jsonl, label: labels}"),
        ("separator", "{source: ml.csv, label: labels, label_separator: '|'}"),
        ("columns", "{source: ml.csv, label: [fire, flood, storm]}"))}


def test_the_three_label_formats_give_the_same_run(files, multi):
    first = multi["list"]
    assert first["data"]["task"] == "multi_label" and first["data"]["label_names"] == ["fire", "flood", "storm"]
    for fmt in ("separator", "columns"):
        assert multi[fmt]["data"]["fingerprint"] == first["data"]["fingerprint"], fmt
        assert multi[fmt]["metrics"] == first["metrics"], fmt
        a = pd.read_csv(files / "ml_list" / "predictions_val.csv")
        b = pd.read_csv(files / f"ml_{fmt}" / "predictions_val.csv")
        assert a.equals(b), fmt


def test_tiny_bert_learns_co_occurring_labels_above_the_label_frequency_baseline(files, multi):
    rec = multi["list"]
    m = rec["metrics"]["val"]
    saved = pd.read_csv(files / "ml_list" / "predictions_val.csv")
    y = np.array([[int(n in json.loads(v)) for n in WORDS] for v in saved["label"]])
    # the label-frequency baseline: the same label set for every row, the best such set on val itself
    best_constant = max(skm.f1_score(y, np.tile([a, b, c], (len(y), 1)), average="micro", zero_division=0)
                        for a in (0, 1) for b in (0, 1) for c in (0, 1))
    print(f"val micro F1 {m['f1_micro']:.3f} vs label-frequency baseline {best_constant:.3f}")
    assert m["f1_micro"] > best_constant + 0.05, (m, best_constant)
    assert m["roc_auc_macro"] > 0.75


def test_every_multi_label_metric_equals_scikit_learns_on_the_saved_predictions(files, multi):
    saved = pd.read_csv(files / "ml_list" / "predictions_val.csv")
    p = saved[[f"prob_{n}" for n in WORDS]].to_numpy()
    y = np.array([[int(n in json.loads(v)) for n in WORDS] for v in saved["label"]])
    pred = (p >= 0.5).astype(int)
    m = multi["list"]["metrics"]["val"]
    want = {"f1_micro": skm.f1_score(y, pred, average="micro"), "f1_macro": skm.f1_score(y, pred, average="macro"),
            "f1_weighted": skm.f1_score(y, pred, average="weighted"),
            "precision_micro": skm.precision_score(y, pred, average="micro"),
            "recall_micro": skm.recall_score(y, pred, average="micro"), "subset_accuracy": skm.accuracy_score(y, pred),
            "hamming_loss": skm.hamming_loss(y, pred), "roc_auc_macro": skm.roc_auc_score(y, p, average="macro"),
            "pr_auc_macro": skm.average_precision_score(y, p, average="macro")}
    assert m == pytest.approx(want, abs=1e-12)
    per = multi["list"]["evaluation"]["val"]["per_label"]
    f1 = skm.f1_score(y, pred, average=None)
    assert [per[n]["f1"] for n in WORDS] == pytest.approx(list(f1))
    assert [per[n]["support"] for n in WORDS] == list(y.sum(axis=0))


def test_tuned_thresholds_are_each_labels_f1_best_on_val(files):
    rec = _train(files, "ml_tune", "{source: ml.jsonl, label: labels}",
                 train=TRAIN.replace("serving_cost: false", "serving_cost: false, threshold: tune"))
    saved = pd.read_csv(files / "ml_tune" / "predictions_val.csv")
    y = np.array([[int(n in json.loads(v)) for n in WORDS] for v in saved["label"]])
    assert len(rec["threshold"]) == 3
    for j, n in enumerate(WORDS):
        p, t = saved[f"prob_{n}"].to_numpy(), rec["threshold"][j]
        best = max(skm.f1_score(y[:, j], (p >= c).astype(int), zero_division=0) for c in np.unique(p))
        assert skm.f1_score(y[:, j], (p >= t).astype(int)) == pytest.approx(best), n
        assert rec["evaluation"]["val"]["per_label"][n]["threshold"] == t
    # the saved decisions are at those thresholds; metrics at 0.5 and at them are both recorded
    assert "val_at_threshold" in rec["metrics"]
    assert rec["metrics"]["val_at_threshold"]["f1_micro"] >= rec["metrics"]["val"]["f1_micro"]


@pytest.fixture(scope="module")
def regression(files):
    return _train(files, "reg", "{source: ml.csv, label: count, task: regression}")


def test_a_number_learnt_from_keyword_counts_has_r2_above_zero(regression):
    m = regression["metrics"]["val"]
    print("regression val:", m)
    assert regression["data"]["task"] == "regression" and m["r2"] > 0.2, m


def test_regression_metrics_equal_scikit_learns_and_scipys(files, regression):
    saved = pd.read_csv(files / "reg" / "predictions_val.csv")
    y, p = saved["label"].to_numpy(), saved["prediction"].to_numpy()
    m = regression["metrics"]["val"]
    assert m == pytest.approx({"rmse": np.sqrt(skm.mean_squared_error(y, p)), "mae": skm.mean_absolute_error(y, p),
                               "r2": skm.r2_score(y, p), "pearson": stats.pearsonr(y, p).statistic,
                               "spearman": stats.spearmanr(y, p).statistic}, abs=1e-12)


def test_predict_and_the_api_write_label_sets_and_values(files, multi, regression, tmp_path):
    df = rows(300)
    df[["id", "text"]].head(20).to_csv(tmp_path / "in.csv", index=False)
    assert main(["predict", str(files / "ml_list"), "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "ml.csv")]) == 0
    got = pd.read_csv(tmp_path / "ml.csv")
    assert list(got.columns) == ["id", "labels", "prob_fire", "prob_flood", "prob_storm"]
    sets = got["labels"].map(json.loads)
    assert all(set(s) <= set(WORDS) for s in sets)
    assert (sets.map(len) == (got[["prob_fire", "prob_flood", "prob_storm"]] >= 0.5).sum(axis=1)).all()
    api = load_run(files / "ml_list").predict(df["text"].head(20).tolist())
    assert api["prob_fire"].to_numpy() == pytest.approx(got["prob_fire"].to_numpy(), abs=1e-6)
    assert main(["predict", str(files / "reg"), "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "reg.jsonl")]) == 0
    values = [json.loads(x)["prediction"] for x in (tmp_path / "reg.jsonl").read_text().splitlines()]
    api = load_run(files / "reg").predict(df["text"].head(20).tolist())
    assert api["prediction"].to_numpy() == pytest.approx(values, abs=1e-6)


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_compare_knows_the_task(files, task, capsys):
    data = ("{source: ml.jsonl, label: labels}" if task == "multi_label"
            else "{source: ml.csv, label: count, task: regression}")
    cfg = files / f"cmp_{task}.yaml"
    cfg.write_text(f"name: c\ndata: {data}\n{TRAIN}ensemble_top: 2\nmodels:\n"
                   "  - {name: tiny-bert, model: {max_length: 16}}\n  - {name: tfidf-logreg}\n")
    out = files / f"cmp_{task}"
    assert main(["compare", str(cfg), "--output-dir", str(out)]) == 0
    head = {"multi_label": "f1_micro", "regression": "rmse"}[task]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == task and f"val_{head}" in results["columns"]
    table = pd.read_csv(out / "results.csv")
    assert list(table["label"]) == ["tiny-bert", "tfidf-logreg", "Ensemble: mean of top 2"]
    stats_ = results["statistics"]
    sign = -1 if task == "regression" else 1
    best = max(table[table["kind"] == "model"].itertuples(), key=lambda r: sign * getattr(r, f"val_{head}"))
    assert stats_["best"] == best.label and stats_["metric"] == head and stats_["verdict"]
    # the ensemble is the mean of its members' saved outputs, scored by the task's metrics
    ens = json.loads((out / "ensemble" / "ensemble.json").read_text())
    preds = [pd.read_csv(out / d / "predictions_val.csv") for d in ("tiny-bert-seed42", "tfidf-logreg-seed42")]
    cols = [f"prob_{n}" for n in WORDS] if task == "multi_label" else ["prediction"]
    mean = np.mean([p[cols].to_numpy() for p in preds], axis=0)
    labels = ([tuple(int(n in json.loads(v)) for n in WORDS) for v in preds[0]["label"]] if task == "multi_label"
              else preds[0]["label"].tolist())
    assert ens["metrics"]["val"] == pytest.approx(score(task, labels, mean, len(cols)))
    assert (out / "report.html").is_file()
    plots = {p.name for p in (out / "plots").glob("*.png")}
    assert plots == ({"per_label_f1.png"} if task == "multi_label" else {"predicted_vs_true.png", "residuals.png"})


def test_kfold_stratifies_label_sets_and_quantile_bins(files):
    cfg = DataConfig(source=str(files / "ml.jsonl"), label="labels", folds=4, fold=1)
    for fold in range(1, 5):
        s = load_splits(DataConfig(**{**cfg.__dict__, "fold": fold}))
        share = np.array(s.val.class_counts(3)) / len(s.val)
        total = np.array(s.train.class_counts(3)) + np.array(s.val.class_counts(3))
        assert share == pytest.approx(total / (len(s.train) + len(s.val)), abs=0.03), fold  # iterative stratification
    reg = DataConfig(source=str(files / "ml.csv"), label="count", task="regression", folds=3, fold=2)
    s = load_splits(reg)
    assert np.mean(s.val.labels) == pytest.approx(np.mean(s.train.labels), abs=0.1)
    assert main(["train", str(_kfold_yaml(files)), "--output-dir", str(files / "kfold")]) == 0
    table = pd.read_csv(files / "kfold" / "results.csv")
    assert table.loc[0, "folds"] == 3 and table.loc[0, "runs"] == 3


def _kfold_yaml(files):
    p = files / "kfold.yaml"
    p.write_text("name: k\ndata: {source: ml.csv, label: count, task: regression, folds: 3}\n"
                 "model: {name: tfidf-logreg}\n")
    return p


def test_multi_label_windows_pool_by_their_largest_probability():
    probs = np.array([[0.9, 0.1], [0.2, 0.7], [0.4, 0.6]])
    assert pool(probs, np.array([0, 0, 1]), 2, "max") == pytest.approx(np.array([[0.9, 0.7], [0.4, 0.6]]))


@pytest.mark.parametrize("setup, message", [
    ({"val": [["fire", "lava"]]}, "label 'lava' in column 'labels' is not among the labels"),
    ({"target": "many"}, "d.csv row 8: target column 'count' holds 'many', not a number"),  # the file's data row
    ({"target": "[]"}, "target column 'count' holds '[]', not a number"),
    ({"single": []}, "row 6: label column 'labels' holds a list []; single_label needs one label per row"),
    ({"yaml": "train: {metric_for_best_model: rmse}"}, "train.metric_for_best_model: 'rmse' does not fit data.task "
                                                       "multi_label (rmse is a regression metric)"),
    ({"yaml": "train: {threshold: 0.3}", "task": "regression"}, "train.threshold: 0.3 is a decision threshold"),
    ({"column": 2}, "label column 'fire' holds '2'; one-column-per-label data needs 0 or 1"),
    ({"column": 1, "all": True}, "label 'fire' is on every train row"),
    ({"yaml": "data: {source: d.jsonl, label: labels, label_separator: '|'}"}, "holds a list"),
])
def test_bad_task_inputs_are_one_line_errors(tmp_path, capsys, setup, message):
    df = rows(60, 3)
    data = "{source: d.jsonl, label: labels}"
    if "val" in setup:
        df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
        bad = df.head(10).copy()
        bad["labels"] = setup["val"] * 10
        bad.to_json(tmp_path / "v.jsonl", orient="records", lines=True)
        data = "{source: d.jsonl, label: labels, val: v.jsonl}"
    elif "target" in setup:
        df["count"] = df["count"].astype(object)
        df.loc[7, "count"] = setup["target"]
        df.to_csv(tmp_path / "d.csv", index=False)
        data = "{source: d.csv, label: count, task: regression}"
    elif "single" in setup:  # one class per row, but an empty list on one
        df["labels"] = df["labels"].map(lambda s: s[0] if s else "none").astype(object)
        df.at[5, "labels"] = setup["single"]
        df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
        data = "{source: d.jsonl, label: labels, task: single_label}"
    elif "column" in setup:
        df["fire"], df["flood"], df["storm"] = 1, [i % 2 for i in range(len(df))], [i % 3 == 0 for i in range(len(df))]
        df["storm"] = df["storm"].astype(int)
        if not setup.get("all"):
            df.loc[4, "fire"] = setup["column"]
        df.drop(columns="labels").to_csv(tmp_path / "d.csv", index=False)
        data = "{source: d.csv, label: [fire, flood, storm]}"
    else:
        df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
        df.to_csv(tmp_path / "d.csv", index=False)
        if setup.get("task") == "regression":
            data = "{source: d.csv, label: count, task: regression}"
    extra = setup.get("yaml", "")
    if extra.startswith("data:"):
        data, extra = extra[len("data: "):], ""
    (tmp_path / "c.yaml").write_text(f"name: x\ndata: {data}\nmodel: {{name: tfidf-logreg}}\n{extra}\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "out")]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("lorabench: warning")]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_runs_of_different_tasks_are_never_averaged_or_compared(files, multi, regression):
    from lorabench.errors import LorabenchError
    from lorabench.runs.ensemble import Member, build_ensemble
    with pytest.raises(LorabenchError, match="different tasks|label names"):
        build_ensemble([Member("a", [files / "ml_list"], 0.0), Member("b", [files / "reg"], 0.0)])


def test_refit_of_tuned_multi_label_keeps_each_labels_median_threshold(files):
    (files / "rf.yaml").write_text("name: rf\ndata: {source: ml.jsonl, label: labels}\nmodel: {name: tfidf-logreg}\n"
                                   "train: {threshold: tune}\n")
    assert main(["train", str(files / "rf.yaml"), "--output-dir", str(files / "rf"), "--refit"]) == 0
    run = json.loads((files / "rf" / "run.json").read_text())
    refit = json.loads((files / "rf-refit" / "run.json").read_text())
    assert len(run["threshold"]) == 3 and refit["threshold"] == run["threshold"]  # one source run: its thresholds
    assert refit["refit"]["chosen_by"]["f1_micro"] == run["metrics"]["val"]["f1_micro"]
    assert "val" not in refit["metrics"]  # a refit has no val rows: no score of its own


@pytest.mark.parametrize("task, metric, goal", [("multi_label", "f1_micro", "maximize"),
                                                ("regression", "rmse", "minimize")])
def test_a_sweep_optimises_the_tasks_metric_by_default(files, task, metric, goal):
    from lorabench.recipes.sweep import load_sweep_config, plan
    data = ("{source: ml.jsonl, label: labels}" if task == "multi_label"
            else "{source: ml.csv, label: count, task: regression}")
    p = files / f"sw_{task}.yaml"
    p.write_text(f"name: sw\ndata: {data}\nmodel: {{name: tiny-bert, max_length: 16}}\n"
                 "sweep: {parameters: {learning_rate: {values: [0.01, 0.02]}}}\n")
    got = plan(load_sweep_config(p, []), output_dir=str(files / f"sw_{task}"), storage=None, study=None, trials=1)
    assert (got.metric, got.direction) == (metric, goal)
    p.write_text(p.read_text().replace("sweep: {", "sweep: {metric: {name: f1}, "))
    with pytest.raises(Exception, match="sweep.metric.name: 'f1' does not fit data.task"):
        plan(load_sweep_config(p, []), output_dir=str(files / f"sw_{task}"), storage=None, study=None, trials=1)


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_onnx_export_of_each_task_predicts_as_pytorch(files, multi, regression, task, tmp_path):
    run = files / ("ml_list" if task == "multi_label" else "reg")
    out = tmp_path / "onnx"
    assert main(["export", str(run), str(out), "--format", "onnx"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == {"multi_label": "multi_label_classification", "regression": "regression"}[task]
    rows(300)[["id", "text"]].head(30).to_csv(tmp_path / "in.csv", index=False)
    for folder, name in ((run, "torch.csv"), (out, "onnx.csv")):
        assert main(["predict", str(folder), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / name)]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    cols = [c for c in a.columns if c.startswith("prob_") or c == "prediction"]
    assert b[cols].to_numpy() == pytest.approx(a[cols].to_numpy(), abs=1e-4)
    assert list(a.columns) == list(b.columns) and (a.drop(columns=cols) == b.drop(columns=cols)).all().all()


def test_the_verdict_names_an_ensemble_that_scores_better_than_the_best():
    from lorabench.reporting.uncertainty import verdict
    rows = [{"label": "A", "predict_rows_per_second": 10.0}, {"label": "B", "predict_rows_per_second": 100.0},
            {"label": "Ensemble", "predict_rows_per_second": 5.0}]
    comps = [{"label": "B", "difference": -0.2, "p": 0.001}, {"label": "Ensemble", "difference": -0.05, "p": 0.01}]
    said = verdict("A", comps, "p", rows, 0.05, "these rows", higher_is_better=False)  # RMSE: lower is better
    assert said.startswith("A is the best: the others are worse or the ensemble") and \
        "Ensemble scores better than A (p = 0.01), optimistic" in said
    assert "scores better" not in verdict("A", comps, "p", rows, 0.05, "these rows")  # F1: both are worse
