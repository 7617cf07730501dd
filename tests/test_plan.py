"""`lorabench plan`: parameter counts, memory, FLOPs and time from config.json alone (CPU, no weights)."""
import json
import logging
import warnings
from pathlib import Path

import pytest

from lorabench.cli import main
from lorabench.config import ExperimentConfig, load_config
from lorabench.planning import load_plan_config, plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STUDY = EXAMPLES / "study_plan.yaml"
LLAMA = EXAMPLES / "study_configs" / "Llama-2-7b-hf"


@pytest.fixture(scope="module")
def study():
    return {m.label: m for m in plan(load_plan_config(STUDY)).models}


def _llama(tmp_path, extra: str = ""):
    """One-model plan of Llama-2-7B (the study's LoRA) with `extra` YAML under the model section."""
    p = tmp_path / "llama.yaml"
    p.write_text(f"model: {{name: {LLAMA}, max_length: 512{extra}}}\n"
                 "lora: {r: 16, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}\n"
                 "train: {batch_size: 8, epochs: 1}\ndata: {max_train_samples: 400, max_eval_samples: 100}\n")
    return p


def _plan(path, overrides=(), **kw):
    return plan(load_config(ExperimentConfig, path, list(overrides)), **kw).models[0]


def test_study_totals_and_trainable_counts_are_exact(study):
    # examples/study_configs/README.md: peft's totals equal the study's printed ones (Mistral at r=4);
    # trainable counts each trained parameter once
    expected = {"RoBERTa-large": (356_610_052, 1_248_258), "Llama-2-7B": (6_615_748_608, 8_396_800),
                "Mistral-7B": (7_112_380_416, 1_712_128)}
    assert {k: (m.total_params, m.trainable_params) for k, m in study.items()} == expected
    for m in study.values():  # config.json only: no tokenizer, lengths estimated and said so
        assert m.tokens["source"].startswith("estimated from characters")
        assert m.tokens["train_rows"] == 6090 and m.tokens["val_rows"] == 1523
        assert m.fits and m.seconds > 0


def test_config_only_folder_gives_no_tokenizer_lengths(tmp_path):
    # transformers builds an empty RoBERTa tokenizer from a folder without tokenizer files (2 tokens a
    # text); the plan must notice and estimate from characters instead
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text((EXAMPLES / "study_configs" / "roberta-large" / "config.json").read_text())
    p = tmp_path / "c.yaml"
    p.write_text(f"model: {{name: {tmp_path / 'm'}}}\nlora: {{r: 2}}\ndata: {{max_train_samples: 50, max_eval_samples: 20}}\n")
    m = _plan(p)
    assert m.tokens["source"].startswith("estimated") and m.tokens["longest"] > 10


def test_tiny_model_uses_its_tokenizer(tiny_config):
    from lorabench.data.splits import load_splits
    from lorabench.models.build import token_lengths
    cfg = load_config(ExperimentConfig, tiny_config("tiny-llama"))
    m = plan(cfg).models[0]
    train = load_splits(cfg.data).train.texts
    real = [min(n, cfg.model.max_length) for n in token_lengths(train, cfg.model)]
    assert m.tokens["source"] == "tokenizer"
    assert m.tokens["longest"] == max(real) and m.tokens["mean"] == pytest.approx(sum(real) / len(real), abs=0.05)
    assert m.tokens["train_padded_per_epoch"] >= sum(real)  # padding only adds
    assert m.tokens["train_padded_per_epoch"] <= 1.1 * sum(real)  # length buckets waste little


def test_memory_ordering(tmp_path):
    p = _llama(tmp_path)
    fp32 = _plan(p, ["model.dtype=float32"]).memory
    bf16 = _plan(p, ["model.dtype=bfloat16"]).memory
    nf4 = _plan(p, ["model.quantization=4bit"]).memory
    assert nf4.weights_mb < bf16.weights_mb < fp32.weights_mb
    assert bf16.weights_mb == pytest.approx(fp32.weights_mb / 2, rel=0.01)
    assert nf4.weights_mb < 0.35 * bf16.weights_mb  # ~0.52 B per quantized weight, embeddings/norms in fp32

    ckpt = _plan(p, ["train.gradient_checkpointing=true"]).memory
    assert ckpt.activations_mb < bf16.activations_mb / 3
    assert ckpt.activations_other_mb == pytest.approx(bf16.activations_mb)

    split = _plan(p, ["model.device_map=auto"], gpus=2)
    assert split.memory.devices == 2
    assert split.memory.weights_mb == pytest.approx(bf16.weights_mb / 2, rel=0.01)
    assert split.seconds == pytest.approx(_plan(p).seconds)        # model parallel: one GPU works at a time
    # data parallel: shared work (the same batching: group_by_length auto would bucket 2 x 8 rows but not 8)
    same = ["train.group_by_length=true"]
    assert _plan(p, same, gpus=2).seconds == pytest.approx(_plan(p, same).seconds / 2)
    assert _plan(p, gpus=2).memory.weights_mb == pytest.approx(bf16.weights_mb)  # ... and a full copy each

    full = _plan(p, ["lora=null"], gpu="H200")
    lora_state = bf16.trainable_mb + bf16.gradients_mb + bf16.optimizer_mb
    full_state = full.memory.trainable_mb + full.memory.gradients_mb + full.memory.optimizer_mb
    assert lora_state < 0.01 * full_state
    assert full.memory.optimizer_mb == pytest.approx(full.total_params * 8 / 2**20)
    assert full.train_flops_per_epoch > 1.4 * _plan(p).train_flops_per_epoch  # weight gradients: 6N, not 4N


def test_does_not_fit_suggests_options_that_really_fit(tmp_path):
    p = _llama(tmp_path, ", dtype: float32")
    m = _plan(p, gpu="RTX-4090")
    assert not m.fits and m.memory.total_mb > 24 * 1024
    assert m.fixes and m.fixes[0] == "model.dtype bfloat16"
    for fix in m.fixes:  # apply each as a user would and re-plan
        words = fix.split()
        gpus = int(words[-2]) if words[-1] == "GPUs" else 1
        again = _plan(p, [f"{words[0]}={words[1]}"], gpu="RTX-4090", gpus=gpus)
        assert again.fits, fix
    text = _cli_out(["plan", str(p), "--gpu", "RTX-4090"])
    assert "does not fit on 1 x 24 GB: needs" in text and "would fit with: model.dtype bfloat16" in text


def test_activation_estimate_is_close_to_what_autograd_keeps():
    """Korthikanti et al.'s count against the tensors autograd saves for backward (bf16 autocast, CPU)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from lorabench.planning.plan import _Inventory, activation_bytes
    torch.manual_seed(0)
    c = AutoConfig.for_model("llama", vocab_size=500, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=4, intermediate_size=688, num_labels=2, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(c).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_dropout=0.05,
                                             target_modules=["q_proj", "v_proj"], modules_to_save=["score"]))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    b, s = 4, 48
    x = torch.randint(3, 500, (b, s))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=x, attention_mask=torch.ones_like(x))
    inv = _Inventory(0, 0, 0, 0, 0, 0, layers=2, hidden=256, heads=4, intermediate=688, gated=True,
                     lora_modules_per_layer=2, decoder=True, targets=[], path="")
    est = activation_bytes(inv, b, s, half=True, checkpointing=False, lora_dropout=0.05)
    assert 0.7 < est / sum(saved.values()) < 1.6


def test_plan_leaves_process_state_alone(tmp_path):
    filters = list(warnings.filters)
    levels = {n: logging.getLogger(n).level for n in ("transformers", "peft", "bitsandbytes", "")}
    _plan(_llama(tmp_path))
    assert list(warnings.filters) == filters
    assert {n: logging.getLogger(n).level for n in levels} == levels


def _cli_out(argv) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_cli_prints_the_study_totals():
    text = _cli_out(["plan", str(STUDY)])
    for total in ("356,610,052", "6,615,748,608", "7,112,380,416", "1,248,258", "8,396,800", "1,712,128"):
        assert total in text
    assert "fits on 1 x 48 GB" in text and "estimated from characters: no tokenizer" in text
    data = json.loads(_cli_out(["plan", str(STUDY), "--json", "--gpu", "h100-sxm", "--gpus", "2"]))
    assert data["hardware"]["gpu"] == "H100-SXM" and data["hardware"]["gpus"] == 2
    assert [m["total_params"] for m in data["models"]] == [356_610_052, 7_112_380_416, 6_615_748_608]
    assert all(m["memory"]["total_mb"] > m["memory"]["weights_mb"] for m in data["models"])


@pytest.mark.parametrize("argv,match", [
    (["--gpu", "NOPE"], "unknown GPU 'NOPE' (known: A6000"),
    (["--gpus", "0"], "--gpus must be >= 1"),
    (["--utilization", "1.5"], "--utilization must be in (0, 1]"),
    (["--tflops", "-3"], "--tflops must be > 0"),
])
def test_cli_bad_values_are_one_line_errors(argv, match, capsys):
    assert main(["plan", str(STUDY), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lorabench: error: ") and match in err[0]


def test_unknown_gpu_with_its_numbers_is_planned(tmp_path):
    m = _plan(_llama(tmp_path), gpu="MyGPU", gpu_memory_gb=20, tflops=100)
    assert m.fits and m.tflops_used == 100


def test_every_gpu_has_a_datasheet_bandwidth_and_the_cpu_its_measured_roofline():
    from lorabench.planning.gpus import GPUS
    for g in GPUS.values():
        assert g.bandwidth_gbs > 0 and g.source, g
    cpu = GPUS["CPU-2core"]
    assert cpu.cpu and "benchmarks/cpu_roofline.py" in cpu.source and 10 < cpu.fp32_tflops * 1000 < 1000


def test_one_short_row_through_a_7b_model_is_bound_by_streaming_its_weights(study):
    # issue 26's arithmetic: one ~27-token tweet through Llama-2-7B in fp16 on an H100 streams ~13 GB of weights,
    # ~4 ms at 3.35 TB/s, while its ~0.4 TFLOP takes ~1.2 ms of compute at 30% of the peak
    m = plan(load_plan_config(STUDY), gpu="H100-SXM").models[2]
    s = m.serving
    assert m.label == "Llama-2-7B" and s["latency_bound"] == "memory bandwidth"
    assert s["latency_ms"] == pytest.approx(1000 * s["weight_bytes"] / 3350e9)
    assert 12e9 < s["weight_bytes"] < 14e9 and 3.5 < s["latency_ms"] < 4.5
    assert 0.3e12 < s["flops_per_row"] < 0.5e12
    assert s["batch_bound"] == "compute"  # 64 rows share one pass over the weights
    assert m.bound == "compute" and m.seconds == pytest.approx(m.compute_seconds)  # the study's training step


def test_training_time_is_the_larger_of_compute_and_weight_traffic(tmp_path):
    # batch 1 and short texts on a low-bandwidth GPU: each micro-batch streams 13 GB of weights for little compute
    p = _llama(tmp_path)
    m = _plan(p, ["train.batch_size=1", "model.max_length=16"], gpu="T4")
    assert m.bound == "memory bandwidth" and m.memory_seconds > m.compute_seconds
    assert m.seconds >= m.memory_seconds * 0.99
    fast = _plan(p, ["train.batch_size=1", "model.max_length=16"], gpu="T4", bandwidth_gbs=1e6)
    assert fast.bound == "compute" and fast.seconds == pytest.approx(fast.compute_seconds)


def test_planning_for_this_cpu_trains_in_float32_without_cuda_overhead():
    m = plan(load_plan_config(EXAMPLES / "quickstart.yaml"), gpu="CPU-2core").models[1]
    assert m.label == "MiniLM-L6 (LoRA)" and m.precision["weights"] == "float32" and m.precision["autocast"] is None
    assert m.memory.overhead_mb == 0 and m.serving["rows_per_second"] > 0
