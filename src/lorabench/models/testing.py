"""Tiny random models (2 layers, hidden 32) with a WordLevel tokenizer fit on bundled tweets:
every architecture's code path in seconds, no hub.
"""
from __future__ import annotations

from pathlib import Path


def _build_tiny(model_type: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModel
    tok = tiny_tokenizer(model_type)
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64)
    if model_type in ("bert", "roberta"):
        extra = dict(max_position_embeddings=520, pad_token_id=tok.pad_token_id, type_vocab_size=1 if model_type == "roberta" else 2)
        if model_type == "roberta":
            extra.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        extra = dict(num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    config = AutoConfig.for_model(model_type, **common, **extra)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def tiny_tokenizer(model_type: str, n_rows: int = 600):
    """WordLevel tokenizer fit on bundled tweets; special tokens in the architecture's style."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lorabench.data.sources import bundled_path, read_table
    texts = read_table(bundled_path()).text.tolist()[:n_rows]
    if model_type == "bert":
        sp = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        order = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    elif model_type == "roberta":
        sp = dict(bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                  cls_token="<s>", sep_token="</s>")
        order = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    else:  # Llama/Mistral style: no pad token, as in the study's decoders
        sp = dict(unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        order = ["<unk>", "<s>", "</s>"]
    tk = Tokenizer(models.WordLevel(unk_token=sp["unk_token"]))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=2000, min_frequency=1, special_tokens=order))
    first, last = (sp.get("cls_token") or sp["bos_token"]), sp.get("sep_token")
    if last:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, tk.token_to_id(first)), (last, tk.token_to_id(last))])
    else:
        tk.post_processor = processors.TemplateProcessing(single=f"{first} $A", special_tokens=[(first, tk.token_to_id(first))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=512, **sp)
