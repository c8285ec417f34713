"""3DPW reader: ``sequenceFiles/{train,validation,test}/<sequence>.pkl`` -> benchmark index rows.

The pickles are Python-2 pickles (latin1). Per person ``p`` (1 or 2 per sequence) and image frame
``t`` (formats note section 3.1): ``genders[p]`` ('m'/'f'), ``betas[p]`` (>= 10), ``poses[p]``
(N, 72) and ``trans[p]`` (N, 3) in the world frame, ``poses2d[p]`` (N, 3, 18) OpenPose detections
(rows x, y, confidence), ``campose_valid[p]`` (N,); per frame ``cam_poses`` (N, 4, 4) world ->
camera; ``cam_intrinsics`` (3, 3); ``img_frame_ids`` (N,). Images are
``imageFiles/<sequence>/image_%05d.jpg``.

Frames kept (HMR literature: SPIN, ProHMR, PARE ...): every person and frame with
``campose_valid[p][t]``; one sample per person and frame. Ground truth is moved into the camera
frame with SMPL's rest-pelvis pivot (:func:`mega.data.benchmarks.index.world_to_camera`). The box is the
extent of the detected keypoints (confidence > 0) times ``bbox_margin`` (SPIN's 1.2); a frame with
no detection falls back to the projected ``jointPositions``.

Subsets: ``all`` (the split), ``occ`` (3DPW-OCC, Zhang et al., as used by PARE: sequences from every
split whose name starts with one of :data:`OCC_SEQUENCES`, from ``mkocabas/PARE :
pare/core/constants.py``) and ``pc`` (3DPW-PC, ROMP: the frame ranges of :data:`PC_FRAME_RANGES`,
from Arthur151/ROMP#60; ranges taken as inclusive). Both were transcribed from the project's
research notes, not re-checked against the original files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mega.data.benchmarks.index import (
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

SPLITS = ("train", "validation", "test")
GENDER_CODES = {"m": "male", "f": "female", "male": "male", "female": "female"}

OCC_SEQUENCES = (
    "courtyard_backpack",
    "courtyard_basketball",
    "courtyard_bodyScannerMotions",
    "courtyard_box",
    "courtyard_golf",
    "courtyard_jacket",
    "courtyard_laceShoe",
    "downtown_stairs",
    "flat_guitar",
    "flat_packBags",
    "outdoors_climbing",
    "outdoors_crosscountry",
    "outdoors_fencing",
    "outdoors_freestyle",
    "outdoors_golf",
    "outdoors_parcours",
    "outdoors_slalom",
)
PC_FRAME_RANGES = {
    "courtyard_basketball_00": (200, 280),
    "courtyard_captureSelfies_00": (500, 600),
    "courtyard_dancing_00": (60, 370),
    "courtyard_dancing_01": (60, 270),
    "courtyard_hug_00": (100, 500),
    "downtown_bus_00": (1620, 1900),
}


def image_path(sequence: str, frame: int) -> str:
    """Image of ``frame`` of ``sequence``, relative to the 3DPW root."""
    return f"imageFiles/{sequence}/image_{frame:05d}.jpg"


def _bbox(
    kp2d: np.ndarray, joints_2d: np.ndarray | None, margin: float, path: Path
) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes from visible keypoints (N, 3, 18), else from projected joints (N, 24, 2)."""
    visible = kp2d[:, 2, :] > 0  # (N, 18)
    inf = np.inf
    xy = kp2d[:, :2, :].transpose(0, 2, 1)  # (N, 18, 2)
    lo = np.where(visible[..., None], xy, inf).min(axis=1)
    hi = np.where(visible[..., None], xy, -inf).max(axis=1)
    missing = ~visible.any(axis=1)
    if missing.any():
        if joints_2d is None:
            raise BenchmarkError(
                f"{path}: {missing.sum()} kept frames have no detected keypoint in 'poses2d' "
                "and field 'jointPositions' is missing, so no box can be computed"
            )
        lo[missing] = joints_2d[missing].min(axis=1)
        hi[missing] = joints_2d[missing].max(axis=1)
    center, size = square_bbox(lo, hi, margin)
    return center, size, int(missing.sum())


def _project(points: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """World points (N, J, 3) -> pixels (N, J, 2)."""
    cam = np.einsum("nij,nkj->nki", extrinsics[:, :3, :3], points) + extrinsics[:, None, :3, 3]
    uvw = cam @ intrinsics.T
    return uvw[..., :2] / uvw[..., 2:3]


def read_sequence(
    path: Path,
    root: Path,
    margin: float,
    pelvis_fn,
    frames: tuple[int, int] | None = None,
    check_images: bool = True,
) -> dict[str, np.ndarray]:
    """Index columns of one 3DPW sequence file (see :mod:`mega.data.benchmarks.index` for the fields).

    Args:
        path: ``sequenceFiles/<split>/<sequence>.pkl``.
        root: the 3DPW root (holds ``imageFiles``).
        margin: box side = margin * extent of the visible keypoints.
        pelvis_fn: ``(betas (N, 10), gender) -> rest pelvis (N, 3)`` of the ground-truth body.
        frames: inclusive (first, last) frame range to keep, or None for all.
        check_images: require every kept image to exist.
    Returns:
        column name -> array, one row per kept (frame, person), ordered by frame then person.
    """
    seq = _Sequence.read(path)
    cols: dict[str, list[np.ndarray]] = {}
    for p in range(len(seq.genders)):
        for name, value in _person_columns(seq, p, margin, pelvis_fn, frames).items():
            cols.setdefault(name, []).append(value)
    if not cols:
        return {}
    out = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((out["person"], out["frame"]))
    out = {k: v[order] for k, v in out.items()}
    out["sequence"] = np.full(len(order), seq.name)
    out["image"] = np.array([image_path(seq.name, int(f)) for f in out["frame"]])
    out["image_size"] = np.repeat(_image_size(root, out["image"], check_images)[None], len(order), axis=0)
    return out


@dataclass
class _Sequence:
    """The checked fields of one 3DPW sequence file (N frames, P people)."""

    path: Path
    name: str
    genders: list  # (P,) 'm' / 'f'
    cam_poses: np.ndarray  # (N, 4, 4) world -> camera
    intr: np.ndarray  # (3, 3)
    per_person: dict[str, list]  # poses, trans, betas, poses2d, campose_valid: P entries each
    joint_positions: list | None  # (P,) of (N, 72), or None

    @classmethod
    def read(cls, path: Path) -> _Sequence:
        data = read_pickle(path)
        genders = require(data, "genders", path)
        cam_poses = as_array(require(data, "cam_poses", path), "cam_poses", path, (None, 4, 4))
        intr = as_array(require(data, "cam_intrinsics", path), "cam_intrinsics", path, (3, 3))
        as_array(require(data, "img_frame_ids", path), "img_frame_ids", path, (len(cam_poses),))
        keys = ("poses", "trans", "betas", "poses2d", "campose_valid")
        per_person = {key: require(data, key, path) for key in keys}
        for key, value in per_person.items():
            if len(value) != len(genders):
                raise BenchmarkError(
                    f"{path}: field '{key}' has {len(value)} persons, 'genders' has {len(genders)}"
                )
        name = str(data.get("sequence", path.stem))
        return cls(path, name, genders, cam_poses, intr, per_person, data.get("jointPositions"))


def _person_columns(
    seq: _Sequence, p: int, margin: float, pelvis_fn, frames: tuple[int, int] | None
) -> dict[str, np.ndarray]:
    """Index columns of person ``p`` over the frames where the camera pose is valid (and in ``frames``)."""
    path, n = seq.path, len(seq.cam_poses)
    gender = GENDER_CODES.get(str(seq.genders[p]).lower())
    if gender is None:
        raise BenchmarkError(f"{path}: field 'genders[{p}]' is {seq.genders[p]!r}, expected 'm' or 'f'")
    valid = as_array(seq.per_person["campose_valid"][p], f"campose_valid[{p}]", path, (n,)).astype(bool)
    if frames is not None:
        t_all = np.arange(n)
        valid &= (t_all >= frames[0]) & (t_all <= frames[1])
    t = np.flatnonzero(valid)
    if len(t) == 0:
        return {}
    poses = as_array(seq.per_person["poses"][p], f"poses[{p}]", path, (n, 72))[t]
    trans = as_array(seq.per_person["trans"][p], f"trans[{p}]", path, (n, 3))[t]
    betas_p = as_array(seq.per_person["betas"][p], f"betas[{p}]", path, (None,))
    if len(betas_p) < 10:
        raise BenchmarkError(f"{path}: field 'betas[{p}]' has {len(betas_p)} values, expected at least 10")
    kp2d = as_array(seq.per_person["poses2d"][p], f"poses2d[{p}]", path, (n, 3, None))[t]
    betas = np.repeat(betas_p[None, :10], len(t), axis=0)
    ext = seq.cam_poses[t]
    orient, transl = world_to_camera(poses[:, :3], trans, ext, pelvis_fn(betas, gender))
    joints_2d = None
    if seq.joint_positions is not None:
        jp = as_array(seq.joint_positions[p], f"jointPositions[{p}]", path, (n, 72))[t].reshape(-1, 24, 3)
        joints_2d = _project(jp, ext, seq.intr)
    center, size, fallbacks = _bbox(kp2d, joints_2d, margin, path)
    if fallbacks:
        message = "%s person %d: %d frames without detections use projected joints for the box"
        log.info(message, seq.name, p, fallbacks)
    return {
        "frame": t,
        "person": np.full(len(t), p),
        "gender": np.full(len(t), gender),
        "global_orient": orient,
        "body_pose": poses[:, 3:],
        "betas": betas,
        "transl": transl,
        "bbox_center": center,
        "bbox_size": size,
        "cam_intrinsics": np.repeat(seq.intr[None], len(t), axis=0),
    }


def _image_size(root: Path, images: np.ndarray, check_images: bool) -> np.ndarray:
    """(width, height) of a sequence (read from its first image); every image checked if asked."""
    for rel in images if check_images else images[:1]:
        if not (root / rel).is_file():
            raise MissingFileError(f"image not found: {root / rel}")
    try:
        with Image.open(root / images[0]) as img:
            return np.array(img.size, dtype=np.int64)
    except OSError as err:
        raise BenchmarkError(f"{root / images[0]}: unreadable image ({err})") from err


def sequence_files(root: Path, split: str, subset: str) -> list[tuple[Path, tuple[int, int] | None]]:
    """The sequence pickles of ``split`` / ``subset`` with their frame ranges (None = all frames)."""
    if subset not in ("all", "occ", "pc"):
        raise ValueError(f"unknown 3DPW subset '{subset}' (expected all, occ or pc)")
    if split not in SPLITS:
        raise ValueError(f"unknown 3DPW split '{split}' (expected one of {SPLITS})")
    seq_root = root / "sequenceFiles"
    if not seq_root.is_dir():
        raise MissingFileError(
            f"3DPW root {root} has no 'sequenceFiles' folder; set benchmark.root to the 3DPW folder"
        )
    splits = [split] if subset == "all" else list(SPLITS)  # OCC and PC draw from every split
    files = sorted(f for s in splits for f in (seq_root / s).glob("*.pkl"))
    if subset == "occ":
        return [(f, None) for f in files if f.stem.rsplit("_", 1)[0] in OCC_SEQUENCES]
    if subset == "pc":
        return [(f, PC_FRAME_RANGES[f.stem]) for f in files if f.stem in PC_FRAME_RANGES]
    return [(f, None) for f in files]


def build_3dpw_index(
    root: str | Path,
    split: str = "test",
    subset: str = "all",
    bbox_margin: float = 1.2,
    body_model: str = "smpl",
    body_model_path: str | None = None,
    check_images: bool = True,
) -> BenchmarkIndex:
    """Read 3DPW into a benchmark index.

    Args:
        root: the 3DPW folder (with ``sequenceFiles/`` and ``imageFiles/``).
        split: ``train``, ``validation`` or ``test`` (ignored by the ``occ`` and ``pc`` subsets).
        subset: ``all``, ``occ`` (3DPW-OCC) or ``pc`` (3DPW-PC).
        bbox_margin: box side = margin * keypoint extent.
        body_model: ground-truth body registry name (its rest pelvis moves GT into the camera frame).
        body_model_path: its model file or folder (None: default location).
        check_images: require every kept image to exist.
    Returns:
        The validated index.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"3DPW root not found: {root}; download 3DPW and set benchmark.root")
    pelvis_fn = rest_pelvis_fn(make_body_factory(body_model, body_model_path))
    files = sequence_files(root, split, subset)
    if not files:
        raise MissingFileError(
            f"no 3DPW sequences for split '{split}', subset '{subset}' under {root / 'sequenceFiles'}"
        )
    parts = [read_sequence(f, root, bbox_margin, pelvis_fn, frames, check_images) for f, frames in files]
    index = BenchmarkIndex.from_rows(
        "3dpw", "all" if subset != "all" else split, subset, [p for p in parts if p]
    )
    log.info("3DPW %s/%s: %d samples from %d sequences", split, subset, len(index), len(files))
    return index
