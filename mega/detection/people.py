"""People in an image: a box and COCO-17 keypoints, from any source (file, detector, whole image).

Every keypoint source in :mod:`mega.detection` returns ``list[Person]`` per image, in full-image
pixels, so the demo and the pose-guided sampler never see a source's own format. Index maps from
other keypoint layouts to COCO-17 live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# COCO-17 from OpenPose BODY_25 (0 nose, 1 neck, 2-4 right arm, 5-7 left arm, 8 mid-hip, 9-11 right leg,
# 12-14 left leg, 15/16 right/left eye, 17/18 right/left ear, 19-24 feet).
BODY25_TO_COCO17 = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]
# COCO-17 from OpenPose's 18-keypoint COCO layout (like BODY_25 without mid-hip and feet).
OPENPOSE18_TO_COCO17 = [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]
# COCO-17 from MediaPipe BlazePose's 33 landmarks.
BLAZEPOSE33_TO_COCO17 = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


@dataclass
class Person:
    """One person in one image.

    Attributes:
        box: (4,) ``x0, y0, x1, y1`` in pixels.
        keypoints: (17, 3) COCO-17 ``x, y, confidence`` in pixels (confidence 0 = missing), or None
            when the source gives only a box.
        score: detection score in [0, 1] (1 when the source has none).
        source: where it came from (``coco_json``, ``openpose_json``, ``blazepose``, ``whole_image``).
    """

    box: np.ndarray
    keypoints: np.ndarray | None = None
    score: float = 1.0
    source: str = ""

    def center_scale(self, margin: float = 1.2) -> tuple[np.ndarray, float]:
        """Square crop box around the person: centre (2,) and side in pixels (``margin`` x longer side)."""
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), margin * max(x1 - x0, y1 - y0, 1.0)


def box_from_keypoints(keypoints: np.ndarray, min_conf: float = 0.1, pad: float = 0.1) -> np.ndarray | None:
    """Tight box around the confident keypoints, padded by ``pad`` of its size on each side.

    Args:
        keypoints: (J, 3) ``x, y, confidence`` in pixels.
    Returns:
        (4,) ``x0, y0, x1, y1``, or None with fewer than two confident keypoints.
    """
    ok = keypoints[:, 2] > min_conf
    if ok.sum() < 2:
        return None
    lo, hi = keypoints[ok, :2].min(0), keypoints[ok, :2].max(0)
    size = hi - lo
    return np.concatenate([lo - pad * size, hi + pad * size]).astype(np.float64)


def remap(keypoints: np.ndarray, index: list[int]) -> np.ndarray:
    """Pick COCO-17 rows from another layout. (J, 3) -> (17, 3)."""
    return np.asarray(keypoints, dtype=np.float64)[index].copy()


def whole_image(width: int, height: int) -> Person:
    """The whole image as one person box (no keypoints): the fallback when nothing else is given."""
    return Person(box=np.array([0.0, 0.0, width, height]), keypoints=None, score=1.0, source="whole_image")
