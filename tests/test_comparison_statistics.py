"""Is the difference real, what does each model cost to run, where do the models fail (issue 24): the statistics,
serving cost, error analysis and calibration of a real comparison, each checked against the saved predictions."""
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from lorabench.cli import main
from lorabench.config.loading import from_dict
from lorabench.config.schema import StatisticsConfig
from lorabench.errors import ConfigError
from lorabench.evaluation.calibration import log_loss
from lorabench.inference import serving
from lorabench.runs.record import RunRecord

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "lorabench" / "datasets" / "disaster_tweets" / "train.csv"
NAMES = ["not_disaster", "disaster"]
CONFIG = """
name: stats
data: {{source: {src}, test: {test}, label_names: [not_disaster, disaster]}}
model: {{max_length: 48}}
train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3}}
lora: {{r: 4}}
ensemble_top: 2
statistics: {{bootstrap_resamples: 1000, bootstrap_seed: 3}}
models:
  - name: tfidf-logreg
  - name: tiny-bert
    label: tiny BERT
  - name: tiny-llama
    train: {{calibration: temperature}}
"""
SERVING_KEYS = ("rows_per_second", "latency_ms", "peak_memory_mb", "export_mb")


def _data(folder: Path, rows: int = 400) -> tuple[Path, Path]:
    frame = pd.read_csv(BUNDLED, dtype=str, keep_default_na=False)
    src = frame.iloc[:rows].copy()
    src.loc[src.index[-3:], "text"] = src["text"].iloc[0]  # a val text that is also in train (a flagged row)
    (folder / "src.csv").write_text(src.to_csv(index=False))
    (folder / "test.csv").write_text(frame.iloc[rows:rows + 80].to_csv(index=False))
    return folder / "src.csv", folder / "test.csv"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stats")
    src, test = _data(tmp)
    cfg = tmp / "stats.yaml"
    cfg.write_text(CONFIG.format(src=src, test=test))
    out = tmp / "out"
    assert main(["compare", str(cfg), "--output-dir", str(out)]) == 0
    return out


def _val(path: Path) -> pd.DataFrame:
    return pd.read_csv(path / "predictions_val.csv", dtype={"id": str})


def _runs(out: Path) -> dict[str, Path]:
    return {"tfidf-logreg": out / "tfidf-logreg-seed42", "tiny BERT": out / "tiny-BERT-seed42",
            "tiny-llama": out / "tiny-llama-seed42"}


def test_results_have_intervals_around_each_estimate_and_a_verdict(compared):
    results = json.loads((compared / "results.json").read_text())
    stats = results["statistics"]
    assert stats["method"] == "bootstrap" and stats["resamples"] == 1000 and stats["seed"] == 3
    labels = [m["label"] for m in results["models"]]
    assert labels == ["tfidf-logreg", "tiny BERT", "tiny-llama", "Ensemble: mean of top 2"]
    for m in results["models"]:
        for split in ("val", "test"):
            for metric in ("f1", "accuracy", "mcc", "roc_auc"):
                lo, hi = m[f"{split}_{metric}_low"], m[f"{split}_{metric}_high"]
                assert lo <= hi, (m["label"], split, metric)
        for split in ("val", "test"):  # every interval has its estimate beside it, inside it
            for metric in ("f1", "accuracy", "mcc", "roc_auc", "pr_auc"):
                est = m[f"{split}_{metric}"]
                assert m[f"{split}_{metric}_low"] - 1e-12 <= est <= m[f"{split}_{metric}_high"] + 1e-12, \
                    (m["label"], split, metric)
    # every model but the best against the best, Holm-adjusted p >= the raw p
    best = stats["best"]
    assert best == max(results["models"], key=lambda m: m["val_f1"])["label"]
    comps = {c["label"]: c for c in stats["comparisons"]}
    assert set(comps) == set(labels) - {best}
    for c in comps.values():
        assert 0 < c["p_bootstrap"] <= c["p_bootstrap_holm"] <= 1 and 0 < c["p_mcnemar"] <= c["p_mcnemar_holm"] <= 1
        assert c["low"] <= c["difference"] <= c["high"]
    assert set(stats["group"]) == {best} | {lab for lab, c in comps.items() if c["p_bootstrap_holm"] >= 0.05}
    assert stats["verdict"].startswith(best) and "val rows" in stats["verdict"]
    from lorabench.pipeline.comparison import Comparison
    assert Comparison.read(compared).statistics["verdict"] == stats["verdict"]  # the Python API's result has it too
    md = (compared / "results.md").read_text()
    assert md.splitlines()[2] == f"**Verdict:** {stats['verdict']}"
    assert "## Is the difference real?" in md and "## Where the models fail" in md
    rows = list(csv.DictReader((compared / "results.csv").open()))
    assert all(r["val_f1_low"] and r["val_f1_high"] for r in rows)
    assert [r["delta_f1"] == "" for r in rows] == [lab == best for lab in labels]


def test_mcnemar_counts_are_the_rows_where_exactly_one_model_is_right(compared):
    stats = json.loads((compared / "results.json").read_text())["statistics"]
    paths = {**_runs(compared), "Ensemble: mean of top 2": compared / "ensemble"}
    right = {}
    for label, path in paths.items():
        v = _val(path)
        right[label] = v[[f"prob_{n}" for n in NAMES]].to_numpy().argmax(1) == v["label"].map(NAMES.index).to_numpy()
    for c in stats["comparisons"]:
        assert c["only_this_right"] == int((right[c["label"]] & ~right[stats["best"]]).sum())
        assert c["only_best_right"] == int((~right[c["label"]] & right[stats["best"]]).sum())


def test_every_kind_of_model_records_what_predicting_costs(compared):
    for label, path in _runs(compared).items():
        rec = RunRecord.read(path)
        assert rec.serving and not rec.serving.get("error"), (label, rec.serving)
        assert all(rec.serving[k] > 0 for k in SERVING_KEYS), (label, rec.serving)
        assert rec.serving["rows"] == 80  # every val row (fewer than serving.SERVING_ROWS)
    ens = json.loads((compared / "ensemble" / "ensemble.json").read_text())["serving"]
    assert all(ens[k] > 0 for k in SERVING_KEYS), ens
    members = [RunRecord.read(compared / "ensemble" / r) for m in json.loads((compared / "ensemble" / "ensemble.json").read_text())
               ["members"] for r in m["runs"]]
    assert ens["export_mb"] == pytest.approx(sum(m.serving["export_mb"] for m in members), abs=0.02)
    for row in csv.DictReader((compared / "results.csv").open()):
        assert float(row["predict_rows_per_second"]) > 0 and float(row["latency_ms"]) > 0, row["label"]
        assert float(row["predict_peak_memory_mb"]) > 0 and float(row["export_mb"]) > 0, row["label"]


def test_error_analysis_and_calibration_recomputed_from_the_saved_predictions(compared):
    runs = _runs(compared)
    val = {label: _val(path) for label, path in runs.items()}
    y = val["tfidf-logreg"]["label"].map(NAMES.index).to_numpy()
    probs = {label: v[[f"prob_{n}" for n in NAMES]].to_numpy() for label, v in val.items()}
    pred = {label: p.argmax(1) for label, p in probs.items()}
    ids = val["tfidf-logreg"]["id"].astype(str).tolist()

    all_wrong = pd.read_csv(compared / "analysis" / "all_wrong.csv", dtype={"id": str})
    expect = [ids[i] for i in np.flatnonzero(np.logical_and.reduce([pred[lab] != y for lab in runs]))]
    assert all_wrong["id"].tolist() == expect
    val_rows = pd.read_csv(compared / "val_rows.csv", dtype={"id": str}, keep_default_na=False)
    assert val_rows["id"].tolist() == ids and val_rows["duplicate_in_train"].sum() >= 1  # the planted duplicate

    wrong = pd.read_csv(compared / "analysis" / "confidently_wrong.csv", dtype={"id": str})
    for label in runs:
        mine = wrong[wrong["model"] == label]
        bad = np.flatnonzero(pred[label] != y)
        top = sorted(bad, key=lambda i: -probs[label][i, pred[label][i]])[:10]
        assert mine["id"].tolist() == [ids[i] for i in top]
        assert mine["probability"].to_numpy() == pytest.approx([probs[label][i, pred[label][i]] for i in top])
        assert (mine["probability"].diff().dropna() <= 1e-12).all()

    cal = pd.read_csv(compared / "analysis" / "calibration.csv").set_index("model")
    for label in runs:
        conf, hit = probs[label].max(1), pred[label] == y
        edges = np.linspace(0, 1, 16)
        ece = sum(abs(conf[m].mean() - hit[m].mean()) * m.mean()
                  for lo, hi in zip(edges[:-1], edges[1:]) if (m := (conf > lo) & (conf <= hi)).any())
        assert cal.loc[label, "ece"] == pytest.approx(ece, abs=1e-4)
        brier = ((probs[label][:, 1] - y) ** 2).mean()
        assert cal.loc[label, "brier"] == pytest.approx(brier, abs=1e-4)

    kappa = pd.read_csv(compared / "analysis" / "agreement.csv").set_index("model")
    assert kappa.loc["tfidf-logreg", "tiny-llama"] == pytest.approx(
        cohen_kappa_score(pred["tfidf-logreg"], pred["tiny-llama"]), abs=1e-4)


def test_temperature_keeps_the_decisions_lowers_val_log_loss_and_predict_applies_it(compared, tmp_path):
    rec = RunRecord.read(_runs(compared)["tiny-llama"])
    cal = rec.calibration
    assert cal["method"] == "temperature" and cal["fitted_on"] == "val" and cal["temperature"] > 0
    assert cal["log_loss_after"] <= cal["log_loss_before"]
    v = _val(_runs(compared)["tiny-llama"])
    p = v[[f"prob_{n}" for n in NAMES]].to_numpy()
    y = v["label"].map(NAMES.index).to_numpy()
    assert log_loss(y, p) == pytest.approx(cal["log_loss_after"], abs=1e-6)
    # the same run without calibration (same seed: same weights): same decisions and F1, other probabilities
    src, test = _data(tmp_path)
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(CONFIG.format(src=src, test=test).replace("    train: {calibration: temperature}\n", "")
                   .replace("ensemble_top: 2", "ensemble_top: 0").replace("  - name: tfidf-logreg\n", "")
                   .replace("  - name: tiny-bert\n    label: tiny BERT\n", ""))
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "plain")]) == 0
    plain = _val(tmp_path / "plain" / "tiny-llama-seed42")[[f"prob_{n}" for n in NAMES]].to_numpy()
    assert (plain.argmax(1) == p.argmax(1)).all()
    assert f1_score(y, plain.argmax(1)) == f1_score(y, p.argmax(1))
    assert log_loss(y, p) <= log_loss(y, plain) + 1e-9
    if abs(cal["temperature"] - 1) > 1e-3:
        assert not np.allclose(plain, p)
    # predict on the val texts gives the saved (calibrated) probabilities
    rows = pd.read_csv(compared / "val_rows.csv", dtype=str, keep_default_na=False)
    rows[["id", "text"]].to_csv(tmp_path / "val_in.csv", index=False)
    assert main(["predict", str(_runs(compared)["tiny-llama"]), "--input", str(tmp_path / "val_in.csv"),
                 "--output", str(tmp_path / "pred.csv"), "--probabilities"]) == 0
    got = pd.read_csv(tmp_path / "pred.csv")
    assert got[[f"prob_{n}" for n in NAMES]].to_numpy() == pytest.approx(p, abs=1e-4)


def test_a_run_from_before_serving_was_measured_shows_blanks(compared, tmp_path, capsys):
    import shutil
    copy = tmp_path / "old"
    shutil.copytree(compared, copy)
    ens = json.loads((copy / "ensemble" / "ensemble.json").read_text())
    ens.pop("serving")
    (copy / "ensemble" / "ensemble.json").write_text(json.dumps(ens))
    for path in _runs(copy).values():
        raw = json.loads((path / "run.json").read_text())
        raw.pop("serving"), raw.pop("calibration")
        raw["schema_version"] = 5
        (path / "run.json").write_text(json.dumps(raw))
    (copy / "val_rows.csv").unlink()  # made before the error analysis: ids without texts
    assert (copy / "plots" / "quality_vs_serving.png").is_file()
    capsys.readouterr()
    assert main(["report", str(copy)]) == 0
    verdict = json.loads((copy / "results.json").read_text())["statistics"]["verdict"]
    assert f"verdict: {verdict}" in capsys.readouterr().out  # `lorabench report` says it too
    assert verdict.endswith("serving cost not measured") or "serving cost not measured for" in verdict, verdict
    assert not (copy / "plots" / "quality_vs_serving.png").exists()  # no stale figure of the numbers now missing
    rows = {r["label"]: r for r in csv.DictReader((copy / "results.csv").open())}
    for label in _runs(copy):
        assert rows[label]["predict_rows_per_second"] == "" and rows[label]["export_mb"] == ""
        assert rows[label]["val_f1_low"] != ""  # the statistics need only the saved predictions
    assert "| tiny-llama |" in (copy / "results.md").read_text()


@pytest.mark.parametrize("key, value", [("bootstrap_resamples", 10), ("bootstrap_resamples", 10**8), ("alpha", 1.5),
                                        ("alpha", 0), ("bootstrap_seed", -1)])
def test_statistics_settings_are_checked(key, value):
    with pytest.raises(ConfigError, match=f"statistics.{key}"):
        from_dict(StatisticsConfig, {key: value}, "statistics")


@pytest.mark.fresh_process
def test_serving_cost_measured_in_a_fresh_process(compared):
    got = serving.in_fresh_process(_runs(compared)["tiny BERT"], ["a storm is coming", "what a lovely day"] * 5)
    assert "error" not in got, got
    assert got["rows"] == 10 and all(got[k] > 0 for k in SERVING_KEYS)
    assert got["latency_calls"] == serving.LATENCY_CALLS
    bad = serving.in_fresh_process(_runs(compared)["tiny BERT"].parent / "nope", ["x"])
    assert "no run" in bad["error"] or "not" in bad["error"], bad


def test_k_fold_comparison_uses_the_corrected_t_test(tmp_path):
    src, _ = _data(tmp_path, rows=300)
    cfg = tmp_path / "folds.yaml"
    cfg.write_text(f"""
name: kfold-stats
data: {{source: {src}, folds: 3, label_names: [not_disaster, disaster]}}
model: {{max_length: 32}}
train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3, serving_cost: false}}
ensemble_top: 0
models:
  - name: tfidf-logreg
  - name: tiny-bert
""")
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    stats = results["statistics"]
    assert stats["method"] == "corrected resampled t-test" and stats["folds"] == 3
    (c,) = stats["comparisons"]
    assert c["folds"] == 3 and 0 <= c["p_t_corrected"] <= 1 and c["low"] <= c["difference"] <= c["high"]
    rows = {m["label"]: m for m in results["models"]}
    for m in rows.values():
        assert m["val_f1_low"] <= m["val_f1"] <= m["val_f1_high"]
        assert m["predict_rows_per_second"] is None  # serving_cost: false
    assert rows[c["label"]]["p_t_corrected_holm"] == c["p_t_corrected_holm"]
    assert "folds" in stats["verdict"] and "serving cost not measured" in stats["verdict"]


def test_the_verdict_names_models_whose_serving_cost_is_unknown():
    from lorabench.reporting.uncertainty import _cost_clause
    rows = [{"label": "A", "predict_rows_per_second": 100.0}, {"label": "B", "predict_rows_per_second": 1000.0},
            {"label": "C", "predict_rows_per_second": None}]
    assert _cost_clause("A", ["A", "B"], rows) == "; B predicts 10x cheaper than A (1000 vs 100 rows/s)"
    assert _cost_clause("A", ["A", "B", "C"], rows).endswith("(serving cost not measured for C)")
    assert _cost_clause("C", ["C", "B"], rows) == ("; B is the cheapest to run of those measured (serving cost not "
                                                    "measured for C)")
    assert _cost_clause("C", ["C"], rows) == "; serving cost not measured"
