"""GenHMR's conditioning: multi-scale deformable cross-attention (Zhu et al. 2020) over a feature pyramid.

Each body token is a query with a learnable reference point (x, y) in [0, 1]^2 of the image (one per token
position, shared by the layers). A layer predicts, from the query, K sampling offsets per head and level
around the reference point and one attention weight per (level, point), softmax-normalised over the
NL * K samples of a head; the values of the pyramid level are read at the sampled locations by bilinear
interpolation (``F.grid_sample``, zeros outside the map, ``align_corners=False``) and summed with those
weights. Offsets are in units of the level's cells (normalised by (W_l, H_l)), as in Deformable DETR; their
bias starts on a ring of directions (one per head) at 1, 2, ..., K cells, the weights start at zero.
GenHMR uses 1x, 4x and 8x maps of ViT-H and 4 layers (supplementary); both are config values.

Pure torch, no custom kernel. :func:`deformable_attention_reference` is the slow per-sample loop the
tests compare against.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mega.conditioning.base import Conditioning, FeedForward, spread_layers


def deformable_attention(values: list[Tensor], reference: Tensor, offsets: Tensor, weights: Tensor) -> Tensor:
    """Multi-scale deformable attention core (no projections).

    Args:
        values: NL maps (B, H * Dh, H_l, W_l) (heads major in the channel axis).
        reference: (B, L, 2) reference points (x, y) in [0, 1] (x along width).
        offsets: (B, L, H, NL, K, 2) offsets in cells of each level.
        weights: (B, L, H, NL, K) attention weights (softmax over NL * K per head).

    Returns:
        (B, L, H * Dh).
    """
    B, L, H, NL, K, _ = offsets.shape
    out = None
    for level, value in enumerate(values):
        h_l, w_l = value.shape[-2:]
        dh = value.shape[1] // H
        size = offsets.new_tensor([w_l, h_l])
        loc = reference[:, :, None, None, :] + offsets[:, :, :, level] / size  # (B, L, H, K, 2) in [0, 1]
        grid = (2 * loc - 1).permute(0, 2, 1, 3, 4).reshape(B * H, L, K, 2)
        sampled = F.grid_sample(
            value.reshape(B * H, dh, h_l, w_l),
            grid.to(value.dtype),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )  # fmt: skip  (B * H, Dh, L, K)
        w = weights[:, :, :, level].permute(0, 2, 1, 3).reshape(B * H, 1, L, K).to(sampled.dtype)
        term = (sampled * w).sum(-1)  # (B * H, Dh, L)
        out = term if out is None else out + term
    assert out is not None
    dh = out.shape[1]
    return out.view(B, H, dh, L).permute(0, 3, 1, 2).reshape(B, L, H * dh)


def deformable_attention_reference(
    values: list[Tensor], reference: Tensor, offsets: Tensor, weights: Tensor
) -> Tensor:
    """Slow loop version of :func:`deformable_attention` (explicit bilinear taps), for tests. Same shapes."""
    B, L, H, NL, K, _ = offsets.shape
    dh = values[0].shape[1] // H
    out = torch.zeros(B, L, H, dh, dtype=torch.float64)
    for b in range(B):
        for q in range(L):
            for h in range(H):
                for level, value in enumerate(values):
                    h_l, w_l = value.shape[-2:]
                    v = value[b, h * dh : (h + 1) * dh].double()  # (Dh, H_l, W_l)
                    for k in range(K):
                        x = float(reference[b, q, 0] + offsets[b, q, h, level, k, 0] / w_l) * w_l - 0.5
                        y = float(reference[b, q, 1] + offsets[b, q, h, level, k, 1] / h_l) * h_l - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(dh, dtype=torch.float64)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= xx < w_l and 0 <= yy < h_l:
                                    acc += wx * wy * v[:, yy, xx]
                        out[b, q, h] += float(weights[b, q, h, level, k]) * acc
    return out.reshape(B, L, H * dh)


class MultiScaleDeformableAttention(nn.Module):
    """Queries (B, L, D) + reference points + value maps -> (B, L, D).

    Args:
        dim: D (divisible by num_heads).
        num_levels: NL pyramid levels.
        num_heads: H.
        num_points: K sampling points per head and level.
    """

    def __init__(self, dim: int, num_levels: int, num_heads: int = 8, num_points: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_levels, self.num_heads, self.num_points = num_levels, num_heads, num_points
        self.value_proj = nn.Linear(dim, dim)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: a ring of directions, uniform attention, Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2 * math.pi / self.num_heads)
        ring = torch.stack([theta.cos(), theta.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True).values  # (H, 2)
        grid = ring[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def project_values(self, maps: list[Tensor]) -> list[Tensor]:
        """(B, D, H_l, W_l) maps -> value maps of the same shape (one linear map over channels)."""
        return [self.value_proj(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for m in maps]

    def forward(self, query: Tensor, reference: Tensor, maps: list[Tensor]) -> Tensor:
        """query (B, L, D), reference (B, L, 2) in [0, 1], maps NL x (B, D, H_l, W_l) -> (B, L, D)."""
        if len(maps) != self.num_levels:
            raise ValueError(f"deformable attention was built for {self.num_levels} levels, got {len(maps)}")
        B, L, _ = query.shape
        H, NL, K = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(B, L, H, NL, K, 2)
        weights = self.attention_weights(query).view(B, L, H, NL * K).softmax(-1).view(B, L, H, NL, K)
        out = deformable_attention(self.project_values(maps), reference, offsets.float(), weights.float())
        return self.output_proj(out.to(query.dtype))


class DeformableLayer(nn.Module):
    """x + MSDeformAttn(norm(x)), then a residual MLP; (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int, mlp_ratio: float,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiScaleDeformableAttention(dim, num_levels, num_heads, num_points)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, reference: Tensor, maps: list[Tensor]) -> Tensor:
        """x (B, L, D), reference (B, L, 2), maps NL x (B, D, H_l, W_l) -> (B, L, D)."""
        return self.ffn(x + self.drop(self.attn(self.norm(x), reference, maps)))


class DeformableConditioning(Conditioning):
    """GenHMR: deformable cross-attention layers from the body tokens to the backbone's pyramid.

    Args:
        decoder_dim / decoder_depth: of the decoder (given by the model).
        pyramid_dims: channel width of each pyramid level (given by the model).
        num_body_tokens: L, one learnable reference point per token position (given by the model).
        num_layers: deformable layers (GenHMR: 4), spread over the decoder blocks.
        num_heads: H.
        num_points: K sampling points per head and level.
        mlp_ratio / dropout: of each layer's MLP.
        **unused: other model-given sizes, ignored.
    """

    uses_pyramid = True

    def __init__(
        self,
        decoder_dim: int,
        decoder_depth: int,
        pyramid_dims: list[int],
        num_body_tokens: int,
        num_layers: int = 4,
        num_heads: int = 8,
        num_points: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        **unused: Any,
    ) -> None:
        super().__init__(decoder_dim, decoder_depth)
        if not pyramid_dims:
            raise ValueError(
                "deformable conditioning needs a feature pyramid, but the backbone has none: set "
                "backbone.pyramid_scales (e.g. [8, 4, 1] for GenHMR's 8x/4x/1x maps)"
            )
        levels = len(pyramid_dims)
        self.input_proj = nn.ModuleList(nn.Conv2d(c, decoder_dim, 1) for c in pyramid_dims)
        self.level_embed = nn.Parameter(torch.zeros(levels, decoder_dim))
        # Reference points: logits of (x, y); spread over the central part of the crop at first.
        gen = torch.Generator().manual_seed(0)
        self.reference_logits = nn.Parameter(
            torch.logit(0.2 + 0.6 * torch.rand(num_body_tokens, 2, generator=gen))
        )
        self.layers = nn.ModuleList(
            DeformableLayer(decoder_dim, levels, num_heads, num_points, mlp_ratio, dropout)
            for _ in range(num_layers)
        )
        self._slots = spread_layers(num_layers, decoder_depth)
        for conv in self.input_proj:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.level_embed, std=0.02)

    def prepare(self, features: Any) -> dict[str, Any]:
        """``{"maps": NL x (B, D, H_l, W_l)}``: each level projected to D plus its level embedding."""
        pyramid = list(features.pyramid)
        if len(pyramid) != len(self.input_proj):
            raise ValueError(
                f"deformable conditioning was built for {len(self.input_proj)} pyramid levels, got {len(pyramid)}"
            )
        maps = [
            proj(p) + emb[None, :, None, None]
            for proj, p, emb in zip(self.input_proj, pyramid, self.level_embed)
        ]
        return {"maps": maps}

    def reference_points(self, batch_size: int) -> Tensor:
        """(B, L, 2) reference points (x, y) in [0, 1]."""
        return self.reference_logits.sigmoid()[None].expand(batch_size, -1, -1)

    def layers_after(self, block: int) -> list[int]:
        return self._slots[block]

    def layer(self, index: int, x: Tensor, context: dict[str, Any]) -> Tensor:
        """Layer ``index``: x (B, L, D) -> (B, L, D)."""
        return self.layers[index](x, self.reference_points(x.shape[0]).to(x.dtype), context["maps"])
