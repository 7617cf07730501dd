"""ALL per-architecture knowledge lives in `ARCHITECTURES` (target modules, head name, decoder or
encoder, `add_prefix_space`, position offset, which heads read the first token only). Nothing
else in lorabench branches on a model name.

LoRA target modules are peft's own defaults for the `model_type`
(`peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`, what peft itself uses when
none are given) wherever peft has one; the table states targets only for the types peft has none for.
Everything else in an entry is lorabench's own.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from lorabench.config.schema import LoraConfig
from lorabench.errors import ModelError
from lorabench.models.hub_code import import_peft


@dataclass(frozen=True)
class Arch:
    """What lorabench must know about one transformers `model_type`."""
    model_type: str
    head: str                         # classification head module, trained and saved with the adapter
    decoder: bool                     # decoders classify from the last real token; need a pad token
    add_prefix_space: bool = False    # byte-level BPE tokenizers that accept it (the study set it)
    first_token_layers: bool = False  # BERT-style layers under a head that reads position 0 only:
                                      # the last layer may compute that token alone (lorabench.speedups.cpu)
    position_offset: int = 0          # position ids start here (RoBERTa family: padding_idx + 1 = 2), so
                                      # max_position_embeddings - offset tokens fit (roberta-large: 514 -> 512)
    head_parts: tuple[str, ...] = ()  # more modules between the backbone and `head` that pretrained checkpoints
                                      # lack (newly initialised at every load): trained and saved with the head,
                                      # else they stay random and a reloaded run gets other random ones (peft#2171)
    own_targets: tuple[str, ...] | None = None  # LoRA targets lorabench states itself; None: peft's default

    @property
    def target_modules(self) -> tuple[str, ...]:
        """LoRA's default targets: the table's own where stated, else peft's for the model_type (the study's
        query/value and q_proj/v_proj are peft's); () where peft has none (`attach_lora` then asks for
        lora.target_modules). peft is imported on first use, not with this module."""
        return self.own_targets or peft_target_modules(self.model_type) or ()


@functools.cache
def peft_target_modules(model_type: str) -> tuple[str, ...] | None:
    """peft's default LoRA target modules for `model_type`, or None where peft has none."""
    import_peft()
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults
    found = defaults.get(model_type)
    return tuple(found) if isinstance(found, (list, tuple)) else None  # (a str is a regex: not used here)


# LoRA targets lorabench states itself, only for types peft has no default for (peft 0.21): the study's
# query/value choice in each model's own names (MPNet: mpnet.encoder.layer.N.attention.attn.q/.k/.v/.o).
# ModernBERT and Phi-3 fuse query, key and value into one
# projection, so LoRA adapts all three there. (tests/test_architectures.py fails if one becomes a copy of peft's.)
OWN_TARGETS: dict[str, tuple[str, ...]] = {
    "camembert": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "modernbert": ("Wqkv",),
    "mpnet": ("q", "v"),
    "phi3": ("qkv_proj",),
}


def _arch(model_type: str, head: str, decoder: bool, **own) -> Arch:
    """An entry whose LoRA targets are lorabench's own where stated (`OWN_TARGETS`), else peft's default."""
    return Arch(model_type, head, decoder, own_targets=OWN_TARGETS.get(model_type), **own)


_BERT = dict(head="classifier", decoder=False, first_token_layers=True)   # the head reads the first token
_ROBERTA = dict(_BERT, position_offset=2)                                  # + position ids from padding_idx + 1
_DECODER = dict(head="score", decoder=True)

ARCHITECTURES: dict[str, Arch] = {
    "bert": _arch("bert", **_BERT),
    "electra": _arch("electra", **_BERT),
    "xlm-roberta": _arch("xlm-roberta", **_ROBERTA),
    "roberta": _arch("roberta", **_ROBERTA, add_prefix_space=True),
    "camembert": _arch("camembert", **_ROBERTA),
    # DistilBERT's pre_classifier (peft's suffix match on "classifier" wraps it too) and DeBERTa's pooler are in
    # no pretrained checkpoint (DeBERTa without it: other random pooler weights at each load, peft#2171)
    "distilbert": _arch("distilbert", "classifier", False, head_parts=("pre_classifier",)),
    "deberta-v2": _arch("deberta-v2", "classifier", False, head_parts=("pooler",)),
    # ModernBERT's `head` (dense + norm before `classifier`) is in its masked-LM checkpoints but not in bare
    # ModernBertModel ones (embedding models): trained like the dense layer of RoBERTa's `classifier`
    "modernbert": _arch("modernbert", "classifier", False, head_parts=("head",)),
    # MPNet's `classifier` (dense + out_proj) reads <s>; position ids from padding_idx + 1 as RoBERTa (514 -> 512);
    # WordPiece tokenizer (no add_prefix_space). Not first_token_layers: speedups.cpu's first-token forward is
    # BERT's layer (attention.self.query/..., feed_forward_chunk); MPNetLayer names them otherwise and adds a
    # relative position_bias to the scores
    "mpnet": _arch("mpnet", "classifier", False, position_offset=2),
    "llama": _arch("llama", **_DECODER),
    "mistral": _arch("mistral", **_DECODER),
    "gemma": _arch("gemma", **_DECODER),
    "gemma2": _arch("gemma2", **_DECODER),
    "gemma3_text": _arch("gemma3_text", **_DECODER),
    "qwen2": _arch("qwen2", **_DECODER),
    "qwen3": _arch("qwen3", **_DECODER),
    "phi3": _arch("phi3", **_DECODER),
    "gpt2": _arch("gpt2", **_DECODER, add_prefix_space=True),
}


def arch_for(model_type: str, lora: LoraConfig | None = None, *, is_decoder: bool = False) -> Arch:
    """The table's entry; for an architecture not in it, one built from `lora.target_modules`."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if lora is not None and not lora.target_modules:
        raise ModelError(f"architecture {model_type!r} is not in lorabench's table (known: "
                         f"{', '.join(sorted(ARCHITECTURES))}); set lora.target_modules")
    return Arch(model_type, "score" if is_decoder else "classifier", is_decoder,
                own_targets=tuple(lora.target_modules) if lora else ())

def position_limit(hf_config, arch: Arch) -> int | None:
    """Most tokens the model can embed: max_position_embeddings (GPT-2: n_positions) minus the
    architecture's position offset; None when the config states no limit or uses relative positions only."""
    if getattr(hf_config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        return None
    n = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    return int(n) - arch.position_offset if n else None
