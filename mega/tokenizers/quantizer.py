"""Vector quantiser with EMA codebook updates and dead-code reset (VQ-VAE, van den Oord et al. 2017).

The codebook is not trained by gradients: it follows an exponential moving average of the encoder
outputs assigned to each code (Razavi et al. 2019, with Laplace smoothing of the counts), and codes
left unused for ``dead_after`` steps are re-initialised from current encoder outputs (Williams et al.
2020), as GenHMR's pose tokenizer does ("exponential moving average and codebook reset"). MEGA's
Mesh-VQ-VAE updates its codebook by EMA only, with no reset: for the mesh tokenizer the reset is
ours (``dead_after=0`` turns it off). Under ``torch.distributed`` the
EMA statistics are all-reduced and resets are broadcast from rank 0, so every rank keeps the same
codebook; without an initialised process group these are no-ops.

Shapes: ``z (..., D)`` encoder outputs, ``ids (...)`` int64 in ``[0, K)``, codebook ``(K, D)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass
class QuantizerOutput:
    """What :meth:`VectorQuantizer.forward` returns.

    Attributes:
        z_q: (..., D) quantised vectors with straight-through gradients to ``z``.
        ids: (...) int64 code ids.
        commit_loss: scalar ``mean((z - sg[codes])^2)`` (unweighted).
        perplexity: scalar ``exp(entropy)`` of the code frequencies in this batch.
        batch_usage: scalar fraction of the K codes used in this batch.
        usage: scalar fraction of codes used at least once in the last ``usage_window`` training steps.
    """

    z_q: Tensor
    ids: Tensor
    commit_loss: Tensor
    perplexity: Tensor
    batch_usage: Tensor
    usage: Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def codebook_stats(ids: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Fraction of codes used and perplexity of a batch of ids.

    Args:
        ids: (...) int64 code ids in ``[0, K)``.
        codebook_size: K.
    Returns:
        ``(usage, perplexity)``: scalars; usage = #distinct ids / K, perplexity = exp(H(p)) where p is
        the empirical frequency of each code (K when uniform over all codes, 1 when one code).
    """
    counts = torch.bincount(ids.reshape(-1), minlength=codebook_size).float()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), torch.exp(entropy)


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with an EMA codebook.

    Args:
        codebook_size: K, number of codes.
        dim: D, code dimension.
        decay: EMA decay of the per-code counts and sums.
        eps: Laplace smoothing of the counts (avoids division by zero for empty codes).
        dead_after: a code not assigned for this many training steps is re-initialised from a
            random current encoder output (0 disables resets).
        usage_window: window, in training steps, of the reported ``usage``.
        seed: seed of the generator that picks initial and reset vectors (combined with the step).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_after: int = 100,
        usage_window: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if codebook_size < 2 or dim < 1:
            raise ValueError(f"codebook_size must be >= 2 and dim >= 1, got {codebook_size}, {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.eps = eps
        self.dead_after = dead_after
        self.usage_window = usage_window
        self.seed = seed
        self.register_buffer("codebook", torch.randn(codebook_size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())
        # Step of each code's last assignment (-1 never) and last (re-)initialisation.
        self.register_buffer("last_used", torch.full((codebook_size,), -1, dtype=torch.long))
        self.register_buffer("last_reset", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def load_codebook(self, codes: Tensor) -> None:
        """Set the codes (K, D) and restart their EMA statistics (counts 1); skips data-driven init."""
        if codes.shape != self.codebook.shape:
            raise ValueError(f"codebook must be {tuple(self.codebook.shape)}, got {tuple(codes.shape)}")
        self.codebook.copy_(codes)
        self.ema_sum.copy_(codes)
        self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    # ------------------------------------------------------------------ lookups
    def nearest(self, z: Tensor) -> Tensor:
        """Ids of the nearest codes (squared Euclidean distance, always computed in float32).

        Args:
            z: (..., D) vectors, any float dtype (bf16 under autocast is upcast).
        Returns:
            (...) int64 ids.
        """
        flat = z.detach().reshape(-1, self.dim)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            flat = flat.float()
            cb = self.codebook.float()
            # ||z||^2 is constant per row and does not change the argmin.
            dist2 = (cb * cb).sum(1)[None, :] - 2.0 * flat @ cb.t()
            ids = dist2.argmin(dim=1)
        return ids.reshape(z.shape[:-1])

    def lookup(self, ids: Tensor) -> Tensor:
        """Code vectors of ids: (...) int64 -> (..., D) float32."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must be in [0, {self.codebook_size}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        return F.embedding(ids, self.codebook)

    def soft_lookup(self, probs: Tensor) -> Tensor:
        """Expected code vector under a distribution over codes (differentiable in ``probs``).

        Args:
            probs: (..., K) non-negative weights summing to one (one-hot gives :meth:`lookup`).
        Returns:
            (..., D) float32.
        """
        if probs.shape[-1] != self.codebook_size:
            raise ValueError(
                f"probs last dim must be the codebook size {self.codebook_size}, got {tuple(probs.shape)}"
            )
        return probs.float() @ self.codebook

    # ------------------------------------------------------------------ forward
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantise ``z``; in training mode also update the codebook (EMA, resets).

        Args:
            z: (..., D) encoder outputs.
        Returns:
            :class:`QuantizerOutput`; ``z_q`` is float32, equal to the codes in value, with the
            gradient of the identity w.r.t. ``z`` (straight-through estimator).
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected (..., {self.dim}) vectors, got {tuple(z.shape)}")
        z = z.float()
        flat = z.detach().reshape(-1, self.dim)
        if self.training and not bool(self.initialised):
            self._init_codebook(flat)
        ids = self.nearest(z)
        if self.training:
            self._ema_update(flat, ids.reshape(-1))
        codes = F.embedding(ids, self.codebook)  # ids come from nearest(): no range check (no GPU sync)
        commit = F.mse_loss(z, codes.detach())
        z_q = z + (codes - z).detach()
        batch_usage, perplexity = codebook_stats(ids, self.codebook_size)
        return QuantizerOutput(z_q, ids, commit, perplexity, batch_usage, self.usage())

    def usage(self) -> Tensor:
        """Scalar fraction of codes assigned at least once in the last ``usage_window`` training steps."""
        # ``step`` counts completed steps: the window is steps [step - window, step - 1].
        recent = (self.last_used >= 0) & (self.last_used >= self.step - self.usage_window)
        return recent.float().mean()

    # ------------------------------------------------------------------ training-time updates
    def _generator(self) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + int(self.step))
        return g

    def _random_rows(self, flat: Tensor, n: int) -> Tensor:
        """``n`` rows of ``flat`` (N, D) drawn with replacement by this step's generator."""
        idx = torch.randint(0, flat.shape[0], (n,), generator=self._generator())
        return flat[idx.to(flat.device)]

    @torch.no_grad()
    def _init_codebook(self, flat: Tensor) -> None:
        """First training batch: codes = random encoder outputs (rank 0's, broadcast)."""
        codes = self._random_rows(flat, self.codebook_size)
        if _distributed():
            dist.broadcast(codes, src=0)
        self.load_codebook(codes)
        logger.debug("initialised a %d x %d codebook from encoder outputs", self.codebook_size, self.dim)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, ids: Tensor) -> None:
        """One EMA step from this (global) batch, then reset codes unused for ``dead_after`` steps."""
        counts = torch.bincount(ids, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.ema_sum).index_add_(0, ids, flat)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.last_used[counts > 0] = self.step
        if self.dead_after > 0:
            self._reset_dead(flat)
        self.step += 1

    @torch.no_grad()
    def _reset_dead(self, flat: Tensor) -> None:
        """Re-initialise codes idle for ``dead_after`` steps from random rows of ``flat`` (N, D).

        ``last_used``/``last_reset`` are identical on every rank (counts are all-reduced), so all
        ranks agree on which codes are dead; rank 0's replacement vectors are broadcast.
        """
        idle = self.step - torch.maximum(self.last_used, self.last_reset)
        dead = idle >= self.dead_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        new = self._random_rows(flat, n_dead)
        if _distributed():
            dist.broadcast(new, src=0)
        self.codebook[dead] = new
        self.ema_sum[dead] = new
        self.ema_count[dead] = 1.0
        self.last_reset[dead] = self.step
        logger.debug("step %d: reset %d dead codes", int(self.step), n_dead)
