"""The ensemble row of a comparison (issue 16): the mean of the top N models' saved probabilities, its own
metrics, a saved ensemble folder, and `predict` on that folder."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lorabench.cli import main
from lorabench.evaluation.metrics import classification_metrics

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "lorabench" / "datasets" / "disaster_tweets" / "train.csv"
CONFIG = """
name: ens
data: {{source: {src}, test: {test}, max_train_samples: 160, label_names: [not_disaster, disaster]}}
model: {{max_length: 48}}
train: {{epochs: 1, batch_size: 16, learning_rate: 1.0e-3}}
lora: {{r: 4}}
models:
  - name: tfidf-logreg
  - name: tiny-bert
    label: tiny BERT
  - name: tiny-llama
{extra}
"""
NAMES = ["not_disaster", "disaster"]


def _write_config(folder: Path, extra: str = "") -> Path:
    frame = pd.read_csv(BUNDLED, dtype=str, keep_default_na=False)
    (folder / "src.csv").write_text(frame.iloc[:400].to_csv(index=False))       # 320 train / 80 val rows
    (folder / "test.csv").write_text(frame.iloc[400:460].to_csv(index=False))   # a labelled test split
    p = folder / "ens.yaml"
    p.write_text(CONFIG.format(src=folder / "src.csv", test=folder / "test.csv", extra=extra))
    return p


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ens")
    cfg = _write_config(tmp)
    assert main(["compare", str(cfg), "--output-dir", str(tmp / "out")]) == 0
    return tmp / "out", cfg


def _probs(path: Path) -> np.ndarray:
    return pd.read_csv(path)[[f"prob_{n}" for n in NAMES]].to_numpy()


def _labels(path: Path) -> np.ndarray:
    return pd.read_csv(path)["label"].map({n: i for i, n in enumerate(NAMES)}).to_numpy()


def test_every_run_saves_its_val_and_test_probabilities(compared):
    out, _ = compared
    for run in ("tfidf-logreg-seed42", "tiny-BERT-seed42", "tiny-llama-seed42"):
        rec = json.loads((out / run / "run.json").read_text())
        assert rec["predictions"] == {"val": "predictions_val.csv", "test": "predictions_test.csv"}
        val = pd.read_csv(out / run / "predictions_val.csv", dtype={"id": str})
        assert list(val.columns) == ["id", "label", "prob_not_disaster", "prob_disaster", "prediction"]
        assert len(val) == rec["data"]["val_rows"] == 80
        probs = _probs(out / run / "predictions_val.csv")
        assert np.abs(probs.sum(axis=1) - 1).max() < 1e-9
        # the saved rows are the rows the run was scored on, in order: its recorded metrics come back exactly
        got = classification_metrics(_labels(out / run / "predictions_val.csv"), probs.argmax(axis=1), 2)
        assert got == pytest.approx(rec["metrics"]["val"], abs=1e-12)
        test = _probs(out / run / "predictions_test.csv")
        got = classification_metrics(_labels(out / run / "predictions_test.csv"), test.argmax(axis=1), 2)
        assert got == pytest.approx(rec["metrics"]["test"], abs=1e-12)


def test_ensemble_row_is_the_mean_of_the_members_probabilities(compared):
    out, _ = compared
    ens = json.loads((out / "ensemble" / "ensemble.json").read_text())
    recs = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/run.json")}
    by_f1 = sorted(recs.values(), key=lambda r: -r["metrics"]["val"]["f1"])
    assert [m["label"] for m in ens["members"]] == [r["label"] for r in by_f1]  # top 3 of 3, best first
    assert all(len(m["runs"]) == 1 and m["runs"][0].startswith("../") for m in ens["members"])
    assert ens["label_names"] == NAMES and ens["threshold"] is None and ens["top"] == 3
    for split in ("val", "test"):
        members = [out / "ensemble" / m["runs"][0] / f"predictions_{split}.csv" for m in ens["members"]]
        mean = np.mean([_probs(p) for p in members], axis=0)
        mine = out / "ensemble" / f"predictions_{split}.csv"
        assert np.abs(_probs(mine) - mean).max() < 1e-12
        y = _labels(mine)
        assert (y == _labels(members[0])).all()
        assert ens["metrics"][split] == pytest.approx(classification_metrics(y, mean.argmax(axis=1), 2), abs=1e-12)
        assert ens["evaluation"][split]["roc_auc"] == pytest.approx(roc_auc_score(y, mean[:, 1]), abs=1e-12)
    assert ens["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in recs.values()))

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["kind"] for r in rows] == ["model", "model", "model", "ensemble"]
    row = rows[-1]
    assert row["label"] == "Ensemble: mean of top 3" and row["runs"] == "3"
    assert row["val_f1"] == f"{ens['metrics']['val']['f1']:.4f}" and row["test_f1"] == f"{ens['metrics']['test']['f1']:.4f}"
    assert row["val_roc_auc"] == f"{ens['evaluation']['val']['roc_auc']:.4f}"
    assert row["train_seconds"] == f"{ens['train_seconds']:.1f}"
    md = (out / "results.md").read_text()
    members = ", ".join(m["label"] for m in ens["members"])
    assert "| Ensemble: mean of top 3 |" in md and f"its members ({members})" in md  # short row names, members in the notes
    assert "so its val score is optimistic" in md and "### Ensemble: mean of top 3" in md
    assert "Ensemble: mean of top 3" in (out / "report.html").read_text()


def test_predict_on_an_ensemble_folder_averages_its_members(compared, tmp_path):
    out, cfg = compared
    rows = pd.read_csv(cfg.parent / "test.csv", dtype=str, keep_default_na=False).iloc[:25]
    rows.to_csv(tmp_path / "in.csv", index=False)
    ens = json.loads((out / "ensemble" / "ensemble.json").read_text())
    each = []
    for m in ens["members"]:
        dest = tmp_path / f"{len(each)}.csv"
        assert main(["predict", str(out / "ensemble" / m["runs"][0]), "--input", str(tmp_path / "in.csv"),
                     "--output", str(dest), "--probabilities"]) == 0
        each.append(_probs(dest))
    assert main(["predict", str(out / "ensemble"), "--input", str(tmp_path / "in.csv"),
                 "--output", str(tmp_path / "ens.csv"), "--probabilities"]) == 0
    got = pd.read_csv(tmp_path / "ens.csv", dtype={"id": str})
    assert list(got.columns) == ["id", "label", "label_name", "probability", "prob_not_disaster", "prob_disaster"]
    assert got["id"].tolist() == rows["id"].tolist()
    mean = np.mean(each, axis=0)
    assert np.abs(_probs(tmp_path / "ens.csv") - mean).max() < 1e-6
    assert (got["label"].to_numpy() == mean.argmax(axis=1)).all()  # the ensemble's rule: the most probable class

    import lorabench
    loaded = lorabench.load_run(out / "ensemble")
    api = loaded.predict(rows["text"].tolist())
    assert loaded.label_names == NAMES and list(api.columns) == ["label", "label_name", "probability",
                                                                "prob_not_disaster", "prob_disaster"]
    assert np.abs(api[["prob_not_disaster", "prob_disaster"]].to_numpy() - mean).max() < 1e-6


def test_top_n_is_settable_and_zero_turns_the_ensemble_off(compared, tmp_path, capsys):
    out, cfg = compared
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    recs = [json.loads(p.read_text()) for p in copy.glob("*/run.json")]
    best2 = [r["label"] for r in sorted(recs, key=lambda r: -r["metrics"]["val"]["f1"])[:2]]
    assert main(["compare", str(cfg), "--output-dir", str(copy), "--set", "ensemble_top=2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reused") == 3 and "ensemble: mean of top 2" in printed
    ens = json.loads((copy / "ensemble" / "ensemble.json").read_text())
    assert [m["label"] for m in ens["members"]] == best2 and ens["top"] == 2
    assert list(csv.DictReader((copy / "results.csv").open()))[-1]["label"] == "Ensemble: mean of top 2"

    assert main(["compare", str(cfg), "--output-dir", str(copy), "--set", "ensemble_top=0"]) == 0
    assert not (copy / "ensemble").exists()
    assert {r["kind"] for r in csv.DictReader((copy / "results.csv").open())} == {"model"}
    assert "Ensemble" not in (copy / "results.md").read_text()


def test_fewer_than_two_usable_models_give_no_ensemble_and_say_why(tmp_path, capsys, broken_model):
    extra = f"  - name: {broken_model}\n    label: broken\n"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: few\ndata: {max_train_samples: 160, max_eval_samples: 80}\n"
                   "models:\n  - name: tfidf-logreg\n" + extra)
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "out")]) == 1  # one model failed at run time
    printed = capsys.readouterr().out
    assert "no ensemble row: 1 model has completed runs with saved val predictions (tfidf-logreg)" in printed
    assert not (tmp_path / "out" / "ensemble").exists()
    assert "no ensemble row: 1 model" in (tmp_path / "out" / "results.md").read_text()


def test_bad_ensemble_folders_and_settings_are_one_line_errors(compared, tmp_path, capsys):
    out, cfg = compared
    (tmp_path / "in.csv").write_text("id,text\n1,forest fire\n")

    def predict(folder) -> str:
        capsys.readouterr()
        assert main(["predict", str(folder), "--input", str(tmp_path / "in.csv"), "--output",
                     str(tmp_path / "p.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lorabench: error: ") and "\n" not in err and "Traceback" not in err
        assert not (tmp_path / "p.csv").exists()
        return err

    moved = tmp_path / "moved"  # the member paths are relative: moved alone, the members are missing
    shutil.copytree(out / "ensemble", moved)
    err = predict(moved)
    assert "member run folder ../" in err and "not found" in err

    broken = tmp_path / "root" / "ensemble"
    shutil.copytree(out / "ensemble", broken)
    (broken / "ensemble.json").write_text("{not json")
    assert "ensemble.json: not a valid ensemble file" in predict(broken)
    (broken / "ensemble.json").write_text(json.dumps({"members": []}))
    assert "ensemble.json: members" in predict(broken)

    # a member of another label set
    root = tmp_path / "labels"
    shutil.copytree(out, root)
    rec = json.loads((root / "tfidf-logreg-seed42" / "run.json").read_text())
    rec["data"]["label_names"] = ["no", "yes"]
    (root / "tfidf-logreg-seed42" / "run.json").write_text(json.dumps(rec))
    assert "label" in predict(root / "ensemble") and "tfidf-logreg-seed42" in predict(root / "ensemble")

    capsys.readouterr()
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "x"), "--set", "ensemble_top=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorabench: error: ensemble_top") and "\n" not in err


def test_members_of_other_val_rows_are_never_averaged(compared, tmp_path):
    from lorabench.errors import LorabenchError
    from lorabench.runs.ensemble import Member, build_ensemble
    out, _ = compared
    root = tmp_path / "runs"
    shutil.copytree(out, root)
    rec = json.loads((root / "tiny-llama-seed42" / "run.json").read_text())
    rec["data"]["val_fingerprint"] = "0" * 16
    (root / "tiny-llama-seed42" / "run.json").write_text(json.dumps(rec))
    members = [Member("a", [root / "tfidf-logreg-seed42"], 0.5), Member("b", [root / "tiny-llama-seed42"], 0.5)]
    with pytest.raises(LorabenchError, match="other val rows"):
        build_ensemble(members)


def test_each_model_is_averaged_over_its_seeds_then_the_models_weighted_equally(tmp_path):
    """The rule on made-up run folders: model A with two seeds, model B with one."""
    from lorabench.data.splits import Split, Splits
    from lorabench.runs.ensemble import Member, build_ensemble
    from lorabench.runs.predictions import save_predictions
    rng = np.random.default_rng(0)
    val = Split(texts=["x"] * 30, labels=rng.integers(0, 3, 30).tolist(), ids=[f"{i:04d}" for i in range(30)])
    splits = Splits(train=val, val=val, test=None, label_names=["a", "b", "c"], label_values=["a", "b", "c"],
                    class_weights=None, source="s", text_template="text")
    probs = {}
    for name in ("A1", "A2", "B1"):
        p = rng.dirichlet(np.ones(3), 30)
        probs[name] = p
        (tmp_path / name).mkdir()
        files = save_predictions(tmp_path / name, splits, {"val": p, "test": None})
        (tmp_path / name / "run.json").write_text(json.dumps({
            "status": "completed", "label": name[0], "data": {"label_names": ["a", "b", "c"], "val_fingerprint": "f"},
            "predictions": files, "train_seconds": 1.5, "peak_memory_mb": 10.0}))
    ens = build_ensemble([Member("A", [tmp_path / "A1", tmp_path / "A2"], 0.5), Member("B", [tmp_path / "B1"], 0.4)])
    want = ((probs["A1"] + probs["A2"]) / 2 + probs["B1"]) / 2
    assert np.abs(ens.predictions["val"].probs - want).max() < 1e-15
    assert ens.predictions["val"].ids == [f"{i:04d}" for i in range(30)]  # ids as written
    y = np.asarray(val.labels)
    assert ens.metrics["val"] == classification_metrics(y, want.argmax(axis=1), 3)
    assert ens.train_seconds == 4.5 and "test" not in ens.metrics
