"""MaskGIT iterative decoding over a ``logits_fn`` (Chang et al. 2022; MEGA section 3.4, supplementary B).

Each of T steps predicts every still-masked position, draws a code per position by Gumbel-max at the
step's temperature, scores each draw by its log-probability, and fixes the n_t most confident positions
of each row (``schedules.fixed_counts``); fixed and given tokens are never changed again. The last step
fixes everything, so no position is left masked or holding a placeholder (MEGA's code leaves one
position forced to code 0 by clamping the re-mask count to at least one; we do not). Deviations from
MEGA's code: confidence is a log-probability, not a raw logit; counts are per row, not taken from row 0.

All B * Q rows go through ``logits_fn`` together (row b * Q + q is sample q of element b).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from mega.samplers.deterministic import LogitsFn, SamplerResult, checked_logits, initial_rows, split_rows
from mega.samplers.gumbel import gumbel_noise
from mega.samplers.schedules import check_schedule_names, fixed_counts, temperature_at

logger = logging.getLogger(__name__)


@torch.no_grad()
def sample_maskgit(
    logits_fn: LogitsFn,
    *,
    batch_size: int,
    num_tokens: int,
    codebook_size: int,
    steps: int = 20,
    mask_schedule: str = "cosine",
    temperature_schedule: str = "linear_pow6",
    temperature: float = 1.2,
    confidence_noise: float = 0.0,
    top_k: int | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    init_ids: Tensor | None = None,
    init_mask: Tensor | None = None,
    device: torch.device | str | None = None,
    return_history: bool = False,
) -> SamplerResult:
    """Generate Q token sequences per batch element by iterative confident-first decoding.

    Defaults are MEGA's random generation (T = 20, cosine, (A (1 - t/T))^6 with A = 1.2); MEGA's HMR
    stochastic mode is ``temperature_schedule="linear"`` with T = 5, A = 1 (HRNet) or T = 2, A = 10
    (ResNet-50).

    Args:
        logits_fn: ids (B*Q, L) int64 (masked positions hold K), mask (B*Q, L) bool -> logits (B*Q, L, K).
        batch_size: B.
        num_tokens: L.
        codebook_size: K; codes are drawn from the K logits only, so the mask id K is never produced.
        steps: T >= 1.
        mask_schedule: ratio function gamma (``mega.transformer.masking.MASK_RATIO_SCHEDULES``).
        temperature_schedule: ``constant``, ``linear`` or ``linear_pow6`` (see ``schedules``).
        temperature: A >= 0; 0 gives greedy (argmax) decoding.
        confidence_noise: c >= 0. MaskGIT (and MEGA's code, with c = 1) rank positions by
            confidence + c * temperature_t * Gumbel noise, which randomises which positions are fixed
            first; 0 (default) ranks by log-probability alone.
        top_k: draw each code from the k most likely ones only (renormalised; GenHMR's top-k
            sampling); None = all K. ``top_k=1`` is greedy whatever the temperature.
        num_samples: Q.
        generator: the only source of randomness; seeded runs repeat exactly.
        init_ids: (B, L) int64 given ids, kept unchanged where ``init_mask`` is False.
        init_mask: (B, L) bool, True = to generate; rows may differ (each gets its own counts).
        device: where rows go when no initial tensor fixes it (default: the generator's device).
        return_history: also return the ids after every step.

    Returns:
        ``SamplerResult``: ids (B, Q, L) in [0, K), confidence (B, Q, L), history (B, Q, T, L) or None.
    """
    check_schedule_names(mask_schedule, temperature_schedule)
    if confidence_noise < 0:
        raise ValueError(f"confidence_noise must be >= 0, got {confidence_noise}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if device is None and generator is not None:
        device = generator.device
    ids, mask = initial_rows(
        batch_size=batch_size,
        num_tokens=num_tokens,
        codebook_size=codebook_size,
        num_samples=num_samples,
        init_ids=init_ids,
        init_mask=init_mask,
        device=device,
    )
    rows, dev = ids.shape[0], ids.device
    targets = fixed_counts(mask.sum(1), steps, mask_schedule) + (~mask).sum(1)  # (T, R) fixed after t
    confidence = torch.zeros(rows, num_tokens, device=dev)
    history = []
    for step in range(1, steps + 1):
        if not bool(mask.any()):  # every row already complete (e.g. nothing was masked)
            history.append(ids.clone())
            continue
        logp = checked_logits(logits_fn, ids, mask, codebook_size)  # (R, L, K)
        draw_from = logp
        if top_k is not None and top_k < codebook_size:  # restrict the draw, not the confidence
            kth = logp.topk(top_k, dim=-1).values[..., -1:]  # (R, L, 1)
            draw_from = logp.masked_fill(logp < kth, -math.inf)
        temp = temperature_at(temperature_schedule, temperature, step, steps)
        if top_k == 1:
            temp = 0.0
        scores = (
            draw_from if temp == 0 else draw_from + temp * gumbel_noise(tuple(logp.shape), generator, dev)
        )
        drawn = scores.argmax(dim=-1)  # (R, L) Gumbel-max draw at temperature temp
        drawn_logp = logp.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)  # (R, L) the model's log-probability
        rank_by = drawn_logp
        if confidence_noise > 0 and temp > 0:
            rank_by = drawn_logp + confidence_noise * temp * gumbel_noise((rows, num_tokens), generator, dev)
        # Fixed and given positions rank first (+inf), so only masked ones compete for the free slots.
        rank_by = rank_by.masked_fill(~mask, math.inf)
        rank = rank_by.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (R, L), 0 = best
        newly_fixed = mask & (rank < targets[step - 1].unsqueeze(1))
        ids = torch.where(newly_fixed, drawn, ids)
        confidence = torch.where(newly_fixed, drawn_logp, confidence)
        mask = mask & ~newly_fixed
        history.append(ids.masked_fill(mask, -1))
    if bool(mask.any()) or bool((ids >= codebook_size).any()):
        raise RuntimeError("internal error: a position is still masked after the last step")
    result = SamplerResult(ids=split_rows(ids, num_samples), confidence=split_rows(confidence, num_samples))
    if return_history:
        result.history = split_rows(torch.stack(history, dim=1), num_samples)  # (B, Q, T, L)
    return result


class MaskGITSampler:
    """Registry entry ``maskgit`` (presets ``maskgit_generation``, ``stochastic``, ``stochastic_resnet``): ``sample_maskgit`` with its knobs bound.

    Args:
        steps: T.
        mask_schedule: ratio function name.
        temperature_schedule: temperature schedule name.
        temperature: A.
        confidence_noise: c (see ``sample_maskgit``).
        top_k: draw from the k most likely codes only (None = all).
    """

    def __init__(
        self,
        steps: int = 20,
        mask_schedule: str = "cosine",
        temperature_schedule: str = "linear_pow6",
        temperature: float = 1.2,
        confidence_noise: float = 0.0,
        top_k: int | None = None,
    ) -> None:
        check_schedule_names(mask_schedule, temperature_schedule)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        self.mask_schedule = mask_schedule
        self.temperature_schedule = temperature_schedule
        self.temperature = temperature
        self.confidence_noise = confidence_noise
        self.top_k = top_k

    @property
    def draws_at_random(self) -> bool:
        """Whether Q samples can differ: a temperature > 0 and not top-1 (top-1 decodes greedily, with no
        confidence noise either). GenHMR's UGS is top-1: its Q samples are Q copies of one answer."""
        return self.temperature > 0 and self.top_k != 1

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
        return_history: bool = False,
    ) -> SamplerResult:
        """Run ``sample_maskgit`` with this sampler's knobs; arguments as there."""
        return sample_maskgit(
            logits_fn,
            batch_size=batch_size,
            num_tokens=num_tokens,
            codebook_size=codebook_size,
            steps=self.steps,
            mask_schedule=self.mask_schedule,
            temperature_schedule=self.temperature_schedule,
            temperature=self.temperature,
            confidence_noise=self.confidence_noise,
            top_k=self.top_k,
            num_samples=num_samples,
            generator=generator,
            init_ids=init_ids,
            init_mask=init_mask,
            device=device,
            return_history=return_history,
        )
