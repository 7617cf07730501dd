"""ONNX export (issue 26, item 2): `export --format onnx [--quantize int8]` of a tiny encoder and a tiny decoder equals
PyTorch on padded batches; `predict --backend onnx` and `serve --backend onnx` use it; int8 changes few labels."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lorabench.cli import main

TEXTS = ["forest fire near la ronge sask canada", "a", "what a lovely day for a walk in the park with friends",
         "flood", "13,000 people receive #wildfires evacuation orders in california", "x y z", "storm",
         "residents asked to shelter in place are being notified by officers"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_csv(tmp / "rows.csv", index=False)
    for model in ("tiny-bert", "tiny-llama"):
        (tmp / f"{model}.yaml").write_text(
            f"name: {model}\ndata: {{max_train_samples: 160, max_eval_samples: 60}}\n"
            f"model: {{name: {model}, max_length: 32}}\n"
            "train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3, serving_cost: false}\n")
        assert main(["train", str(tmp / f"{model}.yaml"), "--output-dir", str(tmp / model)]) == 0
    return tmp


def _predict(tmp, folder, name, *extra) -> pd.DataFrame:
    out = tmp / f"{name}.csv"
    assert main(["predict", str(folder), "--input", str(tmp / "rows.csv"), "--output", str(out), "--probabilities",
                 *extra]) == 0
    return pd.read_csv(out)


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-llama"])
def test_onnx_export_equals_pytorch_on_padded_batches(runs, model, capsys):
    out = runs / f"{model}-onnx"
    assert main(["export", str(runs / model), str(out), "--format", "onnx"]) == 0
    said = capsys.readouterr().out
    assert "checked on 60 val rows, largest probability difference" in said, said
    info = json.loads((out / "onnx.json").read_text())
    assert info["check"]["max_probability_difference"] <= 1e-4 and info["check"]["labels_changed"] == 0.0
    assert json.loads((out / "config.json").read_text())["problem_type"] == "single_label_classification"
    card = (out / "README.md").read_text()
    assert "## ONNX" in card and "AutoModelForSequenceClassification.from_pretrained" not in card
    want = _predict(runs, runs / model, f"{model}-torch")
    got = _predict(runs, out, f"{model}-onnx", "--backend", "onnx", "--batch-size", "3")  # padded batches of 3
    cols = ["prob_not_disaster", "prob_disaster"]
    assert got[cols].to_numpy() == pytest.approx(want[cols].to_numpy(), abs=1e-4)
    assert got["label"].tolist() == want["label"].tolist()
    # the folder runs with onnxruntime alone, as its model card says
    import onnxruntime
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    enc = tok(TEXTS[:2], return_tensors="np", padding=True)
    logits = session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]
    p = np.exp(logits - logits.max(1, keepdims=True))
    assert p / p.sum(1, keepdims=True) == pytest.approx(want[cols].to_numpy()[:2], abs=1e-4)


def test_int8_changes_few_labels_and_says_how_many(runs, capsys):
    out = runs / "bert-int8"
    assert main(["export", str(runs / "tiny-bert"), str(out), "--format", "onnx", "--quantize", "int8"]) == 0
    check = json.loads((out / "onnx.json").read_text())["check"]
    print("int8:", check)
    assert check["labels_changed"] <= 0.10  # at most 1 row in 10 of the tiny model's val rows changes its label
    assert "val f1" in capsys.readouterr().out and check["metric"] == "f1" and check["metric_change"] is not None
    assert (out / "model.onnx").stat().st_size < 0.6 * (runs / "tiny-bert-onnx" / "model.onnx").stat().st_size


def test_serve_with_the_onnx_backend(runs):
    from test_serve import post, served
    folder = runs / "tiny-bert-onnx"
    if not folder.is_dir():
        assert main(["export", str(runs / "tiny-bert"), str(folder), "--format", "onnx"]) == 0
    want = _predict(runs, runs / "tiny-bert", "serve-torch")
    with served(folder) as (url, _):
        status, body = post(url, {"texts": TEXTS})
    assert status == 200
    got = pd.DataFrame(body["predictions"])
    assert got["prob_disaster"].to_numpy() == pytest.approx(want["prob_disaster"].to_numpy(), abs=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--quantize", "int4"], "invalid choice: 'int4'"),
    (["--quantize", "int8"], "--quantize applies to --format onnx"),
    (["--format", "onnx", "--merge"], "--merge applies to --format transformers"),
])
def test_bad_export_arguments_are_one_line_errors(runs, capsys, args, message):
    code = None
    try:
        code = main(["export", str(runs / "tiny-bert"), str(runs / "bad"), *args])
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (runs / "bad").exists()


def test_predict_backend_onnx_needs_an_onnx_folder(runs, capsys):
    assert main(["predict", str(runs / "tiny-bert"), "--input", str(runs / "rows.csv"), "--output",
                 str(runs / "x.csv"), "--backend", "onnx"]) == 2
    assert "is not an ONNX export; make one with lorabench export" in capsys.readouterr().err
    assert not (runs / "x.csv").exists()


@pytest.mark.slow  # ~30 s: a real pretrained encoder whose tokenizer writes token_type_ids
def test_onnx_export_of_minilm_reads_token_type_ids_as_pytorch_does(tmp_path):
    (tmp_path / "m.yaml").write_text(
        "name: m\ndata: {max_train_samples: 64, max_eval_samples: 40}\nmodel: {name: minilm-l6, max_length: 48}\n"
        "train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3, serving_cost: false}\n")
    assert main(["train", str(tmp_path / "m.yaml"), "--output-dir", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    info = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert "token_type_ids" in info["inputs"] and info["check"]["max_probability_difference"] <= 1e-4
