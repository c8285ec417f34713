"""Detections files and detector conversions: layouts mapped to COCO-17 by joint name, boxes, errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mega.body.joints import COCO17_JOINT_NAMES
from mega.detection import DetectionsFileError, Person, read_coco_keypoints, read_detections, read_openpose
from mega.detection.blazepose import (
    BlazePoseDetector,
    DetectorUnavailableError,
    landmarks_to_person,
    merge_duplicates,
    square_tiles,
)

# Layouts written out by name, independently of the index tables under test.
BODY25 = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
          "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
          "left_heel", "right_big_toe", "right_small_toe", "right_heel"]  # fmt: skip
OPENPOSE18 = [n for n in BODY25[:19] if n != "mid_hip"]
BLAZEPOSE33 = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
               "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
               "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
               "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip", "right_hip",
               "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel", "right_heel",
               "left_foot_index", "right_foot_index"]  # fmt: skip


def _coded(names: list[str]) -> np.ndarray:
    """Keypoints whose x encodes the joint name's position in COCO-17 (100 + i), or -1 if not in COCO."""
    return np.array([[100 + COCO17_JOINT_NAMES.index(n) if n in COCO17_JOINT_NAMES else -1, 50.0 + i, 0.9]
                     for i, n in enumerate(names)])  # fmt: skip


@pytest.mark.parametrize("layout", [BODY25, OPENPOSE18])
def test_openpose_maps_by_name(tmp_path: Path, layout: list[str]) -> None:
    kp = _coded(layout)
    path = tmp_path / "frame_0007_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": kp.ravel().tolist()}]}))
    (person,) = read_openpose(path)
    np.testing.assert_array_equal(person.keypoints[:, 0], 100 + np.arange(17))
    assert person.source == "openpose_json" and person.box[0] < 100 and person.box[2] > 116
    assert list(read_detections(tmp_path)) == ["frame_0007"]
    assert list(read_detections(path)) == ["frame_0007"]


def test_blazepose_landmarks_map_by_name() -> None:
    kp = _coded(BLAZEPOSE33)
    width, height = 640, 480
    lms = [SimpleNamespace(x=max(x, 0) / width, y=y / height, visibility=c) for x, y, c in kp]
    person = landmarks_to_person(lms, width, height)
    np.testing.assert_allclose(person.keypoints[:, 0], 100 + np.arange(17), atol=1e-9)
    assert (person.keypoints[:, 2] == 0.9).all() and person.source == "blazepose"
    # keypoints outside the image get confidence 0
    lms[0] = SimpleNamespace(x=1.5, y=0.5, visibility=1.0)
    assert landmarks_to_person(lms, width, height).keypoints[0, 2] == 0.0


def test_coco_annotations_and_results(tmp_path: Path) -> None:
    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.arange(17) + 10, 20, 2
    kp[3, 2] = 0  # not labelled
    ann = {"images": [{"id": 5, "file_name": "000000000005.jpg"}],
           "annotations": [{"image_id": 5, "keypoints": kp.ravel().tolist(), "bbox": [1, 2, 30, 40], "num_keypoints": 16},
                           {"image_id": 5, "keypoints": [0] * 51, "num_keypoints": 0}]}  # fmt: skip
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps(ann))
    people = read_coco_keypoints(path)["000000000005.jpg"]
    assert len(people) == 1  # the unlabelled crowd-like entry is skipped
    np.testing.assert_array_equal(people[0].box, [1, 2, 31, 42])
    assert people[0].keypoints[3, 2] == 0 and people[0].keypoints[4, 2] == 1
    assert list(read_detections(path)) == ["000000000005"]

    results = [{"image_id": "a.jpg", "keypoints": kp.ravel().tolist(), "score": 0.7}]
    rpath = tmp_path / "results.json"
    rpath.write_text(json.dumps(results))
    (person,) = read_coco_keypoints(rpath)["a.jpg"]
    assert person.score == pytest.approx(0.7) and person.keypoints[4, 2] == 2  # scores kept as given
    centre, side = person.center_scale(margin=1.0)
    assert side == pytest.approx(max(person.box[2] - person.box[0], person.box[3] - person.box[1]))
    np.testing.assert_allclose(centre, (person.box[:2] + person.box[2:]) / 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"people": [{"pose_keypoints_2d": [1, 2, 3] * 20}]}), "expected 25 or 18"),
        (json.dumps({"annotations": [{"image_id": 1, "keypoints": [1.0] * 50}]}), "field 'keypoints'"),
        (json.dumps({"people": [{"pose_keypoints_2d": [float("nan")] * 75}]}), "NaN"),
        (json.dumps({"images": []}), "misses field 'annotations'"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DetectionsFileError, match=message) as err:
        read_detections(path)
    assert str(path) in str(err.value)
    with pytest.raises(DetectionsFileError, match="not found"):
        read_detections(tmp_path / "missing.json")


def test_detector_missing_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DetectorUnavailableError, match="make detector"):
        BlazePoseDetector(tmp_path / "missing.task")
    assert isinstance(Person(box=np.zeros(4)).center_scale()[1], float)


def test_tiles_cover_the_frame_and_duplicates_merge() -> None:
    assert square_tiles(500, 500) == []
    for w, h in [(1768, 994), (640, 1280), (3000, 400)]:
        tiles = square_tiles(w, h)
        side = min(w, h)
        covered = np.zeros(max(w, h), bool)
        for x0, y0, s in tiles:
            assert s == side and x0 + s <= w and y0 + s <= h
            start = x0 if w >= h else y0
            covered[start : start + s] = True
        assert covered.all()
    a = Person(box=np.array([0.0, 0, 100, 200]), score=0.9)
    inside = Person(box=np.array([10.0, 100, 90, 190]), score=0.5)  # a partial duplicate of a
    other = Person(box=np.array([300.0, 0, 400, 200]), score=0.4)
    kept = merge_duplicates([inside, other, a], overlap=0.6)
    assert kept == [a, other]
