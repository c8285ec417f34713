"""The masked-token objective: cross-entropy on masked positions only (MEGA section 3.3, GenHMR L_mask).

Visible positions carry the answer in the input, so they are excluded from the loss and from the
accuracy. The mean is over the masked tokens of the whole batch (a sample with many masked tokens weighs
more), not a mean of per-sample means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(logits: Tensor, targets: Tensor, mask: Tensor) -> None:
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            "expected logits (B, L, K), targets (B, L), mask (B, L); got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = masked), got {mask.dtype}")


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy over the masked tokens of the batch (pre-training and HMR training).

    Args:
        logits: (B, L, K) unnormalised scores (any float dtype; computed in float32).
        targets: (B, L) int64 true ids in [0, K).
        mask: (B, L) bool, True = masked (these positions are scored).
        reduction: ``mean`` over the masked tokens, or ``sum`` (callers that divide by a global count).

    Returns:
        () float32 loss; 0 (with a gradient path) when nothing is masked.
    """
    _check(logits, targets, mask)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not bool(mask.any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits[mask].float(), targets[mask], reduction=reduction)


@torch.no_grad()
def masked_token_stats(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Summed NLL, number of correct argmax predictions and number of masked tokens.

    Sums (not means) so that callers can accumulate over batches and ranks, then divide once.

    Args:
        logits: (B, L, K) scores.
        targets: (B, L) int64 true ids.
        mask: (B, L) bool, True = masked (scored).

    Returns:
        (nll_sum, correct, count): three () float64 tensors on the logits' device.
    """
    _check(logits, targets, mask)
    scored = logits[mask].float()  # (M, K)
    truth = targets[mask]  # (M,)
    nll = F.cross_entropy(scored, truth, reduction="sum") if truth.numel() else scored.sum()
    correct = (scored.argmax(-1) == truth).sum()
    return nll.double(), correct.double(), mask.sum().double()
