"""Typed outputs at the stage boundaries of the spine (see README, "The spine").

Shapes: B batch, V vertices, J joints, L tokens, K codebook size, Q samples per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class BodyOutput:
    """What a body model returns.

    Attributes:
        vertices: (B, V, 3) posed vertices, metres.
        joints: (B, 24, 3) SMPL kinematic joints, metres.
        rot_mats: (B, 24, 3, 3) per-joint local rotations (global orientation first).
    """

    vertices: Tensor
    joints: Tensor
    rot_mats: Tensor | None = None
