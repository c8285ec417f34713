"""Refiners: a stage after the sampler that improves decoded tokens with extra evidence (2D keypoints).

``REFINERS`` maps a name to a refiner class; ``configs/refiner/<name>.yaml`` holds ``name`` plus the
constructor's keyword arguments (``none``: no refinement). :func:`build_refiner` builds one. An instance
is called as ``refiner(model, codes, global_rot, cam, betas, keypoints) -> (codes, RefinementTrace)``
with code vectors (R, L, D) and keypoints (R, 17, 3); :func:`mega.inference.recover` runs it.
"""

from __future__ import annotations

from typing import Any

from mega.refiners.pose_guided import (
    COCO17_LIMBS_FROM_SMPL24,
    PoseGuidedRefiner,
    RefinementTrace,
    coco17_keypoints,
)
from mega.registry import Registry

REFINERS = Registry("refiner")
REFINERS.register("pose_guided")(PoseGuidedRefiner)


def build_refiner(cfg: dict[str, Any] | None) -> PoseGuidedRefiner | None:
    """A refiner from its config (``name`` + kwargs); None or ``name: none`` = no refinement."""
    if cfg is None or cfg.get("name") in (None, "none"):
        return None
    return REFINERS.build(**dict(cfg))


__all__ = [
    "COCO17_LIMBS_FROM_SMPL24",
    "REFINERS",
    "PoseGuidedRefiner",
    "RefinementTrace",
    "build_refiner",
    "coco17_keypoints",
]
