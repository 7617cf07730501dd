import pytest

"""Refit for the final model (issue 16): `train --refit`, `lorabench refit RUN_DIR`, `lorabench.refit`: train on
train + val rows for the epoch count val picked; the record carries the val score it was chosen by, none of its own."""
import json

import pandas as pd

from lorabench.cli import main
from test_folds import one_line_error, tweets

TRAIN = """
name: r
data: {source: d.csv}
model: {name: tiny-bert, max_length: 32}
lora: {r: 4}
train: {epochs: 2, batch_size: 16, learning_rate: 1.0e-3, logging_steps: 5, threshold: tune}
"""


def test_train_refit_uses_train_plus_val_rows_and_the_best_epoch(tmp_path, capsys):
    import lorabench
    tweets(150).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "t.yaml").write_text(TRAIN)
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "t.yaml"), "--output-dir", str(out), "--refit"]) == 0
    printed = capsys.readouterr().out
    src = json.loads((out / "run.json").read_text())
    ref = json.loads((tmp_path / "run-refit" / "run.json").read_text())
    assert src["best_epoch"] < src["epochs_run"] == 2  # the case this test is about: val picked an earlier epoch

    # exactly the source's train + val rows, no val of its own
    assert ref["data"]["train_rows"] == src["data"]["train_rows"] + src["data"]["val_rows"] == 150
    assert ref["data"]["train_class_counts"] == [a + b for a, b in zip(src["data"]["train_class_counts"],
                                                                       src["data"]["val_class_counts"])]
    assert ref["data"]["val_rows"] == 0 and "val" not in ref["metrics"] and "val" not in ref["evaluation"]
    assert ref["history"] == [] and ref["best_epoch"] is None
    # the epoch count val picked, the source's settings, its tuned threshold
    assert ref["epochs_run"] == src["best_epoch"] == ref["config"]["train"]["epochs"] == ref["refit"]["epochs"]
    for key in ("learning_rate", "batch_size", "seed", "lr_scheduler"):
        assert ref["config"]["train"][key] == src["config"]["train"][key]
    assert src["threshold"] is not None and ref["threshold"] == src["threshold"]
    assert ref["config"]["train"]["threshold"] == src["threshold"]
    # the val score it was chosen by, not its own
    r = ref["refit"]
    assert r["from"] == str(out) and r["chosen_by"]["split"] == "val" and r["chosen_by"]["runs"] == 1
    assert r["chosen_by"]["f1"] == src["metrics"]["val"]["f1"] and r["train_rows"] == 150
    assert f"no validation score of its own; chosen by val F1 {src['metrics']['val']['f1']:.4f}" in printed

    # predict and export work on the refit folder
    tweets(10, seed=1)[["id", "text"]].to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(tmp_path / "run-refit"), "--input", str(tmp_path / "new.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 10
    assert main(["export", str(tmp_path / "run-refit"), str(tmp_path / "exported")]) == 0
    assert "no validation score of its own" in (tmp_path / "exported" / "README.md").read_text()
    run = lorabench.load_run(tmp_path / "run-refit")
    assert run.record.threshold == src["threshold"] and len(run.predict(["forest fire"])) == 1

    # the same command again reuses both finished runs
    mtimes = [p.stat().st_mtime_ns for p in (out / "run.json", tmp_path / "run-refit" / "run.json")]
    assert main(["train", str(tmp_path / "t.yaml"), "--output-dir", str(out), "--refit"]) == 0
    assert mtimes == [p.stat().st_mtime_ns for p in (out / "run.json", tmp_path / "run-refit" / "run.json")]


def test_refit_command_on_a_baseline_keeps_the_tuned_threshold_and_scores_a_labelled_test(tmp_path, capsys):
    import lorabench
    frame = tweets(120)
    frame.iloc[:90].to_csv(tmp_path / "d.csv", index=False)
    frame.iloc[90:].to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "t.yaml").write_text("name: b\ndata: {source: d.csv, test: test.csv}\nmodel: {name: tfidf-logreg}\n"
                                     "train: {threshold: tune}\n")
    assert main(["train", str(tmp_path / "t.yaml"), "--output-dir", str(tmp_path / "run")]) == 0
    assert main(["refit", str(tmp_path / "run")]) == 0
    assert "no validation score of its own" in capsys.readouterr().out
    src = json.loads((tmp_path / "run" / "run.json").read_text())
    ref = json.loads((tmp_path / "run-refit" / "run.json").read_text())
    assert ref["refit"]["epochs"] is None and ref["data"]["train_rows"] == 90
    assert ref["threshold"] == src["threshold"] and ref["refit"]["threshold"]["value"] == src["threshold"]
    assert set(ref["metrics"]) == {"test", "test_at_threshold"} and ref["data"]["test_rows"] == 30
    rec = lorabench.refit(tmp_path / "run", tmp_path / "api-refit")  # the Python API: the same refit
    assert rec.refit["train_rows"] == 90 and rec.val == {}


def test_bad_refits_are_one_line_errors(tmp_path, monkeypatch, capsys):
    tweets(60).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "t.yaml").write_text("name: b\ndata: {source: d.csv}\nmodel: {name: tfidf-logreg}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "t.yaml", "--output-dir", "run"]) == 0
    assert main(["refit", "run"]) == 0
    capsys.readouterr()
    (tmp_path / "failed").mkdir()
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    (tmp_path / "failed" / "run.json").write_text(json.dumps({**rec, "status": "failed", "error": "boom"}))
    (tmp_path / "notarun").mkdir()
    assert "not a lorabench run folder" in one_line_error(["refit", "notarun"], capsys)
    assert "not completed" in one_line_error(["refit", "failed"], capsys)
    assert "is itself a refit" in one_line_error(["refit", "run-refit"], capsys)
    assert "not empty" in one_line_error(["refit", "run"], capsys)  # run-refit exists and is finished
    frame = tweets(60)
    frame.loc[0, "text"] = "changed"
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert "data of run changed" in one_line_error(["refit", "run", "--output-dir", "r2"], capsys)
    assert not (tmp_path / "r2").exists()


@pytest.mark.system
def test_a_killed_refit_resumes_to_the_same_weights(tmp_path):
    """A refit is an ordinary run folder: kill -9 after its first epoch's checkpoint, the same command resumes."""
    import signal
    import subprocess
    import sys

    import numpy as np
    from safetensors.numpy import load_file

    from test_resume import CONFIG, KILLER
    rng = np.random.default_rng(0)
    pos, neg = "fire blaze flames smoke burning".split(), "happy good summer music fun".split()
    for name, n in (("train.csv", 160), ("val.csv", 60)):
        y = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(pos if t else neg, int(rng.integers(2, 8)))) for t in y]
        pd.DataFrame({"text": texts, "target": y}).to_csv(tmp_path / name, index=False)
    (tmp_path / "c.yaml").write_text(CONFIG.replace("epochs: 3", "epochs: 2"))
    assert main(["train", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "src")]) == 0
    assert json.loads((tmp_path / "src" / "run.json").read_text())["best_epoch"] == 2  # two refit epochs to kill between
    assert main(["refit", str(tmp_path / "src"), "--output-dir", str(tmp_path / "full")]) == 0
    p = subprocess.run([sys.executable, "-c", KILLER, "after", "1", "refit", str(tmp_path / "src"), "--output-dir",
                        str(tmp_path / "R")], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not (tmp_path / "R").exists() and (tmp_path / ".R-partial").is_dir()
    assert main(["refit", str(tmp_path / "src"), "--output-dir", str(tmp_path / "R")]) == 0
    full, resumed = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("full", "R"))
    assert resumed["resumed_from"] == 1.0 and full["resumed_from"] is None
    assert resumed["epochs_run"] == full["epochs_run"] == 2 and resumed["refit"] == {**full["refit"]}
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("full", "R"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6
