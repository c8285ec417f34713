"""Augmentation for image crops: box jitter, rotation, horizontal flip, colour jitter, occlusion.

Geometry is exact. A rotation or a flip is applied to the *camera*, not to the crop: a rotation by
``theta`` about the optical axis (``T = Rz``) or a mirror of the camera frame (``T = diag(-1, 1, 1)``)
maps image pixels by the affine ``G = K T K^-1`` (the principal point stays fixed). The sample then
describes a *virtual image* (the original seen through ``G``): keypoints, box centre, global
orientation, 3D joints and translation are all transformed by ``G`` / ``T``, the intrinsics and
image size are unchanged, and the square crop is axis-aligned in the virtual image. Its pixels are
the same as rotating / flipping the crop about its own centre (HMR2 / SPIN), because rotations about
different pivots differ by a translation that the box centre absorbs. So projecting the augmented 3D
joints with ``cam_int`` and cropping with ``bbox_center`` / ``bbox_size`` lands on the augmented 2D
keypoints exactly (tests check < 1 px).

Body parameters under ``T``:
- flip: SMPL's left/right joint permutation (``mega.body.joints.SMPL_FLIP``) and axis-angle
  ``(x, y, z) -> (x, -y, -z)`` (``M R M`` for the mirror ``M``), keypoints permuted likewise
  (``COCO17_FLIP``);
- rotation: ``global_orient <- Rz global_orient``;
- translation: the body rotates about its pelvis ``P`` (camera frame), so ``transl <- transl + (T - I) P``
  (exact; ``P`` comes from the sample's 3D joints, or from a pelvis model of the betas).

Randomness: every choice for one sample draws from one ``numpy`` generator seeded by
``(seed, rank, epoch, index)`` (:func:`sample_rng`), in a fixed order, so a sample's augmentation is a
pure function of those four numbers (reproducible across workers, resumes and machines).
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field

import cv2
import numpy as np

from mega.body.joints import SMPL_FLIP

COCO17_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
MIRROR = np.diag([-1.0, 1.0, 1.0])


def sample_rng(seed: int, rank: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's random choices."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, rank, epoch, index])))


class SharedEpoch:
    """An epoch number in shared memory: ``set`` in the main process is seen by DataLoader workers,
    persistent ones included (set it before creating the epoch's iterator). Pickled outside process
    start-up (a deepcopy, a checkpoint) it becomes a private copy."""

    def __init__(self, epoch: int = 0) -> None:
        self._value = multiprocessing.RawValue("q", int(epoch))

    def get(self) -> int:
        return int(self._value.value)

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def __getstate__(self) -> dict:
        spawning = multiprocessing.context.get_spawning_popen() is not None
        return {"value": self._value} if spawning else {"epoch": self.get()}

    def __setstate__(self, state: dict) -> None:
        self._value = state["value"] if "value" in state else multiprocessing.RawValue("q", state["epoch"])


@dataclass
class AugmentParams:
    """One sample's augmentation (identity by default).

    Attributes:
        scale: box side multiplier (> 1 zooms out).
        shift: (2,) box centre shift in box sides (image x, y).
        rotation: degrees, counter-clockwise on screen.
        flip: mirror left/right.
        colour: (3,) per-channel RGB gains.
        occluders: rectangles ``(x0, y0, x1, y1, r, g, b)`` in crop units [0, 1] / colour [0, 255].
    """

    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    rotation: float = 0.0
    flip: bool = False
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    occluders: list[tuple[float, ...]] = field(default_factory=list)


class Augmenter:
    """Draws :class:`AugmentParams` (HMR2 / SPIN style defaults).

    Args:
        scale_factor: box scale ``1 + clip(N(0,1), -1, 1) * scale_factor``.
        trans_factor: centre shift ``clip(N(0,1), -1, 1) * trans_factor`` box sides, per axis.
        rot_factor: rotation ``clip(N(0,1), -2, 2) * rot_factor`` degrees ...
        rot_prob: ... applied with this probability.
        flip_prob: horizontal flip probability.
        colour_factor: per-channel gains uniform in ``[1 - c, 1 + c]``.
        occlusion_prob: probability of one synthetic occluder (a random-colour rectangle) ...
        occlusion_size: ... whose sides are uniform in this range of crop fractions.
    """

    def __init__(
        self,
        scale_factor: float = 0.3,
        trans_factor: float = 0.02,
        rot_factor: float = 30.0,
        rot_prob: float = 0.6,
        flip_prob: float = 0.5,
        colour_factor: float = 0.2,
        occlusion_prob: float = 0.0,
        occlusion_size: tuple[float, float] = (0.1, 0.4),
    ) -> None:
        self.scale_factor, self.trans_factor = scale_factor, trans_factor
        self.rot_factor, self.rot_prob, self.flip_prob = rot_factor, rot_prob, flip_prob
        self.colour_factor, self.occlusion_prob = colour_factor, occlusion_prob
        self.occlusion_size = tuple(occlusion_size)

    def sample(self, rng: np.random.Generator) -> AugmentParams:
        """Draw one sample's parameters (always the same number of draws, in the same order)."""
        z = rng.standard_normal(4)
        u = rng.random(11)
        rot = float(np.clip(z[3], -2, 2) * self.rot_factor) if u[0] < self.rot_prob else 0.0
        occluders = []
        if u[2] < self.occlusion_prob:
            lo, hi = self.occlusion_size
            w, h = lo + (hi - lo) * u[3], lo + (hi - lo) * u[4]
            x0, y0 = u[5] * (1 - w), u[6] * (1 - h)
            occluders.append((x0, y0, x0 + w, y0 + h, *(255.0 * u[7:10])))
        c = self.colour_factor
        return AugmentParams(
            scale=float(1 + np.clip(z[0], -1, 1) * self.scale_factor),
            shift=(
                float(np.clip(z[1], -1, 1) * self.trans_factor),
                float(np.clip(z[2], -1, 1) * self.trans_factor),
            ),
            rotation=rot,
            flip=bool(u[1] < self.flip_prob),
            colour=tuple(float(g) for g in 1 - c + 2 * c * rng.random(3)),
            occluders=occluders,
        )


# ------------------------------------------------------------------------------------------ geometry


def camera_transform(params: AugmentParams) -> np.ndarray:
    """(3, 3) ``T``: camera-frame points of the augmented view = ``T @ X`` (mirror first, then rotate)."""
    # Counter-clockwise on screen (y down) is a negative rotation about the optical axis z.
    a = -math.radians(params.rotation)
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return rz @ MIRROR if params.flip else rz


def image_transform(transform: np.ndarray, cam_int: np.ndarray) -> np.ndarray:
    """(3, 3) ``G = K T K^-1``: image pixels -> virtual-image pixels (an affine for ``T`` about z)."""
    return cam_int @ transform @ np.linalg.inv(cam_int)


def apply_homogeneous(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(3, 3) affine applied to (J, 2) points -> (J, 2)."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror an SMPL pose: (24, 3) axis-angle -> (24, 3) (joints permuted, y and z negated)."""
    return pose[SMPL_FLIP] * np.array([1.0, -1.0, -1.0], dtype=pose.dtype)


def rotate_axis_angle(rot: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """``R @ exp(aa)`` as axis-angle: (3, 3), (3,) -> (3,)."""
    return matrix_to_rotvec(rot @ rotvec_to_matrix(aa))


def rotvec_to_matrix(aa: np.ndarray) -> np.ndarray:
    """(3,) axis-angle -> (3, 3) (Rodrigues, float64)."""
    theta = float(np.linalg.norm(aa))
    if theta < 1e-12:
        return np.eye(3)
    k = aa / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * (kx @ kx)


def matrix_to_rotvec(rot: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) axis-angle with angle in [0, pi] (stable near 0 and pi)."""
    v = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    cos, sin = (np.trace(rot) - 1) / 2, np.linalg.norm(v) / 2
    theta = math.atan2(sin, cos)
    if theta < 1e-6:
        return v / 2
    if sin > 1e-3:
        return v * (theta / (2 * sin))
    # Near pi: the axis from the symmetric part (R + R^T) / 2 = cos I + (1 - cos) k k^T.
    kk = ((rot + rot.T) / 2 - cos * np.eye(3)) / (1 - cos)
    i = int(np.argmax(np.diag(kk)))
    k = kk[:, i] / math.sqrt(max(kk[i, i], 1e-12))
    if np.dot(k, v) < 0:
        k = -k
    return k * theta


@dataclass
class Geometry:
    """Per-sample geometry in full-image units (numpy float64), before and after augmentation.

    Attributes:
        kp_coco: (17, 3), kp_smpl: (24, 3) image px + conf; pose: (24, 3) axis-angle (camera frame);
        joints_3d: (24, 4) camera frame + conf; transl: (3,); pelvis: (3,) or None (camera frame);
        bbox_center: (2,) px; bbox_size: px; cam_int: (3, 3).
    """

    kp_coco: np.ndarray
    kp_smpl: np.ndarray
    pose: np.ndarray
    joints_3d: np.ndarray
    transl: np.ndarray
    pelvis: np.ndarray | None
    bbox_center: np.ndarray
    bbox_size: float
    cam_int: np.ndarray


def augment_geometry(geo: Geometry, params: AugmentParams) -> tuple[Geometry, np.ndarray]:
    """Apply ``params`` to the geometry of one sample.

    Returns:
        ``(augmented geometry, G)`` with ``G`` (3, 3) original image px -> virtual image px (compose it
        with the crop matrix to warp the pixels). ``pelvis`` is None in the output if it was None and the
        view changed (the translation could not be moved exactly).
    """
    t = camera_transform(params)
    g = image_transform(t, geo.cam_int)
    kp_coco, kp_smpl = geo.kp_coco.copy(), geo.kp_smpl.copy()
    kp_coco[:, :2] = apply_homogeneous(g, kp_coco[:, :2])
    kp_smpl[:, :2] = apply_homogeneous(g, kp_smpl[:, :2])
    joints = geo.joints_3d.copy()
    joints[:, :3] = joints[:, :3] @ t.T
    pose = geo.pose.copy()
    if params.flip:
        kp_coco, kp_smpl, joints, pose = (
            kp_coco[COCO17_FLIP],
            kp_smpl[SMPL_FLIP],
            joints[SMPL_FLIP],
            flip_pose(pose),
        )
    if params.rotation != 0.0:
        pose[0] = rotate_axis_angle(t @ (MIRROR if params.flip else np.eye(3)), pose[0])
    identity = not params.flip and params.rotation == 0.0
    transl, pelvis = geo.transl.copy(), geo.pelvis
    if pelvis is not None:
        transl = transl + (t - np.eye(3)) @ pelvis
        pelvis = t @ pelvis
    elif not identity:
        pelvis = None
    size = geo.bbox_size * params.scale
    center = apply_homogeneous(g, geo.bbox_center[None])[0] + np.asarray(params.shift) * geo.bbox_size
    out = Geometry(kp_coco, kp_smpl, pose, joints, transl, pelvis, center, size, geo.cam_int)
    return out, g


# ------------------------------------------------------------------------------------------- pixels


def augment_pixels(
    crop: np.ndarray, params: AugmentParams, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Occluders, then per-channel colour gains (clipped), on a (S, S, 3) uint8 crop -> (S, S, 3) uint8.

    ``rng`` (optional) adds per-pixel noise texture to the occluders. ``crop`` is not modified.
    """
    out = crop.copy() if params.occluders else crop
    size = crop.shape[0]
    for x0, y0, x1, y1, r, g, b in params.occluders:
        i0, j0 = int(round(y0 * size)), int(round(x0 * size))
        i1, j1 = max(int(round(y1 * size)), i0 + 1), max(int(round(x1 * size)), j0 + 1)
        patch = np.broadcast_to(np.array([r, g, b], dtype=np.float32), (i1 - i0, j1 - j0, 3))
        if rng is not None:
            patch = patch + rng.standard_normal((i1 - i0, j1 - j0, 1)).astype(np.float32) * 20.0
        out[i0:i1, j0:j1] = np.clip(patch, 0, 255).astype(np.uint8)
    if tuple(params.colour) != (1.0, 1.0, 1.0):
        lut = np.clip(
            np.arange(256, dtype=np.float32)[:, None] * np.asarray(params.colour, np.float32), 0, 255
        )
        out = cv2.LUT(out, (lut + 0.5).astype(np.uint8)[:, None, :])
    return out
