"""MEGA's deterministic mode: every unknown token masked, one pass, argmax (MEGA section 3.4).

Also holds what every sampler shares: the ``SamplerResult`` it returns, the ``LogitsFn`` it calls, and
the set-up of the B * Q rows (initial ids and masks repeated per sample). With every token masked the
masked transformer skips its encoder, so this mode runs the decoder alone.

Row order: sample q of batch element b is row b * Q + q of every ``logits_fn`` call, so a conditioned
``logits_fn`` repeats its context with ``context.repeat_interleave(Q, dim=0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

#: ids (R, L) int64 with masked positions holding K, mask (R, L) bool True = masked -> logits (R, L, K).
LogitsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SamplerResult:
    """What a sampler returns.

    Attributes:
        ids: (B, Q, L) int64 code ids in [0, K); no position is left masked.
        confidence: (B, Q, L) float32 log-probability of each id when it was chosen; 0 for given tokens.
        history: (B, Q, T, L) int64 ids after each step, -1 where still masked; None unless asked for.
    """

    ids: Tensor
    confidence: Tensor
    history: Tensor | None = None


def initial_rows(
    *,
    batch_size: int,
    num_tokens: int,
    codebook_size: int,
    num_samples: int,
    init_ids: Tensor | None = None,
    init_mask: Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """The B * Q starting rows: given tokens kept, the rest masked and holding the mask id K.

    Args:
        batch_size: B.
        num_tokens: L.
        codebook_size: K (also the placeholder id of masked positions).
        num_samples: Q samples per batch element.
        init_ids: (B, L) int64 given ids (read where ``init_mask`` is False), or None.
        init_mask: (B, L) bool, True = to generate; None = generate everything.
        device: where the rows go when no initial tensor fixes it.

    Returns:
        ids (B * Q, L) int64 and mask (B * Q, L) bool, sample-major within each batch element.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    for name, tensor in (("init_ids", init_ids), ("init_mask", init_mask)):
        if tensor is not None and tuple(tensor.shape) != (batch_size, num_tokens):
            raise ValueError(
                f"{name} must have shape ({batch_size}, {num_tokens}), got {tuple(tensor.shape)}"
            )
    if init_mask is not None and init_mask.dtype != torch.bool:
        raise TypeError(f"init_mask must be bool (True = to generate), got {init_mask.dtype}")
    known = next((t.device for t in (init_mask, init_ids) if t is not None), None)
    device = known if known is not None else torch.device(device if device is not None else "cpu")
    if init_mask is None:
        init_mask = torch.ones(batch_size, num_tokens, dtype=torch.bool, device=device)
    if init_ids is None:
        if not bool(init_mask.all()):
            raise ValueError("init_mask leaves tokens given but init_ids is None; pass the given ids")
        init_ids = torch.zeros(batch_size, num_tokens, dtype=torch.long, device=device)
    if bool((((init_ids < 0) | (init_ids >= codebook_size)) & ~init_mask).any()):
        raise ValueError(f"given ids (where init_mask is False) must lie in [0, {codebook_size})")
    ids = init_ids.long().masked_fill(init_mask, codebook_size)
    return repeat(ids, "b l -> (b q) l", q=num_samples), repeat(init_mask, "b l -> (b q) l", q=num_samples)


def checked_logits(logits_fn: LogitsFn, ids: Tensor, mask: Tensor, codebook_size: int) -> Tensor:
    """Call ``logits_fn`` and return float32 log-probabilities after checking the shape.

    Args:
        logits_fn: the model, as a callable.
        ids: (R, L) int64 ids; masked positions hold K.
        mask: (R, L) bool, True = masked.
        codebook_size: K; ``logits_fn`` must return exactly K classes (no [MASK] class).

    Returns:
        (R, L, K) float32 log-softmax of the logits.
    """
    logits = logits_fn(ids, mask)
    if tuple(logits.shape) != (*ids.shape, codebook_size):
        raise ValueError(
            f"logits_fn returned shape {tuple(logits.shape)}, expected {(*ids.shape, codebook_size)}"
        )
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def sample_deterministic(
    logits_fn: LogitsFn,
    *,
    batch_size: int,
    num_tokens: int,
    codebook_size: int,
    num_samples: int = 1,
    init_ids: Tensor | None = None,
    init_mask: Tensor | None = None,
    device: torch.device | str | None = None,
) -> SamplerResult:
    """One pass over the masked input; each masked position takes its argmax code.

    The pass runs on B rows only; the Q samples are identical copies of its result.

    Args:
        logits_fn: ids (B, L), mask (B, L) -> logits (B, L, K).
        batch_size: B.
        num_tokens: L.
        codebook_size: K.
        num_samples: Q (copies in the output).
        init_ids: (B, L) given ids or None.
        init_mask: (B, L) bool, True = to predict; None = predict everything (the encoder is skipped).
        device: where the rows go when no initial tensor fixes it.

    Returns:
        ``SamplerResult`` with ids and confidence of shape (B, Q, L).
    """
    ids, mask = initial_rows(
        batch_size=batch_size,
        num_tokens=num_tokens,
        codebook_size=codebook_size,
        num_samples=1,
        init_ids=init_ids,
        init_mask=init_mask,
        device=device,
    )
    logp = checked_logits(logits_fn, ids, mask, codebook_size)  # (B, L, K)
    best, best_id = logp.max(dim=-1)  # (B, L)
    ids = torch.where(mask, best_id, ids)
    confidence = torch.where(mask, best, torch.zeros_like(best))
    ids, confidence = (repeat(t, "b l -> b q l", q=num_samples).contiguous() for t in (ids, confidence))
    return SamplerResult(ids=ids, confidence=confidence)


class DeterministicSampler:
    """Registry entry ``deterministic``: ``sample_deterministic`` with no knobs of its own."""

    steps = 1  #: network passes per decoding (every sampler states its T)
    draws_at_random = False  #: Q samples are Q copies (every sampler says whether its samples can differ)

    def __call__(
        self,
        logits_fn: LogitsFn,
        *,
        batch_size: int,
        num_tokens: int,
        codebook_size: int,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        init_ids: Tensor | None = None,
        init_mask: Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> SamplerResult:
        """See ``sample_deterministic``; ``generator`` is accepted for a uniform interface and unused."""
        del generator
        return sample_deterministic(
            logits_fn,
            batch_size=batch_size,
            num_tokens=num_tokens,
            codebook_size=codebook_size,
            num_samples=num_samples,
            init_ids=init_ids,
            init_mask=init_mask,
            device=device,
        )


def split_rows(rows: Tensor, num_samples: int) -> Tensor:
    """(B * Q, ...) -> (B, Q, ...), the inverse of the row layout of ``initial_rows``."""
    return rearrange(rows, "(b q) ... -> b q ...", q=num_samples)
