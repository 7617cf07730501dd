"""Training speed levers: the last layer computes only the pooled token (same logits and
gradients); CPU dropout masks from a fast random generator (same keep probability).

The pooled token (`pooled_only_last_layer`): BERT-style classifiers (BERT, RoBERTa, ELECTRA,
XLM-R, CamemBERT; `Arch.first_token_layers`) read the last layer's output at position 0 only,
so in that layer only position 0 needs a query, attention output and feed-forward; every
token still supplies keys and values. Same logits and gradients (up to float rounding; with
dropout on, the same distribution: fewer masks are drawn), 1/L of the layer work saved for L
layers (1/6 on MiniLM-L6). Applied by swapping the last layer's class for a subclass whose
`forward` does this, while training or predicting; weights and saved models are untouched.

On CPU, torch draws dropout masks with its Mersenne-Twister generator one element at a time:
a dropout over a batch's hidden states costs about as much as a 384x384 matmul over it, and a
BERT layer with LoRA on query/value runs five of them (attention probabilities, attention
output, FFN output, and the two LoRA inputs). Here the masks come from numpy's SFC64 bit
generator, 16 random bits per element (keep probability exact to 1/65536, outputs scaled so
the expectation is unchanged), about 8x faster (benchmarks/train_speed.py, BENCHMARKS.md).

Fast dropout touches, and only while training on CPU (GPU tensors and eval mode keep torch's ops):
- every `torch.nn.Dropout` module in the model (the backbone's and peft's `lora_dropout`);
- attention-probability dropout, which transformers passes into `scaled_dot_product_attention`
  (it cannot be swapped as a module): a registered attention function computes attention
  eagerly with the fast mask while training with dropout on CPU, and calls transformers' own
  sdpa function otherwise. Models whose attention is not dispatched through transformers'
  attention interface keep torch's attention dropout (`applied["attention"]` says which).
"""
from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import torch

from lorabench import distributed

ATTENTION_NAME = "lorabench_sdpa"
_STATE: dict = {"bits": None}


def seed(value: int, stream: int = 0) -> None:
    """Seed the mask generator (each run does, from train.seed: same seed, same masks). `stream`: the
    process's rank under data parallel, so processes draw different masks (stream 0 = a one-process run)."""
    _STATE["bits"] = np.random.SFC64(value if stream == 0 else [value, stream])


def rng_state() -> dict | None:
    """The mask generator's state (JSON-serialisable), saved with each checkpoint for an exact resume."""
    return _STATE["bits"].state if _STATE["bits"] is not None else None


def set_rng_state(state: dict | None) -> None:
    """Restore a state from `rng_state()` (resuming from a checkpoint)."""
    if state is not None:
        bits = np.random.SFC64()
        inner = state["state"]
        bits.state = {**state, "state": {**inner, "state": np.asarray(inner["state"], dtype=np.uint64)}}
        _STATE["bits"] = bits


def _random_u16(n: int) -> np.ndarray:
    if _STATE["bits"] is None:
        seed(int(torch.randint(0, 2 ** 62, (1,)).item()))
    return _STATE["bits"].random_raw((n + 3) // 4).view(np.uint16)[:n]


class _DropFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        threshold = min(max(round(p * 65536), 1), 65535)
        mask = np.greater_equal(_random_u16(x.numel()), np.uint16(threshold)).astype(np.float32)
        mask *= np.float32(65536.0 / (65536 - threshold))  # E[output] = x exactly
        mask = torch.from_numpy(mask).view(x.shape).to(x.dtype)
        ctx.save_for_backward(mask)  # float, scaled: the backward is one multiply
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x, p: float):
    """Training-mode dropout of a CPU tensor with masks from the SFC64 generator."""
    return _DropFn.apply(x.contiguous(), float(p))


class FastDropout(torch.nn.Dropout):
    """`nn.Dropout` whose CPU training masks come from the fast generator."""

    def forward(self, x):
        if not self.training or self.p == 0 or x.device.type != "cpu" or x.numel() == 0:
            return super().forward(x)
        return fast_dropout(x, self.p)


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """Attention for transformers' interface: eager math + fast dropout while training on CPU."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
    if not (module.training and dropout > 0 and query.device.type == "cpu") or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if attention_mask is not None:  # the eager mask: additive, 0 where attended
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    elif (is_causal if is_causal is not None else getattr(module, "is_causal", False)) and query.shape[2] > 1:
        q, k = query.shape[2], key.shape[2]
        causal = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = fast_dropout(probs, dropout)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, None


def _register_attention() -> bool:
    """Register lorabench's attention function with transformers; True if this call registered it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    if ATTENTION_NAME in AttentionInterface._global_mapping:
        return False
    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, eager_mask)
    return True


def _unregister_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    AttentionInterface._global_mapping.pop(ATTENTION_NAME, None)
    ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop(ATTENTION_NAME, None)


def _base(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _attention_dropout(config) -> float:
    for key in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop", "attention_probs_dropout"):
        value = getattr(config, key, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def apply_fast_dropout(model) -> dict:
    """Swap the model's dropout for the fast CPU one; returns what was swapped (for run.json)."""
    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout and module.p > 0:
            module.__class__ = FastDropout
            swapped += 1
    applied = {"fast_dropout_modules": swapped, "attention": None}
    base = _base(model)
    config = getattr(base, "config", None)
    # only models that route attention through transformers' interface call the registered function (MPNet and
    # DeBERTa compute it themselves: their attention dropout is a Dropout module, swapped above)
    routed = getattr(base, "_supports_attention_backend", False)
    if (config is not None and routed and _attention_dropout(config) > 0
            and config._attn_implementation in ("sdpa", "eager")):
        applied["attention_was"] = config._attn_implementation
        applied["attention_registered"] = _register_attention()
        try:
            base.set_attn_implementation(ATTENTION_NAME)
        except (ValueError, AttributeError, KeyError):  # attention not routed through the interface
            return applied
        applied["attention"] = ATTENTION_NAME
    return applied


def restore(model, applied: dict | None) -> None:
    """Undo `apply_fast_dropout` (after training: what is saved or exported is plain transformers)."""
    if not applied:
        return
    for module in model.modules():
        if type(module) is FastDropout:
            module.__class__ = torch.nn.Dropout
    if applied.get("attention"):
        base = _base(model)
        base.set_attn_implementation(applied.get("attention_was", "sdpa"))
    if applied.pop("attention_registered", False):  # leave transformers' registry as it was
        _unregister_attention()


# --------------------------------------------------------------------------- pooled token only
def _first_token_layer_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None,
                               *args, **kwargs):
    """A BERT-style layer's forward for position 0 alone: output shape (batch, 1, hidden)."""
    if (encoder_hidden_states is not None or kwargs.get("cache") is not None or kwargs.get("output_attentions")
            or kwargs.get("output_hidden_states")
            or not (attention_mask is None or isinstance(attention_mask, torch.Tensor))):  # e.g. flex BlockMask
        return self._lorabench_full_class.forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                                  *args, **kwargs)
    sa = self.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    heads = (-1, sa.attention_head_size)
    query = sa.query(first).view(batch, 1, *heads).transpose(1, 2)
    key = sa.key(hidden_states).view(batch, length, *heads).transpose(1, 2)
    value = sa.value(hidden_states).view(batch, length, *heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[2] == length:
        attention_mask = attention_mask[:, :, :1]  # position 0's row of the (batch, 1, L, L) mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    eager = getattr(sys.modules[type(sa).__module__], "eager_attention_forward")
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager)
    out, _ = attend(sa, query, key, value, attention_mask,
                    dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling)
    attention_output = self.attention.output(out.reshape(batch, 1, -1), first)
    return self.feed_forward_chunk(attention_output)


_FIRST_TOKEN_CLASSES: dict[type, type] = {}


def _first_token_class(cls: type) -> type:
    """`cls` with the first-token forward: a class swap (not an instance attribute) survives
    `nn.DataParallel` replicas and keeps state_dict, hooks and isinstance checks as they were."""
    if cls not in _FIRST_TOKEN_CLASSES:
        _FIRST_TOKEN_CLASSES[cls] = type(f"FirstToken{cls.__name__}", (cls,),
                                         {"forward": _first_token_layer_forward, "_lorabench_full_class": cls})
    return _FIRST_TOKEN_CLASSES[cls]


def _last_layer(model):
    base = _base(model)
    backbone = getattr(base, "base_model", None)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers:
        return None
    last = layers[-1]
    sa = getattr(getattr(last, "attention", None), "self", None)
    config = getattr(backbone, "config", None)
    ok = (all(hasattr(sa, n) for n in ("query", "key", "value", "attention_head_size", "scaling", "dropout", "config"))
          and hasattr(last.attention, "output") and hasattr(last, "feed_forward_chunk")
          and not getattr(last, "is_decoder", False) and not getattr(config, "is_decoder", False)
          and not getattr(config, "output_hidden_states", False) and not getattr(config, "output_attentions", False))
    return last if ok else None


def apply_pooled_only_last_layer(model) -> bool:
    """Make the last layer compute position 0 only (see the module doc); False where it does not fit."""
    last = _last_layer(model)
    if last is None:
        return False
    if not hasattr(type(last), "_lorabench_full_class"):  # not applied already
        last.__class__ = _first_token_class(type(last))
    return True


def restore_last_layer(model) -> None:
    """Undo `apply_pooled_only_last_layer` wherever it was applied (safe to call twice)."""
    for module in model.modules():
        full = getattr(type(module), "_lorabench_full_class", None)
        if full is not None:
            module.__class__ = full


# --------------------------------------------------------------------------- all levers
def apply(model, arch, cfg, applied: dict | None = None) -> dict:
    """Apply the levers `cfg` (TrainConfig) asks for that fit this model and device.

    Records each in `applied` as soon as it is on (so a failure half-way can still be undone).
    """
    applied = {} if applied is None else applied
    if cfg.pooled_only_last_layer and getattr(arch, "first_token_layers", False):
        applied["pooled_only_last_layer"] = apply_pooled_only_last_layer(model)
    if cfg.fast_dropout and model.device.type == "cpu":
        applied["_rng_before"] = _STATE["bits"]
        seed(cfg.seed, stream=distributed.rank())
        applied["fast_dropout_modules"] = 0
        applied.update(apply_fast_dropout(model))
    return applied


def restore_all(model, applied: dict | None) -> None:
    """Undo `apply`: what is saved or exported afterwards is plain transformers + peft."""
    if not applied:
        return
    restore_last_layer(model)
    if "fast_dropout_modules" in applied:
        restore(model, applied)
    if "_rng_before" in applied:
        _STATE["bits"] = applied.pop("_rng_before")


@contextlib.contextmanager
def levers(model, arch, cfg):
    """Apply the levers `cfg` asks for (see `apply`) for the `with` block; undo everything after it, also
    on error: layer classes, dropout modules, attention implementation, transformers' attention registry
    and the mask generator. Yields the dict of what was applied."""
    applied: dict = {}
    try:
        apply(model, arch, cfg, applied)
        yield applied
    finally:
        restore_all(model, applied)
