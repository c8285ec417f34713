"""Mesh convolutions and pooling over a :class:`~mega.tokenizers.mesh_hierarchy.MeshHierarchy`.

Every vertex gathers its K neighbours (self first, then in the hierarchy's angular order). Two
convolutions, x (B, n, C_in) -> y (B, n, C_out):

- ``spiral`` (:class:`SpiralConv`, SpiralNet++-style, Gong et al. 2019): one weight matrix shared by
  all vertices over the ordered neighbourhood, ``y_i = W^T [x_{n(i,1)}, ..., x_{n(i,K)}] + b``: one
  large matrix product, the fast choice on CPUs;
- ``vc`` (:class:`VertexConv`, the variable convolution of Zhou et al. 2020's fully convolutional mesh
  autoencoder, which Mesh-VQ-VAE uses): M kernels ``W_m`` shared by all vertices, mixed by each
  vertex's own learned coefficients ``A[i, k, m]``,
  ``y_i = sum_m W_m^T (sum_k A[i, k, m] x_{n(i, k)}) + b`` (many small products: slow on CPUs).

Pooling is the hierarchy's area-weighted mean over a region; un-pooling its (barycentric-like)
inverse-distance mix. Neither mixes regions of the coarser level except through ``up_neighbours``.

:class:`MeshEncoder` runs conv blocks at every level and pools down to the N latent vertices, then
maps each one, alone, to a D-dimensional latent: (B, V, 3) -> (B, N, D). :class:`MeshDecoder`
mirrors it: (B, N, D) -> (B, V, 3). Operator tables are passed in at call time (``ops``), so the
modules own weights only and their shapes depend on the level sizes alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LevelOps:
    """One level's operator tables, on the right device.

    Attributes:
        neighbours: (n, K) int64; assign: (n,) int64 region in the next level (None at the last);
        pool_weight: (n,) float32 area share of each vertex within its region;
        up_index, up_weight: (n, P) up-sampling from the next level (None at the last).
    """

    def __init__(self, neighbours, assign=None, area=None, up_index=None, up_weight=None, n_next=0):
        self.neighbours = neighbours
        self.assign, self.up_index, self.up_weight, self.n_next = assign, up_index, up_weight, n_next
        self.pool_weight = None
        if assign is not None:
            w = area.float() + 1e-12
            mass = torch.zeros(n_next, device=w.device).index_add_(0, assign, w)
            self.pool_weight = w / mass[assign]


def pool(x: Tensor, ops: LevelOps) -> Tensor:
    """Area-weighted mean over each region: (B, n, C) -> (B, n_next, C)."""
    out = x.new_zeros(x.shape[0], ops.n_next, x.shape[2])
    return out.index_add_(1, ops.assign, x * ops.pool_weight[None, :, None].to(x.dtype))


def unpool(x: Tensor, ops: LevelOps) -> Tensor:
    """Inverse-distance mix of each vertex's region(s): (B, n_next, C) -> (B, n, C)."""
    gathered = x.index_select(1, ops.up_index.reshape(-1)).reshape(
        x.shape[0], *ops.up_index.shape, x.shape[2]
    )
    return (gathered * ops.up_weight[None, :, :, None].to(x.dtype)).sum(2)


class VertexConv(nn.Module):
    """Zhou et al.'s variable mesh convolution (see the module docstring).

    Args:
        num_vertices: n, vertices of the level; num_neighbours: K; c_in, c_out: channels;
        num_basis: M, shared kernels (Mesh-VQ-VAE: 9).
    """

    def __init__(self, num_vertices: int, num_neighbours: int, c_in: int, c_out: int, num_basis: int = 9):
        super().__init__()
        self.coeff = nn.Parameter(
            torch.randn(num_vertices, num_neighbours, num_basis) / math.sqrt(num_neighbours)
        )
        self.weight = nn.Parameter(torch.empty(num_basis * c_in, c_out))
        nn.init.kaiming_uniform_(self.weight.T, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: Tensor, neighbours: Tensor) -> Tensor:
        """(B, n, C_in), neighbours (n, K) -> (B, n, C_out)."""
        g = x.index_select(1, neighbours.reshape(-1)).reshape(x.shape[0], *neighbours.shape, x.shape[2])
        mixed = torch.einsum("bnkc,nkm->bnmc", g, self.coeff.to(x.dtype))
        return mixed.flatten(2) @ self.weight.to(x.dtype) + self.bias.to(x.dtype)


class SpiralConv(nn.Module):
    """Shared weights over the ordered neighbourhood (see the module docstring).

    Args:
        num_neighbours: K; c_in, c_out: channels.
    """

    def __init__(self, num_neighbours: int, c_in: int, c_out: int):
        super().__init__()
        self.linear = nn.Linear(num_neighbours * c_in, c_out)

    def forward(self, x: Tensor, neighbours: Tensor) -> Tensor:
        """(B, n, C_in), neighbours (n, K) -> (B, n, C_out)."""
        b, n, c = x.shape
        return self.linear(x.index_select(1, neighbours.reshape(-1)).reshape(b, n, -1))


CONVS = ("spiral", "vc")


def make_conv(conv: str, n: int, k: int, c_in: int, c_out: int, num_basis: int) -> nn.Module:
    """A ``spiral`` or ``vc`` convolution for a level of n vertices."""
    if conv == "spiral":
        return SpiralConv(k, c_in, c_out)
    if conv == "vc":
        return VertexConv(n, k, c_in, c_out, num_basis)
    raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")


class ConvBlock(nn.Module):
    """Residual block at one level: x + conv(elu(conv(elu(x)))), with a linear skip if channels change."""

    def __init__(self, n: int, k: int, c_in: int, c_out: int, num_basis: int, conv: str = "spiral"):
        super().__init__()
        self.conv1 = make_conv(conv, n, k, c_in, c_out, num_basis)
        self.conv2 = make_conv(conv, n, k, c_out, c_out, num_basis)
        self.skip = nn.Linear(c_in, c_out, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, neighbours: Tensor) -> Tensor:
        """(B, n, C_in) -> (B, n, C_out)."""
        h = self.conv1(F.elu(x), neighbours)
        return self.skip(x) + self.conv2(F.elu(h), neighbours)


def level_channels(num_levels: int, base_channels: int, hidden_dim: int) -> list[int]:
    """Channels at levels 0..L: ``base_channels`` doubling per level, capped at ``hidden_dim``."""
    return [min(base_channels * 2**level, hidden_dim) for level in range(num_levels + 1)]


class MeshEncoder(nn.Module):
    """(B, V, 3) normalised meshes -> (B, N, D) latents (N = sizes[-1]).

    Args:
        sizes: vertices per level [V, ..., N]; num_neighbours: K; channels: per level (L+1 values);
        code_dim: D; blocks_per_level: conv blocks at each coarser level; full_res_blocks: at the
        mesh's own level (0: a per-vertex linear layer, then straight to pooling); num_basis: M
        (``vc`` only); conv: ``spiral`` or ``vc``.
    """

    def __init__(self, sizes, num_neighbours, channels, code_dim, blocks_per_level=1, num_basis=9, conv="spiral",
                 full_res_blocks=1):  # fmt: skip
        super().__init__()
        self.inp = nn.Linear(3, channels[0])
        self.levels = nn.ModuleList()
        c_in = channels[0]
        for level, n in enumerate(sizes):
            count = full_res_blocks if level == 0 else blocks_per_level
            blocks = []
            for _ in range(count):
                blocks.append(ConvBlock(n, num_neighbours, c_in, channels[level], num_basis, conv))
                c_in = channels[level]
            self.levels.append(nn.ModuleList(blocks))
        self.out = nn.Linear(c_in, code_dim)  # per latent vertex: no mixing between tokens

    def forward(self, x: Tensor, ops: list[LevelOps]) -> Tensor:
        """(B, V, 3) -> (B, N, D)."""
        h = self.inp(x)
        for level, blocks in enumerate(self.levels):
            if level > 0:
                h = pool(h, ops[level - 1])
            for block in blocks:
                h = block(h, ops[level].neighbours)
        return self.out(F.elu(h))


class MeshDecoder(nn.Module):
    """(B, N, D) code vectors -> (B, V, 3) normalised meshes; the mirror of :class:`MeshEncoder`.

    ``latent_blocks`` conv blocks at the latent level (0: tokens are not mixed before the first
    up-sampling, which keeps each token's effect inside its region and its neighbours). A learned
    per-vertex embedding is added after the last up-sampling, so vertices of one region can differ
    even with ``full_res_blocks=0``; ``level_embed`` adds one after every up-sampling (without it, a
    region's vertices at a coarse level start from one copied feature and differ only near borders).
    """

    def __init__(
        self, sizes, num_neighbours, channels, code_dim, blocks_per_level=1, num_basis=9, latent_blocks=0,
        conv="spiral", full_res_blocks=1, level_embed=False,
    ):  # fmt: skip
        super().__init__()
        self.inp = nn.Linear(code_dim, channels[-1])
        self.latent = nn.ModuleList(
            ConvBlock(sizes[-1], num_neighbours, channels[-1], channels[-1], num_basis, conv)
            for _ in range(latent_blocks)
        )
        self.levels = nn.ModuleList()  # levels L-1 .. 0
        self.level_embed = nn.ParameterList()  # levels L-1 .. 1 (with level_embed)
        c_in = channels[-1]
        for level in range(len(sizes) - 2, -1, -1):
            count = full_res_blocks if level == 0 else blocks_per_level
            if level == 0:
                self.vertex_embed = nn.Parameter(torch.zeros(sizes[0], c_in))
            elif level_embed:
                self.level_embed.append(nn.Parameter(torch.randn(sizes[level], c_in) * 0.1))
            blocks = []
            for _ in range(count):
                blocks.append(ConvBlock(sizes[level], num_neighbours, c_in, channels[level], num_basis, conv))
                c_in = channels[level]
            self.levels.append(nn.ModuleList(blocks))
        self.out = nn.Linear(c_in, 3)
        nn.init.zeros_(self.out.weight)  # an untrained decoder outputs the mean mesh
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, ops: list[LevelOps]) -> Tensor:
        """(B, N, D) -> (B, V, 3)."""
        h = self.inp(z)
        for block in self.latent:
            h = block(h, ops[-1].neighbours)
        num_levels = len(ops) - 1
        for i, blocks in enumerate(self.levels):
            level = num_levels - 1 - i
            h = unpool(h, ops[level])
            if level == 0:
                h = h + self.vertex_embed.to(h.dtype)
            elif len(self.level_embed):
                h = h + self.level_embed[i].to(h.dtype)
            for block in blocks:
                h = block(h, ops[level].neighbours)
        return self.out(F.elu(h))
