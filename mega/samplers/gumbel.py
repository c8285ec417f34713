"""Gumbel noise: the one place it is drawn (MaskGIT's Gumbel-max draws and confidence noise, GenHMR's
straight-through Gumbel-softmax in training), and GenHMR's temperature annealing.

Every draw comes from an explicit ``torch.Generator``, on the generator's device, then moves to the
target device, so a CPU generator gives the same noise on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gumbel_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Standard Gumbel samples -log(-log U), drawn on the generator's device, returned on ``device``.

    Args:
        shape: output shape.
        generator: source of U; None = the global RNG of ``device``.
        device: where the noise goes.

    Returns:
        float32 tensor of ``shape``.
    """
    source = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=source).clamp_(1e-20, 1.0 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def gumbel_softmax_st(
    logits: Tensor, tau: float, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Straight-through Gumbel-softmax: one-hot of argmax((l + g) / tau) forward, softmax gradient backward.

    Args:
        logits: (..., K).
        tau: temperature > 0.
        noise: (..., K) Gumbel(0, 1) noise, or None to draw it from ``generator``.

    Returns:
        (..., K) float32 one-hot values whose gradient is that of softmax((logits + g) / tau).
    """
    if tau <= 0:
        raise ValueError(f"Gumbel-softmax temperature must be > 0, got {tau}")
    if noise is None:
        noise = gumbel_noise(tuple(logits.shape), generator, logits.device)
    soft = ((logits.float() + noise) / tau).softmax(-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def gumbel_temperature(
    step: int, total_steps: int, start: float = 1.0, end: float = 0.01, fraction: float = 0.5
) -> float:
    """GenHMR's cosine annealing (supplementary eq. 5) over the first ``fraction`` of training, then ``end``.

    tau_t = end + (start - end) (1 + cos(pi t / T)) / 2 with T = fraction * total_steps.
    """
    horizon = max(1.0, fraction * total_steps)
    if step >= horizon:
        return float(end)
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / horizon)))
