import json

import numpy as np
import pytest
import torch

from lorabench.cli import main
from lorabench.config import DataConfig, ExperimentConfig, LoraConfig, ModelConfig, TrainConfig
from lorabench.pipeline.run import run_experiment
from lorabench.training import WeightedCrossEntropy

RECORD_KEYS = {"status", "model", "data", "metrics", "history", "train_seconds", "peak_memory_mb", "params",
               "throughput", "config", "versions", "seed"}


def tiny(model, tmp_path, **train):
    return ExperimentConfig(
        name="t", data=DataConfig(max_train_samples=160, max_eval_samples=80),
        model=ModelConfig(name=model, max_length=48), lora=LoraConfig(r=4),
        train=TrainConfig(**{"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "logging_steps": 2, **train}))


def test_weighted_loss_matches_torch_and_is_accumulation_invariant():
    torch.manual_seed(0)
    logits = torch.randn(8, 2, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])  # the halves have different class mixes (3:1, 1:3)
    w = [0.8, 1.3]
    loss_fn = WeightedCrossEntropy(w)
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(logits, labels)
    assert torch.allclose(loss_fn({"logits": logits}, labels), ref)
    total = loss_fn.weight_sum(labels)  # what LorabenchTrainer passes as num_items_in_batch
    assert float(total) == pytest.approx(4 * 0.8 + 4 * 1.3)
    assert torch.allclose(loss_fn({"logits": logits}, labels, num_items_in_batch=total), ref)
    # gradient accumulation: the Trainer sums the micro-batch losses of a compute_loss_func without dividing;
    # normalised by the whole step's summed weight the sum equals the full-batch weighted mean exactly
    acc = sum(loss_fn({"logits": logits[i:i + 4]}, labels[i:i + 4], num_items_in_batch=total) for i in (0, 4))
    assert torch.allclose(acc, ref)
    g_acc = torch.autograd.grad(acc, logits)[0]
    g_ref = torch.autograd.grad(ref, logits)[0]
    assert torch.allclose(g_acc, g_ref, atol=1e-7)
    # the old per-micro-batch weighted mean (scaled by rows) is not the same objective with these mixes
    old = sum(torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(logits[i:i + 4], labels[i:i + 4]) * 0.5 for i in (0, 4))
    assert not torch.allclose(old, ref)
    # without class weights the divisor is the row count (the Trainer's own)
    plain = WeightedCrossEntropy(None)
    acc = sum(plain({"logits": logits[i:i + 4]}, labels[i:i + 4], num_items_in_batch=8) for i in (0, 4))
    assert torch.allclose(acc, torch.nn.CrossEntropyLoss()(logits, labels))


def test_loss_falls_and_record_is_complete(tmp_path):
    cfg = tiny("tiny-llama", tmp_path, epochs=3)
    rec = run_experiment(cfg, tmp_path / "run")
    assert RECORD_KEYS <= set(rec)
    assert rec["status"] == "completed" and len(rec["history"]) == 3
    losses = [h["loss"] for h in rec["history"]]
    assert losses[-1] < losses[0]
    for k in ("precision", "recall", "f1", "accuracy"):
        assert 0.0 <= rec["metrics"]["val"][k] <= 1.0
    assert rec["params"]["trainable"] < rec["params"]["total"]
    assert rec["peak_memory_mb"] > 50 and rec["throughput"]["train_samples_per_second"] > 0
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("model", ["tiny-roberta", "tiny-llama"])
def test_save_then_reload_gives_identical_logits(tmp_path, model):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer
    cfg = tiny(model, tmp_path)
    run_experiment(cfg, tmp_path / "run")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run")
    texts = ["forest fire near la ronge", "i love fruits", "flood warning for the city tonight"]
    enc = tok(texts, padding=True, return_tensors="pt")
    m1 = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "run", pad_token_id=tok.pad_token_id).eval()
    m2 = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "run", pad_token_id=tok.pad_token_id).eval()
    with torch.no_grad():
        a, b = m1(**enc).logits, m2(**enc).logits
    assert torch.equal(a, b)
    # and they are the trained model's logits: the head was saved (a fresh head would differ per load)
    from transformers import set_seed

    from lorabench.models import build_classifier
    set_seed(123)
    fresh = build_classifier(cfg.model, cfg.lora, ["not_disaster", "disaster"]).model.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**enc).logits, a)


def test_threshold_tune_is_recorded(tmp_path):
    rec = run_experiment(tiny("tiny-bert", tmp_path, threshold="tune"), tmp_path / "run")
    assert rec["metrics"]["val_at_threshold"]["f1"] >= rec["metrics"]["val"]["f1"] - 1e-9
    assert rec["metrics"]["val"]["f1"] == max(h["f1"] for h in rec["history"])  # best epoch kept


def test_cli_train_end_to_end(tiny_config, tmp_path, capsys):
    out = tmp_path / "cli-run"
    assert main(["train", str(tiny_config("tiny-llama")), "--output-dir", str(out), "--set", "train.epochs=2"]) == 0
    rec = json.loads((out / "run.json").read_text())
    assert RECORD_KEYS <= set(rec) and rec["config"]["train"]["epochs"] == 2
    assert rec["model"]["architecture"] == "llama" and rec["data"]["train_rows"] == 160
    assert {"adapter_model.safetensors", "adapter_config.json", "config.yaml", "tokenizer.json"} <= \
        {p.name for p in out.iterdir()}
    assert set(rec["versions"]) >= {"python", "torch", "transformers", "peft", "lorabench"}
    assert "val F1" in capsys.readouterr().out


@pytest.mark.parametrize("set_,match", [
    (["data.source=/no/such.csv"], "data file not found"),
    (["data.text=body"], "no column 'body'"),
    (["model.name=tiny-gpt"], "unknown model name"),
    (["model.name=meta-llama/Llama-2-7b-hf"], "hub is offline"),
    (["train.epochs=-1"], "train.epochs must be > 0"),
    (["train.epoch=3"], "unknown key 'train.epoch'"),
])
def test_cli_errors_are_one_line_exit_2_no_run_folder(tiny_config, tmp_path, capsys, set_, match):
    out = tmp_path / "runs" / "x"
    args = ["train", str(tiny_config())] + [a for s in set_ for a in ("--set", s)] + ["--output-dir", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


@pytest.mark.system
def test_console_script_exit_code(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "lorabench.cli", "train", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "config file not found" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_real_minilm_lora_learns(tmp_path):
    cfg = ExperimentConfig(
        name="real", data=DataConfig(max_train_samples=500, max_eval_samples=300),
        model=ModelConfig(name="minilm-l6", max_length=64), lora=LoraConfig(r=8, alpha=16),
        train=TrainConfig(epochs=3, batch_size=16, learning_rate=5e-4))
    rec = run_experiment(cfg, tmp_path / "run")
    assert rec["metrics"]["val"]["f1"] >= 0.65, rec["metrics"]["val"]
    assert np.isclose(rec["params"]["trainable_pct"], 100 * rec["params"]["trainable"] / rec["params"]["total"], atol=1e-3)


def test_existing_non_empty_output_dir_is_refused_and_kept(tiny_config, tmp_path, capsys):
    cfg = tiny_config()
    keep = tmp_path / "precious.txt"
    keep.write_text("do not delete")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert keep.read_text() == "do not delete" and cfg.is_file()


def test_length_buckets_cover_every_row_pad_little_and_reshuffle():
    import numpy as np
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from lorabench.training import length_buckets
    sys_rng = np.random.default_rng(0)
    lengths = sys_rng.integers(5, 70, size=1000).tolist()

    def padding(order, bs=32):
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        real = sum(lengths)
        return 1 - real / sum(len(b) * max(lengths[i] for i in b) for b in batches)
    rng = np.random.default_rng(42)
    first, second = length_buckets(lengths, 32, rng), length_buckets(lengths, 32, rng)
    assert sorted(first) == list(range(1000)) and sorted(second) == list(range(1000))
    assert first != second                                               # a new order each epoch
    assert first == length_buckets(lengths, 32, np.random.default_rng(42))  # same seed, same order
    hf = list(LengthGroupedSampler(32, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    assert padding(first) < 0.03 < padding(hf)
    assert max(lengths[i] for i in first[-8:]) == max(lengths)           # the partial batch is last
