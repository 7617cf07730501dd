import pytest
import torch

from lorabench.config import LoraConfig, ModelConfig
from lorabench.errors import ModelError
from lorabench.models import ARCHITECTURES, build_classifier, resolve_source

LABELS = ["not_disaster", "disaster"]


@pytest.mark.parametrize("name,head,targets", [
    ("tiny-bert", "classifier", ("query", "value")),
    ("tiny-roberta", "classifier", ("query", "value")),
    ("tiny-llama", "score", ("q_proj", "v_proj")),
    ("tiny-mistral", "score", ("q_proj", "v_proj")),
])
def test_only_lora_and_head_are_trainable(name, head, targets):
    b = build_classifier(ModelConfig(name=name), LoraConfig(r=4), LABELS)
    assert b.arch.head == head and b.arch.target_modules == targets
    trainable = [n for n, p in b.model.named_parameters() if p.requires_grad]
    assert trainable
    for n in trainable:
        assert "lora_" in n or f".{head}." in n, n
    assert any("lora_A" in n for n in trainable) and any(f".{head}." in n for n in trainable)
    assert b.params["trainable"] == sum(p.numel() for p in b.model.parameters() if p.requires_grad)
    assert 0 < b.params["trainable_pct"] < 100


def test_full_finetune_trains_everything():
    b = build_classifier(ModelConfig(name="tiny-bert"), None, LABELS)
    assert b.params["trainable"] == b.params["total"]


def test_decoder_pad_token_set_in_tokenizer_and_config():
    b = build_classifier(ModelConfig(name="tiny-llama"), LoraConfig(), LABELS)
    assert b.tokenizer.pad_token == b.tokenizer.eos_token == "</s>"
    assert b.model.config.pad_token_id == b.tokenizer.pad_token_id is not None
    assert b.tokenizer.padding_side == "right"


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral", "tiny-roberta"])
def test_padded_batch_gives_unpadded_logits(name):
    b = build_classifier(ModelConfig(name=name), LoraConfig(), LABELS)
    b.model.eval()
    texts = ["forest fire near la ronge sask canada", "ok", "the storm is coming to the city tonight stay safe"]
    with torch.no_grad():
        batch = b.model(**b.tokenizer(texts, padding=True, return_tensors="pt")).logits
        single = torch.cat([b.model(**b.tokenizer([t], return_tensors="pt")).logits for t in texts])
    enc = b.tokenizer(texts, padding=True)
    assert any(0 in m for m in enc["attention_mask"])  # the batch really is padded
    assert torch.allclose(batch, single, atol=1e-5), (batch - single).abs().max()


def test_architecture_table_covers_the_studys_models():
    for t in ("roberta", "llama", "mistral", "bert", "gemma3_text", "qwen2"):
        assert t in ARCHITECTURES


def test_unknown_and_offline_names_are_clear_errors():
    with pytest.raises(ModelError, match="unknown model name 'tiny-gpt'"):
        resolve_source(ModelConfig(name="tiny-gpt"))
    with pytest.raises(ModelError, match="hub is offline"):
        resolve_source(ModelConfig(name="meta-llama/Llama-2-7b-hf"))
    with pytest.raises(ModelError, match="no such folder"):
        resolve_source(ModelConfig(name="./no/such/model"))


def test_bad_target_module_is_named():
    with pytest.raises(ModelError, match="no module named 'q_proj'"):
        build_classifier(ModelConfig(name="tiny-bert"), LoraConfig(target_modules=["q_proj"]), LABELS)
