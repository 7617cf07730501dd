"""Numbers users can trust: each test here failed on the code before its fix (issue 12).

Data are made-up rows (a class decided by keyword sets, some labels flipped), written per test; tiny models.
"""
import json
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from lorabench.cli import main
from lorabench.evaluation.metrics import classification_metrics, tune_threshold

POS = "fire blaze burned burning flames smoke explosion emergency".split()
NEG = "happy good beautiful summer love music fun great".split()
FILL = "the a we is on in to my now was with you at of and today".split()


def make_rows(n, seed, *, labels=(0, 1), pos_share=0.4, flip=0.15, min_words=2, max_words=9):
    """`n` rows of id, text, target; texts of varied length, so length-grouped batching reorders them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = int(rng.random() < pos_share)
        k = int(rng.integers(min_words, max_words + 1))
        words = [str(rng.choice(POS if y else NEG)) if rng.random() < 0.5 else str(rng.choice(FILL)) for _ in range(k)]
        if rng.random() < flip:
            y = 1 - y
        out.append({"id": f"{i:04d}", "text": " ".join(words), "target": labels[y]})
    return pd.DataFrame(out)


def write_case(tmp_path, *, model="tiny-llama", n_train=300, n_val=80, labels=(0, 1), data="", train="", extra=""):
    make_rows(n_train, 1, labels=labels).to_csv(tmp_path / "train.csv", index=False)
    make_rows(n_val, 2, labels=labels).to_csv(tmp_path / "val.csv", index=False)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""name: case
data: {{source: train.csv, val: val.csv, text: text, label: target{data}}}
model: {{name: {model}, max_length: 64}}
train: {{epochs: 1, batch_size: 16, learning_rate: 0.02, logging_steps: 5{train}}}
{extra}""")
    return cfg


def adapter(run_dir):
    return load_file(str(run_dir / "adapter_model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# 1 ---------------------------------------------------------------------------------------------
def test_tuned_threshold_is_computed_on_the_right_rows(tmp_path):
    """group_by_length (default) made transformers evaluate in length-grouped order: the threshold was tuned
    against other rows' labels. run.json must agree with what predict gives for the same val rows."""
    cfg = write_case(tmp_path, train=", threshold: tune")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "R")]) == 0
    rec = json.loads((tmp_path / "R" / "run.json").read_text())
    assert main(["predict", str(tmp_path / "R"), "--input", str(tmp_path / "val.csv"),
                 "--output", str(tmp_path / "p.csv"), "--probabilities"]) == 0
    p = pd.read_csv(tmp_path / "p.csv", dtype={"id": str})
    val = pd.read_csv(tmp_path / "val.csv", dtype={"id": str})
    assert p["id"].tolist() == val["id"].tolist()
    y = val["target"].to_numpy()
    probs = p[["prob_0", "prob_1"]].to_numpy()
    t = rec["threshold"]
    at_t = classification_metrics(y, (probs[:, 1] >= t).astype(int), 2)
    for k, v in at_t.items():
        assert rec["metrics"]["val_at_threshold"][k] == pytest.approx(v, abs=1e-9), k
    _, best_f1 = tune_threshold(y, probs)
    assert at_t["f1"] == pytest.approx(best_f1, abs=1e-9)


# 2 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", ["balanced", "none"])
def test_gradient_accumulation_trains_the_same_model(tmp_path, weights):
    """batch 4 x accumulation 2 must make the same updates as batch 8, with class weights too (3:1 data)."""
    rows = make_rows(96, 3, pos_share=0.25, flip=0.0)
    rows.to_csv(tmp_path / "train.csv", index=False)
    make_rows(40, 4).to_csv(tmp_path / "val.csv", index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""name: ga
data: {{source: train.csv, val: val.csv, class_weights: {weights}}}
model: {{name: tiny-llama, max_length: 64}}
lora: {{dropout: 0.0}}
train: {{epochs: 1, batch_size: 8, learning_rate: 0.02, logging_steps: 1, warmup_ratio: 0.0, max_grad_norm: 1000.0}}
""")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "a")]) == 0
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "b"), "--set", "train.batch_size=4",
                 "--set", "train.gradient_accumulation_steps=2"]) == 0
    assert max_diff(adapter(tmp_path / "a"), adapter(tmp_path / "b")) < 1e-4


# 3 ---------------------------------------------------------------------------------------------
def test_same_seed_same_run_whatever_the_cache_held(tmp_path, monkeypatch):
    """Building the tiny model's cache drew random numbers after the seed: the first run differed."""
    cfg = write_case(tmp_path, n_train=120, n_val=40)
    monkeypatch.setenv("LORABENCH_CACHE", str(tmp_path / "empty-cache"))
    recs = []
    for name in ("first", "second"):
        assert main(["train", str(cfg), "--output-dir", str(tmp_path / name)]) == 0
        recs.append(json.loads((tmp_path / name / "run.json").read_text()))
    assert max_diff(adapter(tmp_path / "first"), adapter(tmp_path / "second")) == 0.0
    assert recs[0]["metrics"] == recs[1]["metrics"]


# 4 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [(1, 2), (0, 5)])
def test_predict_writes_the_users_label_values(tmp_path, labels):
    cfg = write_case(tmp_path, model="tiny-bert", labels=labels, n_train=160, n_val=40)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "R")]) == 0
    assert main(["predict", str(tmp_path / "R"), "--input", str(tmp_path / "val.csv"),
                 "--output", str(tmp_path / "p.csv"), "--probabilities"]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    assert set(p["label"]) <= set(labels) and p["label"].nunique() >= 1
    assert (p["label"].astype(str) == p["label_name"].astype(str)).all()
    best = p[[f"prob_{v}" for v in labels]].to_numpy().argmax(axis=1)
    assert p["label"].tolist() == [labels[i] for i in best]


# 5 ---------------------------------------------------------------------------------------------
def test_template_columns_render_the_same_in_every_split_format_and_predict(tmp_path):
    from lorabench.config import DataConfig
    from lorabench.data import build_texts, load_splits, read_table
    from lorabench.inference.predict import read_rows
    rows = make_rows(60, 5)
    rows.insert(1, "code", pd.array([None if i % 7 == 0 else 100 + i for i in range(60)], dtype="Int64"))  # gaps
    rows.to_csv(tmp_path / "t.csv", index=False)
    rows.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    rows.to_parquet(tmp_path / "t.parquet", index=False)
    rows.astype({"code": float}).to_parquet(tmp_path / "t.float.parquet", index=False)  # widened by a writer
    rows.astype({"code": float}).to_csv(tmp_path / "t.float.csv", index=False)          # 101.0 in the cells
    template = "{code} | {text}"
    expect = [f"{'' if i % 7 == 0 else 100 + i} | {t}" for i, t in enumerate(rows["text"])]
    for suffix in ("csv", "jsonl", "parquet", "float.parquet", "float.csv"):
        path = tmp_path / f"t.{suffix}"
        assert build_texts(read_table(path), template, suffix) == expect, suffix
        assert build_texts(read_rows(str(path)), template, suffix) == expect, suffix
    splits = load_splits(DataConfig(source=str(tmp_path / "t.csv"), text=template))
    assert not any(".0 |" in t for t in splits.train.texts + splits.val.texts)
    assert sorted(splits.train.texts + splits.val.texts) == sorted(expect)


# 6 ---------------------------------------------------------------------------------------------
def test_ids_are_kept_exactly_from_json_jsonl_and_stdin(tmp_path, monkeypatch, capsys):
    import io
    cfg = write_case(tmp_path, model="tiny-bert", n_train=120, n_val=40)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "R")]) == 0
    new = make_rows(6, 9)[["id", "text"]]
    lines = "".join(json.dumps(r) + "\n" for r in new.to_dict("records"))
    (tmp_path / "new.jsonl").write_text(lines)
    (tmp_path / "new.json").write_text(json.dumps(new.to_dict("records")))
    want = [f"{i:04d}" for i in range(6)]
    for src in ("new.jsonl", "new.json"):
        for out in ("p.csv", "p.jsonl"):
            assert main(["predict", str(tmp_path / "R"), "--input", str(tmp_path / src),
                         "--output", str(tmp_path / out)]) == 0
            text = (tmp_path / out).read_text()
            got = ([json.loads(x)["id"] for x in text.splitlines()] if out.endswith("jsonl")
                   else [line.split(",")[0] for line in text.splitlines()[1:]])
            assert got == want, (src, out)
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    assert main(["predict", str(tmp_path / "R"), "--input", "-", "--output", "-"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == want


# 7 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,limit", [("tiny-bert", 520), ("tiny-roberta", 518)])
def test_max_length_over_the_position_limit_is_one_line_at_config_and_data_time(tmp_path, capsys, model, limit):
    cfg = write_case(tmp_path, model=model, n_train=60, n_val=20)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "R"), "--set", "model.max_length=800"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.max_length" in err[0] and str(limit) in err[0], err
    assert not (tmp_path / "R").exists()
    assert main(["data", str(cfg), "--set", "model.max_length=800"]) == 0
    out = capsys.readouterr().out
    assert "model.max_length 800" in out and str(limit) in out
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "ok"), "--set", f"model.max_length={limit}"]) == 0


# 8 ---------------------------------------------------------------------------------------------
def test_sweep_space_is_validated_up_front(tmp_path, capsys):
    write_case(tmp_path, model="tiny-bert", n_train=60, n_val=20)
    base = """name: s
data: {source: train.csv, val: val.csv}
model: {name: tiny-bert, max_length: 64}
train: {epochs: 1}
sweep:
  method: random
  run_cap: 1
  parameters:
"""
    bad = {"learning_rate: {distribution: log_uniform, min: 0.0001, max: 1000}": ("learning_rate", "log_uniform_values"),
           "lora_dropout: {distribution: uniform, min: 0.0, max: 1.5}": ("lora.dropout", "1.5"),
           "lora_rank: {values: [4, 0]}": ("lora.r", "0"),
           "learning_rate: {distribution: uniform, min: 0.1, max: 0.01}": ("learning_rate", ""),
           "max_length: {values: [32, 800]}": ("model.max_length", "520")}
    for line, (name, hint) in bad.items():
        (tmp_path / "sw.yaml").write_text(base + "    " + line + "\n")
        assert main(["sweep", str(tmp_path / "sw.yaml"), "--trials", "1", "--output-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and hint in err[0], (line, err)
        assert not (tmp_path / "out" / "trials").exists()
    # bounds that are values, not exponents, of W&B's log_uniform: runs, but warns
    (tmp_path / "sw.yaml").write_text(base + "    learning_rate: {distribution: log_uniform, min: 0.00001, max: 0.001}\n")
    from lorabench.errors import LorabenchWarning
    from lorabench.recipes.sweep import check_sweep, load_sweep_config
    with pytest.warns(LorabenchWarning, match="log_uniform_values"):
        check_sweep(load_sweep_config(tmp_path / "sw.yaml", []))


# 9 ---------------------------------------------------------------------------------------------
def test_latin1_and_semicolon_files_read(tmp_path, capsys):
    rows = make_rows(80, 6)
    rows.loc[::5, "text"] = rows.loc[::5, "text"] + " café"
    rows.to_csv(tmp_path / "latin1.csv", index=False, encoding="latin-1")
    rows.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    rows.to_csv(tmp_path / "tab.csv", index=False, sep="\t")
    for name in ("latin1", "semi", "tab"):
        (tmp_path / f"{name}.yaml").write_text(f"name: {name}\ndata: {{source: {name}.csv}}\nmodel: {{name: tiny-bert}}\n")
    assert main(["data", str(tmp_path / "latin1.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latin1.csv" in err[0] and "data.encoding" in err[0]
    assert main(["data", str(tmp_path / "latin1.yaml"), "--set", "data.encoding=latin-1"]) == 0
    assert "train 64, val 16" in capsys.readouterr().out
    from lorabench.config import DataConfig
    from lorabench.data import load_splits
    splits = load_splits(DataConfig(source=str(tmp_path / "latin1.csv"), encoding="latin-1"))
    assert sum("café" in t for t in splits.train.texts + splits.val.texts) == 16
    for name in ("semi", "tab"):
        assert main(["data", str(tmp_path / f"{name}.yaml")]) == 0
        assert "train 64, val 16" in capsys.readouterr().out
    assert main(["data", str(tmp_path / "semi.yaml"), "--set", "data.delimiter=,"]) == 2
    assert "is data.delimiter right?" in capsys.readouterr().err
    rows.to_csv(tmp_path / "pipe.csv", index=False, sep="|")
    (tmp_path / "pipe.yaml").write_text("name: p\ndata: {source: pipe.csv}\nmodel: {name: tiny-bert}\n")
    assert main(["data", str(tmp_path / "pipe.yaml"), "--set", "data.delimiter=|"]) == 0
    # the undecodable byte is placed in the whole file, not in a reader's chunk
    big = pd.concat([make_rows(4000, 7)] * 3)
    big.to_csv(tmp_path / "late.csv", index=False)
    with open(tmp_path / "late.csv", "ab") as f:
        f.write(b"caf\xe9 fire,1\n")
    (tmp_path / "late.yaml").write_text("name: l\ndata: {source: late.csv}\nmodel: {name: tiny-bert}\n")
    assert main(["data", str(tmp_path / "late.yaml")]) == 2
    assert f"byte 0xe9 on line {len(big) + 2}" in capsys.readouterr().err


# 10 --------------------------------------------------------------------------------------------
def test_positive_label_decides_binary_f1(tmp_path):
    from sklearn.metrics import f1_score
    cfg = write_case(tmp_path, model="tiny-bert", labels=("fake", "real"), n_train=160, n_val=60,
                     data=", positive_label: fake")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "R")]) == 0
    rec = json.loads((tmp_path / "R" / "run.json").read_text())
    assert rec["data"]["label_values"] == ["real", "fake"] and rec["data"]["positive_label"] == "fake"
    assert main(["predict", str(tmp_path / "R"), "--input", str(tmp_path / "val.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    y = pd.read_csv(tmp_path / "val.csv")["target"]
    pred = pd.read_csv(tmp_path / "p.csv")["label"]
    assert rec["metrics"]["val"]["f1"] == pytest.approx(f1_score(y, pred, pos_label="fake"), abs=1e-9)
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "X"), "--set", "data.positive_label=maybe"]) == 2


def test_report_shows_the_positive_label_and_data_checks(tmp_path):
    rows = make_rows(120, 7, labels=("fake", "real"))
    rows.to_csv(tmp_path / "train.csv", index=False)
    val = pd.concat([rows.head(20), make_rows(10, 8, labels=("fake", "real"))])
    val.to_csv(tmp_path / "val.csv", index=False)
    (tmp_path / "c.yaml").write_text("""name: rep
data: {source: train.csv, val: val.csv, positive_label: fake}
models: [{name: tfidf-logreg}]
""")
    assert main(["compare", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "results.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    for text in (md, html):
        assert "positive label" in text.lower() and "fake" in text
        assert "20 of 30 val rows have a text that is also in train" in text


# 11 --------------------------------------------------------------------------------------------
def test_data_counts_duplicates_conflicts_and_warns(tmp_path, capsys):
    rows = make_rows(100, 10, labels=("Real", "fake"))
    rows.loc[95:, "target"] = "real"                       # labels equal up to case
    rows.loc[90:94, "text"] = rows.loc[0:4, "text"].values  # 5 duplicates within train...
    rows.loc[90:92, "target"] = ["fake" if v == "Real" else "Real" for v in rows.loc[0:2, "target"]]  # 3 conflicts
    rows.to_csv(tmp_path / "train.csv", index=False)
    new = make_rows(13, 11, labels=("Real", "Real"))
    assert not set(new["text"]) & set(rows["text"])
    seen = rows.iloc[10:90]
    val = pd.concat([seen[seen["target"] == "Real"].drop_duplicates("text").head(7), new])  # 7 val rows in train
    val.to_csv(tmp_path / "val.csv", index=False)                                          # no 'fake' in val
    (tmp_path / "c.yaml").write_text("name: d\ndata: {source: train.csv, val: val.csv}\nmodel: {name: tiny-bert}\n"
                                     "train: {threshold: tune}\n")
    assert main(["data", str(tmp_path / "c.yaml")]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "val rows also in train 7" in text
    assert "within train 5" in text
    assert "texts with conflicting labels 3" in text
    assert "'Real' and 'real' differ only in case" in text
    assert "absent from val: fake," in text  # and 'real' (the 5 rows of the case-variant label)


def test_duplicates_within_train_get_a_warning_line_in_every_command(tmp_path, capsys):
    """README lists duplicated texts within train among the warnings (issue 22: they had none)."""
    rows = make_rows(100, 10)
    rows.loc[90:95, "text"] = rows.loc[0:5, "text"].values  # 6 repeats within train
    rows.to_csv(tmp_path / "train.csv", index=False)
    make_rows(30, 11).to_csv(tmp_path / "val.csv", index=False)
    (tmp_path / "c.yaml").write_text("name: d\ndata: {source: train.csv, val: val.csv}\nmodel: {name: tfidf-logreg}\n")
    line = "6 of 100 train rows repeat a text that occurs earlier in train"
    assert main(["data", str(tmp_path / "c.yaml")]) == 0
    assert f"  warning: {line}" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "R")]) == 0
    assert f"lorabench: warning: {line}" in capsys.readouterr().err
    assert line in " ".join(json.loads((tmp_path / "R" / "run.json").read_text())["data"]["checks"]["warnings"])


def test_threshold_tune_on_a_multiclass_task_warns(tmp_path, capsys):
    rows = make_rows(90, 12)
    rows["target"] = [i % 3 for i in range(90)]
    rows.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "c.yaml").write_text("name: m\ndata: {source: train.csv}\nmodel: {name: tiny-bert, max_length: 32}\n"
                                     "train: {threshold: tune, epochs: 1}\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "R")]) == 0
    err = capsys.readouterr().err
    assert "lorabench: warning: train.threshold: 'tune' applies to binary tasks only" in err


def test_baseline_is_stored_without_pickle_and_predicts_what_it_scored(tmp_path):
    cfg = write_case(tmp_path, model="tfidf-logreg", n_train=200, n_val=60, train=", threshold: tune")
    cfg.write_text(cfg.read_text().replace("model: {name: tfidf-logreg, max_length: 64}\n", "")
                   .replace("name: case", "name: case\nmodels: [{name: tfidf-logreg}]"))
    assert main(["compare", str(cfg), "--output-dir", str(tmp_path / "out")]) == 0
    run = tmp_path / "out" / "tfidf-logreg-seed42"
    assert not list(run.glob("*.joblib")) and (run / "tfidf_logreg.safetensors").is_file()
    rec = json.loads((run / "run.json").read_text())
    assert main(["predict", str(run), "--input", str(tmp_path / "val.csv"), "--output", str(tmp_path / "p.csv"),
                 "--probabilities"]) == 0
    p = pd.read_csv(tmp_path / "p.csv")
    y = pd.read_csv(tmp_path / "val.csv")["target"].to_numpy()
    at_t = classification_metrics(y, (p["prob_1"].to_numpy() >= rec["threshold"]).astype(int), 2)
    assert at_t == pytest.approx(rec["metrics"]["val_at_threshold"], abs=1e-12)
