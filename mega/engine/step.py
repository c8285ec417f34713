"""One optimiser update of the training loop: ``grad_accum`` micro-batches under autocast, backward (DDP
gradient sync on the last micro-batch only), the non-finite check on every rank, clipping, the step.

:func:`mega.engine.loop.train` calls :func:`train_step` once per update; a NaN/inf loss term or gradient
norm on any rank stops the run there with :class:`NonFiniteLossError` (no update applied).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from mega.engine.batches import to_device
from mega.engine.dist import DistInfo, all_gather_object, all_reduce_max
from mega.engine.rng import RngStreams
from mega.errors import UserError

LossFn = Callable[[nn.Module, Any, RngStreams], "tuple[Tensor, Mapping[str, Tensor | float]]"]


class NonFiniteLossError(UserError, RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the update was not applied, nothing was saved."""

    collective = True  # raised on every rank with the same message


def _terms_as_tensors(
    loss: Tensor, terms: Mapping[str, Tensor | float], device: torch.device
) -> dict[str, Tensor]:
    out = {"loss": loss.detach().float()}
    for k, v in terms.items():
        out[k] = torch.as_tensor(
            v.detach() if isinstance(v, Tensor) else v, dtype=torch.float32, device=device
        )
    return out


def _nonfinite_message(metrics: Mapping[str, Tensor], grad_norm: Tensor, dist: DistInfo) -> str:
    """Which rank and which loss term went non-finite (the first one found on the lowest rank)."""
    local = None
    bad = [k for k, v in metrics.items() if not bool(torch.isfinite(v).all())]
    if bad:
        terms = [k for k in bad if k != "loss"] or ["loss"]
        local = (
            ", ".join(f"term '{k}' = {metrics[k].item()}" for k in terms)
            + f" (total loss = {metrics['loss'].item()})"
        )
    elif not bool(torch.isfinite(grad_norm)):
        local = f"gradient norm = {grad_norm.item()} with a finite loss ({metrics['loss'].item()})"
    reports = all_gather_object(local)
    rank = next(r for r, m in enumerate(reports) if m is not None)
    return f"rank {rank}: {reports[rank]}"


def train_step(
    ddp: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[Any],
    optimizer: torch.optim.Optimizer,
    rng: RngStreams,
    dist: DistInfo,
    dtype: torch.dtype | None,
    grad_accum: int = 1,
    grad_clip: float = 0.0,
    inject_nan: bool = False,
) -> tuple[dict[str, Tensor], str | None]:
    """One optimiser update over ``grad_accum`` micro-batches (``grad_accum``); the gradient is
    clipped to the global norm ``grad_clip`` (0: not clipped); ``inject_nan``: fault injection.

    Returns:
        (metrics, None) after a successful update, or (metrics, message) when a loss term or the
        gradient norm is non-finite on some rank; then no update was applied.
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, Tensor] = {}
    for micro in range(grad_accum):
        batch = to_device(next(batches), dist.device)
        last = micro == grad_accum - 1
        # DDP all-reduces gradients in backward; skip it on all but the last micro-step.
        sync = nullcontext() if (last or not dist.is_distributed) else ddp.no_sync()
        with sync:
            with torch.autocast(dist.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, terms = loss_fn(ddp, batch, rng)
            if inject_nan:  # fault injection: a NaN that flows through backward like a real one
                loss = loss * float("nan")
            (loss / grad_accum).backward()
        for k, v in _terms_as_tensors(loss, terms, dist.device).items():
            sums[k] = sums.get(k, 0.0) + v / grad_accum
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params]).to(dist.device)
    finite = torch.stack([torch.isfinite(v).all() for v in sums.values()] + [torch.isfinite(grad_norm)]).all()
    if all_reduce_max((~finite).float()).item() > 0:
        return sums, _nonfinite_message(sums, grad_norm, dist)
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, grad_norm)
    optimizer.step()
    sums["grad_norm"] = grad_norm
    return sums, None
