"""Plain ViT in the ViTPose / HMR2 layout (``vit_h16``, ``vit_b16``, ``vit_s16``, ``vit_tiny``).

The layout, so HMR2's and ViTPose's checkpoints load as they are (module names == their keys):

- ``patch_embed.proj``: Conv2d(3, C, kernel 16, stride 16, **padding 2**): ViTPose's patch embedding
  (padding = 4 + 2 * (ratio // 2 - 1) with ratio 1), so a 256 x 192 input still gives 16 x 12 patches;
- ``pos_embed`` (1, 1 + h * w, C): the first slot is a class-token slot that is never a token: it is
  *added to every patch* (ViTPose: ``x + pos_embed[:, 1:] + pos_embed[:, :1]``);
- ``blocks.<i>``: pre-norm blocks ``norm1``, ``attn.qkv`` (bias), ``attn.proj``, ``norm2``,
  ``mlp.fc1``, ``mlp.fc2`` (GELU), LayerNorm eps 1e-6, stochastic depth rising linearly to
  ``drop_path_rate``;
- ``last_norm``: LayerNorm after the last block.

Input: the square (B, 3, S, S) crop of the data pipeline; with ``crop_width`` set (192 for S = 256) the
backbone keeps the middle ``crop_width`` columns first (HMR2 feeds ``x[:, :, :, 32:-32]``), so the
ViT sees 256 x 192 and returns a 16 x 12 grid of tokens.

Checkpoints (``weights: PATH``): an HMR2 / 4D-Humans ``.ckpt`` state dict, a ViTPose / mmpose pose
model, or a bare ViTPose backbone. Keys under ``backbone.`` are taken (heads such as ``smpl_head.*``
or ``keypoint_head.*`` are other parts of those models and are skipped); the rest must match exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mega.backbones.base import Backbone
from mega.backbones.weights import take_prefix


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability p (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...)."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"vit: width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C); scaled dot-product attention over all N tokens."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block, (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _grid(size: int, patch: int, pad: int) -> int:
    return (size + 2 * pad - patch) // patch + 1


class ViT(Backbone):
    """ViTPose-layout ViT: (B, 3, S, S) -> tokens (B, h * w, width), h x w = 16 x 12 for 256 / 192.

    Args:
        input_size: S, side of the square crop from the data pipeline.
        crop_width: keep the middle ``crop_width`` columns before the ViT (HMR2: 192 of 256); None: all.
        patch_size, patch_padding: the patch embedding conv (ViTPose: 16 and 2).
        width, depth, num_heads, mlp_ratio, qkv_bias: the transformer (ViT-H: 1280, 32, 16, 4, True).
        drop_path_rate: stochastic depth of the last block (linear from 0; HMR2's ViT-H: 0.55).
        grad_checkpointing: recompute blocks in the backward pass (less memory, ~30 % slower).
        pyramid_scales / pyramid_dim: the simple feature pyramid (mega/backbones/pyramid.py).
        weights, freeze, trainable_blocks: see mega/backbones/base.py (blocks = transformer blocks).
    """

    registry_name = "vit_h16"

    def __init__(
        self,
        input_size: int = 256,
        crop_width: int | None = 192,
        patch_size: int = 16,
        patch_padding: int = 2,
        width: int = 1280,
        depth: int = 32,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.55,
        grad_checkpointing: bool = False,
        pyramid_scales: Sequence[float] = (8, 4, 1),
        pyramid_dim: int = 256,
        weights: str | os.PathLike | None = None,
        freeze: bool = False,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        s = int(input_size)
        if crop_width is not None and not 0 < int(crop_width) <= s:
            raise ValueError(f"vit: crop_width {crop_width} must be in 1..input_size ({s}) or null")
        self.crop_width = None if crop_width is None or int(crop_width) == s else int(crop_width)
        w_in = self.crop_width or s
        grid = (_grid(s, patch_size, patch_padding), _grid(w_in, patch_size, patch_padding))
        if min(grid) < 1:
            raise ValueError(f"vit: input {s} x {w_in} is smaller than one patch ({patch_size})")
        self.grad_checkpointing = bool(grad_checkpointing)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch_size, stride=patch_size, padding=patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], width))
        rates = torch.linspace(0, float(drop_path_rate), depth).tolist() if depth else []
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, qkv_bias, r) for r in rates)
        self.last_norm = nn.LayerNorm(width, eps=1e-6)
        self._init_weights()
        self._finish(
            dim=width,
            input_size=s,
            token_grid=grid,
            pyramid_scales=pyramid_scales,
            pyramid_dim=pyramid_dim,
            weights=weights,
            freeze=freeze,
            trainable_blocks=trainable_blocks,
        )

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, width, h, w) after the last norm."""
        if self.crop_width is not None:
            left = (img.shape[-1] - self.crop_width) // 2
            img = img[..., left : left + self.crop_width]
        x = self.patch_embed.proj(img)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, c, h, w)

    def trunk_blocks(self) -> list[nn.Module]:
        """The transformer blocks (patch embedding and position embedding train only with all of them)."""
        return list(self.blocks)

    def trunk_tail(self) -> list[nn.Module]:
        """The final LayerNorm."""
        return [self.last_norm]

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """HMR2 / ViTPose (``backbone.*`` next to heads) or a bare ViTPose backbone -> our keys (same names)."""
        state, _dropped = take_prefix(state, "backbone.")
        return state


class ViTB16(ViT):
    """ViTPose-B layout: width 768, 12 blocks, 12 heads, drop path 0.3; other args as :class:`ViT`."""

    registry_name = "vit_b16"

    def __init__(self, **kwargs) -> None:
        defaults = dict(width=768, depth=12, num_heads=12, drop_path_rate=0.3, pyramid_scales=(4, 2, 1, 0.5))
        super().__init__(**{**defaults, **kwargs})


class ViTS16(ViT):
    """ViTPose-S layout: width 384, 12 blocks, 12 heads, drop path 0.1; other args as :class:`ViT`."""

    registry_name = "vit_s16"

    def __init__(self, **kwargs) -> None:
        defaults = dict(width=384, depth=12, num_heads=12, drop_path_rate=0.1, pyramid_scales=(4, 2, 1, 0.5))
        super().__init__(**{**defaults, **kwargs})


class ViTTiny(ViT):
    """A test-sized ViT in the same layout: 64 px crop (middle 48 columns), width 64, 2 blocks, 2 heads."""

    registry_name = "vit_tiny"

    def __init__(self, **kwargs) -> None:
        defaults = dict(
            input_size=64,
            crop_width=48,
            width=64,
            depth=2,
            num_heads=2,
            drop_path_rate=0.0,
            pyramid_scales=(4, 2, 1, 0.5),
            pyramid_dim=32,
        )
        super().__init__(**{**defaults, **kwargs})
