"""ViTDet-style simple feature pyramid: one last feature map -> maps at several relative scales.

ViTDet (Li et al. 2022) builds a pyramid from the last map of a plain backbone alone: 2x up-sampling
with a stride-2 transposed convolution (twice for 4x, ...), 1x as is, 0.5x with a stride-2 max-pool,
then on every level a 1x1 projection + LayerNorm and a 3x3 convolution + LayerNorm to a common width.
GenHMR builds its deformable-attention maps this way from ViT-H at 1x, 4x and 8x; the set of scales is
a config value (``pyramid_scales``), each a power of two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _scale_exponent(scale: float) -> int:
    """log2(scale) as an int; a clear error for anything that is not a power of two."""
    if scale <= 0:
        raise ValueError(f"pyramid_scales: {scale} is not a positive power of two (e.g. 8, 4, 2, 1, 0.5)")
    k = math.log2(scale)
    if abs(k - round(k)) > 1e-9 or not -5 <= round(k) <= 5:
        raise ValueError(
            f"pyramid_scales: {scale} is not a power of two in [1/32, 32] (e.g. 8, 4, 2, 1, 0.5)"
        )
    return round(k)


class SimpleFeaturePyramid(nn.Module):
    """(B, C, h, w) -> [(B, D, h * s, w * s) for s in scales], sorted fine to coarse.

    Args:
        in_dim: C, channels of the backbone's last map.
        scales: relative scales (powers of two; > 1 up-samples). Duplicates are an error; the output is
            ordered from the largest scale (finest map) to the smallest. Empty -> no pyramid.
        out_dim: D, channels of every level.
    Down-sampled sizes are ceil(h / 2^k) (max-pool with ceil_mode), so odd maps keep their border.
    """

    def __init__(self, in_dim: int, scales: Sequence[float], out_dim: int) -> None:
        super().__init__()
        exps = [_scale_exponent(float(s)) for s in scales]
        if len(set(exps)) != len(exps):
            raise ValueError(f"pyramid_scales: {list(scales)} has duplicates")
        order = sorted(range(len(exps)), key=lambda i: -exps[i])
        self.scales = [float(2.0 ** exps[i]) for i in order]
        self.dims = [int(out_dim)] * len(order)
        self.levels = nn.ModuleList(self._level(in_dim, exps[i], out_dim) for i in order)

    @staticmethod
    def _level(in_dim: int, k: int, out_dim: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        ch = in_dim
        for i in range(max(k, 0)):  # k transposed convs, each doubling the size and halving channels
            nxt = max(ch // 2, 1)
            layers.append(nn.ConvTranspose2d(ch, nxt, kernel_size=2, stride=2))
            if i < k - 1:
                layers += [LayerNorm2d(nxt, eps=1e-6), nn.GELU()]
            ch = nxt
        if k < 0:
            layers.append(nn.MaxPool2d(kernel_size=2 ** (-k), stride=2 ** (-k), ceil_mode=True))
        layers += [
            nn.Conv2d(ch, out_dim, kernel_size=1, bias=False),
            LayerNorm2d(out_dim, eps=1e-6),
            nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_dim, eps=1e-6),
        ]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, h, w) -> list of (B, D, H_l, W_l), fine to coarse."""
        return [level(x) for level in self.levels]
