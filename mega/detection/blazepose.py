"""Offline person keypoints with MediaPipe's BlazePose (an optional extra; nothing is downloaded).

MediaPipe's Tasks API (``mediapipe`` 1.2.x, numpy 2) runs BlazePose GHUM *full* from a ``.task``
bundle. The wheel does not ship one, so ``make detector`` builds it once from the two ``.tflite`` files
that the 0.10.x wheels carry (``scripts/build_pose_detector.py``, Apache-2.0 models, see its NOTICE)
into ``data/detectors/pose_landmarker_full.task``, and installs the runtime into ``.venv``.

The 33 landmarks of each person are mapped to COCO-17 (:data:`BLAZEPOSE33_TO_COCO17`) with their
visibility as confidence; the person's box is the padded box of its landmarks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from mega.detection.people import BLAZEPOSE33_TO_COCO17, Person, box_from_keypoints
from mega.errors import UserError

DEFAULT_MODEL = Path("data/detectors/pose_landmarker_full.task")
INSTALL_HINT = "install the offline detector extra with `make detector` (builds the model bundle, no download at run time)"


class DetectorUnavailableError(UserError, RuntimeError):
    """The optional detector (mediapipe, or its model bundle) is not installed."""


def landmarks_to_person(landmarks: Any, width: int, height: int) -> Person | None:
    """One BlazePose result (33 landmarks with normalised ``x``, ``y`` and ``visibility``) -> Person.

    Args:
        landmarks: a sequence of 33 objects with ``x``, ``y`` (in [0, 1] of the image) and ``visibility``.
        width, height: image size in pixels.
    Returns:
        the person (COCO-17 keypoints in pixels), or None if fewer than two keypoints are visible.
    """
    pts = np.array([[lm.x * width, lm.y * height, getattr(lm, "visibility", 1.0) or 0.0] for lm in landmarks])
    if pts.shape != (33, 3):
        raise ValueError(f"BlazePose gives 33 landmarks, got {pts.shape[0]}")
    coco = pts[BLAZEPOSE33_TO_COCO17]
    inside = (coco[:, 0] >= 0) & (coco[:, 0] < width) & (coco[:, 1] >= 0) & (coco[:, 1] < height)
    coco[~inside, 2] = 0.0
    box = box_from_keypoints(coco, min_conf=0.3, pad=0.15)
    if box is None:
        return None
    return Person(box=box, keypoints=coco, score=float(coco[:, 2].mean()), source="blazepose")


class BlazePoseDetector:
    """People and COCO-17 keypoints in RGB images.

    Args:
        model_path: the ``.task`` bundle (``make detector`` writes it).
        max_people: the most people per image.
        min_confidence: detection / presence thresholds.
    """

    def __init__(
        self, model_path: str | Path = DEFAULT_MODEL, max_people: int = 4, min_confidence: float = 0.5
    ) -> None:
        try:
            with _quiet():
                import mediapipe as mp
                from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as err:
            raise DetectorUnavailableError(f"mediapipe is not installed ({err}); {INSTALL_HINT}") from err
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DetectorUnavailableError(f"pose model bundle not found: {model_path}; {INSTALL_HINT}")
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_poses=max_people,
            min_pose_detection_confidence=min_confidence,
            min_pose_presence_confidence=min_confidence,
        )
        self._mp = mp
        with _quiet():
            self._landmarker = vision.PoseLandmarker.create_from_options(options)

    def __call__(self, image: np.ndarray) -> list[Person]:
        """People in one image. ``image``: (H, W, 3) uint8 RGB."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        result = self._landmarker.detect(frame)
        people = [landmarks_to_person(lms, width, height) for lms in result.pose_landmarks]
        return sorted((p for p in people if p is not None), key=lambda p: float(p.box[0]))

    def close(self) -> None:
        """Release the MediaPipe graph."""
        with contextlib.suppress(Exception), _quiet():
            self._landmarker.close()


@contextlib.contextmanager
def _quiet():
    """Silence MediaPipe's C++ start-up logging on stderr (its INFO/WARNING lines are not ours)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
