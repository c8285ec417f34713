"""Sparse matrices with a fixed pattern and (optionally learned) values: the mesh operators' arithmetic.

A mesh convolution, pooling or up-sampling is a linear map over vertices whose pattern (which vertex
reads which) is fixed by the hierarchy; only its values may be learned. Written as one sparse matrix
times the vertex-major activations ``(n, B * C)``, a whole batch costs one product, with no per-call
gather of a ``(B, n, K, C)`` intermediate. :class:`SparsePattern` holds the CSR index arrays of the
matrix and of its transpose (built once per hierarchy level); :func:`sparse_matmul` multiplies with
values given at call time and back-propagates to both the dense input and the values.

The CPU kernels (MKL) exist for float32/float64 only: :func:`sparse_matmul` computes in the values'
dtype and callers keep the values float32 (the mesh tokenizer runs outside autocast).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

# torch marks CSR tensors "beta" with a one-time warning; the products used here are stable since torch 2.0.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _crow(rows: Tensor, num_rows: int) -> Tensor:
    """CSR row pointers (num_rows + 1,) of sorted row indices (nnz,)."""
    counts = torch.bincount(rows, minlength=num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class SparsePattern:
    """The pattern of a ``(rows, cols)`` sparse matrix given as E entries that may repeat a position.

    Repeated positions are summed (:meth:`values`), so an entry list can be written naively (for
    example a neighbourhood padded with the vertex itself).

    Args:
        rows, cols: (E,) int64 positions of the entries.
        shape: (num_rows, num_cols).
        values: (E,) optional fixed entry values (then :attr:`fixed` holds the summed CSR values).
    Attributes:
        crow, col: CSR arrays of the matrix (nnz unique positions, sorted by row then column).
        slot: (E,) the CSR position of each entry.
        crow_t, col_t, perm: CSR arrays of the transpose, whose values are ``values[perm]``.
    """

    def __init__(self, rows: Tensor, cols: Tensor, shape: tuple[int, int], values: Tensor | None = None):
        self.shape = (int(shape[0]), int(shape[1]))
        rows, cols = rows.reshape(-1).long(), cols.reshape(-1).long()
        key = rows * self.shape[1] + cols
        unique, self.slot = torch.unique(key, sorted=True, return_inverse=True)
        r, c = unique // self.shape[1], unique % self.shape[1]
        self.crow, self.col = _crow(r, self.shape[0]), c
        self.perm = torch.argsort(c * self.shape[0] + r)
        self.crow_t, self.col_t = _crow(c[self.perm], self.shape[1]), r[self.perm]
        self.fixed = None if values is None else self.values(values.float())

    @property
    def nnz(self) -> int:
        return int(self.col.numel())

    def values(self, entries: Tensor) -> Tensor:
        """(E,) entry values -> (nnz,) CSR values (repeated positions summed; differentiable)."""
        return entries.new_zeros(self.nnz).index_add(0, self.slot, entries.reshape(-1))

    def to(self, device: torch.device | str) -> SparsePattern:
        """A copy on ``device``."""
        out = SparsePattern.__new__(SparsePattern)
        out.shape = self.shape
        for name in ("slot", "crow", "col", "perm", "crow_t", "col_t", "fixed"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value.to(device))
        return out

    def matrix(self, values: Tensor, transpose: bool = False) -> Tensor:
        """The sparse CSR matrix (or its transpose) with these (nnz,) values."""
        if transpose:
            return torch.sparse_csr_tensor(
                self.crow_t, self.col_t, values[self.perm], self.shape[::-1], check_invariants=False
            )
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, dense: Tensor, pattern: SparsePattern) -> Tensor:
        ctx.pattern = pattern
        ctx.save_for_backward(values, dense if ctx.needs_input_grad[0] else None)
        return pattern.matrix(values) @ dense

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, dense = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_values = grad_dense = None
        grad = grad.contiguous()
        if ctx.needs_input_grad[1]:
            grad_dense = pattern.matrix(values, transpose=True) @ grad
        if ctx.needs_input_grad[0]:  # d values[p] = <grad[row p], dense[col p]>: sampled dense-dense product
            grad_values = torch.sparse.sampled_addmm(
                pattern.matrix(torch.zeros_like(values)), grad, dense.T, beta=0.0
            ).values()
        return grad_values, grad_dense, None


def sparse_matmul(pattern: SparsePattern, values: Tensor, dense: Tensor) -> Tensor:
    """S @ dense for the matrix S of ``pattern`` with these CSR values.

    Args:
        pattern: the matrix's pattern, shape (R, N).
        values: (nnz,) CSR values (e.g. ``pattern.values(entries)`` or ``pattern.fixed``), float32.
        dense: (N, F), cast to the values' dtype.
    Returns:
        (R, F) in the values' dtype; differentiable in ``values`` and ``dense``.
    """
    return _SparseMatmul.apply(values, dense.to(values.dtype).contiguous(), pattern)
