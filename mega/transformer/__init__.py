"""The masked token transformer (network), its masking schedules and its masked-token objective.

ids (B, L) + mask (B, L) [+ context (B, N, C)] -> logits (B, L, K); see ``masked_transformer.py``.
"""

from __future__ import annotations

from mega.transformer.losses import masked_cross_entropy, masked_token_stats
from mega.transformer.masked_transformer import MaskedTokenTransformer
from mega.transformer.masking import (
    MASK_RATIO_SCHEDULES,
    GlobalBatchMasks,
    counts_for_ratio,
    mask_ratio,
    random_mask,
    sample_mask_counts,
    sample_training_mask,
)

__all__ = [
    "MASK_RATIO_SCHEDULES",
    "GlobalBatchMasks",
    "MaskedTokenTransformer",
    "counts_for_ratio",
    "mask_ratio",
    "masked_cross_entropy",
    "masked_token_stats",
    "random_mask",
    "sample_mask_counts",
    "sample_training_mask",
]
