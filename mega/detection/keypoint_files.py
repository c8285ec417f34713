"""Detections files: COCO-keypoints JSON and OpenPose JSON -> people per image.

- **COCO** (``person_keypoints_*.json`` with ``images`` + ``annotations``, or a results list
  ``[{"image_id", "keypoints", "bbox", "score"}, ...]`` where ``image_id`` may be a file name):
  ``keypoints`` is 51 numbers ``x, y, v`` (COCO-17), ``bbox`` is ``x, y, w, h``. Visibility ``v`` > 0
  becomes confidence 1 in annotation files; results files keep their scores.
- **OpenPose** (one ``<image stem>_keypoints.json`` per image, or a folder of them):
  ``people[i].pose_keypoints_2d`` holds 25 (BODY_25) or 18 (COCO-18) ``x, y, c`` triples.

Every reader raises :class:`DetectionsFileError` naming the file and the field on bad input.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mega.detection.people import (
    BODY25_TO_COCO17,
    OPENPOSE18_TO_COCO17,
    Person,
    box_from_keypoints,
    remap,
)
from mega.errors import UserError

T = TypeVar("T")


class DetectionsFileError(UserError, ValueError):
    """A detections file is missing, unreadable, or has a field of the wrong shape."""


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DetectionsFileError(f"detections file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DetectionsFileError(f"{path}: not valid JSON ({err}); write COCO or OpenPose JSON") from err


def _structure_errors(read: Callable[[str | Path], T]) -> Callable[[str | Path], T]:
    """A reader whose content surprises (a value of the wrong type, a missing key) raise DetectionsFileError."""

    @functools.wraps(read)
    def wrapper(path: str | Path) -> T:
        try:
            return read(path)
        except DetectionsFileError:
            raise
        except (TypeError, KeyError, AttributeError, IndexError, ValueError, OverflowError) as err:
            raise DetectionsFileError(
                f"{path}: unexpected content ({type(err).__name__}: {err}); write COCO or OpenPose JSON "
                "(mega/detection/keypoint_files.py lists the fields)"
            ) from err

    return wrapper


def _triples(values: Any, count: int | None, path: Path, field: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DetectionsFileError(f"{path}: field '{field}' is not a flat list of numbers ({err})") from err
    if arr.ndim != 1 or arr.size % 3 or (count is not None and arr.size != 3 * count):
        want = f"{3 * count}" if count is not None else "a multiple of 3"
        raise DetectionsFileError(f"{path}: field '{field}' has {arr.size} numbers, expected {want}")
    if not np.isfinite(arr).all():
        raise DetectionsFileError(f"{path}: field '{field}' contains NaN or inf")
    return arr.reshape(-1, 3)


def _coco_person(entry: dict[str, Any], path: Path, results: bool) -> Person:
    if "keypoints" not in entry:
        raise DetectionsFileError(f"{path}: an annotation misses field 'keypoints'")
    kp = _triples(entry["keypoints"], 17, path, "keypoints")
    if not results:
        kp[:, 2] = (kp[:, 2] > 0).astype(np.float64)
    if "bbox" in entry:
        x, y, w, h = (float(v) for v in entry["bbox"])
        box = np.array([x, y, x + w, y + h])
    else:
        box = box_from_keypoints(kp)
        if box is None:
            raise DetectionsFileError(f"{path}: an annotation has neither 'bbox' nor two visible keypoints")
    return Person(box=box, keypoints=kp, score=float(entry.get("score", 1.0)), source="coco_json")


@_structure_errors
def read_coco_keypoints(path: str | Path) -> dict[str, list[Person]]:
    """People per image name from a COCO keypoints annotation or results file.

    Returns:
        ``{image file name (or str(image_id) when the file has no images table): [Person, ...]}``.
    """
    path = Path(path)
    data = _load_json(path)
    out: dict[str, list[Person]] = {}
    if isinstance(data, dict):
        if "annotations" not in data:
            raise DetectionsFileError(f"{path}: COCO file misses field 'annotations'")
        names = {img["id"]: img["file_name"] for img in data.get("images", [])}
        for ann in data["annotations"]:
            if ann.get("num_keypoints", 1) == 0:
                continue
            key = names.get(ann.get("image_id"), str(ann.get("image_id")))
            out.setdefault(key, []).append(_coco_person(ann, path, results=False))
    elif isinstance(data, list):
        for res in data:
            if "image_id" not in res:
                raise DetectionsFileError(f"{path}: a result misses field 'image_id'")
            out.setdefault(str(res["image_id"]), []).append(_coco_person(res, path, results=True))
    else:
        raise DetectionsFileError(
            f"{path}: expected a COCO dict or a list of results, got {type(data).__name__}"
        )
    return out


@_structure_errors
def read_openpose(path: str | Path) -> list[Person]:
    """People of one OpenPose ``*_keypoints.json`` file (BODY_25 or COCO-18), as COCO-17."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "people" not in data:
        raise DetectionsFileError(f"{path}: OpenPose file misses field 'people'")
    people = []
    for i, person in enumerate(data["people"]):
        field = f"people[{i}].pose_keypoints_2d"
        kp = _triples(person.get("pose_keypoints_2d", []), None, path, field)
        if len(kp) == 25:
            coco = remap(kp, BODY25_TO_COCO17)
        elif len(kp) == 18:
            coco = remap(kp, OPENPOSE18_TO_COCO17)
        else:
            raise DetectionsFileError(f"{path}: field '{field}' has {len(kp)} keypoints, expected 25 or 18")
        box = box_from_keypoints(coco)
        if box is not None:
            people.append(
                Person(box=box, keypoints=coco, score=float(coco[:, 2].mean()), source="openpose_json")
            )
    return people


@_structure_errors
def read_detections(path: str | Path) -> dict[str, list[Person]]:
    """People per image stem from a COCO JSON file, an OpenPose JSON file, or a folder of OpenPose files.

    Keys are image file stems (``frame_0001`` for ``frame_0001.jpg`` / ``frame_0001_keypoints.json``).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*_keypoints.json")) or sorted(path.glob("*.json"))
        if not files:
            raise DetectionsFileError(f"{path}: folder holds no OpenPose '*_keypoints.json' file")
        return {f.name.removesuffix(".json").removesuffix("_keypoints"): read_openpose(f) for f in files}
    data = _load_json(path)
    if isinstance(data, dict) and "people" in data:
        return {path.name.removesuffix(".json").removesuffix("_keypoints"): read_openpose(path)}
    return {Path(k).stem: v for k, v in read_coco_keypoints(path).items()}
