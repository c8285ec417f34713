"""MEGA's masked token transformer: an MAE-style encoder-decoder over body-token ids.

Follows MEGA (section 3.3 and supplementary B; the MAE layout of He et al.): the encoder sees only the
visible tokens, the decoder sees every position (a learned [MASK] embedding where masked) and returns
logits over the K codes. Image conditioning comes from a ``mega.conditioning`` module passed to
``forward`` with its prepared context (prefix tokens in the decoder sequence, and/or layers after decoder
blocks); the built-in ``context_dim`` projection is the older, equivalent form of the prefix. With every token masked (MEGA's deterministic mode)
the encoder is skipped when no gradient is needed (inference); in training it still runs on one padding
slot whose output is discarded, so every parameter takes part in the graph (zero gradient) and DDP's
gradient reduction, which waits for every parameter, does not fail on a fully masked batch. This module is only the network: masking, the objective and decoding
live in ``masking.py``, ``losses.py`` and ``mega/samplers``.

Shapes: B batch, L tokens, K codebook size, V visible tokens (max over the batch), N context tokens,
D model width.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

logger = logging.getLogger(__name__)


#: Which positions of a (B, S, D) sequence a block computes: None = all S; an int n = the last n (the
#: body tokens after a prefix); a (B, n) int64 tensor = those positions of each row.
Queries = int | Tensor | None


def select_queries(x: Tensor, queries: int | Tensor) -> Tensor:
    """(B, S, D) -> (B, n, D): the last ``queries`` positions (a view), or the rows' given positions."""
    if isinstance(queries, int):
        return x[:, -queries:]
    return x.gather(1, queries.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        queries: Queries = None,
        projected: Tensor | None = None,
    ) -> Tensor:
        """Args: x (B, S, D); attn_mask (B, 1, 1, S) bool, True = key may be attended; queries: which
        positions ask (keys and values still come from all S; see :func:`select_queries`); projected:
        (B, P, 3D) ``qkv`` of the first P positions computed beforehand, x then holding the other S - P
        (queries must be None). Returns (B, S, D), or (B, n, D) for n queries."""
        if queries is None:
            qkv = self.qkv(x)
            if projected is not None:
                qkv = torch.cat([projected, qkv], dim=1)  # (B, S, 3D)
            q, k, v = rearrange(qkv, "b s (three h d) -> three b h s d", three=3, h=self.num_heads)
        else:  # the q rows of the fused weight are its first D (the layout above)
            dim = x.shape[-1]
            w, b = self.qkv.weight, self.qkv.bias
            q = rearrange(
                F.linear(select_queries(x, queries), w[:dim], b[:dim]),
                "b s (h d) -> b h s d",
                h=self.num_heads,
            )
            k, v = rearrange(
                F.linear(x, w[dim:], b[dim:]), "b s (two h d) -> two b h s d", two=2, h=self.num_heads
            )
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, S, D/H)
        return self.proj(rearrange(out, "b h s d -> b s (h d)"))

    def forward_packed(self, x: Tensor, rows: Tensor, shape: tuple[int, int], attn_mask: Tensor) -> Tensor:
        """The same on the T real tokens of a padded batch: only attention sees the padded layout.

        Args: x (T, D) the tokens; rows (T,) their flat positions in the (B, S) batch; shape (B, S);
        attn_mask (B, 1, 1, S) bool, False on padding. Returns (T, D).
        """
        batch, seq = shape
        qkv = self.qkv(x)  # (T, 3D): the projections run on real tokens only
        padded = qkv.new_zeros(batch * seq, qkv.shape[-1]).index_copy(0, rows, qkv).view(batch, seq, -1)
        q, k, v = rearrange(padded, "b s (three h d) -> three b h s d", three=3, h=self.num_heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, S, D/H)
        return self.proj(rearrange(out, "b h s d -> (b s) (h d)")[rows])


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        queries: Queries = None,
        projected: Tensor | None = None,
    ) -> Tensor:
        """Args: x (B, S, D); attn_mask (B, 1, 1, S) bool or None; queries: compute only these positions'
        outputs (they still attend to all S; see :func:`select_queries`); projected: :meth:`project` of
        x's first P positions, computed beforehand (a prefix that does not change between calls).
        Returns (B, S, D) or (B, n, D)."""
        if projected is not None:
            x = x + self.attn(self.norm1(x[:, projected.shape[1] :]), attn_mask, None, projected)
        else:
            keep = x if queries is None else select_queries(x, queries)
            x = keep + self.attn(self.norm1(x), attn_mask, queries)
        return x + self.mlp(self.norm2(x))

    def project(self, x: Tensor) -> Tensor:
        """(B, P, D) -> (B, P, 3D): the attention's query / key / value projections of these states."""
        return self.attn.qkv(self.norm1(x))

    def forward_packed(self, x: Tensor, rows: Tensor, shape: tuple[int, int], attn_mask: Tensor) -> Tensor:
        """:meth:`forward` on the T real tokens (T, D) of a padded (B, S) batch (see ``Attention.forward_packed``)."""
        x = x + self.attn.forward_packed(self.norm1(x), rows, shape, attn_mask)
        return x + self.mlp(self.norm2(x))


class MaskedTokenTransformer(nn.Module):
    """Encoder-decoder masked transformer: ids (B, L) + mask (B, L) [+ context] -> logits (B, L, K).

    Args:
        num_tokens: L, the token sequence length (read from the tokenizer: ``tokenizer.num_tokens``).
        codebook_size: K, the number of codes (``tokenizer.codebook_size``).
        dim: encoder width D (MEGA: 1024).
        encoder_depth: encoder blocks (MEGA: 12).
        decoder_depth: decoder blocks (MEGA: 4).
        decoder_dim: decoder width; ``None`` = ``dim`` (MEGA uses one width).
        num_heads: attention heads in both stacks (MEGA: 4).
        mlp_ratio: MLP hidden width / model width.
        dropout: dropout in attention and MLP.
        context_dim: width of the conditioning tokens the decoder accepts; ``None`` = unconditional
            (pre-training). Context is linearly projected to ``decoder_dim`` and prepended.
    """

    def __init__(
        self,
        num_tokens: int,
        codebook_size: int,
        dim: int = 1024,
        encoder_depth: int = 12,
        decoder_depth: int = 4,
        decoder_dim: int | None = None,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        decoder_dim = dim if decoder_dim is None else decoder_dim
        self.num_tokens = num_tokens
        self.codebook_size = codebook_size
        self.token_embed = nn.Embedding(codebook_size, dim)
        self.encoder_pos = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.encoder_blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, dropout) for _ in range(encoder_depth)
        )
        self.encoder_norm = nn.LayerNorm(dim)
        self.encoder_to_decoder = nn.Linear(dim, decoder_dim)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, num_tokens, decoder_dim))
        self.context_proj = nn.Linear(context_dim, decoder_dim) if context_dim is not None else None
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, num_heads, mlp_ratio, dropout) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, codebook_size)
        self.reset_parameters()

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> MaskedTokenTransformer:
        """Build with L and K read from ``tokenizer.num_tokens`` and ``tokenizer.codebook_size``.

        Args:
            tokenizer: any object with integer ``num_tokens`` and ``codebook_size`` attributes.
            **kwargs: the remaining constructor arguments (a ``configs/transformer/*.yaml``).
        """
        return cls(num_tokens=int(tokenizer.num_tokens), codebook_size=int(tokenizer.codebook_size), **kwargs)

    @property
    def mask_id(self) -> int:
        """Conventional id (= K) for masked positions; never an output class (logits have K entries)."""
        return self.codebook_size

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) weights, zero biases, unit LayerNorms (ViT/MAE practice)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        for param in (self.encoder_pos, self.decoder_pos, self.mask_embed):
            nn.init.trunc_normal_(param, std=0.02)

    def logits_fn(self, context: Any = None, conditioning: nn.Module | None = None):
        """The network as a sampler's ``logits_fn``: (ids (R, L), mask (R, L)) -> float32 logits (R, L, K).

        ``context`` / ``conditioning`` as in :meth:`forward` (rows already laid out as the sampler's, R = B * Q);
        None: unconditional generation. Samplers read the logits of masked positions only, so the last
        block and the head run on those (``masked_only``); visible positions get zeros. The image prefix
        is the same at every decoding step, so its first-block projections are computed once per
        ``logits_fn`` (``prefix_cache``).
        """

        cache: dict[str, Tensor] = {}  # this context's prefix through the first block's projections

        def logits_fn(ids: Tensor, mask: Tensor) -> Tensor:
            out = self(ids, mask, context, conditioning=conditioning, masked_only=True, prefix_cache=cache)
            return out.float()

        return logits_fn

    def forward(
        self,
        ids: Tensor,
        mask: Tensor,
        context: Any = None,
        conditioning: nn.Module | None = None,
        masked_only: bool = False,
        prefix_cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Predict every position's code.

        Args:
            ids: (B, L) int64 code ids; visible positions must be in [0, K); values at masked
                positions are ignored (conventionally ``mask_id`` = K).
            mask: (B, L) bool, True = masked. If every entry is True and no gradient is needed
                (``torch.no_grad`` or frozen encoder) the encoder is skipped; the output is the same.
            context: without ``conditioning``: (B, N, context_dim) tokens for the built-in prefix
                projection, or None; with it: ``conditioning.prepare(features)``'s output.
            conditioning: a :class:`mega.conditioning.Conditioning` (not owned by this module), or None.
            masked_only: compute the logits of masked positions only (what samplers read): the last block
                and the head run on them; visible positions' logits are zeros. Exact otherwise.
            prefix_cache: a dict kept between calls with the same context (a sampler's steps): the
                prefix's first-block projections are stored there on the first call and reused.

        Returns:
            (B, L, K) logits (in the autocast dtype under autocast).
        """
        self._check_inputs(ids, mask, None if conditioning is not None else context)
        encoded = None
        if not (bool(mask.all()) and not self._encoder_needs_grad()):
            encoded = self.forward_encoder(ids, mask)
        wanted = mask if masked_only else None
        return self.forward_decoder(mask, encoded, context, conditioning, wanted, prefix_cache)

    def _encoder_needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.encoder_blocks.parameters())

    def forward_encoder(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible tokens only, padded to the batch's largest visible count V (at least 1).

        Visible positions are gathered in their original order (a stable argsort puts them first);
        padding slots are excluded from attention by a key mask. When rows differ in their visible counts
        (training draws a masking ratio per sample) the per-token layers (norms, projections, MLPs) run
        on the real tokens only and only attention sees the padded batch: at batch 8 with MEGA's cosine
        ratios the padded encoder did about 2.3x the token work. A batch with no visible token at all
        still gets one (padding) slot, so the encoder runs and its parameters get a (zero) gradient.

        Args:
            ids: (B, L) int64 ids.
            mask: (B, L) bool, True = masked.

        Returns:
            (tokens, index, valid): tokens (B, V, decoder_dim) encoder output projected to the
            decoder width (zero or unspecified at padding); index (B, V) int64 source positions;
            valid (B, V) bool, False = padding.
        """
        B = ids.shape[0]
        num_visible = (~mask).sum(1)  # (B,)
        lo, hi = torch.stack(torch.aminmax(num_visible)).tolist()  # one host sync
        hi = max(hi, 1)  # a fully masked batch: one padding slot (see the docstring)
        index = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, :hi]  # (B, V) visible first
        valid = torch.arange(hi, device=ids.device) < num_visible.unsqueeze(1)  # (B, V)
        safe_ids = ids.masked_fill(mask, 0).gather(1, index)  # (B, V) masked slots may hold the mask id
        width = self.encoder_pos.shape[-1]
        pos = self.encoder_pos.expand(B, -1, -1).gather(1, index.unsqueeze(-1).expand(-1, -1, width))
        x = self.token_embed(safe_ids) + pos  # (B, V, D)
        if lo == hi or lo == 0 and hi == 1:  # no padding, or none but the one slot of a fully masked batch
            attn_mask = None if lo == hi else (valid | (num_visible == 0).unsqueeze(1))[:, None, None, :]
            for block in self.encoder_blocks:
                x = block(x, attn_mask)
            return self.encoder_to_decoder(self.encoder_norm(x)), index, valid  # (B, V, decoder_dim)
        # Rows differ in their visible counts (training draws a ratio per sample): the per-token layers
        # run on the real tokens only, attention on the padded batch with padding keys excluded. A
        # sample with no visible token may attend to its padding (finite values, discarded); a query
        # row with no admissible key would make softmax return NaN.
        attn_mask = (valid | (num_visible == 0).unsqueeze(1))[:, None, None, :]  # (B, 1, 1, V)
        rows = valid.flatten().nonzero().squeeze(1)  # (T,) flat positions of the real tokens
        tokens = x.reshape(B * hi, width)[rows]  # (T, D)
        for block in self.encoder_blocks:
            tokens = block.forward_packed(tokens, rows, (B, hi), attn_mask)
        tokens = self.encoder_to_decoder(self.encoder_norm(tokens))  # (T, decoder_dim)
        out = tokens.new_zeros(B * hi, tokens.shape[-1]).index_copy(0, rows, tokens)
        return out.view(B, hi, -1), index, valid

    def forward_decoder(
        self,
        mask: Tensor,
        encoded: tuple[Tensor, Tensor, Tensor] | None,
        context: Any = None,
        conditioning: nn.Module | None = None,
        wanted: Tensor | None = None,
        prefix_cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Decode all L positions from the encoded visible tokens and [MASK] embeddings.

        Args:
            mask: (B, L) bool, True = masked.
            encoded: ``forward_encoder``'s (tokens, index, valid), or None when every token is masked.
            context: see :meth:`forward`.
            conditioning: see :meth:`forward`.
            wanted: (B, L) bool, the positions whose logits are needed (None: all). The last block and the
                head run on the rows' wanted positions, padded to the largest count with unwanted ones;
                the logits of every unwanted position are zeros.
            prefix_cache: see :meth:`forward` (read only when there is a prefix and more than one block).

        The last block computes only the L body positions (nothing reads the prefix's outputs after it).

        Returns:
            (B, L, K) logits.
        """
        B, L = mask.shape
        width = self.mask_embed.shape[-1]
        x = self.mask_embed.expand(B, L, width)  # (B, L, Dd)
        if encoded is not None:
            tokens, index, valid = encoded
            # Padding slots write the [MASK] embedding back, so they change nothing.
            tokens = torch.where(valid.unsqueeze(-1), tokens.to(x.dtype), self.mask_embed)
            x = x.scatter(1, index.unsqueeze(-1).expand(-1, -1, width), tokens)
        x = x + self.decoder_pos  # (B, L, Dd)
        prefix = None
        if conditioning is not None:
            prefix = conditioning.prefix(context)
        elif context is not None:
            prefix = self.context_proj(context)  # (B, N, Dd)
        num_context = 0 if prefix is None else prefix.shape[1]
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, N + L, Dd)
        last = len(self.decoder_blocks) - 1
        # What the last block computes: nothing reads the prefix positions after it, and with ``wanted``
        # only those positions (unless conditioning layers after it need all L token states).
        queries: Queries = L if num_context else None
        order = None
        if wanted is not None and not (conditioning is not None and conditioning.layers_after(last)):
            n = int(wanted.sum(1).max())
            if n < L:
                # (B, n): each row's wanted positions first, in order
                order = torch.argsort((~wanted).to(torch.int8), dim=1, stable=True)[:, :n]
                queries = order + num_context
        projected = None
        if prefix_cache is not None and num_context and last > 0:
            if "projected" not in prefix_cache or prefix_cache["projected"].shape[0] != B:
                prefix_cache["projected"] = self.decoder_blocks[0].project(x[:, :num_context])
            projected = prefix_cache["projected"]
        for i, block in enumerate(self.decoder_blocks):
            if i == last and queries is not None:
                x, num_context = block(x, queries=queries), 0
            else:
                x = block(x, projected=projected) if i == 0 and projected is not None else block(x)
            if conditioning is not None:
                for j in conditioning.layers_after(i):  # conditioning layers see the L token states
                    tokens = conditioning.layer(j, x[:, num_context:], context)
                    x = torch.cat([x[:, :num_context], tokens], dim=1) if num_context else tokens
        logits = self.head(self.decoder_norm(x[:, num_context:]))  # (B, L or n, K)
        if order is None:
            return logits
        logits = logits * wanted.gather(1, order).unsqueeze(-1)  # padding slots (unwanted positions): 0
        full = logits.new_zeros(B, L, logits.shape[-1])
        return full.scatter_(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]), logits)

    def _check_inputs(self, ids: Tensor, mask: Tensor, context: Tensor | None) -> None:
        expected = (ids.shape[0], self.num_tokens)
        if ids.dim() != 2 or tuple(ids.shape) != expected or mask.shape != ids.shape:
            raise ValueError(
                f"expected ids and mask of shape (B, {self.num_tokens}), got {tuple(ids.shape)} and "
                f"{tuple(mask.shape)}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool (True = masked), got {mask.dtype}")
        if bool((((ids < 0) | (ids >= self.codebook_size)) & ~mask).any()):
            raise ValueError(f"visible token ids must lie in [0, {self.codebook_size})")
        if context is not None:
            if self.context_proj is None:
                raise ValueError("this transformer was built without context_dim; it cannot take context")
            if context.dim() != 3 or context.shape[0] != ids.shape[0]:
                raise ValueError(f"context must be (B, N, context_dim), got {tuple(context.shape)}")
