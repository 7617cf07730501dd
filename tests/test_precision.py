"""One precision-and-device decision (issue 13): made once from the config and the hardware, used by
building, training, predict and export."""
import json

import pytest
import torch

from lorabench.config import ModelConfig
from lorabench.models.precision import Precision, decide


@pytest.mark.parametrize("dtype,cuda,bf16,expect", [
    ("auto", False, False, ("cpu", "float32", None, False)),
    ("auto", True, True, ("cuda", "bfloat16", "bf16", False)),
    ("auto", True, False, ("cuda", "float16", "fp16", True)),
    ("float32", True, True, ("cuda", "float32", None, False)),
    ("bfloat16", False, False, ("cpu", "bfloat16", "bf16", False)),  # bf16 on CPU: slow, but the GPU's path
])
def test_decide(dtype, cuda, bf16, expect):
    p = decide(ModelConfig(dtype=dtype), cuda=cuda, bf16_supported=bf16)
    assert (p.device, p.weights_dtype, p.autocast, p.grad_scaler) == expect
    assert p.trainable_dtype == "float32"
    assert p.training_arguments() == {"use_cpu": not cuda, "bf16": expect[2] == "bf16", "fp16": expect[2] == "fp16"}


def test_float16_needs_a_gpu_to_train_but_a_float16_run_predicts_on_cpu():
    from lorabench.errors import ConfigError
    with pytest.raises(ConfigError, match="float16 training needs a GPU"):
        decide(ModelConfig(dtype="float16"), cuda=False, bf16_supported=False)
    p = decide(ModelConfig(dtype="float16"), cuda=False, bf16_supported=False, inference=True)
    assert (p.device, p.weights_dtype, p.autocast) == ("cpu", "float32", None)


def test_quantization_settings_follow_the_precision():
    p = decide(ModelConfig(quantization="4bit"), cuda=True, bf16_supported=True)
    assert p.quantization == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                              "bnb_4bit_compute_dtype": "bfloat16"}
    assert decide(ModelConfig(quantization="4bit"), cuda=True, bf16_supported=False).quantization[
        "bnb_4bit_compute_dtype"] == "float16"
    assert decide(ModelConfig(quantization="8bit"), cuda=False, bf16_supported=False).quantization == {"load_in_8bit": True}
    assert decide(ModelConfig(), cuda=True, bf16_supported=True).quantization is None


def test_full_finetuning_keeps_every_weight_in_float32_and_uses_autocast():
    for bf16, autocast in ((True, "bf16"), (False, "fp16")):
        p = decide(ModelConfig(), cuda=True, bf16_supported=bf16, full_finetune=True)
        assert (p.weights_dtype, p.trainable_dtype, p.autocast, p.grad_scaler) == ("float32", "float32", autocast,
                                                                                   autocast == "fp16")


def test_training_arguments_follow_the_decision_not_the_first_parameter(monkeypatch, tmp_path):
    """Under 4-bit weights the first parameter is uint8: guessing from it switched mixed precision off."""
    from lorabench.models.hub_code import import_peft
    import_peft()  # transformers.training_args imports peft: without bitsandbytes' Hub kernel
    import transformers
    import transformers.training_args  # noqa: F401  (loaded first: a lazy submodule's first load resets the names)

    from lorabench.config import TrainConfig
    from lorabench.models.build import Built
    from lorabench.models.registry import ARCHITECTURES
    from lorabench.training.trainer import _training_args
    seen = {}
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kw: seen.update(kw) or kw)
    model = torch.nn.Module()
    model.register_parameter("packed", torch.nn.Parameter(torch.zeros(4, dtype=torch.uint8), requires_grad=False))
    built = Built(model, None, None, "llama", ARCHITECTURES["llama"], {}, 0.0,
                  Precision(device="cuda", weights_dtype="bfloat16", autocast="bf16"))
    assert next(model.parameters()).dtype == torch.uint8
    _training_args(TrainConfig(), tmp_path, built, has_eval=True, report_to="none")
    assert seen["bf16"] is True and seen["fp16"] is False and seen["use_cpu"] is False


def test_runs_record_their_precision_and_predict_uses_its_device(tmp_path):
    from lorabench.cli import main
    from lorabench.inference.predict import load_run
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: p\ndata: {max_train_samples: 120, max_eval_samples: 40}\n"
                   "model: {name: tiny-llama, max_length: 32}\ntrain: {epochs: 1, batch_size: 16}\n")
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "r")]) == 0
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    want = decide(ModelConfig()).to_dict()
    assert rec["precision"] == want
    run = load_run(tmp_path / "r")
    assert run.device == want["device"] and next(run.model.parameters()).device.type == want["device"]
    assert next(run.model.parameters()).dtype == getattr(torch, want["weights_dtype"])


def _count_decisions(monkeypatch) -> list:
    """Every call of `models.precision.decide`, wherever a module bound it by name."""
    import sys

    from lorabench.models import precision as module
    real, calls = module.decide, []

    def spy(*a, **k):
        calls.append(a[0].name if a else "?")
        return real(*a, **k)
    for name, mod in list(sys.modules.items()):
        if name.startswith("lorabench") and getattr(mod, "decide", None) is real:
            monkeypatch.setattr(mod, "decide", spy)
    return calls


def test_a_run_decides_its_precision_once_and_hands_it_down(tmp_path, monkeypatch, tiny_config):
    """Issue 23: one precision-and-device decision per run, used by the build, the Trainer, predict and export."""
    import lorabench.inference.export  # noqa: F401  (bound before counting)
    import lorabench.pipeline.comparison  # noqa: F401
    from lorabench.cli import main
    calls = _count_decisions(monkeypatch)
    cfg = tiny_config("tiny-bert")
    # the serving-cost measurement loads the run as predict does, in its own process: not counted here
    assert main(["train", str(cfg), "--output-dir", str(tmp_path / "run"), "--set", "train.serving_cost=false"]) == 0
    assert calls == ["tiny-bert"]
    rows = tmp_path / "rows.csv"
    rows.write_text("id,text\n1,fire\n")
    for argv in (["predict", str(tmp_path / "run"), "--input", str(rows), "--output", str(tmp_path / "p.csv")],
                 ["export", str(tmp_path / "run"), str(tmp_path / "exp"), "--merge"]):
        calls.clear()
        assert main(argv) == 0
        assert calls == ["tiny-bert"], argv
    (tmp_path / "c.yaml").write_text("name: c\ndata: {max_train_samples: 64, max_eval_samples: 32}\nmodel: {max_length: 32}"
                                     "\ntrain: {epochs: 1, batch_size: 16, serving_cost: false}\nmodels: [{name: tiny-bert}, {name: tfidf-logreg}]\n")
    calls.clear()
    assert main(["compare", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "cmp")]) == 0
    assert calls == ["tiny-bert"]  # checked before anything trains, with the decision its run then uses
