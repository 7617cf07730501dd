"""Texts longer than the model's window (`data.long_text`): what the model reads of each text.

- `truncate` (default): the first `max_length` tokens (the study's rule);
- `head_tail`: the first quarter and the last three quarters of the window (Sun, Qiu, Xu and Huang 2019, "How to
  fine-tune BERT for text classification?": head 128 + tail 382 tokens of 512 was their best rule);
- `chunk`: every window of `max_length` tokens, consecutive windows sharing `data.stride` tokens; a window is
  trained on with its text's label, and the windows' probabilities are pooled per text (`pool`: their mean), so
  metrics and predictions stay one per text.

`encode` is the one place texts become model inputs, for training, evaluation and predict alike.
"""
from __future__ import annotations

import numpy as np

from lorabench.errors import ConfigError

LONG_TEXT = ("truncate", "head_tail", "chunk")
HEAD_SHARE = 0.25  # head_tail: this share of the window's text tokens from the start, the rest from the end


def _head_tail(tokenizer, texts: list[str], max_length: int) -> list[str]:
    """Each text cut to its first and last tokens (by character offsets, so any fast tokenizer works) when it does
    not fit `max_length` with the tokenizer's special tokens; texts that fit are kept as they are."""
    room = max_length - len(tokenizer("", add_special_tokens=True)["input_ids"])
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for text, offsets in zip(texts, enc["offset_mapping"]):
        if len(offsets) <= room:
            out.append(text)
            continue
        head = max(int(room * HEAD_SHARE), 1)
        tail = room - head
        first, last = text[:offsets[head - 1][1]], text[offsets[len(offsets) - tail][0]:]
        # a space between them unless one side keeps one (byte-level BPE offsets include the leading space)
        sep = "" if first[-1:].isspace() or last[:1].isspace() else " "
        out.append(first + sep + last)
    return out


def encode(tokenizer, texts: list[str], max_length: int, long_text: str = "truncate", stride: int = 0):
    """Model inputs of `texts` by the `long_text` rule. Returns (encoding: {input_ids, attention_mask[,
    token_type_ids]} lists, one row per window), doc ((windows,) int64: the text each row comes from). Rows are
    in text order (a text's windows consecutive). Raises ValueError for an unknown rule, `ConfigError` for a window
    with no room for text or a stride that leaves no new tokens per window."""
    if long_text not in LONG_TEXT:
        raise ValueError(f"long_text must be one of {', '.join(LONG_TEXT)}, got {long_text!r}")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    if long_text in ("chunk", "head_tail"):
        special = len(tokenizer("", add_special_tokens=True)["input_ids"])
        room = max_length - special
        if room < 1:
            raise ConfigError(f"model.max_length {max_length} leaves no room for text beside the tokenizer's "
                              f"{special} special tokens: use a larger max_length")
    if long_text == "chunk":
        if stride >= room:
            raise ConfigError(f"data.stride {stride} leaves no new tokens in a window of {room} text tokens "
                              f"(model.max_length {max_length}): use a stride below {room}")
        enc = tokenizer(texts, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True)
        doc = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
        return {k: enc[k] for k in keys if k in enc}, doc
    if long_text == "head_tail":
        texts = _head_tail(tokenizer, texts, max_length)
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return {k: enc[k] for k in keys if k in enc}, np.arange(len(texts), dtype=np.int64)


def pool(probs: np.ndarray, doc: np.ndarray, n_docs: int, how: str = "mean") -> np.ndarray:
    """Per-text outputs (n_docs, classes) float64: the mean (`how="mean"`: class probabilities, regression values)
    or the largest (`"max"`: multi_label, a label present in any window is present in the text) over each text's
    windows of `probs` (windows, classes). With one window per text, `probs` in text order."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(doc) == n_docs and (doc == np.arange(n_docs)).all():
        return probs
    if how == "max":
        out = np.full((n_docs, probs.shape[1]), -np.inf)
        np.maximum.at(out, doc, probs)
        return out
    out = np.zeros((n_docs, probs.shape[1]), dtype=np.float64)
    np.add.at(out, doc, probs)
    counts = np.bincount(doc, minlength=n_docs).astype(np.float64)
    return out / np.maximum(counts, 1.0)[:, None]


def window_counts(tokenizer, texts: list[str], max_length: int, stride: int = 0) -> dict:
    """How many texts do not fit one window and how many windows `chunk` makes of all texts: {texts, long_texts,
    windows, stride}."""
    _, doc = encode(tokenizer, texts, max_length, "chunk", stride)
    per = np.bincount(doc, minlength=len(texts))
    return {"texts": len(texts), "long_texts": int((per > 1).sum()), "windows": int(len(doc)), "stride": stride}


def window_lengths(lengths: list[int], max_length: int, special: int, stride: int = 0) -> list[int]:
    """Tokens of each window `chunk` makes of texts of `lengths` tokens (each with `special` special tokens):
    arithmetic only, for planning without a tokenizer (`planning.plan`). A text that fits is one window."""
    room = max_length - special
    out = []
    for n in lengths:
        content = n - special
        if n <= max_length or room <= stride:
            out.append(min(n, max_length))
            continue
        out.append(max_length)
        start = room
        while start < content:
            out.append(min(content - start + stride, room) + special)
            start += room - stride
    return out
