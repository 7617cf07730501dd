"""Documents longer than the model's window (issue 25, item 3): `data.long_text: truncate | head_tail | chunk`.

The made-up documents carry their deciding word only at the end, after more filler than one window holds:
`truncate` cannot see it, `head_tail` and `chunk` do; every metric stays one per document."""
import json

import numpy as np
import pandas as pd
import pytest

from lorabench.cli import main
from lorabench.config.schema import ModelConfig
from lorabench.data.windows import encode, pool
from lorabench.errors import ConfigError
from lorabench.models.build import load_model_config, load_tokenizer

FILLER = "the people said that it was a day in the city and then they went home after work".split()
WORDS = {0: ["happy", "music", "love"], 1: ["fire", "flood", "storm"]}


def documents(n: int, seed: int = 0) -> pd.DataFrame:
    """Texts of 10-20 filler words, then the label's word: only the end decides."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(FILLER, rng.integers(10, 20))) + " " + rng.choice(WORDS[t]) for t in y]
    return pd.DataFrame({"id": [f"d{i:04d}" for i in range(n)], "text": texts, "target": y})


@pytest.fixture(scope="module")
def tokenizer():
    src, _, arch = load_model_config(ModelConfig(name="tiny-bert"))
    return load_tokenizer(src.path, arch, ModelConfig(name="tiny-bert"))


def test_each_rule_reads_what_it_says(tokenizer):
    texts = documents(5)["text"].tolist() + ["fire"]
    full = tokenizer(texts)["input_ids"]
    enc, doc = encode(tokenizer, texts, 16, "truncate")
    assert list(doc) == list(range(6)) and [x[:15] for x in enc["input_ids"]] == [f[:15] for f in full]
    enc, doc = encode(tokenizer, texts, 16, "head_tail")
    assert all(len(x) <= 16 for x in enc["input_ids"])
    assert all(x[-2] == f[-2] for x, f in zip(enc["input_ids"], full))  # the last text token (before [SEP]) is kept
    assert enc["input_ids"][-1] == full[-1]  # a text that fits is untouched
    for stride in (0, 4):
        enc, doc = encode(tokenizer, texts, 16, "chunk", stride)
        assert sorted(set(doc)) == list(range(6)) and (np.diff(doc) >= 0).all()
        for i, f in enumerate(full):  # the windows of a text hold every one of its tokens, in order
            windows = [enc["input_ids"][w][1:-1] for w in np.flatnonzero(doc == i)]
            step = [w[stride:] if k else w for k, w in enumerate(windows)]
            assert sum(step, []) == f[1:-1], (i, stride)
    with pytest.raises(ConfigError, match="stride"):
        encode(tokenizer, texts, 16, "chunk", 14)


def test_pool_is_the_mean_over_each_texts_windows():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])
    got = pool(probs, np.array([0, 0, 1, 2]), 3)
    assert got == pytest.approx(np.array([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]]))
    assert pool(probs, np.arange(4), 4) is not None and (pool(probs, np.arange(4), 4) == probs).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("long")
    documents(240, 1).to_csv(tmp / "docs.csv", index=False)
    documents(40, 5).to_csv(tmp / "test.csv", index=False)  # a labelled test split: scored per document too
    out = {}
    for rule in ("truncate", "head_tail", "chunk"):
        cfg = tmp / f"{rule}.yaml"
        cfg.write_text(f"name: {rule}\ndata: {{source: docs.csv, test: test.csv, long_text: {rule}"
                       + (", stride: 1" if rule == "chunk" else "") + "}\n"
                       "model: {name: tiny-bert, max_length: 8}\n"  # 6 text tokens a window: 2-4 windows a text
                       "train: {epochs: 12, batch_size: 16, learning_rate: 1.0e-2, serving_cost: false}\n")
        assert main(["train", str(cfg), "--output-dir", str(tmp / rule)]) == 0
        out[rule] = json.loads((tmp / rule / "run.json").read_text())
    return tmp, out


def test_only_rules_that_read_the_end_learn_a_word_at_the_end(trained):
    _, recs = trained
    acc = {rule: rec["metrics"]["val"]["accuracy"] for rule, rec in recs.items()}
    print("val accuracy by long_text:", acc)
    assert acc["truncate"] < 0.7, acc  # the deciding word is never in its window: the majority class at best
    assert acc["head_tail"] >= 0.9, acc  # the word is in its tail
    assert acc["chunk"] >= 0.85, acc  # in one window of each text; the others carry the label as noise
    assert recs["chunk"]["data"]["val_rows"] == 48  # metrics per document, not per window
    assert recs["chunk"]["data"]["test_rows"] == 40 and recs["chunk"]["metrics"]["test"]["accuracy"] >= 0.85
    # the batch rule counts the rows trained on: the windows (some 3 per document here), not the documents
    assert recs["chunk"]["batch"]["steps_per_epoch"] * 12 == recs["chunk"]["steps"], recs["chunk"]["batch"]
    assert recs["chunk"]["steps"] > 2 * recs["truncate"]["steps"]


def test_predict_reads_long_texts_as_the_run_did(trained):
    tmp, _ = trained
    saved = pd.read_csv(tmp / "chunk" / "predictions_val.csv", dtype={"id": str})
    docs = documents(240, 1).set_index("id").loc[saved["id"]].reset_index()
    docs[["id", "text"]].to_csv(tmp / "val_in.csv", index=False)
    assert main(["predict", str(tmp / "chunk"), "--input", str(tmp / "val_in.csv"), "--output",
                 str(tmp / "pred.csv"), "--probabilities"]) == 0
    got = pd.read_csv(tmp / "pred.csv")
    cols = [c for c in saved.columns if c.startswith("prob_")]
    assert len(got) == len(saved)  # one row per document
    assert got[cols].to_numpy() == pytest.approx(saved[cols].to_numpy(), abs=1e-5)


def test_data_says_how_many_texts_exceed_the_window_and_how_many_windows_they_make(trained, capsys):
    tmp, _ = trained
    capsys.readouterr()
    assert main(["data", str(tmp / "chunk.yaml")]) == 0
    out = capsys.readouterr().out
    assert "longer than max_length 8: 240 rows (100.00%); all rows read as" in out, out


@pytest.mark.parametrize("data, message", [
    ("{long_text: truncate, stride: 4}", "data.stride is the overlap of long_text: chunk's windows"),
    ("{long_text: chunk, stride: 15}", "data.stride 15 leaves no new tokens"),
    ("{long_text: chunk, stride: 14}", "data.stride 14 leaves no new tokens in a window of 14 text tokens"),
    ("{long_text: window}", "data.long_text"),
    ("{long_text: chunk, stride: -1}", "data.stride must be 0 or more"),
])
@pytest.mark.parametrize("max_length", [16])
def test_bad_long_text_settings_are_one_line_errors(tmp_path, capsys, data, message, max_length):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\ndata: {data}\nmodel: {{name: tiny-bert, max_length: {max_length}}}\n")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "out")]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("lorabench: warning")]
    assert len(err) == 1 and message in err[0], err  # (a stride the tokenizer refuses: after the data's warnings)
    assert not (tmp_path / "out").exists()


def test_planning_counts_the_windows_chunk_makes(tokenizer, tmp_path, capsys):
    from lorabench.data.windows import window_lengths
    texts = documents(40, 3)["text"].tolist() + ["fire"]
    lengths = [len(x) for x in tokenizer(texts)["input_ids"]]
    for stride in (0, 1, 3):
        enc, _ = encode(tokenizer, texts, 8, "chunk", stride)
        assert window_lengths(lengths, 8, 2, stride) == [len(x) for x in enc["input_ids"]], stride
    documents(100, 2).to_csv(tmp_path / "docs.csv", index=False)
    (tmp_path / "p.yaml").write_text("name: p\ndata: {source: docs.csv, long_text: chunk, stride: 1}\n"
                                     "model: {name: tiny-bert, max_length: 8}\n")
    assert main(["plan", str(tmp_path / "p.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    tokens = plan["models"][0]["tokens"]
    assert "long_text: chunk" in tokens["source"] and tokens["train_rows"] > 80  # windows, not the 80 texts


def test_a_window_with_no_room_for_text_is_one_line_error_and_data_still_reports(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\ndata: {long_text: chunk, max_train_samples: 40, max_eval_samples: 20}\n"
                   "model: {name: tiny-bert, max_length: 2}\n")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "out")]) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("lorabench: warning")]
    assert len(err) == 1 and "model.max_length 2 leaves no room for text" in err[0], err
    assert not (tmp_path / "out").exists()
    assert main(["data", str(cfg), "--set", "data.long_text=truncate"]) == 0  # truncate reads 0 text tokens: allowed


def test_head_tail_keeps_the_last_word_with_byte_level_tokenizers():
    """Byte-level BPE offsets include a word's leading space: joining head and tail must not add another one (a
    lone space token that pushed the deciding last word out of the window)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    docs = documents(60, 4)["text"].tolist()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    for max_length in (8, 16):
        enc, _ = encode(tok, docs, max_length, "head_tail")
        for ids, text in zip(enc["input_ids"], docs):
            full = tok(text)["input_ids"]
            assert ids[0] == full[0] and ids[-1] == full[-1], (max_length, tok.convert_ids_to_tokens(ids))
            assert len(ids) == min(len(full), max_length), tok.convert_ids_to_tokens(ids)
