"""Offline person keypoints with MediaPipe's BlazePose (an optional extra; nothing is downloaded).

MediaPipe's Tasks API (``mediapipe`` 1.2.x, numpy 2) runs BlazePose GHUM *full* from a ``.task``
bundle. The wheel does not ship one, so ``make detector`` builds it once from the two ``.tflite`` files
that the 0.10.x wheels carry (``tools/build_pose_detector.py``, Apache-2.0 models, see its NOTICE)
into ``data/detectors/pose_landmarker_full.task``, and installs the runtime into ``.venv``.

The 33 landmarks of each person are mapped to COCO-17 (:data:`BLAZEPOSE33_TO_COCO17`) with their
visibility as confidence; the person's box is the padded box of its landmarks. BlazePose's person
detector sees the frame at 224 x 224, so people a fifth of a wide frame's height are missed; with
``tiles=True`` it also runs on the overlapping square tiles of a wide (or tall) frame, and duplicates
(boxes overlapping by more than ``merge_overlap`` of the smaller one) keep the most confident person.
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


def detector_available(model_path: str | Path = DEFAULT_MODEL) -> bool:
    """Whether the BlazePose extra is installed (``make detector``): the runtime and the model bundle."""
    import importlib.util

    return importlib.util.find_spec("mediapipe") is not None and Path(model_path).is_file()


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
        tiles: also run on overlapping square tiles of a non-square frame (finds smaller people).
        merge_overlap: duplicates overlap by more than this fraction of the smaller box.
    """

    def __init__(
        self,
        model_path: str | Path = DEFAULT_MODEL,
        max_people: int = 4,
        min_confidence: float = 0.3,
        tiles: bool = True,
        merge_overlap: float = 0.6,
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
        self.tiles, self.merge_overlap = tiles, merge_overlap
        with _quiet():
            self._landmarker = vision.PoseLandmarker.create_from_options(options)

    def __call__(self, image: np.ndarray) -> list[Person]:
        """People in one image. ``image``: (H, W, 3) uint8 RGB."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        people = self._detect(image, 0, 0)
        if self.tiles:
            for x0, y0, side in square_tiles(width, height):
                people += self._detect(image[y0 : y0 + side, x0 : x0 + side], x0, y0)
        return sorted(merge_duplicates(people, self.merge_overlap), key=lambda p: float(p.box[0]))

    def _detect(self, image: np.ndarray, x0: int, y0: int) -> list[Person]:
        """People in an image region whose top-left corner is (x0, y0) of the full frame."""
        height, width = image.shape[:2]
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        with _quiet():  # MediaPipe's C++ warnings go to stderr on the first calls
            result = self._landmarker.detect(frame)
        people = []
        for lms in result.pose_landmarks:
            person = landmarks_to_person(lms, width, height)
            if person is not None:
                person.box = person.box + np.array([x0, y0, x0, y0], dtype=np.float64)
                person.keypoints[:, :2] += np.array([x0, y0])
                people.append(person)
        return people

    def close(self) -> None:
        """Release the MediaPipe graph."""
        with contextlib.suppress(Exception), _quiet():
            self._landmarker.close()


def square_tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """Overlapping square tiles ``(x0, y0, side)`` covering a non-square frame (none for a square one).

    The side is the shorter image side; tiles are spread evenly with at least a quarter overlap.
    """
    side = min(width, height)
    long = max(width, height)
    if long - side < side // 8:
        return []
    count = int(np.ceil((long - side) / (0.75 * side))) + 1
    starts = np.linspace(0, long - side, count).round().astype(int).tolist()
    return [(s, 0, side) if width >= height else (0, s, side) for s in starts]


def merge_duplicates(people: list[Person], overlap: float) -> list[Person]:
    """Greedy suppression: most confident first; drop a person whose box covers more than ``overlap`` of
    the smaller box of one already kept."""
    kept: list[Person] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(_overlap_of_smaller(person.box, k.box) <= overlap for k in kept):
            kept.append(person)
    return kept


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: max(1e-9, (r[2] - r[0]) * (r[3] - r[1]))  # noqa: E731
    return iw * ih / min(area(a), area(b))


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
