"""lorabench.speedups.cpu: the fast CPU dropout keeps dropout's distribution, gradient and determinism,
its attention path equals transformers' sdpa, and training puts the model back as it found it."""
import numpy as np
import pytest
import torch

from lorabench.speedups import cpu as speed


def test_fast_dropout_rate_scale_and_gradient():
    speed.seed(0)
    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    y = speed.fast_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002                       # keep probability as asked
    assert abs(y.mean().item() - 2.0) < 0.01               # expectation unchanged
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 2.0 * 65536 / (65536 - 6554)))
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)                 # backward uses the forward's mask
    assert torch.allclose(x.grad[y != 0], kept / 2.0)


def test_fast_dropout_same_seed_same_mask_and_masks_differ_between_calls():
    x = torch.ones(64, 64)
    speed.seed(7)
    a, b = speed.fast_dropout(x, 0.3), speed.fast_dropout(x, 0.3)
    speed.seed(7)
    assert torch.equal(a, speed.fast_dropout(x, 0.3))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_path_equals_transformers_sdpa(monkeypatch, causal):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal = causal
    q, k, v = (torch.randn(3, 4, 7, 8) for _ in range(3))
    keep = torch.ones(3, 1, 7, 7, dtype=torch.bool)
    keep[0, :, :, 5:] = False                               # padding in the first row
    if causal:
        keep &= torch.ones(7, 7, dtype=torch.bool).tril()
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    monkeypatch.setattr(speed, "fast_dropout", lambda x, p: x)  # compare the attention math alone
    module.train()
    ours, _ = speed.attention_forward(module, q, k, v, additive, dropout=0.1, scaling=0.3)
    module.eval()
    ref, _ = sdpa_attention_forward(module, q, k, v, keep, dropout=0.0, scaling=0.3)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_training_applies_levers_and_restores_the_model(tmp_path):
    from lorabench.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig
    from lorabench.data import load_splits
    from lorabench.models import build_classifier
    from lorabench.training import train
    cfg = ExperimentConfig(data=DataConfig(max_train_samples=64, max_eval_samples=32),
                           model=ModelConfig(name="tiny-bert", max_length=32),
                           train=TrainConfig(epochs=1, batch_size=16, logging_steps=100))
    splits = load_splits(cfg.data)
    built = build_classifier(cfg.model, cfg.lora, splits.label_names)
    dropouts = sum(type(m) is torch.nn.Dropout and m.p > 0 for m in built.model.modules())
    res = train(built, splits, cfg.train, tmp_path, max_length=32)
    assert res.speed["fast_dropout_modules"] == dropouts > 0
    assert res.speed["pooled_only_last_layer"] is True
    assert type(speed._last_layer(built.model)).__name__ == "BertLayer"  # undone after training
    assert res.speed["attention"] == speed.ATTENTION_NAME
    assert all(type(m).__name__ != "FastDropout" for m in built.model.modules())
    assert built.model.get_base_model().config._attn_implementation == "sdpa"
    off = ExperimentConfig(data=cfg.data, model=cfg.model, train=TrainConfig(
        epochs=1, batch_size=16, fast_dropout=False, pooled_only_last_layer=False))
    built = build_classifier(off.model, off.lora, splits.label_names)
    assert train(built, splits, off.train, tmp_path / "off", max_length=32).speed is None


def test_llama_keeps_sdpa_attention_and_swaps_lora_dropout():
    from lorabench.config import LoraConfig, ModelConfig
    from lorabench.models import build_classifier
    built = build_classifier(ModelConfig(name="tiny-llama"), LoraConfig(dropout=0.1), ["0", "1"])
    applied = speed.apply_fast_dropout(built.model)
    assert applied["attention"] is None                     # attention_dropout 0: nothing to replace
    assert applied["fast_dropout_modules"] == 2 * built.model.config.num_hidden_layers  # q_proj, v_proj
    speed.restore(built.model, applied)
    assert not any(type(m).__name__ == "FastDropout" for m in built.model.modules())
    assert np.isfinite(built.model(input_ids=torch.tensor([[1, 2, 3]])).logits.detach().numpy()).all()


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta"])
def test_pooled_only_last_layer_gives_the_same_logits_and_gradients(name):
    from lorabench.config import LoraConfig, ModelConfig
    from lorabench.models import build_classifier
    built = build_classifier(ModelConfig(name=name), LoraConfig(dropout=0.0), ["0", "1"])
    model = built.model.eval()  # no dropout: both paths are deterministic
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padded rows: position 0 must not attend to padding in either path
    mask[3, 2:] = 0
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    for p in lora:  # LoRA B starts at zero: give it weight so the last layer's LoRA matters
        torch.nn.init.normal_(p, std=0.05)

    def run():
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        (logits * torch.tensor([1.0, -2.0])).sum().backward()
        return logits.detach(), [p.grad.clone() for p in lora]

    full, full_grads = run()
    assert speed.apply_pooled_only_last_layer(model)
    last = speed._last_layer(model)
    seen = []
    hook = last.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    pooled, pooled_grads = run()
    hook.remove()
    assert seen and seen[0][1] == 1  # the last layer computed one position per row
    torch.testing.assert_close(pooled, full, rtol=1e-5, atol=1e-6)
    for a, b in zip(pooled_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in full_grads[-2:])  # the last layer's LoRA gets gradient
    replica = last._replicate_for_data_parallel()  # what nn.DataParallel makes per GPU
    assert replica.forward.__self__ is replica        # runs its own weights, not the original's
    speed.restore_last_layer(model)
    speed.restore_last_layer(model)  # twice is harmless
    assert type(last).__name__ in ("BertLayer", "RobertaLayer")
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits.detach(), full, rtol=1e-5, atol=1e-6)


def test_pooled_only_is_left_out_where_it_does_not_fit():
    from lorabench.config import LoraConfig, ModelConfig
    from lorabench.models import build_classifier
    llama = build_classifier(ModelConfig(name="tiny-llama"), LoraConfig(), ["0", "1"])
    assert not llama.arch.first_token_layers
    assert not speed.apply_pooled_only_last_layer(llama.model)  # no BERT-style encoder layers
