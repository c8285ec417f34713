"""Clothing regions of an SMPL-format body from its skinning weights (for synthetic "clothing").

Each vertex gets the joint that dominates its skinning weights; joints map to regions ``skin``,
``hair``, ``top``, ``trousers`` and ``shoes``. Two garment options move limb segments between
regions: sleeves (``none``: the upper arm is skin, ``short``: the upper arm is top, ``long``: the
forearm too) and legs (``shorts``: the shin is skin, ``long``: the shin is trousers). Hair is the head's
vertices above the forehead or behind the ears (rest pose, relative to the head joint). The left and
right sides always get the same region, so colours never tell them apart.
"""

from __future__ import annotations

import torch
from torch import Tensor

REGIONS = ("skin", "hair", "top", "trousers", "shoes")
SLEEVES = ("none", "short", "long")
LEGS = ("shorts", "long")
SKIN, HAIR, TOP, TROUSERS, SHOES = range(len(REGIONS))

# SMPL joint index -> region with short sleeves and long trousers (the segments that change are below)
_JOINT_REGION = {
    0: TROUSERS,
    1: TROUSERS,
    2: TROUSERS,
    3: TOP,
    4: TROUSERS,
    5: TROUSERS,
    6: TOP,
    7: SHOES,
    8: SHOES,
    9: TOP,
    10: SHOES,
    11: SHOES,
    12: SKIN,
    13: TOP,
    14: TOP,
    15: SKIN,
    16: TOP,
    17: TOP,
    18: SKIN,
    19: SKIN,
    20: SKIN,
    21: SKIN,
    22: SKIN,
    23: SKIN,
}
_UPPER_ARMS, _FOREARMS, _SHINS, _HEAD = (16, 17), (18, 19), (4, 5), 15


def dominant_joint(weights: Tensor) -> Tensor:
    """(V, 24) skinning weights -> (V,) long index of the joint with the largest weight."""
    return weights.argmax(-1)


def region_labels(
    weights: Tensor,
    rest_vertices: Tensor,
    rest_joints: Tensor,
    sleeves: str = "short",
    legs: str = "long",
    hair_above: float = 0.05,
    hair_behind: float = -0.03,
) -> Tensor:
    """Clothing region of every vertex.

    Args:
        weights: (V, 24) skinning weights. rest_vertices: (V, 3) rest mesh (y up, facing +z).
        rest_joints: (24, 3) rest joints.
        sleeves: ``none`` | ``short`` | ``long``. legs: ``shorts`` | ``long``.
        hair_above: head vertices higher than the head joint + this (metres) are hair.
        hair_behind: head vertices behind the head joint's z + this, and above the neck joint, are hair.
    Returns:
        (V,) long index into :data:`REGIONS`.
    """
    if sleeves not in SLEEVES or legs not in LEGS:
        raise ValueError(f"region_labels: sleeves must be one of {SLEEVES} and legs one of {LEGS}")
    joint = dominant_joint(weights)
    table = torch.tensor([_JOINT_REGION[j] for j in range(24)], dtype=torch.long)
    if sleeves == "none":
        table[list(_UPPER_ARMS)] = SKIN
    if sleeves == "long":
        table[list(_FOREARMS)] = TOP
    if legs == "shorts":
        table[list(_SHINS)] = SKIN
    labels = table[joint]
    head = joint == _HEAD
    rel = rest_vertices - rest_joints[_HEAD]
    above_neck = rest_vertices[:, 1] > rest_joints[12, 1] + 0.02
    hair = head & ((rel[:, 1] > hair_above) | ((rel[:, 2] < hair_behind) & above_neck))
    labels[hair] = HAIR
    return labels


def garment_labels(weights: Tensor, rest_vertices: Tensor, rest_joints: Tensor) -> Tensor:
    """Region labels of every (sleeves, legs) option.

    Returns:
        (len(SLEEVES) * len(LEGS), V) long; row ``s * len(LEGS) + l`` is ``SLEEVES[s]``, ``LEGS[l]``.
    """
    return torch.stack(
        [region_labels(weights, rest_vertices, rest_joints, s, leg) for s in SLEEVES for leg in LEGS]
    )
