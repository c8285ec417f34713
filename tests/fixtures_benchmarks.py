"""Builders of tiny 3DPW and EMDB copies in the datasets' exact on-disk formats.

3DPW: Python-2 pickles (strings and array buffers pickled as Python-2 ``str``, so they load only
with ``encoding='latin1'``, like the real files) under ``sequenceFiles/<split>/`` and JPEGs under
``imageFiles/<sequence>/image_%05d.jpg``. EMDB: Python-3 pickles of nested dicts under
``P<k>/<sequence>/`` with ``images/%05d.jpg``. Ground truth is posed in a world frame with the given
body models and seen by moving cameras, so readers must do the world -> camera move themselves.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mega.body.rotations import axis_angle_to_matrix
from mega.data.benchmarks.index import make_body_factory

IMAGE_SIZE = (48, 64)  # (width, height): small portrait frames
INTRINSICS = np.array([[60.0, 0.0, 24.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])
KEYPOINT_JOINTS = [15, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 15, 15, 15, 15]  # 18 stand-in detections


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as Python-2 ``str`` opcodes, as Python 2 pickled them."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def write_py2_pickle(obj: Any, path: Path) -> None:
    """Pickle ``obj`` the way Python 2 + numpy 1.x did (protocol 2, ``numpy.core`` globals)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().replace(b"cnumpy._core.", b"cnumpy.core."))


def write_jpeg(path: Path, seed: int) -> None:
    """A small noisy JPEG of :data:`IMAGE_SIZE`."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=70)


def _pose_world(body: Any, orient: np.ndarray, pose: np.ndarray, betas: np.ndarray, trans: np.ndarray):
    """World-frame vertices (N, V, 3) and joints (N, 24, 3) of SMPL parameters."""
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        # Rotation matrices for the root: a (3, 3) axis-angle batch would read as one matrix.
        out = body(
            global_orient=axis_angle_to_matrix(f(orient)),
            body_pose=f(pose).reshape(len(pose), 23, 3),
            betas=f(betas[:, :10]),
            transl=f(trans),
        )
    return out.vertices.double().numpy(), out.joints.double().numpy()


def _cameras(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4, 4) world -> camera extrinsics looking at the origin from ~4 m (world y up, camera y down)."""
    ext = np.tile(np.eye(4), (n, 1, 1))
    flip = np.diag([1.0, -1.0, -1.0])
    for i in range(n):
        yaw = axis_angle_to_matrix(torch.tensor([0.0, rng.uniform(-3, 3), 0.0], dtype=torch.float64)).numpy()
        tilt = axis_angle_to_matrix(
            torch.tensor([rng.uniform(-0.2, 0.2), 0.0, 0.0], dtype=torch.float64)
        ).numpy()
        ext[i, :3, :3] = tilt @ flip @ yaw
        ext[i, :3, 3] = [rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 4.0 + rng.uniform(-0.5, 0.5)]
    return ext


def _project(points_w: np.ndarray, ext: np.ndarray) -> np.ndarray:
    cam = np.einsum("nij,nkj->nki", ext[:, :3, :3], points_w) + ext[:, None, :3, 3]
    uvw = cam @ INTRINSICS.T
    return uvw[..., :2] / uvw[..., 2:3]


def _motion(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "orient": rng.normal(0, 0.3, (n, 3)) + np.array([0.0, rng.uniform(-3, 3), 0.0]),
        "pose": rng.normal(0, 0.25, (n, 69)),
        "trans": rng.normal(0, 0.3, (n, 3)),
    }


# 3DPW: (split, sequence, genders, frames, campose_valid per person, betas length per person)
THREEDPW_SEQUENCES = [
    ("test", "downtown_walking_00", ["m"], 5, [[1, 1, 1, 0, 1]], [10]),
    ("test", "courtyard_hug_00", ["f", "m"], 4, [[1, 1, 1, 1], [0, 0, 1, 1]], [10, 16]),
    ("validation", "courtyard_backpack_00", ["f"], 3, [[1, 1, 1]], [10]),
]
NO_DETECTION = ("downtown_walking_00", 0, 2)  # (sequence, person, frame) whose poses2d are all zero
HIDDEN_KEYPOINT = 3  # a keypoint with confidence 0 and far-away coordinates in every frame


def make_3dpw(root: Path, bodies: Callable[[str], Any], seed: int = 0) -> dict[str, Any]:
    """Write a tiny 3DPW under ``root``; returns the world-frame truth per (sequence, person).

    Returns:
        ``{"truth": {(sequence, person): dict(orient, pose, trans, betas, gender, ext, kp2d, valid)},
        "expected": {split: [(sequence, frame, person), ...]}}``.
    """
    rng = np.random.default_rng(seed)
    truth: dict[tuple[str, int], dict[str, Any]] = {}
    expected: dict[str, list[tuple[str, int, int]]] = {}
    for k, (split, seq, genders, n, valid, n_betas) in enumerate(THREEDPW_SEQUENCES):
        ext = _cameras(rng, n)
        data: dict[str, Any] = {
            "sequence": seq,
            "genders": genders,
            "cam_poses": ext,
            "cam_intrinsics": INTRINSICS,
            "img_frame_ids": np.arange(n) * 2,
            "poses": [],
            "trans": [],
            "betas": [],
            "poses2d": [],
            "jointPositions": [],
            "campose_valid": [],
            "texture_maps": [None] * len(genders),
        }
        for p, gender in enumerate(genders):
            m = _motion(rng, n)
            betas = rng.normal(0, 1, n_betas[p])
            gname = {"m": "male", "f": "female"}[gender]
            _, joints = _pose_world(bodies(gname), m["orient"], m["pose"], np.tile(betas, (n, 1)), m["trans"])
            kp = _project(joints[:, KEYPOINT_JOINTS], ext)  # (n, 18, 2)
            conf = rng.uniform(0.2, 1.0, (n, 18))
            conf[:, HIDDEN_KEYPOINT] = 0.0
            kp[:, HIDDEN_KEYPOINT] = 999.0
            poses2d = np.concatenate([kp.transpose(0, 2, 1), conf[:, None]], axis=1)  # (n, 3, 18)
            if (seq, p) == NO_DETECTION[:2]:
                poses2d[NO_DETECTION[2]] = 0.0
            data["poses"].append(np.concatenate([m["orient"], m["pose"]], axis=1))
            data["trans"].append(m["trans"])
            data["betas"].append(betas)
            data["poses2d"].append(poses2d)
            data["jointPositions"].append(joints.reshape(n, 72))
            data["campose_valid"].append(np.array(valid[p], dtype=np.float64))
            truth[(seq, p)] = {
                **m,
                "betas": betas,
                "gender": gname,
                "ext": ext,
                "kp2d": poses2d,
                "joints_2d": _project(joints, ext),
                "valid": np.array(valid[p], bool),
            }
        write_py2_pickle(data, root / "sequenceFiles" / split / f"{seq}.pkl")
        for t in range(n):
            write_jpeg(root / "imageFiles" / seq / f"image_{t:05d}.jpg", seed=100 * k + t)
        rows = [(seq, t, p) for t in range(n) for p in range(len(genders)) if valid[p][t]]
        expected.setdefault(split, []).extend(rows)
    for split in expected:
        expected[split].sort()
    return {"truth": truth, "expected": expected}


# EMDB: (subject, folder, gender, frames, good_frames_mask, invalid_idxs, emdb1)
EMDB_SEQUENCES = [
    ("P0", "09_outdoor_walk", "female", 5, [1, 1, 0, 1, 1], [4], True),
    ("P1", "14_dance", "male", 3, [1, 1, 1], [], True),
    ("P2", "20_stairs", "neutral", 2, [1, 1], [], False),
]


def make_emdb(root: Path, bodies: Callable[[str], Any], seed: int = 1) -> dict[str, Any]:
    """Write a tiny EMDB under ``root``; returns the world-frame truth and the expected EMDB-1 rows.

    Returns:
        ``{"truth": {sequence name: dict(orient, pose, trans, betas, gender, ext, boxes)},
        "expected": [(sequence name, frame), ...]}`` (EMDB-1 rows in index order).
    """
    rng = np.random.default_rng(seed)
    truth, expected = {}, []
    for k, (subject, folder, gender, n, good, invalid, emdb1) in enumerate(EMDB_SEQUENCES):
        name = f"{subject}_{folder}"
        ext = _cameras(rng, n)
        m = _motion(rng, n)
        betas = rng.normal(0, 1, 10)
        _, joints = _pose_world(bodies(gender), m["orient"], m["pose"], np.tile(betas, (n, 1)), m["trans"])
        kp2d = _project(joints, ext)  # (n, 24, 2)
        boxes = np.concatenate([kp2d.min(axis=1), kp2d.max(axis=1)], axis=1)
        data = {
            "gender": gender,
            "name": name,
            "emdb1": emdb1,
            "emdb2": not emdb1,
            "n_frames": n,
            "good_frames_mask": np.array(good, dtype=bool),
            "camera": {
                "intrinsics": INTRINSICS,
                "extrinsics": ext,
                "width": IMAGE_SIZE[0],
                "height": IMAGE_SIZE[1],
            },
            "smpl": {"poses_root": m["orient"], "poses_body": m["pose"], "trans": m["trans"], "betas": betas},
            "kp2d": kp2d,
            "bboxes": {"bboxes": boxes, "invalid_idxs": np.array(invalid, dtype=np.int64)},
        }
        seq_dir = root / subject / folder
        seq_dir.mkdir(parents=True, exist_ok=True)
        with open(seq_dir / f"{name}_data.pkl", "wb") as f:
            pickle.dump(data, f)
        for t in range(n):
            write_jpeg(seq_dir / "images" / f"{t:05d}.jpg", seed=1000 + 100 * k + t)
        truth[name] = {**m, "betas": betas, "gender": gender, "ext": ext, "boxes": boxes}
        if emdb1:
            expected.extend((name, t) for t in range(n) if good[t] and t not in invalid)
    return {"truth": truth, "expected": expected}


# --- pytest fixtures (import them into a test module by name) ---------------------------------------


@pytest.fixture(scope="module")
def smpl_bodies(synthetic_smpl_dir: Path) -> Callable[[str], Any]:
    """``gender -> synthetic SMPL body`` (distinct neutral, male and female models)."""
    return make_body_factory("smpl", synthetic_smpl_dir)


@pytest.fixture(scope="module")
def free_bodies() -> Callable[[str], Any]:
    """``gender -> the free body`` (one model for every gender)."""
    return make_body_factory("free")


@pytest.fixture(scope="module")
def threedpw(tmp_path_factory: pytest.TempPathFactory, smpl_bodies: Callable[[str], Any]) -> dict[str, Any]:
    """A tiny 3DPW posed with the synthetic SMPL files: ``root``, ``truth``, ``expected``."""
    root = tmp_path_factory.mktemp("3dpw")
    return {"root": root, **make_3dpw(root, smpl_bodies)}


@pytest.fixture(scope="module")
def emdb(tmp_path_factory: pytest.TempPathFactory, free_bodies: Callable[[str], Any]) -> dict[str, Any]:
    """A tiny EMDB posed with the free body: ``root``, ``truth``, ``expected``."""
    root = tmp_path_factory.mktemp("emdb")
    return {"root": root, **make_emdb(root, free_bodies)}
