"""Mesh convolutions and pooling over a :class:`~mega.tokenizers.mesh_hierarchy.MeshHierarchy`.

Every vertex reads its K neighbours (self first, then in the hierarchy's angular order). Two
convolutions, x -> y with C_in -> C_out channels:

- ``spiral`` (:class:`SpiralConv`, SpiralNet++-style, Gong et al. 2019): one weight matrix shared by
  all vertices over the ordered neighbourhood, ``y_i = W^T [x_{n(i,1)}, ..., x_{n(i,K)}] + b``;
- ``vc`` (:class:`VertexConv`, the variable convolution of Zhou et al. 2020's fully convolutional mesh
  autoencoder, which Mesh-VQ-VAE uses): M kernels ``W_m`` shared by all vertices, mixed by each
  vertex's own learned coefficients ``A[i, k, m]``,
  ``y_i = sum_m W_m^T (sum_k A[i, k, m] x_{n(i, k)}) + b``.

Both are ``y = sum_m S_m X W_m + b`` with sparse vertex operators ``S_m`` (n x n; spiral: M = K and
``S_k`` picks neighbour k). Activations are **vertex-major**, (n, B, C), so each product is one sparse
matrix times (n, B * C) for the whole batch (:mod:`mega.tokenizers.mesh_sparse`): gather-first
``(S_m X) W_m`` when C_in < C_out, weight-first ``S_m (X W_m)`` otherwise, whichever moves fewer numbers.

Pooling is the hierarchy's area-weighted mean over a region; un-pooling its (barycentric-like)
inverse-distance mix; both are fixed sparse matrices. Neither mixes regions of the coarser level
except through ``up_neighbours``. Or, as Mesh-VQ-VAE, learned (``pool_widths`` / ``unpool_widths``):
each output vertex mixes up to W nearby input vertices with weights ``|w| / sum |w|``
(:meth:`LevelOps.learned_table`).

:class:`MeshEncoder` maps (B, V, 3) -> (B, N, D) and :class:`MeshDecoder` mirrors it, in one of two
layouts: ``residual`` (ours: a linear lift, residual blocks of two convolutions per level, a
per-latent-vertex linear map) or ``plain`` (Mesh-VQ-VAE's: one convolution + ELU per level, the
latent convolution included). Operator tables are passed in at call time (``ops``), so the modules own
weights only and their shapes depend on the level sizes and neighbourhood sizes alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mega.tokenizers.mesh_sparse import SparsePattern, sparse_matmul

LAYOUTS = ("residual", "plain")


class LevelOps:
    """One level's sparse operators, on the device of the tables it was built from.

    Args:
        neighbours: (n, K) int64 convolution neighbourhoods.
        assign: (n,) int64 region in the next level (None at the last level); area: (n,) vertex areas.
        up_index, up_weight: (n, P) up-sampling from the next level (None at the last level).
        n_next: vertices of the next level.
        positions, next_positions: (n, 3), (n_next, 3) template positions; next_neighbours: (n_next, K')
            (the learned pooling's tables are built from them).
    Attributes:
        pool_op: pattern (n_next, n) with fixed area-share values; unpool_op: pattern (n, n_next).
    """

    def __init__(self, neighbours, assign=None, area=None, up_index=None, up_weight=None, n_next=0,
                 positions=None, next_positions=None, next_neighbours=None):  # fmt: skip
        self.neighbours = neighbours
        self.n, self.k = neighbours.shape
        self.n_next = n_next
        self.assign, self.positions = assign, positions
        self.next_positions, self.next_neighbours = next_positions, next_neighbours
        self._conv: dict[tuple[str, int], tuple[SparsePattern, SparsePattern]] = {}
        self._learned: dict[tuple[str, int], tuple[Tensor, Tensor, SparsePattern]] = {}
        self.pool_op = self.unpool_op = None
        if assign is not None:
            w = area.float() + 1e-12
            mass = torch.zeros(n_next, device=w.device).index_add_(0, assign, w)
            share = w / mass[assign]
            self.pool_op = SparsePattern(
                assign, torch.arange(self.n, device=w.device), (n_next, self.n), share
            )
            rows = torch.arange(self.n, device=w.device)[:, None].expand_as(up_index)
            self.unpool_op = SparsePattern(rows, up_index, (self.n, n_next), up_weight)

    def conv_patterns(self, kind: str, m: int) -> tuple[SparsePattern, SparsePattern]:
        """Gather-first (M n, n) and weight-first (n, M n) patterns of a convolution with M kernels.

        ``vc``: entries in the order of the coefficients (n, K, M) flattened; ``spiral`` (M = K):
        entries (n, K), kernel k reads neighbour k, fixed values 1.
        """
        key = (kind, m)
        if key not in self._conv:
            n, nb = self.n, self.neighbours
            i = torch.arange(n, device=nb.device)[:, None]
            if kind == "spiral":
                mm = torch.arange(self.k, device=nb.device)[None, :].expand(n, -1)
                i, j, ones = i.expand(n, self.k), nb, torch.ones(n * self.k, device=nb.device)
            else:
                mm = torch.arange(m, device=nb.device)[None, None, :].expand(n, self.k, m)
                i, j, ones = i[:, :, None].expand_as(mm), nb[:, :, None].expand_as(mm), None
            self._conv[key] = (
                SparsePattern(mm * n + i, j, (m * n, n), ones),
                SparsePattern(i, mm * n + j, (n, m * n), ones),
            )
        return self._conv[key]

    def learned_table(self, kind: str, width: int) -> tuple[Tensor, Tensor, SparsePattern]:
        """Who a learned pooling reads: ``(index, valid, pattern)``, own region first, then nearest first.

        ``down``: (n_next, width) level vertices per coarse vertex, from its region's members and their
        convolution neighbours. ``up``: (n, width) coarse vertices per level vertex, from its own region
        and that region's neighbours. ``valid`` marks real entries (the rest pad a short list);
        ``pattern`` holds the valid entries in row-major order.
        """
        key = (kind, width)
        if key not in self._learned:
            a, nb = self.assign, self.neighbours
            if kind == "down":  # (coarse row, level column) pairs
                rows = torch.cat([a, a[:, None].expand_as(nb).reshape(-1)])
                cols = torch.cat([torch.arange(self.n, device=a.device), nb.reshape(-1)])
                own = a[cols] == rows
                dist = (self.positions[cols] - self.next_positions[rows]).norm(dim=1)
                num_rows, shape = self.n_next, (self.n_next, self.n)
            else:  # (level row, coarse column) pairs
                near = self.next_neighbours[a]  # (n, K')
                rows = torch.arange(self.n, device=a.device)[:, None].expand_as(near).reshape(-1)
                cols = near.reshape(-1)
                own = cols == a[rows]
                dist = (self.next_positions[cols] - self.positions[rows]).norm(dim=1)
                num_rows, shape = self.n, (self.n, self.n_next)
            pair = rows * shape[1] + cols
            order = torch.argsort(pair)
            first = torch.ones_like(order, dtype=torch.bool)
            first[1:] = pair[order][1:] != pair[order][:-1]
            keep = order[first]  # one entry per (row, column) pair
            rows, cols, own, dist = rows[keep], cols[keep], own[keep], dist[keep]
            order = torch.argsort(rows.double() * 1e6 + (~own).double() * 1e5 + dist.double().clamp_max(9e4))
            rows, cols = rows[order], cols[order]
            start = torch.searchsorted(rows, torch.arange(num_rows, device=rows.device))
            slot = torch.arange(len(rows), device=rows.device) - start[rows]
            take = slot < width
            index = torch.zeros(num_rows, width, dtype=torch.long, device=rows.device)
            valid = torch.zeros(num_rows, width, dtype=torch.bool, device=rows.device)
            index[rows[take], slot[take]] = cols[take]
            valid[rows[take], slot[take]] = True
            self._learned[key] = (index, valid, SparsePattern(rows[take], cols[take], shape))
        return self._learned[key]


def _learned_values(weight: Tensor, valid: Tensor) -> Tensor:
    """Mesh-VQ-VAE's pooling weights: |w| over each row's valid entries, normalised to sum 1 -> (valid entries,)."""
    w = weight.float().abs() * valid
    return (w / (w.sum(1, keepdim=True) + 1e-8))[valid]


def pool(x: Tensor, ops: LevelOps, weight: Tensor | None = None) -> Tensor:
    """(n, B, C) -> (n_next, B, C): area-weighted mean over each region, or with ``weight`` (n_next, W)
    the learned mix of :meth:`LevelOps.learned_table` ``down``."""
    n, b, c = x.shape
    op, values = ops.pool_op, ops.pool_op.fixed
    if weight is not None:
        _, valid, op = ops.learned_table("down", weight.shape[1])
        values = op.values(_learned_values(weight, valid))
    return sparse_matmul(op, values, x.reshape(n, b * c)).reshape(ops.n_next, b, c)


def unpool(x: Tensor, ops: LevelOps, weight: Tensor | None = None) -> Tensor:
    """(n_next, B, C) -> (n, B, C): inverse-distance mix of each vertex's region(s), or with ``weight``
    (n, W) the learned mix of :meth:`LevelOps.learned_table` ``up``."""
    _, b, c = x.shape
    op, values = ops.unpool_op, ops.unpool_op.fixed
    if weight is not None:
        _, valid, op = ops.learned_table("up", weight.shape[1])
        values = op.values(_learned_values(weight, valid))
    return sparse_matmul(op, values, x.reshape(ops.n_next, b * c)).reshape(ops.n, b, c)


def learned_pooling(sizes, widths, fine: bool) -> nn.ParameterList:
    """Mesh-VQ-VAE-style pooling weights, one (rows, width) table per pooling step, initialised to 1
    (a plain mean over each row's neighbourhood): rows = coarse vertices (``fine=False``, pooling) or
    level vertices (``fine=True``, un-pooling). ``widths``: one per step, or None (fixed pooling: empty)."""
    if widths is None:
        return nn.ParameterList()
    if len(widths) != len(sizes) - 1:
        raise ValueError(
            f"pooling widths need one value per pooling step ({len(sizes) - 1}), got {list(widths)}"
        )
    rows = sizes[:-1] if fine else sizes[1:]
    return nn.ParameterList(nn.Parameter(torch.ones(n, int(w))) for n, w in zip(rows, widths))


def _kernel_conv(
    x: Tensor, patterns, gather_values: Tensor, weight_values: Tensor, weight: Tensor, bias
) -> Tensor:
    """``sum_m S_m X W_m + b``: x (n, B, C_in), weight (M, C_in, C_out) -> (n, B, C_out), float32."""
    n, b, c_in = x.shape
    m, _, c_out = weight.shape
    gather_first, weight_first = patterns
    x = x.float()
    if c_in < c_out:  # (S_m X) W_m: the sparse product moves C_in channels
        t = sparse_matmul(gather_first, gather_values, x.reshape(n, b * c_in)).reshape(m, n * b, c_in)
        y = t.transpose(0, 1).reshape(n * b, m * c_in) @ weight.reshape(m * c_in, c_out)
    else:  # S_m (X W_m): the sparse product moves C_out channels
        u = x.reshape(n * b, c_in) @ weight.transpose(0, 1).reshape(
            c_in, m * c_out
        )  # one GEMM: (n B, M C_out)
        u = u.reshape(n * b, m, c_out).transpose(0, 1).reshape(m * n, b * c_out)  # kernel-major rows (m, j)
        y = sparse_matmul(weight_first, weight_values, u)
    return y.reshape(n, b, c_out) + bias


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

    def forward(self, x: Tensor, ops: LevelOps) -> Tensor:
        """(n, B, C_in) -> (n, B, C_out)."""
        m = self.coeff.shape[2]
        patterns = ops.conv_patterns("vc", m)
        entries = self.coeff.float().reshape(-1)
        c_in, c_out = self.weight.shape[0] // m, self.weight.shape[1]
        gather_values = patterns[0].values(entries) if c_in < c_out else None
        weight_values = None if c_in < c_out else patterns[1].values(entries)
        return _kernel_conv(x, patterns, gather_values, weight_values, self.weight.float().reshape(m, c_in, c_out),
                            self.bias.float())  # fmt: skip


class SpiralConv(nn.Module):
    """Shared weights over the ordered neighbourhood (see the module docstring).

    Args:
        num_neighbours: K; c_in, c_out: channels.
    """

    def __init__(self, num_neighbours: int, c_in: int, c_out: int):
        super().__init__()
        self.linear = nn.Linear(num_neighbours * c_in, c_out)

    def forward(self, x: Tensor, ops: LevelOps) -> Tensor:
        """(n, B, C_in) -> (n, B, C_out)."""
        k = ops.k
        patterns = ops.conv_patterns("spiral", k)
        weight = self.linear.weight.float().T.reshape(k, -1, self.linear.out_features)
        return _kernel_conv(
            x, patterns, patterns[0].fixed, patterns[1].fixed, weight, self.linear.bias.float()
        )


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

    def forward(self, x: Tensor, ops: LevelOps) -> Tensor:
        """(n, B, C_in) -> (n, B, C_out)."""
        h = self.conv1(F.elu(x), ops)
        return self.skip(x) + self.conv2(F.elu(h), ops)


def level_channels(num_levels: int, base_channels: int, hidden_dim: int) -> list[int]:
    """Channels at levels 0..L: ``base_channels`` doubling per level, capped at ``hidden_dim``."""
    return [min(base_channels * 2**level, hidden_dim) for level in range(num_levels + 1)]


def _per_level(num_neighbours, sizes) -> list[int]:
    """K per level from one int or a list (one value per level)."""
    ks = (
        [int(num_neighbours)] * len(sizes)
        if isinstance(num_neighbours, int)
        else [int(k) for k in num_neighbours]
    )
    if len(ks) != len(sizes):
        raise ValueError(
            f"num_neighbours needs one value per level ({len(sizes)}), got {list(num_neighbours)}"
        )
    return ks


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


class MeshEncoder(nn.Module):
    """(B, V, 3) normalised meshes -> (B, N, D) latents (N = sizes[-1]).

    Args:
        sizes: vertices per level [V, ..., N]; num_neighbours: K (int, or one per level); channels:
        per level (L+1 values); code_dim: D; blocks_per_level: conv blocks at each coarser level;
        full_res_blocks: at the mesh's own level (0: a per-vertex linear layer, then straight to
        pooling); num_basis: M (``vc`` only); conv: ``spiral`` or ``vc``; layout: ``residual`` or
        ``plain`` (one convolution + ELU per level, channels[l] out at level l < L, D at the latent
        level, ELU included as in Mesh-VQ-VAE's encoder; the block counts are not read); pool_widths:
        None (fixed pooling) or, per pooling step, how many level vertices a coarse vertex mixes (learned).
    """

    def __init__(self, sizes, num_neighbours, channels, code_dim, blocks_per_level=1, num_basis=9, conv="spiral",
                 full_res_blocks=1, layout="residual", pool_widths=None):  # fmt: skip
        super().__init__()
        _check_layout(layout)
        self.layout = layout
        self.pool_weights = learned_pooling(sizes, pool_widths, fine=False)
        ks = _per_level(num_neighbours, sizes)
        if layout == "plain":
            outs = list(channels[: len(sizes) - 1]) + [code_dim]
            ins = [3] + outs[:-1]
            self.convs = nn.ModuleList(make_conv(conv, n, k, a, b, num_basis)
                                       for n, k, a, b in zip(sizes, ks, ins, outs))  # fmt: skip
            return
        self.inp = nn.Linear(3, channels[0])
        self.levels = nn.ModuleList()
        c_in = channels[0]
        for level, n in enumerate(sizes):
            count = full_res_blocks if level == 0 else blocks_per_level
            blocks = []
            for _ in range(count):
                blocks.append(ConvBlock(n, ks[level], c_in, channels[level], num_basis, conv))
                c_in = channels[level]
            self.levels.append(nn.ModuleList(blocks))
        self.out = nn.Linear(c_in, code_dim)  # per latent vertex: no mixing between tokens

    def forward(self, x: Tensor, ops: list[LevelOps]) -> Tensor:
        """(B, V, 3) -> (B, N, D)."""
        h = x.transpose(0, 1)  # vertex-major (V, B, 3)
        if self.layout == "plain":
            for level, conv in enumerate(self.convs):
                if level > 0:
                    h = self._pool(h, ops, level - 1)
                h = F.elu(conv(h, ops[level]))
            return h.transpose(0, 1)
        h = self.inp(h)
        for level, blocks in enumerate(self.levels):
            if level > 0:
                h = self._pool(h, ops, level - 1)
            for block in blocks:
                h = block(h, ops[level])
        return self.out(F.elu(h)).transpose(0, 1)

    def _pool(self, h: Tensor, ops: list[LevelOps], level: int) -> Tensor:
        return pool(h, ops[level], self.pool_weights[level] if len(self.pool_weights) else None)


class MeshDecoder(nn.Module):
    """(B, N, D) code vectors -> (B, V, 3) normalised meshes; the mirror of :class:`MeshEncoder`.

    ``residual`` layout: ``latent_blocks`` conv blocks at the latent level (0: tokens are not mixed
    before the first up-sampling, which keeps each token's effect inside its region and its
    neighbours). A learned per-vertex embedding is added after the last up-sampling, so vertices of
    one region can differ even with ``full_res_blocks=0``; ``level_embed`` adds one after every
    up-sampling (without it, a region's vertices at a coarse level start from one copied feature and
    differ only near borders). ``plain`` layout (Mesh-VQ-VAE's): one convolution + ELU per level from
    the latent level up (D -> channels[L-1] -> ... -> channels[0]), the last one (level 0) to 3
    coordinates without ELU; the block counts and embeddings are not read. ``unpool_widths``: None
    (fixed un-pooling) or, per step, how many coarse vertices a vertex mixes (learned).
    """

    def __init__(
        self, sizes, num_neighbours, channels, code_dim, blocks_per_level=1, num_basis=9, latent_blocks=0,
        conv="spiral", full_res_blocks=1, level_embed=False, layout="residual", unpool_widths=None,
    ):  # fmt: skip
        super().__init__()
        _check_layout(layout)
        self.layout = layout
        self.unpool_weights = learned_pooling(sizes, unpool_widths, fine=True)
        ks = _per_level(num_neighbours, sizes)
        if layout == "plain":
            levels = range(len(sizes) - 1, -1, -1)
            outs = [channels[level - 1] if level else 3 for level in levels]
            ins = [code_dim] + outs[:-1]
            self.convs = nn.ModuleList(make_conv(conv, sizes[lv], ks[lv], a, b, num_basis)
                                       for lv, a, b in zip(levels, ins, outs))  # fmt: skip
            return
        self.inp = nn.Linear(code_dim, channels[-1])
        self.latent = nn.ModuleList(
            ConvBlock(sizes[-1], ks[-1], channels[-1], channels[-1], num_basis, conv)
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
                blocks.append(ConvBlock(sizes[level], ks[level], c_in, channels[level], num_basis, conv))
                c_in = channels[level]
            self.levels.append(nn.ModuleList(blocks))
        self.out = nn.Linear(c_in, 3)
        nn.init.zeros_(self.out.weight)  # an untrained decoder outputs the mean mesh
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, ops: list[LevelOps]) -> Tensor:
        """(B, N, D) -> (B, V, 3)."""
        h = z.transpose(0, 1)  # vertex-major (N, B, D)
        num_levels = len(ops) - 1
        if self.layout == "plain":
            for i, conv in enumerate(self.convs):
                level = num_levels - i
                if i > 0:
                    h = self._unpool(h, ops, level)
                h = conv(h, ops[level])
                h = F.elu(h) if level > 0 else h
            return h.transpose(0, 1)
        h = self.inp(h)
        for block in self.latent:
            h = block(h, ops[-1])
        for i, blocks in enumerate(self.levels):
            level = num_levels - 1 - i
            h = self._unpool(h, ops, level)
            if level == 0:
                h = h + self.vertex_embed.to(h.dtype)[:, None]
            elif len(self.level_embed):
                h = h + self.level_embed[i].to(h.dtype)[:, None]
            for block in blocks:
                h = block(h, ops[level])
        return self.out(F.elu(h)).transpose(0, 1)

    def _unpool(self, h: Tensor, ops: list[LevelOps], level: int) -> Tensor:
        return unpool(h, ops[level], self.unpool_weights[level] if len(self.unpool_weights) else None)
