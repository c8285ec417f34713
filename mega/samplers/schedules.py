"""Decoding schedules for iterative samplers (pure functions): tokens fixed per step, noise temperature.

Steps are numbered t = 1 .. T. After step t, n_t = floor(N (1 - gamma(t / T))) of a row's N initially
masked tokens are fixed (MEGA section 3.4 with gamma = cos(pi r / 2); the ratio functions are shared
with training, ``mega.transformer.masking``). The token-noise temperature at step t follows a named
schedule of the initial temperature A (MEGA supplementary B):
``linear`` A (1 - t/T) (MEGA's HMR stochastic mode), ``linear_pow6`` (A (1 - t/T))^6 (MEGA's random
generation, A = 1.2, T = 20), ``constant`` A. Like MEGA's code, t counts from 1, so the last step is
noise-free under ``linear`` and ``linear_pow6``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mega.transformer.masking import MASK_RATIO_SCHEDULES, mask_ratio

#: name -> f(A, r) with r = t / T in (0, 1].
TEMPERATURE_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "constant": lambda a, r: a,
    "linear": lambda a, r: a * (1.0 - r),
    "linear_pow6": lambda a, r: (a * (1.0 - r)) ** 6,
}


def check_schedule_names(mask_schedule: str, temperature_schedule: str) -> None:
    """Raise a clear ``KeyError`` for an unknown schedule name."""
    if mask_schedule not in MASK_RATIO_SCHEDULES:
        known = ", ".join(sorted(MASK_RATIO_SCHEDULES))
        raise KeyError(f"unknown mask schedule '{mask_schedule}'; known: {known}")
    if temperature_schedule not in TEMPERATURE_SCHEDULES:
        known = ", ".join(sorted(TEMPERATURE_SCHEDULES))
        raise KeyError(f"unknown temperature schedule '{temperature_schedule}'; known: {known}")


def temperature_at(schedule: str, initial: float, step: int, steps: int) -> float:
    """Token-noise temperature at step ``step`` of ``steps`` (1-based).

    Args:
        schedule: a key of ``TEMPERATURE_SCHEDULES``.
        initial: A, the initial temperature (>= 0).
        step: t in 1 .. T.
        steps: T.

    Returns:
        The temperature (>= 0); 0 means argmax.
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        known = ", ".join(sorted(TEMPERATURE_SCHEDULES))
        raise KeyError(f"unknown temperature schedule '{schedule}'; known: {known}")
    if not 1 <= step <= steps:
        raise ValueError(f"step must be in 1..{steps}, got {step}")
    if initial < 0:
        raise ValueError(f"temperature must be >= 0, got {initial}")
    return float(TEMPERATURE_SCHEDULES[schedule](initial, step / steps))


def fixed_counts(num_masked: Tensor, steps: int, schedule: str = "cosine") -> Tensor:
    """Per-row number of initially masked tokens that are fixed after each step.

    n_t = floor(N (1 - gamma(t / T))), raised to min(t, N) so that every step fixes at least one token
    while any is left (as MaskGIT clamps), and n_T = N exactly (no token is left masked, whatever the
    rounding of gamma(1)). Non-decreasing in t.

    Args:
        num_masked: (R,) int64 N per row (rows may differ: given tokens are not counted).
        steps: T >= 1.
        schedule: a key of ``MASK_RATIO_SCHEDULES``.

    Returns:
        (T, R) int64; row t - 1 holds n_t.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = num_masked.to(torch.float64).unsqueeze(0)  # (1, R)
    t = torch.arange(1, steps + 1, dtype=torch.float64, device=num_masked.device).unsqueeze(1)  # (T, 1)
    # The small epsilon keeps exact products such as 10 * 0.2 from flooring to 1.
    counts = torch.floor(n * (1.0 - mask_ratio(schedule, t / steps)) + 1e-9)  # (T, R)
    counts = torch.maximum(counts, torch.minimum(t, n)).clamp(max=n)
    counts[-1] = n
    return counts.long()
