"""Mask-ratio schedules and per-sample random masks for masked-token training (pure functions).

MEGA (supplementary B; summary "Mesh Tokenization and Self-Supervised Pre-Training") masks
M tokens of N with ratio cos(pi tau / 2), tau ~ U[0, 1). The paper writes M = floor(N cos(pi tau / 2)),
which never masks every token for tau > 0, so the all-masked input of the deterministic mode and of the
first decoding step would (almost) never be seen in training; MEGA's and GenHMR's code use
M = ceil(N gamma(tau)), and so do we (clamped to [1, N]). MEGA draws one tau per batch; we draw
one per sample, so a batch covers many ratios at once. The other ratio functions are those GenHMR
compares (supplementary, "Mask Scheduling Function"). Positions are chosen with the MAE argsort trick:
rank uniform noise and mask the M lowest ranks, which gives each sample its own count for free.

Every random draw comes from an explicit ``torch.Generator``; numbers are drawn on the generator's
device and moved to ``device``, so a CPU generator gives the same masks on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def _cosine(r: Tensor) -> Tensor:
    return torch.cos(0.5 * math.pi * r)


def _raised_cosine(r: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.cos(math.pi * r))


def _linear(r: Tensor) -> Tensor:
    return 1.0 - r


def _cubic(r: Tensor) -> Tensor:
    return 1.0 - r**3


def _sqrt(r: Tensor) -> Tensor:
    return torch.sqrt((1.0 - r**2).clamp_min(0.0))


def _full(r: Tensor) -> Tensor:
    return torch.ones_like(r)


#: gamma(r): fraction of tokens still masked at progress r in [0, 1]; gamma(0) = 1, decreasing.
#: ``cosine`` is MaskGIT/MEGA's cos(pi r / 2); ``raised_cosine`` is GenHMR's (1 + cos(pi r)) / 2;
#: ``linear``, ``cubic`` and ``sqrt`` are GenHMR's other choices; ``full`` masks everything
#: (MEGA's "full mask" training ablation).
MASK_RATIO_SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = {
    "cosine": _cosine,
    "raised_cosine": _raised_cosine,
    "linear": _linear,
    "cubic": _cubic,
    "sqrt": _sqrt,
    "full": _full,
}


def mask_ratio(schedule: str, progress: Tensor) -> Tensor:
    """Masked fraction gamma(progress) of a named schedule.

    Args:
        schedule: a key of ``MASK_RATIO_SCHEDULES``.
        progress: (...) float in [0, 1].

    Returns:
        (...) float in [0, 1], same shape and dtype as ``progress``.
    """
    if schedule not in MASK_RATIO_SCHEDULES:
        known = ", ".join(sorted(MASK_RATIO_SCHEDULES))
        raise KeyError(f"unknown mask-ratio schedule '{schedule}'; known: {known}")
    return MASK_RATIO_SCHEDULES[schedule](progress)


def _device_of(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def sample_mask_counts(
    batch_size: int,
    num_tokens: int,
    *,
    schedule: str = "cosine",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample training mask counts M = ceil(N gamma(tau)), tau ~ U[0, 1), clipped to [1, N].

    ceil (as in MEGA's and GenHMR's code, not the papers' floor) makes the all-masked input reachable:
    for the cosine schedule M = N whenever gamma(tau) > (N - 1) / N. At least one token is masked so that
    every sample contributes to the loss.

    Args:
        batch_size: B.
        num_tokens: N (= L, the sequence length).
        schedule: a key of ``MASK_RATIO_SCHEDULES``.
        generator: source of tau (one draw per sample).
        device: where the counts go (default: the generator's device).

    Returns:
        (B,) int64 counts in [1, N].
    """
    tau = torch.rand(batch_size, generator=generator, device=_device_of(generator, None), dtype=torch.float64)
    # The small epsilon keeps exact products such as 54 * 0.5 from rounding up to 28 (float error).
    counts = torch.ceil(num_tokens * mask_ratio(schedule, tau) - 1e-9).long().clamp(1, num_tokens)
    return counts.to(device if device is not None else counts.device)


def counts_for_ratio(ratio: float, batch_size: int, num_tokens: int) -> Tensor:
    """Fixed mask counts for evaluation at a given ratio: round(N * ratio), clipped to [1, N].

    Args:
        ratio: fraction of tokens to mask, in (0, 1].
        batch_size: B.
        num_tokens: N.

    Returns:
        (B,) int64 counts, all equal.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"mask ratio must be in (0, 1], got {ratio}")
    count = min(max(round(num_tokens * ratio), 1), num_tokens)
    return torch.full((batch_size,), count, dtype=torch.long)


def random_mask(
    counts: Tensor,
    num_tokens: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniformly random masks with exactly ``counts[b]`` masked positions in row b (argsort trick).

    Args:
        counts: (B,) int64 number of masked positions per sample, in [0, N].
        num_tokens: N.
        generator: source of the position noise.
        device: where the mask goes (default: ``counts.device``).

    Returns:
        (B, N) bool, True = masked; ``mask.sum(1) == counts``.
    """
    if counts.dim() != 1:
        raise ValueError(f"counts must have shape (B,), got {tuple(counts.shape)}")
    if bool((counts < 0).any()) or bool((counts > num_tokens).any()):
        raise ValueError(f"mask counts must lie in [0, {num_tokens}], got {counts.tolist()}")
    noise = torch.rand(counts.shape[0], num_tokens, generator=generator, device=_device_of(generator, None))
    ranks = noise.argsort(dim=1).argsort(dim=1)  # (B, N) rank of each position's noise
    target = device if device is not None else counts.device
    return ranks.to(target) < counts.to(target).unsqueeze(1)


def sample_training_mask(
    batch_size: int,
    num_tokens: int,
    *,
    schedule: str = "cosine",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A training mask: per-sample counts from ``schedule``, then random positions.

    Args:
        batch_size: B.
        num_tokens: N.
        schedule: a key of ``MASK_RATIO_SCHEDULES``.
        generator: source of both the ratios and the positions.
        device: where the mask goes.

    Returns:
        (B, N) bool, True = masked, at least one True per row.
    """
    counts = sample_mask_counts(batch_size, num_tokens, schedule=schedule, generator=generator)
    return random_mask(counts, num_tokens, generator=generator, device=device)


class GlobalBatchMasks:
    """Training masks drawn for the *global* batch from one generator shared by all ranks.

    The one masking of masked-token training: pre-training (``scripts/pretrain.py``) and HMR training
    (:class:`mega.losses.HMRObjective`). Each call draws (B * W, L) masks and rank r keeps rows r, r + W,
    ...: the rows of the global batch that a ``DistributedSampler`` gives it. The masks, and so a run, do
    not depend on how the global batch is split over W ranks. ``state_dict`` / ``load_state_dict`` make it
    checkpointable (engine ``extra_state``).

    Args:
        seed: generator seed (the same on every rank).
        schedule: a key of ``MASK_RATIO_SCHEDULES``.
        rank / world_size: this process's place in the process group.
    """

    def __init__(self, seed: int, schedule: str, rank: int = 0, world_size: int = 1) -> None:
        mask_ratio(schedule, torch.zeros(1))  # unknown names fail here, not at the first step
        self.schedule, self.rank, self.world_size = schedule, rank, world_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.draws = 0

    def __call__(self, batch_size: int, num_tokens: int, device: torch.device | str | None = None) -> Tensor:
        """This rank's (B, L) bool mask, True = masked (at least one per row)."""
        return self.draw(batch_size, num_tokens, device)[0]

    def draw(
        self, batch_size: int, num_tokens: int, device: torch.device | str | None = None
    ) -> tuple[Tensor, int]:
        """This rank's (B, L) bool mask and the number of masked tokens of the whole global batch."""
        self.draws += 1
        full = sample_training_mask(
            batch_size * self.world_size, num_tokens, schedule=self.schedule, generator=self.generator
        )
        return full[self.rank :: self.world_size].to(device if device is not None else "cpu"), int(full.sum())

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state(), "draws": torch.tensor(self.draws)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.draws = int(state["draws"])
