"""EMDB reader: ``P*/<sequence>/*_data.pkl`` -> benchmark index rows.

Each pickle (formats note section 4.1, ``eth-ait/emdb : dataset.md``) holds one person: ``gender``
(full words), ``name``, ``emdb1`` / ``emdb2`` flags, ``n_frames``, ``good_frames_mask``,
``camera.intrinsics`` (3, 3), ``camera.extrinsics`` (n_frames, 4, 4) world -> camera,
``camera.width`` / ``camera.height``, ``smpl.poses_root`` (n_frames, 3), ``smpl.poses_body``
(n_frames, 69), ``smpl.trans`` (n_frames, 3), ``smpl.betas`` (10,), ``bboxes.bboxes`` (n_frames, 4)
xyxy and ``bboxes.invalid_idxs``. Images are ``<sequence folder>/images/%05d.jpg``.

EMDB-1 protocol (section 4.2): sequences with ``emdb1``; frames with ``good_frames_mask``, minus
``bboxes.invalid_idxs`` and boxes of non-positive size (as VQ-HPS does); ground truth moved into the
camera frame like 3DPW's; box = the given box made square with ``bbox_margin``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mega.data.benchmarks.index import (
    GENDERS,
    BenchmarkError,
    BenchmarkIndex,
    MissingFileError,
    as_array,
    make_body_factory,
    read_pickle,
    require,
    rest_pelvis_fn,
    square_bbox,
    world_to_camera,
)

log = logging.getLogger(__name__)

SPLITS = ("emdb1", "emdb2", "all")


def image_path(folder: str, frame: int) -> str:
    """Image of ``frame`` in sequence folder ``folder`` (``P0/09_outdoor_walk``), relative to the root."""
    return f"{folder}/images/{frame:05d}.jpg"


def read_sequence(
    path: Path, root: Path, margin: float, pelvis_fn, split: str = "emdb1", check_images: bool = True
) -> dict[str, np.ndarray]:
    """Index columns of one EMDB sequence (see :mod:`mega.data.benchmarks.index` for the fields).

    Args:
        path: ``P<k>/<sequence>/<P<k>_<sequence>>_data.pkl``.
        root: the EMDB root (holds ``P0`` ... ``P9``).
        margin: box side = margin * max(width, height) of the given box.
        pelvis_fn: ``(betas (N, 10), gender) -> rest pelvis (N, 3)`` of the ground-truth body.
        split: ``emdb1`` / ``emdb2`` (keep the sequence only if that flag is set) or ``all``.
        check_images: require every kept image to exist.
    Returns:
        column name -> array, one row per kept frame; empty if the sequence is not in ``split``.
    """
    data = read_pickle(path)
    if split != "all" and not bool(require(data, split, path)):
        return {}
    n = int(require(data, "n_frames", path))
    gender = str(require(data, "gender", path)).lower()
    if gender not in GENDERS:
        raise BenchmarkError(f"{path}: field 'gender' is {gender!r}, expected one of {GENDERS}")
    mask = as_array(require(data, "good_frames_mask", path), "good_frames_mask", path, (n,), bool)
    boxes = as_array(require(data, "bboxes.bboxes", path), "bboxes.bboxes", path, (n, 4))
    invalid = as_array(
        data.get("bboxes", {}).get("invalid_idxs", []), "bboxes.invalid_idxs", path, (None,), np.int64
    )
    keep = mask & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep[invalid[(invalid >= 0) & (invalid < n)]] = False
    t = np.flatnonzero(keep)
    intr = as_array(require(data, "camera.intrinsics", path), "camera.intrinsics", path, (3, 3))
    ext = as_array(require(data, "camera.extrinsics", path), "camera.extrinsics", path, (n, 4, 4))[t]
    size = np.array([int(require(data, "camera.width", path)), int(require(data, "camera.height", path))])
    root_pose = as_array(require(data, "smpl.poses_root", path), "smpl.poses_root", path, (n, 3))[t]
    body_pose = as_array(require(data, "smpl.poses_body", path), "smpl.poses_body", path, (n, 69))[t]
    trans = as_array(require(data, "smpl.trans", path), "smpl.trans", path, (n, 3))[t]
    betas_one = as_array(require(data, "smpl.betas", path), "smpl.betas", path, (None,))
    if len(betas_one) < 10:
        raise BenchmarkError(f"{path}: field 'smpl.betas' has {len(betas_one)} values, expected at least 10")
    if len(t) == 0:
        return {}
    betas = np.repeat(betas_one[None, :10], len(t), axis=0)
    orient, transl = world_to_camera(root_pose, trans, ext, pelvis_fn(betas, gender))
    center, side = square_bbox(boxes[t, :2], boxes[t, 2:], margin)
    folder = path.parent.relative_to(root).as_posix()
    images = np.array([image_path(folder, int(f)) for f in t])
    if check_images:
        for rel in images:
            if not (root / rel).is_file():
                raise MissingFileError(f"image not found: {root / rel} (sequence {path.name})")
    return {
        "image": images, "sequence": np.full(len(t), str(data.get("name", path.parent.name))), "frame": t,
        "person": np.zeros(len(t), dtype=np.int64), "gender": np.full(len(t), gender), "global_orient": orient,
        "body_pose": body_pose, "betas": betas, "transl": transl, "bbox_center": center, "bbox_size": side,
        "cam_intrinsics": np.repeat(intr[None], len(t), axis=0), "image_size": np.repeat(size[None], len(t), axis=0),
    }  # fmt: skip


def build_emdb_index(
    root: str | Path,
    split: str = "emdb1",
    subset: str = "all",
    bbox_margin: float = 1.2,
    body_model: str = "smpl",
    body_model_path: str | None = None,
    check_images: bool = True,
) -> BenchmarkIndex:
    """Read EMDB into a benchmark index.

    Args:
        root: the EMDB folder (with ``P0`` ... ``P9``).
        split: ``emdb1`` (single-image protocol), ``emdb2`` or ``all`` sequences.
        subset: ``all`` (EMDB has no named subsets).
        bbox_margin: box side = margin * max(w, h) of the given box.
        body_model: ground-truth body registry name (its rest pelvis moves GT into the camera frame).
        body_model_path: its model file or folder (None: default location).
        check_images: require every kept image to exist.
    Returns:
        The validated index.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown EMDB split '{split}' (expected one of {SPLITS})")
    if subset != "all":
        raise ValueError(f"unknown EMDB subset '{subset}' (EMDB has only 'all')")
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"EMDB root not found: {root}; download EMDB and set benchmark.root")
    files = sorted(root.glob("P*/*/*_data.pkl"))
    if not files:
        raise MissingFileError(f"no EMDB sequences (P*/<sequence>/*_data.pkl) under {root}")
    pelvis_fn = rest_pelvis_fn(make_body_factory(body_model, body_model_path))
    parts = [p for f in files if (p := read_sequence(f, root, bbox_margin, pelvis_fn, split, check_images))]
    index = BenchmarkIndex.from_rows("emdb", split, subset, parts)
    log.info("EMDB %s: %d samples from %d of %d sequences", split, len(index), len(parts), len(files))
    return index
