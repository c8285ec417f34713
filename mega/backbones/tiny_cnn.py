"""A tiny CNN for the CPU preset: stride-16 feature map, a few hundred thousand parameters.

Stem (3x3 conv, stride 2) then ``len(widths) - 1`` stages, each a stride-2 3x3 conv followed by
``depths[i]`` depthwise-separable residual blocks (3x3 depthwise + 1x1 pointwise, BatchNorm, ReLU).
With the defaults (widths 24/48/96/192, depths 1/2/2) a 128 px crop gives an 8 x 8 grid of 192-dim
tokens, like a patch-16 ViT's grid; measured figures are in the config and benchmarks/backbones.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from mega.backbones.base import Backbone


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableBlock(nn.Module):
    """x -> relu(x + BN(pw(relu(BN(dw(x)))))), (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.pw = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.act(self.bn1(self.dw(x)))
        return self.act(x + self.bn2(self.pw(y)))


class TinyCNN(Backbone):
    """CPU-preset backbone: (B, 3, S, S) -> tokens (B, (S/16)^2, widths[-1]) with the default 3 stages.

    Args:
        input_size: S, the square crop size (96-128 for the CPU preset).
        widths: stem width, then one width per stage; each stage halves the resolution.
        depths: separable residual blocks per stage (len(widths) - 1 entries).
        pyramid_scales / pyramid_dim: the simple feature pyramid (see mega/backbones/pyramid.py).
        weights: a local state dict of this backbone (mega's own layout), or None.
        freeze / trainable_blocks: see mega/backbones/base.py (blocks = the stages).
    """

    registry_name = "tiny_cnn"
    compilable = True

    def __init__(
        self,
        input_size: int = 128,
        widths: Sequence[int] = (24, 48, 96, 192),
        depths: Sequence[int] = (1, 2, 2),
        pyramid_scales: Sequence[float] = (2, 1, 0.5),
        pyramid_dim: int = 64,
        weights: str | os.PathLike | None = None,
        freeze: bool = False,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) < 2 or len(depths) != len(widths) - 1:
            raise ValueError(
                f"tiny_cnn: widths {widths} needs >= 2 entries (stem + stages) and depths {depths} one per "
                "stage (len(widths) - 1)"
            )
        self.stem = _conv_bn_relu(3, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(
                _conv_bn_relu(widths[i], widths[i + 1], 2), *[SeparableBlock(widths[i + 1]) for _ in range(d)]
            )
            for i, d in enumerate(depths)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():  # residual branches start near zero: each block starts as identity
            if isinstance(block, SeparableBlock):
                nn.init.zeros_(block.bn2.weight)
        side = int(input_size)
        for _ in range(len(widths)):
            side = (side + 1) // 2  # 3x3, stride 2, padding 1
        self._finish(
            dim=widths[-1],
            input_size=input_size,
            token_grid=(side, side),
            pyramid_scales=pyramid_scales,
            pyramid_dim=pyramid_dim,
            weights=weights,
            freeze=freeze,
            trainable_blocks=trainable_blocks,
        )

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, widths[-1], S / 2^len(widths), same)."""
        x = self.stem(img)
        for stage in self.stages:
            x = stage(x)
        return x

    def trunk_blocks(self) -> list[nn.Module]:
        """The stages (the stem trains only when everything does)."""
        return list(self.stages)
