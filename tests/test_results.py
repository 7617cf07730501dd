"""Results people read (issue 15): per-class precision/recall/F1/support and the confusion matrix for every
run, ROC-AUC, PR-AUC and MCC for binary tasks, macro and weighted F1 named as such, and the plots."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)

from lorabench.cli import main
from lorabench.data.sources import bundled_path, read_table
from lorabench.evaluation.metrics import tune_threshold


@pytest.mark.parametrize("seed", range(6))
def test_threshold_search_in_one_pass_finds_the_f1_best_threshold(seed):
    """Against brute force over every distinct score (rule: P >= t; ties: the lowest threshold)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1).round(2)  # rounded: many tied scores
    probs = np.stack([1 - p1, p1], axis=1)
    t, f = tune_threshold(y, probs)
    brute = [(f1_score(y, (p1 >= c).astype(int), zero_division=0), -c) for c in np.unique(p1)]
    best_f, neg_t = max(brute)
    cut = -neg_t
    below = p1[p1 < cut]
    assert f == pytest.approx(best_f, abs=1e-12)
    assert (below.max() if below.size else -1) < t <= cut  # same positives as the best cut, off every score
    assert f1_score(y, (p1 >= t).astype(int)) == pytest.approx(f, abs=1e-12)


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    """A 3-class file in the shape of the crowd-labelled original (`choose_one`): Relevant, Not Relevant and
    a small "Can't Decide" class, compared with the TF-IDF baseline and a tiny BERT."""
    tmp = tmp_path_factory.mktemp("three")
    df = read_table(bundled_path()).head(600).copy()
    names = np.where(df["target"].astype(int) == 1, "Relevant", "Not Relevant").astype(object)
    names[::25] = "Can't Decide"
    df["choose_one"] = names
    df[["id", "text", "choose_one"]].to_csv(tmp / "three.csv", index=False)
    (tmp / "c.yaml").write_text(f"""
name: three
data: {{source: {tmp / 'three.csv'}, label: choose_one}}
model: {{max_length: 48}}
train: {{epochs: 2, batch_size: 16, learning_rate: 1.0e-3}}
models:
  - {{name: tfidf-logreg}}
  - {{name: tiny-bert}}
""")
    assert main(["compare", str(tmp / "c.yaml"), "--output-dir", str(tmp / "out")]) == 0
    return tmp / "out"


@pytest.mark.parametrize("run", ["tfidf-logreg-seed42", "tiny-bert-seed42"])
def test_per_class_results_and_confusion_matrix_match_scikit_learn_on_the_saved_predictions(three_class, run):
    from lorabench.config import CompareConfig, load_config
    from lorabench.data.splits import load_splits
    from lorabench.inference.predict import load_run, predict_probs
    rec = json.loads((three_class / run / "run.json").read_text())
    names = rec["data"]["label_names"]
    assert sorted(names) == ["Can't Decide", "Not Relevant", "Relevant"]
    val = load_splits(load_config(CompareConfig, three_class / "compare.yaml", []).data).val
    loaded = load_run(three_class / run)
    probs = loaded.model.predict_proba(val.texts) if loaded.is_baseline else predict_probs(loaded, val.texts,
                                                                                           progress=False)
    preds = probs.argmax(axis=1)
    want = classification_report(val.labels, preds, labels=[0, 1, 2], target_names=names, output_dict=True,
                                 zero_division=0)
    got = rec["evaluation"]["val"]
    for name in names:
        for k, sk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
            assert got["per_class"][name][k] == pytest.approx(want[name][sk], abs=1e-9), (name, k)
    assert got["macro_f1"] == pytest.approx(want["macro avg"]["f1-score"], abs=1e-9)
    assert got["macro_f1"] == pytest.approx(rec["metrics"]["val"]["f1"], abs=1e-9)  # the table's "macro F1"
    assert got["weighted_f1"] == pytest.approx(want["weighted avg"]["f1-score"], abs=1e-9)
    assert got["confusion_matrix"] == confusion_matrix(val.labels, preds, labels=[0, 1, 2]).tolist()
    assert got["mcc"] == pytest.approx(matthews_corrcoef(val.labels, preds), abs=1e-9)
    assert "roc_auc" not in got  # threshold-free binary scores: binary tasks only


def test_three_class_report_names_macro_and_weighted_f1_and_shows_per_class_tables(three_class):
    md = (three_class / "results.md").read_text()
    header, details = [line for line in md.splitlines() if line.startswith("| model |")][:2]  # table, details below
    assert "val macro F1" in header and "MCC" in header and "ROC-AUC" not in header
    assert "weighted F1" in details and "macro precision" in details and "PR-AUC" not in details
    assert md.count("## Per-class results (val)") == 1 and "Can't Decide" in md
    html = (three_class / "report.html").read_text()
    assert "Per-class results (val)" in html and html.count("confusion matrix of ") == 3  # 2 models + their ensemble
    assert (three_class / "plots" / "confusion_tiny-bert.png").is_file()
    assert "### Ensemble: mean of top 2 (mean of 2 member runs)" in md  # a 3-class ensemble: most probable class
    assert not (three_class / "plots" / "roc_pr.png").exists()


def test_binary_runs_report_roc_auc_pr_auc_mcc_and_curves(tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("name: b\ndata: {max_train_samples: 300, max_eval_samples: 120}\nmodel: {max_length: 48}\n"
                   "train: {epochs: 1, batch_size: 16, threshold: tune}\n"
                   "models:\n  - {name: tfidf-logreg}\n  - {name: tiny-llama}\n")
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "out")]) == 0
    from lorabench.config import CompareConfig, load_config
    from lorabench.data.splits import load_splits
    from lorabench.inference.predict import load_run, predict_probs
    val = load_splits(load_config(CompareConfig, tmp_path / "out" / "compare.yaml", []).data).val
    rec = json.loads((tmp_path / "out" / "tiny-llama-seed42" / "run.json").read_text())
    probs = predict_probs(load_run(tmp_path / "out" / "tiny-llama-seed42", merge=False), val.texts, progress=False)
    got = rec["evaluation"]["val"]
    assert got["roc_auc"] == pytest.approx(roc_auc_score(val.labels, probs[:, 1]), abs=1e-6)
    assert got["pr_auc"] == pytest.approx(average_precision_score(val.labels, probs[:, 1]), abs=1e-6)
    # per-class results by the same rule as the table's F1 (most probable class): one row agrees with itself
    preds = probs.argmax(axis=1)
    assert got["confusion_matrix"] == confusion_matrix(val.labels, preds).tolist()
    assert got["mcc"] == pytest.approx(matthews_corrcoef(val.labels, preds), abs=1e-9)
    cm = np.asarray(got["confusion_matrix"])
    assert rec["metrics"]["val"]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
    tuned = (probs[:, 1] >= rec["threshold"]).astype(int)  # and at the tuned threshold, beside it
    at = got["at_threshold"]
    assert at["threshold"] == rec["threshold"] and at["confusion_matrix"] == confusion_matrix(val.labels, tuned).tolist()
    assert at["per_class"]["disaster"]["f1"] == pytest.approx(rec["metrics"]["val_at_threshold"]["f1"], abs=1e-9)
    assert got["curves"]["roc"]["fpr"][0] == 0 and got["curves"]["roc"]["tpr"][-1] == 1
    lines = (tmp_path / "out" / "results.md").read_text().splitlines()
    at_table, at_details = [i for i, line in enumerate(lines) if line.startswith("| model |")][:2]

    def cells(line):
        return [c.strip() for c in line.strip("|").split("|")]
    header, details = cells(lines[at_table]), cells(lines[at_details])
    assert all(h in header for h in ("val F1", "ROC-AUC", "MCC")) and not any("macro" in h for h in header + details)
    assert "PR-AUC" in details and "precision" in details
    row = dict(zip(header, cells(lines[at_table + 3])))  # tiny-llama, the second model
    more = dict(zip(details, cells(lines[at_details + 3])))
    assert more["precision"] == f"{rec['metrics']['val']['precision']:.4f}"  # a setup column once overwrote it
    assert row["ROC-AUC"] == f"{got['roc_auc']:.3f}" and more["computed in"] == "fp32"
    assert more["PR-AUC"] == f"{got['pr_auc']:.4f}"
    assert "at the run's decision threshold" in "\n".join(lines)
    assert (tmp_path / "out" / "plots" / "roc_pr.png").is_file()
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert csv["val_roc_auc"].notna().all() and csv["val_mcc"].notna().all()
