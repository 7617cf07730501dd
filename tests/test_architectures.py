"""Every model_type of the architecture table, exercised on a tiny random model built from config
(`lorabench.models.testing.build_tiny`: 2 layers, hidden 32) through lorabench's own builder:
LoRA targets exist and are adapted, the head (and `head_parts`) train and are saved, save -> reload gives
the same logits merged and unmerged, right padding gives each row's own logits (decoders read the last
real token). Plus `lorabench train` end to end on three of the types the study did not use.
"""
import json

import pytest
import torch

from lorabench.cli import main
from lorabench.config import LoraConfig, ModelConfig
from lorabench.models import ARCHITECTURES, build_classifier
from lorabench.models.registry import OWN_TARGETS, peft_target_modules, position_limit
from lorabench.models.testing import build_tiny
from lorabench.speedups import cpu as speed

real_attention = speed.attention_forward

LABELS = ["a", "b"]
ALL_TYPES = ["bert", "electra", "xlm-roberta", "roberta", "camembert", "distilbert", "deberta-v2", "modernbert",
             "mpnet", "llama", "mistral", "gemma", "gemma2", "gemma3_text", "qwen2", "qwen3", "phi3", "gpt2"]
TEXTS = ["forest fire near la ronge sask canada", "ok",
         "the storm is coming to the city tonight stay safe", "just happened a terrible car crash"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """model_type -> folder with a tiny random backbone and tokenizer (built once per module)."""
    root, built = tmp_path_factory.mktemp("tiny-archs"), {}

    def get(model_type: str):
        if model_type not in built:
            build_tiny(model_type, root / model_type)
            built[model_type] = root / model_type
        return built[model_type]
    return get


# --------------------------------------------------------------------------- the table itself
def test_targets_are_peft_defaults_except_where_peft_has_none():
    for model_type, arch in ARCHITECTURES.items():
        assert arch.target_modules, model_type
        peft = peft_target_modules(model_type)
        if model_type in OWN_TARGETS:  # lorabench's own: only where it differs from peft (peft 0.21: has none)
            assert arch.target_modules == OWN_TARGETS[model_type] != peft, \
                f"{model_type}: OWN_TARGETS is now a copy of peft's default {peft}: drop it from the table"
        else:
            assert arch.target_modules == peft, model_type
    # the study's choice is peft's default: query/value for the encoders, q_proj/v_proj for the decoders
    assert ARCHITECTURES["roberta"].target_modules == ARCHITECTURES["bert"].target_modules == ("query", "value")
    assert ARCHITECTURES["llama"].target_modules == ARCHITECTURES["mistral"].target_modules == ("q_proj", "v_proj")
    # MPNet (peft has no default): query/value in its own names, attention.attn.q / .v
    assert ARCHITECTURES["mpnet"].target_modules == ("q", "v")


def test_every_table_type_is_exercised_here():
    assert set(ARCHITECTURES) == set(ALL_TYPES)


# --------------------------------------------------------------------------- one tiny model per type
def _logits(model, tok, texts):
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def _trained_copy(model, name):
    """The head's (or a head part's) trained copy under peft's modules_to_save wrapper."""
    wrapper = getattr(model.base_model.model, name)
    assert hasattr(wrapper, "modules_to_save"), f"{name} is not in modules_to_save"
    return wrapper.modules_to_save["default"]


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_architecture(model_type, tiny_folder, tmp_path, monkeypatch):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = tiny_folder(model_type)
    b = build_classifier(ModelConfig(name=str(folder), max_length=32), LoraConfig(), LABELS, seed=0)
    model, tok, arch = b.model, b.tokenizer, b.arch
    assert b.architecture == model_type and arch is ARCHITECTURES[model_type]

    # LoRA on every default target, in every layer
    for target in arch.target_modules:
        hits = [m for n, m in model.named_modules() if n.endswith("." + target)]
        assert len(hits) == 2, f"{target}: {len(hits)} modules in a 2-layer model"
        assert all(isinstance(m, LoraLayer) for m in hits), target

    # the head (and the parts in front of it that checkpoints lack) train in full and are saved
    saved = set(model.peft_config["default"].modules_to_save)
    assert {arch.head, *arch.head_parts} <= saved
    for n, p in model.named_parameters():  # nothing else trains (peft matches modules_to_save by name suffix)
        if p.requires_grad:
            assert "lora_" in n or any(f"{m}.modules_to_save." in n for m in saved), f"unexpected trainable {n}"
    parts = {name: _trained_copy(model, name) for name in (arch.head, *arch.head_parts)}
    before = {name: [p.detach().clone() for p in mod.parameters()] for name, mod in parts.items()}
    assert all(p.requires_grad for mod in parts.values() for p in mod.parameters())

    # a few optimizer steps on a small batch move the head and LoRA's B (zero at init)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 0])
    for _ in range(3):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for name, mod in parts.items():
        assert any(not torch.equal(p, q) for p, q in zip(mod.parameters(), before[name])), f"{name} did not train"
    assert any(n.endswith("lora_B.default.weight") and p.abs().sum() > 0 for n, p in model.named_parameters())
    model.eval()

    # right padding: each row of a padded batch gets the logits it gets alone (decoders: the last real token)
    assert tok.padding_side == "right"
    assert model.config.pad_token_id == tok.pad_token_id is not None
    enc = tok(TEXTS, padding=True)
    short = min(range(len(TEXTS)), key=lambda i: sum(enc["attention_mask"][i]))
    assert enc["attention_mask"][short][-1] == 0 and enc["input_ids"][short][-1] == tok.pad_token_id  # padded right
    padded = _logits(model, tok, TEXTS)
    alone = torch.cat([_logits(model, tok, [t]) for t in TEXTS])
    assert torch.allclose(padded, alone, atol=1e-5), (padded - alone).abs().max()

    # the table's first_token_layers: exactly where the pooled-token lever fits, with the same logits
    fits = speed.apply_pooled_only_last_layer(model)
    try:
        assert fits == arch.first_token_layers
        if fits:
            assert torch.allclose(_logits(model, tok, TEXTS), padded, atol=1e-5)
    finally:
        speed.restore_last_layer(model)

    # run.json's speed_levers.attention names lorabench's attention function only where the model calls it
    # (MPNet and DeBERTa compute attention themselves: their attention dropout is a module, swapped as such)
    calls = []
    monkeypatch.setattr(speed, "attention_forward", lambda *a, **k: calls.append(1) or real_attention(*a, **k))
    applied = speed.apply_fast_dropout(model)
    try:
        model.train()
        with torch.no_grad():
            model(**tok(TEXTS, padding=True, return_tensors="pt"))
    finally:
        model.eval()
        speed.restore(model, applied)
    assert (applied["attention"] == speed.ATTENTION_NAME) == bool(calls), (applied, len(calls))

    # the table's position_offset: an input of exactly position_limit tokens embeds
    limit = position_limit(model.config, arch)
    if limit is not None:
        ids = tok(" ".join(["the"] * limit), truncation=True, max_length=limit, return_tensors="pt")
        assert ids["input_ids"].shape[1] == limit
        with torch.no_grad():
            assert torch.isfinite(model(**ids).logits).all()

    # save -> reload through peft onto a freshly loaded base (as predict does): the same logits
    model.save_pretrained(tmp_path / "adapter")
    torch.manual_seed(1234)  # parts not saved would come back with other random weights
    for merge in (False, True):
        cfg = AutoConfig.from_pretrained(folder, num_labels=2, pad_token_id=tok.pad_token_id)
        base = AutoModelForSequenceClassification.from_pretrained(folder, config=cfg)
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
        if merge:
            reloaded = reloaded.merge_and_unload()
        got = _logits(reloaded.eval(), tok, TEXTS)
        assert torch.allclose(got, padded, atol=1e-6), (merge, (got - padded).abs().max())


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("model_type", ["deberta-v2", "qwen2", "gpt2"])
def test_cli_train_end_to_end(model_type, tiny_folder, tmp_path):
    from lorabench.inference.predict import load_run, predict_probs
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
name: {model_type}
data: {{max_train_samples: 64, max_eval_samples: 32}}
model: {{name: {tiny_folder(model_type)}, max_length: 32}}
train: {{epochs: 1, batch_size: 16}}
""")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--output-dir", str(out)]) == 0
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "completed" and rec["model"]["architecture"] == model_type
    assert rec["model"]["lora_target_modules"] == list(ARCHITECTURES[model_type].target_modules)
    # predict's loader: merged and unmerged, two loads, the same probabilities
    merged = predict_probs(load_run(out), TEXTS, progress=False)
    unmerged = predict_probs(load_run(out, merge=False), TEXTS, progress=False)
    assert abs(merged - unmerged).max() < 1e-6
