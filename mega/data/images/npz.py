"""Reading SPIN / BEDLAM-CLIFF image split files: the key variants of the npz format, normalised.

One ``<split>.npz`` plus an image root (keys: ``/work/shared/coord/CONTRACTS.md`` and
``data/README.md``). Key variants accepted, first match wins:

- pose (72 = global orient in the camera frame + 23 joints): ``pose_cam`` (BEDLAM labels) > ``pose`` >
  ``body_pose`` (4D-Humans eval npz, 72) > ``root_orient`` + ``pose_body`` (63 or 69; MEGA / VQ-HPS);
  wider SMPL-X / SMPL-H layouts (165, 156) keep root + 21 body joints, SMPL's hand joints zero;
- betas: ``betas`` > ``shape`` (first 10 kept; BEDLAM's 11th dropped); ``has_smpl`` > ``has_body_pose``
  (default: 1 where a pose key exists);
- 2D: COCO-17 from ``j2d_coco`` > SPIN-24 ``part`` (mapped) > OpenPose-25 ``body_keypoints_2d`` (mapped);
  SMPL-24 from ``j2d_smpl`` > ``j2d`` (MEGA's files: projected SMPL joints);
- 3D: ``S`` (N, 24, 3|4), used as SMPL-24 when ``joints_3d_order='smpl'`` (ours, BEDLAM); real SPIN
  files store SPIN-24 joints, which are not SMPL joints, so ``'spin'`` / ``'none'`` gives conf 0;
- ``trans`` > ``trans_cam`` (N, 3) camera-frame translation; ``cam_int`` (N, 3, 3); ``img_size`` (N, 2);
  ``gender`` (str or bytes; ``m``/``f`` accepted); ``scale`` (N,) or (N, 2) in /200 units, or pixels
  with ``scale_in_pixels``.

Used by :mod:`mega.data.images.dataset` (crops, augmentation, datasets) and :mod:`mega.data.images.shards`.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mega.data.crop import ImageDataError, MissingImageError
from mega.safe_pickle import UnsafePickleError, load_npz_object_array

# COCO-17 keypoint k sits at these slots of SPIN's 24 (nkolot/SPIN datasets/preprocess/coco.py) ...
SPIN24_TO_COCO17 = [19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0]
# ... and of OpenPose BODY_25.
OPENPOSE25_TO_COCO17 = [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]
_GENDERS = {
    "neutral": "neutral",
    "n": "neutral",
    "male": "male",
    "m": "male",
    "female": "female",
    "f": "female",
}
JOINTS_3D_ORDERS = ("smpl", "spin", "none")


# ------------------------------------------------------------------------------------------ reading


class _Npz:
    """Key access to an npz with errors that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise MissingImageError(
                f"image-dataset npz not found: {path} (see data/README.md for where it goes)"
            )
        try:
            self.data = np.load(path, allow_pickle=False)  # object arrays: load_npz_object_array
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as err:
            raise ImageDataError(
                f"{path}: not a readable npz ({err}); the file is truncated or corrupt"
            ) from err
        self.keys = set(self.data.files)

    def get(self, key: str, shape: tuple[int | None, ...] | None = None, n: int | None = None) -> np.ndarray:
        try:
            try:
                arr = self.data[key]
            except ValueError as err:  # an object array (string imgname): through the restricted unpickler
                if "allow_pickle" not in str(err):
                    raise
                arr = load_npz_object_array(self.path, key)
        except UnsafePickleError:
            raise
        except (
            zipfile.BadZipFile,
            OSError,
            ValueError,
            EOFError,
            KeyError,
            pickle.UnpicklingError,
            NotImplementedError,  # zipfile: a damaged header names an unknown compression method
            MemoryError,
        ) as err:
            raise ImageDataError(
                f"{self.path}: key '{key}' cannot be read ({err}); the npz is truncated"
            ) from err
        if shape is not None:
            want = tuple(n if s == -1 else s for s in shape)
            if arr.ndim != len(want) or any(w is not None and w != a for w, a in zip(want, arr.shape)):
                txt = "(" + ", ".join("*" if w is None else str(w) for w in want) + ")"
                raise ImageDataError(f"{self.path}: key '{key}' has shape {arr.shape}, expected {txt}")
        if arr.dtype.kind in "cV":
            raise ImageDataError(
                f"{self.path}: key '{key}' has dtype {arr.dtype}, expected numbers or strings"
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ImageDataError(f"{self.path}: key '{key}' contains NaN or inf")
        return arr

    def first(self, *keys: str) -> str | None:
        return next((k for k in keys if k in self.keys), None)


def _strings(arr: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]


def read_image_npz(path: str | Path, joints_3d_order: str = "smpl", scale_in_pixels: bool = False) -> dict:
    """Read and normalise one split file.

    Returns:
        dict of per-sample arrays: ``imgname`` (N,) str; ``center`` (N, 2); ``scale`` (N,) or (N, 2) in
        /200 units; ``kp_coco`` (N, 17, 3); ``kp_smpl`` (N, 24, 3); ``pose`` (N, 24, 3); ``betas``
        (N, 10); ``has_smpl`` (N,); ``joints_3d`` (N, 24, 4); ``transl`` (N, 3); ``has_transl`` (N,);
        ``cam_int`` (N, 3, 3) or None; ``img_size`` (N, 2) or None; ``gender`` (N,) str.
    """
    if joints_3d_order not in JOINTS_3D_ORDERS:
        raise ValueError(f"joints_3d_order must be one of {JOINTS_3D_ORDERS}, got '{joints_3d_order}'")
    f = _Npz(Path(path))
    for key in ("imgname", "center", "scale"):
        if key not in f.keys:
            raise ImageDataError(f"{f.path}: missing key '{key}' (have: {', '.join(sorted(f.keys))})")
    imgname = _strings(f.get("imgname", (None,)))
    n = len(imgname)
    # Numpy string arrays, not lists: DataLoader workers forked from the parent would otherwise copy
    # every Python string page by touching reference counts.
    out: dict[str, Any] = {
        "imgname": np.array(imgname),
        "center": f.get("center", (-1, 2), n).astype(np.float64),
    }
    scale = f.get("scale", None).astype(np.float64)
    if not (scale.shape == (n,) or scale.shape == (n, 2)):
        raise ImageDataError(f"{f.path}: key 'scale' has shape {scale.shape}, expected ({n},) or ({n}, 2)")
    out["scale"] = scale / 200.0 if scale_in_pixels else scale

    out["kp_coco"], out["kp_smpl"] = _keypoints_2d(f, n)
    pose, has_pose = _pose(f, n)
    out["pose"] = pose.reshape(n, 24, 3)
    betas = np.zeros((n, 10), np.float32)
    if k := f.first("betas", "shape"):
        b = f.get(k, (-1, None), n)
        betas[:, : min(10, b.shape[1])] = b[:, :10]
    out["betas"] = betas
    if k := f.first("has_smpl", "has_body_pose"):
        out["has_smpl"] = f.get(k, (-1,), n).astype(np.float32)
    else:
        out["has_smpl"] = np.full(n, 1.0 if has_pose else 0.0, np.float32)

    out["joints_3d"] = _joints_3d(f, n, joints_3d_order)
    transl = np.zeros((n, 3), np.float32)
    if k := f.first("trans", "trans_cam"):
        transl[:] = f.get(k, (-1, 3), n)
    out["transl"], out["has_transl"] = transl, np.full(n, 1.0 if k else 0.0, np.float32)
    out["cam_int"] = f.get("cam_int", (-1, 3, 3), n).astype(np.float64) if "cam_int" in f.keys else None
    out["img_size"] = f.get("img_size", (-1, 2), n).astype(np.float64) if "img_size" in f.keys else None
    out["gender"] = _genders(f, n)
    return out


def _keypoints_2d(f: _Npz, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 17, 3) COCO-17 and (N, 24, 3) SMPL-24 2D keypoints from whichever layout the file has (zeros
    where it has none): ``j2d_coco``, SPIN's 24 ``part``s or OpenPose's 25 ``body_keypoints_2d``."""
    kp_coco = np.zeros((n, 17, 3), np.float32)
    if (k := f.first("j2d_coco", "part", "body_keypoints_2d")) == "j2d_coco":
        kp_coco[:] = f.get(k, (-1, 17, 3), n)
    elif k == "part":
        kp_coco[:] = f.get(k, (-1, 24, 3), n)[:, SPIN24_TO_COCO17]
    elif k == "body_keypoints_2d":
        kp_coco[:] = f.get(k, (-1, 25, 3), n)[:, OPENPOSE25_TO_COCO17]
    kp_smpl = np.zeros((n, 24, 3), np.float32)
    if k := f.first("j2d_smpl", "j2d"):
        kp_smpl[:] = f.get(k, (-1, 24, 3), n)
    return kp_coco, kp_smpl


def _pose(f: _Npz, n: int) -> tuple[np.ndarray, bool]:
    """(N, 72) SMPL axis-angle pose (SMPL-X / SMPL-H layouts: root + 21 body joints, hands zero) and whether
    the file has one (else zeros)."""
    pose = np.zeros((n, 72), np.float32)
    if k := f.first("pose_cam", "pose", "body_pose"):
        full = f.get(k, (-1, None), n)
        if full.shape[1] == 72:
            pose[:] = full
        elif full.shape[1] >= 66:  # SMPL-X / SMPL-H layouts: root + 21 body joints, SMPL hands zero
            pose[:, :66] = full[:, :66]
        else:
            raise ImageDataError(f"{f.path}: key '{k}' has shape {full.shape}, expected ({n}, 72) (or >= 66)")
    elif "root_orient" in f.keys and "pose_body" in f.keys:
        body = f.get("pose_body", (-1, None), n)
        if body.shape[1] not in (63, 69):
            raise ImageDataError(f"{f.path}: key 'pose_body' has shape {body.shape}, expected ({n}, 63 | 69)")
        pose[:, :3] = f.get("root_orient", (-1, 3), n)
        pose[:, 3 : 3 + body.shape[1]] = body
    return pose, k is not None or "root_orient" in f.keys


def _joints_3d(f: _Npz, n: int, order: str) -> np.ndarray:
    """(N, 24, 4) 3D joints with confidence from ``S`` when they are in SMPL's order (else zeros)."""
    joints = np.zeros((n, 24, 4), np.float32)
    if "S" in f.keys and order == "smpl":
        s = f.get("S", (-1, 24, None), n)
        if s.shape[2] not in (3, 4):
            raise ImageDataError(f"{f.path}: key 'S' has shape {s.shape}, expected ({n}, 24, 3 | 4)")
        joints[:, :, : s.shape[2]] = s
        if s.shape[2] == 3:
            joints[:, :, 3] = 1.0
    return joints


def _genders(f: _Npz, n: int) -> np.ndarray:
    """(N,) ``neutral`` / ``male`` / ``female`` (``neutral`` for every sample when the file has none)."""
    if "gender" not in f.keys:
        return np.full(n, "neutral")
    raw = _strings(f.get("gender", (-1,), n))
    bad = sorted({g for g in raw if g.strip().lower() not in _GENDERS})
    if bad:
        raise ImageDataError(
            f"{f.path}: key 'gender' has values {bad[:5]}; expected neutral/male/female (or n/m/f)"
        )
    return np.array([_GENDERS[g.strip().lower()] for g in raw])
