"""Tiny random models (2 layers, hidden 32) with a WordLevel tokenizer fit on bundled tweets:
every architecture's code path in seconds, no hub.

`build_tiny(model_type, folder)` writes one for each `model_type` of `registry.ARCHITECTURES` (the
built-in `tiny-*` names use it for bert, roberta, llama and mistral); `tiny_tokenizer` gives each
architecture family its special tokens, template and model inputs.
"""
from __future__ import annotations

from pathlib import Path

from lorabench.data.sources import bundled_path, read_table

# Tokenizer styles: special tokens (their vocabulary order first), what wraps the text, model inputs.
# As the real tokenizers of each family do it: BERT/RoBERTa wrap the text; Llama/Gemma/Phi-3 prepend
# BOS; Qwen and GPT-2 add nothing. Llama/Mistral/GPT-2 have no pad token (lorabench pads with EOS).
_STYLES: dict[str, dict] = {
    "bert": dict(sp=dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                         mask_token="[MASK]"),
                 order=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], template=("[CLS]", "[SEP]")),
    "roberta": dict(sp=dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                            mask_token="<mask>", cls_token="<s>", sep_token="</s>"),
                    order=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], template=("<s>", "</s>")),
    "llama": dict(sp=dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>"),
                  order=["<unk>", "<s>", "</s>"], template=("<s>", None)),
    "gemma": dict(sp=dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"),
                  order=["<pad>", "<eos>", "<bos>", "<unk>"], template=("<bos>", None)),
    "phi3": dict(sp=dict(unk_token="<unk>", bos_token="<s>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
                 order=["<unk>", "<s>", "</s>", "<|endoftext|>"], template=("<s>", None)),
    "qwen": dict(sp=dict(unk_token="<unk>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
                 order=["<|endoftext|>", "<unk>"], template=(None, None)),
    # GPT-2's unk is <|endoftext|> (byte-level BPE never needs it); a WordLevel tokenizer does, and an unk equal
    # to the pad token would look like padding to the decoder's last-real-token lookup
    "gpt2": dict(sp=dict(unk_token="<unk>", bos_token="<|endoftext|>", eos_token="<|endoftext|>"),
                 order=["<|endoftext|>", "<unk>"], template=(None, None)),
}
_STYLE_OF = {"bert": "bert", "electra": "bert", "distilbert": "bert", "deberta-v2": "bert", "modernbert": "bert",
             "roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta", "mpnet": "roberta",
             "gemma": "gemma", "gemma2": "gemma", "gemma3_text": "gemma", "phi3": "phi3",
             "qwen2": "qwen", "qwen3": "qwen", "gpt2": "gpt2"}  # anything else: llama
# model inputs where the real tokenizer returns no token_type_ids (DistilBERT's and ModernBERT's forward
# take none); bert, roberta and llama keep the library default, as the cached tiny-* models were built
_NO_TOKEN_TYPES = {"distilbert", "modernbert", "xlm-roberta", "camembert", "mpnet", "gemma", "gemma2", "gemma3_text",
                   "phi3", "qwen2", "qwen3", "gpt2"}


def _config_kwargs(model_type: str, tok) -> dict:
    """Tiny config keywords for `AutoConfig.for_model(model_type, ...)`: 2 layers, hidden 32, 4 heads."""
    v = len(tok)
    common = dict(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ids = dict(pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if model_type in ("bert", "roberta"):  # unchanged since v1 (the cached tiny-bert / tiny-roberta)
        extra = dict(max_position_embeddings=520, pad_token_id=tok.pad_token_id,
                     type_vocab_size=1 if model_type == "roberta" else 2)
        if model_type == "roberta":
            extra.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        return {**common, **extra}
    if model_type in ("llama", "mistral"):  # unchanged since v1 (the cached tiny-llama / tiny-mistral)
        return {**common, **dict(num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, tie_word_embeddings=False)}
    if model_type == "electra":
        return {**common, "embedding_size": 32, "max_position_embeddings": 512, "pad_token_id": tok.pad_token_id}
    if model_type in ("xlm-roberta", "camembert"):
        return {**common, **ids, "max_position_embeddings": 514, "type_vocab_size": 1}
    if model_type == "mpnet":  # as all-mpnet-base-v2: <s> <pad> </s> = ids 0 1 2 (pad = the embeddings' padding_idx)
        return {**common, **ids, "max_position_embeddings": 514}
    if model_type == "distilbert":
        return dict(vocab_size=v, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=512,
                    pad_token_id=tok.pad_token_id)
    if model_type == "deberta-v2":  # DeBERTa-v3's settings: relative positions only, disentangled attention
        return {**common, "max_position_embeddings": 512, "pad_token_id": tok.pad_token_id, "type_vocab_size": 0,
                "relative_attention": True, "position_buckets": 64, "max_relative_positions": -1,
                "pos_att_type": ["p2c", "c2p"], "position_biased_input": False, "norm_rel_ebd": "layer_norm",
                "share_att_key": True, "pooler_hidden_size": 32}
    if model_type == "modernbert":  # layer 2 is a local (sliding-window) layer
        return {**common, "max_position_embeddings": 512, "local_attention": 16, "pad_token_id": tok.pad_token_id,
                "cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
                "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id}
    if model_type == "gpt2":
        return dict(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=1024,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    # Llama-like decoders (Gemma, Qwen, Phi-3, ...): grouped-query attention, untied head_dim where the
    # config has one (Gemma's and Qwen3's default 256 / 128 would not fit hidden 32)
    extra = dict(num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False, **ids)
    if model_type.startswith("gemma") or model_type == "qwen3":
        extra["head_dim"] = 8
    if model_type in ("gemma2", "gemma3_text"):  # one sliding-window layer, one global
        extra.update(query_pre_attn_scalar=8, sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    return {**common, **extra}


def build_tiny(model_type: str, out: Path) -> None:
    """Write a tiny random `model_type` backbone (`AutoModel`, seeded) and its tokenizer into `out`."""
    import torch
    from transformers import AutoConfig, AutoModel
    tok = tiny_tokenizer(model_type)
    config = AutoConfig.for_model(model_type, **_config_kwargs(model_type, tok))
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


_build_tiny = build_tiny  # models.sources' name for it


def tiny_tokenizer(model_type: str, n_rows: int = 600):
    """WordLevel tokenizer fit on bundled tweets; special tokens in the architecture's style."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = read_table(bundled_path()).text.tolist()[:n_rows]
    style = _STYLES[_STYLE_OF.get(model_type, "llama")]
    sp, order = style["sp"], style["order"]
    tk = Tokenizer(models.WordLevel(unk_token=sp["unk_token"]))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, min_frequency=1, special_tokens=order,
                                                            show_progress=False))  # (Rust: straight to the terminal)
    first, last = style["template"]
    if first or last:
        single = " ".join(t for t in (first, "$A", last) if t)
        tk.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tk.token_to_id(t)) for t in (first, last) if t])
    kw = {"model_input_names": ["input_ids", "attention_mask"]} if model_type in _NO_TOKEN_TYPES else {}
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=512, **kw, **sp)
