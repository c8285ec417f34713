"""How the body-token queries see the image: three interchangeable conditionings, one registry.

- ``prefix`` (MEGA): image tokens projected and prepended to the decoder's self-attention;
- ``cross_attention``: cross-attention layers from the decoder's token states to the image tokens;
- ``deformable`` (GenHMR): multi-scale deformable cross-attention over the backbone's feature pyramid.

``build_conditioning(name, **kwargs)``; ``configs/conditioning/<name>.yaml`` holds ``name`` and the
hyper-parameters, the model adds the sizes it knows (decoder width/depth, backbone widths, token counts).
The contract is :class:`mega.conditioning.base.Conditioning`.
"""

from __future__ import annotations

from typing import Any

from mega.conditioning.base import Conditioning
from mega.conditioning.cross_attention import CrossAttentionConditioning
from mega.conditioning.deformable import DeformableConditioning, MultiScaleDeformableAttention
from mega.conditioning.prefix import PrefixConditioning
from mega.registry import Registry

CONDITIONING = Registry("conditioning")
CONDITIONING.register("prefix")(PrefixConditioning)
CONDITIONING.register("cross_attention")(CrossAttentionConditioning)
CONDITIONING.register("deformable")(DeformableConditioning)


def build_conditioning(name: str, **kwargs: Any) -> Conditioning:
    """Build the conditioning registered as ``name`` (prefix | cross_attention | deformable)."""
    return CONDITIONING.build(name, **kwargs)


__all__ = [
    "CONDITIONING",
    "Conditioning",
    "CrossAttentionConditioning",
    "DeformableConditioning",
    "MultiScaleDeformableAttention",
    "PrefixConditioning",
    "build_conditioning",
]
