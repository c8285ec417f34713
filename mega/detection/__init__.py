"""Where people are in an image: boxes and COCO-17 keypoints from files or an offline detector.

Sources: COCO / OpenPose detections files (:mod:`mega.detection.keypoint_files`), MediaPipe BlazePose
as an optional extra (:mod:`mega.detection.blazepose`), or the whole image as one box.
"""

from mega.detection.keypoint_files import (
    DetectionsFileError,
    read_coco_keypoints,
    read_detections,
    read_openpose,
)
from mega.detection.people import Person, box_from_keypoints, whole_image

__all__ = [
    "DetectionsFileError",
    "Person",
    "box_from_keypoints",
    "read_coco_keypoints",
    "read_detections",
    "read_openpose",
    "whole_image",
]
