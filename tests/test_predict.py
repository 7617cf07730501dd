import json

import numpy as np
import pandas as pd
import pytest
import torch

from lorabench.cli import main
from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
from lorabench.pipeline.run import run_experiment


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred") / "run"
    cfg = ExperimentConfig(name="p", data=DataConfig(text="{keyword} | {text}", max_train_samples=160, max_eval_samples=80),
                           model=ModelConfig(name="tiny-llama", max_length=48), lora=LoraConfig(r=4),
                           train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, threshold="tune"))
    run_experiment(cfg, d)
    return d


def _input(tmp_path, n=25):
    from lorabench.data import bundled_path
    df = pd.read_csv(bundled_path("test.csv")).head(n).sample(frac=1.0, random_state=0)  # shuffled ids
    df.loc[df.index[3], "text"] = ""
    df.loc[df.index[3], "keyword"] = None
    p = tmp_path / "in.csv"
    df.to_csv(p, index=False)
    return p, df


def test_predict_keeps_ids_and_order_and_counts_empty_rows(run_dir, tmp_path, capsys):
    p, df = _input(tmp_path)
    out = tmp_path / "out.csv"
    assert main(["predict", str(run_dir), "--input", str(p), "--output", str(out), "--probabilities"]) == 0
    res = pd.read_csv(out)
    assert res["id"].tolist() == df["id"].tolist()
    assert list(res.columns) == ["id", "label", "label_name", "probability", "prob_not_disaster", "prob_disaster"]
    assert np.allclose(res["prob_not_disaster"] + res["prob_disaster"], 1.0)
    assert set(res["label_name"]) <= {"not_disaster", "disaster"}
    thr = json.loads((run_dir / "run.json").read_text())["threshold"]
    assert ((res["prob_disaster"] >= thr).astype(int) == res["label"]).all()  # the stored threshold is used
    assert "1 row(s)" in capsys.readouterr().err


def test_merged_and_unmerged_predictions_agree(run_dir, tmp_path):
    p, _ = _input(tmp_path)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["predict", str(run_dir), "--input", str(p), "--output", str(a), "--probabilities"]) == 0
    assert main(["predict", str(run_dir), "--input", str(p), "--output", str(b), "--probabilities", "--no-merge"]) == 0
    pa, pb = pd.read_json(a, lines=True), pd.read_json(b, lines=True)
    assert (pa["prob_disaster"] - pb["prob_disaster"]).abs().max() < 1e-4


def test_batch_order_does_not_change_probabilities(run_dir):
    from lorabench.inference.predict import load_run, predict_probs
    run = load_run(run_dir)
    texts = ["fire in the hills", "a", "flood warning issued for the whole county tonight", "ok then"]
    together = predict_probs(run, texts, batch_size=4, progress=False)
    alone = np.vstack([predict_probs(run, [t], batch_size=1, progress=False) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


def test_kaggle_format_on_the_bundled_test_file(run_dir, tmp_path):
    from lorabench.data import bundled_path
    out = tmp_path / "submission.csv"
    assert main(["predict", str(run_dir), "--input", str(bundled_path("test.csv")), "--output", str(out),
                 "--format", "kaggle", "--batch-size", "256"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "id,target" and len(lines) == 3264
    assert {l.split(",")[1] for l in lines[1:]} <= {"0", "1"}


def test_exported_merged_folder_loads_with_plain_transformers(run_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorabench.inference.predict import load_run, predict_probs
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out), "--merge"]) == 0
    assert (out / "model.safetensors").is_file() and "Metrics" in (out / "README.md").read_text()
    assert not (out / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    texts = ["forest fire near la ronge", "i love this song", "earthquake hits the city"]
    with torch.no_grad():
        probs = torch.softmax(model(**tok(texts, padding=True, return_tensors="pt")).logits, -1).numpy()
    ref = predict_probs(load_run(run_dir), texts, progress=False)
    assert np.abs(probs - ref).max() < 1e-4
    assert main(["export", str(run_dir), str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("args,match", [
    (["predict", "{tmp}", "--input", "{inp}", "--output", "{out}"], "not a lorabench run folder"),
    (["predict", "{tmp}/nope", "--input", "{inp}", "--output", "{out}"], "nope does not exist"),
    (["predict", "{cmp}", "--input", "{inp}", "--output", "{out}"],
     "is a comparison folder, not a lorabench run folder: give one of its run folders or its ensemble, "),
    (["predict", "{run}", "--input", "{tmp}/missing.csv", "--output", "{out}"], "not found"),
    (["predict", "{run}", "--input", "{bad}", "--output", "{out}"], "no column 'keyword'"),
])
def test_predict_errors(run_dir, tmp_path, capsys, args, match):
    inp, _ = _input(tmp_path)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": [1], "text": ["x"]}).to_csv(bad, index=False)
    out = tmp_path / "out.csv"
    cmp = tmp_path / "comparison"  # what compare writes at its top: results, and ensemble/ when it built one
    (cmp / "ensemble").mkdir(parents=True)
    (cmp / "results.json").write_text("{}")
    (cmp / "ensemble" / "ensemble.json").write_text("{}")
    fill = dict(tmp=tmp_path, inp=inp, out=out, run=run_dir, bad=bad, cmp=cmp)
    assert main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bert_predictions_with_the_pooled_only_last_layer_equal_plain_transformers(tmp_path):
    from lorabench.inference.predict import load_run, predict_probs
    from lorabench.speedups import cpu as speed
    d = tmp_path / "bert"
    cfg = ExperimentConfig(name="b", data=DataConfig(max_train_samples=64, max_eval_samples=32),
                           model=ModelConfig(name="tiny-bert", max_length=32),
                           train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-2))
    run_experiment(cfg, d)
    run = load_run(d)
    texts = ["forest fire near la ronge", "i love this song", "earthquake hits the city tonight, stay safe", "ok"]
    seen = []
    last = speed._last_layer(run.model)
    hook = last.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    ours = predict_probs(run, texts, batch_size=4, progress=False)
    hook.remove()
    assert seen == [1]                      # the last layer ran for the first token only...
    assert type(last).__name__ == "BertLayer"  # ...and is plain again afterwards
    with torch.no_grad():
        enc = run.tokenizer(texts, padding=True, return_tensors="pt")
        plain = torch.softmax(run.model(**enc).logits, -1).numpy()
    assert np.abs(ours - plain).max() < 1e-5


def test_every_output_format_writes_the_same_exact_numbers_and_ids(run_dir, tmp_path, capsys):
    """JSON lines (a file or stdout) and Parquet keep the probabilities CSV has, to the last bit (pandas' to_json
    rounded them to 10 decimals), and the ids as written."""
    import io
    p, df = _input(tmp_path)
    outs = {}
    for suffix in ("csv", "jsonl", "parquet"):
        assert main(["predict", str(run_dir), "--input", str(p), "--output", str(tmp_path / f"o.{suffix}"),
                     "--probabilities"]) == 0
    outs["csv"] = pd.read_csv(tmp_path / "o.csv", dtype={"id": str})
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    outs["jsonl"] = pd.DataFrame(rows)
    outs["parquet"] = pd.read_parquet(tmp_path / "o.parquet")
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--input", str(p), "--output", "-", "--probabilities"]) == 0
    outs["stdout"] = pd.DataFrame([json.loads(x) for x in io.StringIO(capsys.readouterr().out)])
    from lorabench.data import build_texts
    from lorabench.inference.predict import load_run, predict_probs
    exact = predict_probs(load_run(run_dir), build_texts(pd.read_csv(p, dtype=str), "{keyword} | {text}", "x"),
                          progress=False)
    for name, frame in outs.items():
        assert frame["id"].astype(str).tolist() == df["id"].astype(str).tolist(), name
        assert frame["prob_disaster"].tolist() == exact[:, 1].tolist(), name  # bit for bit
