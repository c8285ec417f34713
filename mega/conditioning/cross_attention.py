"""Cross-attention conditioning: decoder token states attend to the projected image tokens.

A standard transformer-decoder alternative to MEGA's prefix: after decoder blocks, a layer
``x + CrossAttn(norm(x), memory)`` then ``x + MLP(norm(x))`` lets the L body tokens read the image tokens
without the image tokens entering the self-attention sequence (cost L * N instead of (L + N)^2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mega.conditioning.base import (
    Conditioning,
    FeedForward,
    projected_image_tokens,
    spread_layers,
)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, L, D) to a memory (B, N, D) -> (B, L, D)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """x (B, L, D), memory (B, N, D) -> (B, L, D)."""
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.num_heads)
        k, v = rearrange(self.kv(memory), "b n (two h d) -> two b h n d", two=2, h=self.num_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), dropout_p=p)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class CrossAttentionLayer(nn.Module):
    """x + attn(norm(x), memory), then a residual MLP; (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """x (B, L, D), memory (B, N, D) -> (B, L, D)."""
        return self.ffn(x + self.attn(self.norm(x), memory))


class CrossAttentionConditioning(Conditioning):
    """Cross-attention layers after the decoder blocks, to the image tokens (B, 1 + N, C).

    Args:
        decoder_dim / decoder_depth / image_dim / num_image_tokens: given by the model.
        num_layers: cross-attention layers; None = one after every decoder block.
        num_heads: attention heads.
        mlp_ratio: MLP width / D in each layer.
        dropout: attention and MLP dropout.
        **unused: other model-given sizes, ignored.
    """

    uses_pyramid = False

    def __init__(
        self,
        decoder_dim: int,
        decoder_depth: int,
        image_dim: int,
        num_image_tokens: int,
        num_layers: int | None = None,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        **unused: Any,
    ) -> None:
        super().__init__(decoder_dim, decoder_depth)
        num_layers = decoder_depth if num_layers is None else int(num_layers)
        self.proj = nn.Linear(image_dim, decoder_dim)
        self.pos = nn.Parameter(torch.zeros(1, num_image_tokens + 1, decoder_dim))
        self.memory_norm = nn.LayerNorm(decoder_dim)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(decoder_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self._slots = spread_layers(num_layers, decoder_depth)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def prepare(self, features: Any) -> dict[str, Any]:
        """``{"memory": (B, 1 + N, D)}``."""
        return {
            "memory": self.memory_norm(
                projected_image_tokens(features, self.proj, self.pos, "cross-attention")
            )
        }

    def layers_after(self, block: int) -> list[int]:
        return self._slots[block]

    def layer(self, index: int, x: Tensor, context: dict[str, Any]) -> Tensor:
        """Layer ``index``: x (B, L, D) -> (B, L, D)."""
        return self.layers[index](x, context["memory"])
