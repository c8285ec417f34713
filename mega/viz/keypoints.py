"""Drawing 2D keypoints and their skeletons on uint8 images (OpenCV, anti-aliased).

Keypoints are full-image pixels with the origin at the image's top-left corner (pixel centres at
+0.5, the data files' convention); a third column, if present, is a confidence: points with
confidence <= 0 are drawn hollow (``draw_hidden``) or skipped. Left limbs are drawn in one colour,
right limbs in another, the rest in a third, so a left/right swap is visible at a glance.
"""

from __future__ import annotations

import cv2
import numpy as np

from mega.body.joints import SMPL_PARENTS

COCO17_EDGES = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
)
SMPL24_EDGES = tuple((j, p) for j, p in enumerate(SMPL_PARENTS) if p >= 0)
COCO17_LEFT = (1, 3, 5, 7, 9, 11, 13, 15)
COCO17_RIGHT = (2, 4, 6, 8, 10, 12, 14, 16)
SMPL24_LEFT = (1, 4, 7, 10, 13, 16, 18, 20, 22)
SMPL24_RIGHT = (2, 5, 8, 11, 14, 17, 19, 21, 23)
SKELETONS = {
    "coco17": (COCO17_EDGES, COCO17_LEFT, COCO17_RIGHT),
    "smpl24": (SMPL24_EDGES, SMPL24_LEFT, SMPL24_RIGHT),
}
LEFT_COLOR, RIGHT_COLOR, MID_COLOR = (40, 120, 255), (255, 80, 40), (60, 220, 60)  # RGB

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px


def _pt(xy: np.ndarray) -> tuple[int, int]:
    # pixel-centre convention (+0.5) -> cv2's pixel-index coordinates
    return int(round((xy[0] - 0.5) * (1 << _SHIFT))), int(round((xy[1] - 0.5) * (1 << _SHIFT)))


def _color(joint: int, left: tuple[int, ...], right: tuple[int, ...]) -> tuple[int, int, int]:
    return LEFT_COLOR if joint in left else RIGHT_COLOR if joint in right else MID_COLOR


def draw_keypoints(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: str | None = "coco17",
    radius: float = 2.0,
    thickness: int = 1,
    draw_hidden: bool = True,
    color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Draw one person's keypoints (and skeleton) on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints: (K, 2) or (K, 3) pixels (+ confidence).
        skeleton: ``coco17``, ``smpl24`` or None (points only); K must match it.
        radius: point radius in pixels. thickness: line width in pixels.
        draw_hidden: draw zero-confidence points hollow (False: skip them and their bones).
        color: one RGB colour for everything (None: left / right / middle colours).
    Returns:
        (H, W, 3) uint8 copy with the drawing.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"draw_keypoints: image must be (H, W, 3) uint8, got {image.dtype}{image.shape}")
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] not in (2, 3):
        raise ValueError(f"draw_keypoints: keypoints must be (K, 2) or (K, 3), got {kp.shape}")
    conf = kp[:, 2] if kp.shape[1] == 3 else np.ones(len(kp))
    edges, left, right = SKELETONS[skeleton] if skeleton else ((), (), ())
    if skeleton and len(kp) != 1 + max(max(e) for e in edges):
        raise ValueError(
            f"draw_keypoints: {skeleton} needs {1 + max(max(e) for e in edges)} points, got {len(kp)}"
        )
    out = np.ascontiguousarray(image.copy())
    finite = np.isfinite(kp[:, :2]).all(1)
    for a, b in edges:
        if not (finite[a] and finite[b]) or (not draw_hidden and min(conf[a], conf[b]) <= 0):
            continue
        c = color or _color(b if b in left or b in right else a, left, right)
        cv2.line(out, _pt(kp[a]), _pt(kp[b]), c, thickness, cv2.LINE_AA, _SHIFT)
    r = int(round(radius * (1 << _SHIFT)))
    for j in range(len(kp)):
        if not finite[j] or (not draw_hidden and conf[j] <= 0):
            continue
        c = color or _color(j, left, right)
        cv2.circle(out, _pt(kp[j]), r, c, -1 if conf[j] > 0 else 1, cv2.LINE_AA, _SHIFT)
    return out
