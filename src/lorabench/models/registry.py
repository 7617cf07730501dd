"""ALL per-architecture knowledge lives in `ARCHITECTURES` (target modules, head name, decoder or
encoder, `add_prefix_space`, position offset, which heads read the first token only). Nothing
else in lorabench branches on a model name.
"""
from __future__ import annotations

from dataclasses import dataclass

from lorabench.config.schema import LoraConfig
from lorabench.errors import ModelError


@dataclass(frozen=True)
class Arch:
    """What lorabench must know about one transformers `model_type`."""
    target_modules: tuple[str, ...]   # LoRA default (the study: query/value, q_proj/v_proj)
    head: str                         # classification head module, trained and saved with the adapter
    decoder: bool                     # decoders classify from the last real token; need a pad token
    add_prefix_space: bool = False    # byte-level BPE tokenizers that accept it (the study set it)
    first_token_layers: bool = False  # BERT-style layers under a head that reads position 0 only:
                                      # the last layer may compute that token alone (lorabench.speedups.cpu)
    position_offset: int = 0          # position ids start here (RoBERTa family: padding_idx + 1 = 2), so
                                      # max_position_embeddings - offset tokens fit (roberta-large: 514 -> 512)


_BERT = Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True)
_ROBERTA = Arch(("query", "value"), "classifier", decoder=False, add_prefix_space=True, first_token_layers=True,
               position_offset=2)
_LLAMA = Arch(("q_proj", "v_proj"), "score", decoder=True)

ARCHITECTURES: dict[str, Arch] = {
    "bert": _BERT,
    "electra": _BERT,
    "xlm-roberta": Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True, position_offset=2),
    "roberta": _ROBERTA,
    "camembert": Arch(("query", "value"), "classifier", decoder=False, first_token_layers=True, position_offset=2),
    "distilbert": Arch(("q_lin", "v_lin"), "classifier", decoder=False),
    "deberta-v2": Arch(("query_proj", "value_proj"), "classifier", decoder=False),
    "modernbert": Arch(("Wqkv",), "classifier", decoder=False),
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "phi3": Arch(("qkv_proj",), "score", decoder=True),
    "gpt2": Arch(("c_attn",), "score", decoder=True, add_prefix_space=True),
}


def arch_for(model_type: str, lora: LoraConfig | None = None, *, is_decoder: bool = False) -> Arch:
    """The table's entry; for an architecture not in it, one built from `lora.target_modules`."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if lora is not None and not lora.target_modules:
        raise ModelError(f"architecture {model_type!r} is not in lorabench's table (known: "
                         f"{', '.join(sorted(ARCHITECTURES))}); set lora.target_modules")
    return Arch(tuple(lora.target_modules) if lora else (), "score" if is_decoder else "classifier", is_decoder)

def position_limit(hf_config, arch: Arch) -> int | None:
    """Most tokens the model can embed: max_position_embeddings (GPT-2: n_positions) minus the
    architecture's position offset; None when the config states no limit or uses relative positions only."""
    if getattr(hf_config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        return None
    n = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    return int(n) - arch.position_offset if n else None
