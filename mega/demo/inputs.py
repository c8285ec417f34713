"""The demo's inputs: checkpoint lookup, image / folder / video paths, video frames, and the people in an image.

People (boxes + COCO-17 keypoints) come from a detections file (COCO or OpenPose JSON), the offline
BlazePose extra (``detector=blazepose``; ``make detector``), or else the whole image with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from mega.data.crop import decode_image
from mega.detection import Person, read_detections, whole_image
from mega.errors import UserError
from mega.stage_inputs import QUICKSTART, StageInputError, find_hmr

log = logging.getLogger("demo")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


class DemoInputError(UserError, ValueError):
    """An input path, detections file, checkpoint or option of the demo is unusable."""


QUICKSTART_CHECKPOINT = QUICKSTART / "train_hmr/hmr.pt"  # what the web page names when no model exists


def find_checkpoint(path: str | None) -> Path:
    """``checkpoint``: the path given, else the quickstart's model, else the newest train_hmr run's
    (:func:`mega.stage_inputs.find_hmr`); none is a :class:`DemoInputError`."""
    try:
        return find_hmr(path)
    except StageInputError as err:
        raise DemoInputError(str(err)) from err


def list_inputs(inputs: list[str]) -> list[tuple[str, Path]]:
    """``("image" | "video", path)`` for every input; folders expand to their images (sorted)."""
    if not inputs:
        raise DemoInputError("no inputs: pass inputs=[image.jpg,folder/,video.mp4]")
    out = []
    for raw in inputs:
        path = Path(str(raw))
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DemoInputError(
                    f"inputs: folder {path} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            out += [("image", p) for p in images]
        elif not path.is_file():
            raise DemoInputError(f"inputs: {path} does not exist")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            out.append(("image", path))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            out.append(("video", path))
        else:
            raise DemoInputError(
                f"inputs: {path} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a video "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
    return out


def video_frames(path: Path, every_n: int, max_frames: int | None):
    """Yield ``(stem, RGB uint8 frame)`` for every ``every_n``-th frame of a video (OpenCV)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DemoInputError(f"inputs: OpenCV cannot open video {path} (unsupported codec or not a video)")
    index = kept = 0
    try:
        while max_frames is None or kept < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every_n == 0:
                kept += 1
                yield f"{path.stem}_f{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if kept == 0:
        raise DemoInputError(f"inputs: no frame could be read from video {path}")


def frames(items: list[tuple[str, Path]], cfg):
    """Yield ``(stem, RGB uint8 image)`` over all inputs (``cfg.every_n``, ``cfg.max_frames`` for videos)."""
    for kind, path in items:
        if kind == "video":
            yield from video_frames(path, max(1, int(cfg.every_n)), cfg.max_frames)
        else:
            yield path.stem, decode_image(path)[0]


class People:
    """``people(stem, image) -> list[Person]`` from a detections file, BlazePose, or the whole image.

    ``cfg`` needs ``max_people``, ``detections`` (a file or None) and ``detector`` (None | "blazepose").
    """

    def __init__(self, cfg) -> None:
        self.max_people = int(cfg.max_people)
        self.table = read_detections(cfg.detections) if cfg.detections else None
        self.detector = None
        self.warned = False
        if cfg.detector not in (None, "none", "blazepose"):
            raise DemoInputError(
                f"detector={cfg.detector!r}: use null (detections file / whole image) or blazepose"
            )
        if cfg.detector == "blazepose":
            from mega.detection.blazepose import BlazePoseDetector

            self.detector = BlazePoseDetector(max_people=self.max_people)  # one line naming `make detector`

    def __call__(self, stem: str, image: np.ndarray) -> list[Person]:
        h, w = image.shape[:2]
        if self.table is not None:
            if stem not in self.table:
                log.warning("%s: not in the detections file; using the whole image", stem)
                return [whole_image(w, h)]
            people = self.table[stem]
        elif self.detector is not None:
            people = self.detector(image)
        else:
            if not self.warned:
                log.warning(
                    "no detections file and no detector: each image is one person (whole image); "
                    "pass detections=FILE or detector=blazepose (`make detector`) for real people"
                )
                self.warned = True
            return [whole_image(w, h)]
        people = sorted(people, key=lambda p: -p.score)[: self.max_people]
        return sorted(people, key=lambda p: float(p.box[0]))

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
