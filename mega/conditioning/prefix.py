"""MEGA's prefix conditioning: image tokens projected to the decoder width and prepended to its sequence.

MEGA (section 3.3, summary "Image-Conditioned Masked Generative Training"): image features are linearly
mapped to the decoder width and concatenated with the body-token embeddings in front of the decoder, so
the body tokens see the image through self-attention; image tokens are never masked. Here the pooled
vector leads the N spatial tokens and every image token gets a learned position embedding (a flattened
CNN map carries no position of its own).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mega.conditioning.base import Conditioning, projected_image_tokens


class PrefixConditioning(Conditioning):
    """Image tokens (B, 1 + N, C) -> prefix (B, 1 + N, D) of the decoder sequence.

    Args:
        decoder_dim / decoder_depth: of the decoder (given by the model).
        image_dim: C, the backbone's token width (given by the model).
        num_image_tokens: N spatial tokens per image (given by the model).
        dropout: dropout on the projected tokens.
        **unused: other model-given sizes (pyramid_dims, num_body_tokens), ignored.
    """

    uses_pyramid = False

    def __init__(
        self,
        decoder_dim: int,
        decoder_depth: int,
        image_dim: int,
        num_image_tokens: int,
        dropout: float = 0.0,
        **unused: Any,
    ) -> None:
        super().__init__(decoder_dim, decoder_depth)
        self.proj = nn.Linear(image_dim, decoder_dim)
        self.pos = nn.Parameter(torch.zeros(1, num_image_tokens + 1, decoder_dim))
        self.drop = nn.Dropout(dropout)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def prepare(self, features: Any) -> dict[str, Any]:
        """``{"prefix": (B, 1 + N, D)}`` from features.tokens (B, N, C) and features.pooled (B, C)."""
        return {"prefix": self.drop(projected_image_tokens(features, self.proj, self.pos, "prefix"))}

    def prefix(self, context: dict[str, Any]) -> Tensor | None:
        """(B, 1 + N, D) prepended to the decoder sequence."""
        return context["prefix"]
