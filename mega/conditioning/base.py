"""The conditioning contract: how the decoder's token queries see the image.

A conditioning module turns a :class:`mega.backbones.BackboneOutput` into a *context* once per image
(:meth:`Conditioning.prepare`), then takes part in the masked transformer's decoder in two places:

- :meth:`Conditioning.prefix`: tokens prepended to the decoder sequence, seen through self-attention
  (MEGA's prefix); ``None`` for none;
- :meth:`Conditioning.layer`: a layer run on the L token states after decoder block ``i`` (cross-attention,
  deformable cross-attention); the identity for none.

The context is an opaque object for the transformer; a sampler that runs Q samples per image repeats it
with :meth:`Conditioning.repeat_context`. Shapes: B batch, L body tokens, D decoder width, N image tokens,
C backbone width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Conditioning(nn.Module):
    """Base class. Subclasses set ``uses_pyramid`` and implement ``prepare`` and ``prefix`` or ``layer``.

    Args:
        decoder_dim: D, the width of the decoder it plugs into.
        decoder_depth: number of decoder blocks (layers are placed after them).
    """

    uses_pyramid: bool = False

    def __init__(self, decoder_dim: int, decoder_depth: int) -> None:
        super().__init__()
        self.decoder_dim = int(decoder_dim)
        self.decoder_depth = int(decoder_depth)

    def prepare(self, features: Any) -> dict[str, Any]:
        """Per-image context from backbone features (tokens (B, N, C), pooled (B, C), pyramid)."""
        raise NotImplementedError

    def prefix(self, context: dict[str, Any]) -> Tensor | None:
        """(B, N', D) tokens to prepend to the decoder sequence, or None."""
        return None

    def layers_after(self, block: int) -> list[int]:
        """Indices of this module's layers to run after decoder block ``block`` (0-based)."""
        return []

    def layer(self, index: int, x: Tensor, context: dict[str, Any]) -> Tensor:
        """Run conditioning layer ``index`` on token states x (B, L, D) -> (B, L, D)."""
        return x

    @staticmethod
    def repeat_context(context: dict[str, Any], repeats: int) -> dict[str, Any]:
        """The context of each image repeated ``repeats`` times along the batch (row b * Q + q)."""

        def rep(v: Any) -> Any:
            if isinstance(v, Tensor):
                return v.repeat_interleave(repeats, dim=0)
            if isinstance(v, list):
                return [rep(u) for u in v]
            return v

        return {k: rep(v) for k, v in context.items()}


def spread_layers(num_layers: int, depth: int) -> list[list[int]]:
    """Which conditioning layers follow each of ``depth`` decoder blocks.

    Layers are spread evenly, the last one after the last block; when there are more layers than blocks,
    the extra ones all follow the last block.

    Returns:
        ``depth`` lists of layer indices (ascending, each index exactly once).
    """
    if depth < 1:
        raise ValueError(f"decoder depth must be >= 1, got {depth}")
    slots: list[list[int]] = [[] for _ in range(depth)]
    for j in range(num_layers):
        if num_layers <= depth:
            block = -(-(j + 1) * depth // num_layers) - 1  # ceil((j + 1) depth / n) - 1
        else:
            block = min(j, depth - 1)
        slots[block].append(j)
    return slots


class FeedForward(nn.Module):
    """Pre-norm residual MLP: x + W2 gelu(W1 norm(x)); (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        return x + self.net(self.norm(x))


def image_tokens(features: Any) -> Tensor:
    """(B, 1 + N, C): the pooled vector followed by the N spatial tokens."""
    return torch.cat([features.pooled[:, None], features.tokens], dim=1)


def projected_image_tokens(features: Any, proj: nn.Module, pos: Tensor, name: str) -> Tensor:
    """Image tokens projected to the decoder width plus their position embedding: (B, 1 + N, D).

    Args:
        features: backbone output (tokens (B, N, C), pooled (B, C)).
        proj: (C -> D) projection; pos: (1, 1 + N, D) learned positions.
        name: the conditioning's name, for the error when the token count does not match.
    """
    tokens = image_tokens(features)
    if tokens.shape[1] != pos.shape[1]:
        raise ValueError(
            f"{name} conditioning was built for {pos.shape[1] - 1} image tokens, got {tokens.shape[1] - 1}: "
            "the backbone's input size or grid changed"
        )
    return proj(tokens) + pos
