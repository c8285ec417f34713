"""Anatomical joint limits of the SMPL body joints, as boxes on per-joint Euler angles.

SMPL conventions (the free body follows them): T-pose rest, canonical frame y up, facing +z, the
body's left on +x; each joint's rotation is axis-angle in its parent's frame, and at rest every
joint frame is aligned with the world axes. Worked signs (left side):

- knee flexion (foot goes backward, -z, and up) = **positive** rotation about x;
- hip flexion (thigh forward, +z) = **negative** x; hip abduction (leg out to +x) = **positive** z;
- spine / neck forward bend = **positive** x; ankle plantar-flexion (toes down) = positive x;
- shoulder: the left arm lies along +x, so lowering it to the side (-y) = **negative** z (-90 deg
  hangs it down); with the arm down, swinging it forward = **negative** x (applied after z);
- elbow flexion (forearm forward, +z, from the T-pose) = **negative** y.
- hip external rotation (toes out, to +x) = **positive** y; collar elevation = positive z;
- wrist flexion (fingers to the palm, -y in the T-pose) = **negative** z; ulnar deviation = positive y.

The right side mirrors the left through the x = 0 plane: angles about x are unchanged and angles
about y and z change sign. Limits are listed for the left side (and the midline joints) and the
right side is derived.

Each joint has an intrinsic Euler order ``"ABC"`` meaning ``R = R_A(a) @ R_B(b) @ R_C(c)`` (``c``
is applied first, in the child's own frame). Orders are chosen so that the middle angle stays
within +-90 deg, which makes the decomposition :func:`matrix_to_euler` unique.
"""

from __future__ import annotations

import numpy as np

# SMPL body_pose order: body_pose[j] is SMPL joint j + 1 (joint 0, the pelvis, is global_orient).
BODY_JOINT_NAMES: tuple[str, ...] = (
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)

# name -> (Euler order, (lo, hi) in degrees for each of the three angles in that order).
# Ranges follow published active ranges of motion (AAOS "Joint Motion: Method of Measuring and
# Recording" 1965 / Greene & Heckman 1994; Soucie et al., Haemophilia 2011; Kapandji, The Physiology
# of the Joints), widened a little where SMPL fits of optical motion capture put more motion into one
# joint than the anatomical joint has (pelvis tilt into the hips, forearm twist into the wrists, the
# shoulder girdle into the shoulders):
# - hip: flexion 120 (140 with the knee flexed, passive), extension 30, abduction 45-50, adduction 30,
#   internal rotation 45, external rotation 45-60 (cross-legged sitting needs ~60 with the hip flexed);
# - knee: flexion 135-150 (up to 160 passive, kneeling on the heels), hyperextension 10, tibial
#   rotation ~30 with the knee flexed;
# - ankle: dorsiflexion 20 (40 loaded, deep squat), plantar flexion 50-65, inversion 35, eversion 20;
#   toes (metatarsophalangeal): extension 70, flexion 40;
# - trunk (three SMPL spine joints together): flexion 80-100, extension 30, lateral bending 35,
#   rotation 45 (the spine joints also absorb pelvis tilt in SMPL fits, hence the larger sums);
# - neck: flexion 50, extension 60, rotation 80, lateral bending 45 (neck and head together);
# - shoulder girdle (collar): elevation 40, depression 10, protraction / retraction 20;
# - shoulder: flexion 180, extension 60, abduction 180, adduction 50, internal 70 / external 90;
# - elbow: flexion 150, hyperextension 5-10, pronation / supination 80 each;
# - wrist: flexion 80, extension 70, radial deviation 20, ulnar deviation 30-35.
# Middle Euler angles stay within +-85 deg (unique decomposition, see the module docstring).
_LEFT_AND_MIDLINE_DEG: dict[str, tuple[str, tuple[tuple[float, float], ...]]] = {
    "left_hip": ("XZY", ((-140.0, 35.0), (-35.0, 55.0), (-45.0, 60.0))),  # flex(-)/abd(+)/ext. rot.(+)
    "left_knee": ("XYZ", ((-10.0, 160.0), (-30.0, 30.0), (-10.0, 10.0))),  # flex(+)/tibial rot./varus
    "left_ankle": ("XYZ", ((-40.0, 60.0), (-30.0, 30.0), (-30.0, 30.0))),  # plantar(+)/dorsi(-)
    "left_foot": ("XYZ", ((-70.0, 40.0), (-10.0, 10.0), (-10.0, 10.0))),  # toes: extension(-)
    "spine1": ("XYZ", ((-30.0, 50.0), (-30.0, 30.0), (-25.0, 25.0))),  # flex(+)/twist/side(+ right)
    "spine2": ("XYZ", ((-25.0, 45.0), (-30.0, 30.0), (-25.0, 25.0))),
    "spine3": ("XYZ", ((-25.0, 45.0), (-30.0, 30.0), (-25.0, 25.0))),
    "neck": ("XYZ", ((-45.0, 50.0), (-50.0, 50.0), (-35.0, 35.0))),
    "head": ("XYZ", ((-40.0, 40.0), (-40.0, 40.0), (-25.0, 25.0))),
    "left_collar": ("XYZ", ((-20.0, 20.0), (-25.0, 25.0), (-15.0, 40.0))),  # -/protraction/elevation(+)
    "left_shoulder": ("XYZ", ((-175.0, 70.0), (-80.0, 80.0), (-105.0, 75.0))),  # swing/twist/raise
    "left_elbow": ("YXZ", ((-155.0, 10.0), (-85.0, 85.0), (-10.0, 10.0))),  # flex(-)/pronation/-
    "left_wrist": ("XYZ", ((-90.0, 90.0), (-40.0, 40.0), (-85.0, 75.0))),  # twist/deviation/ext.(+)
    "left_hand": ("XYZ", ((-30.0, 30.0), (-30.0, 30.0), (-30.0, 30.0))),
}

_AXIS = {"X": 0, "Y": 1, "Z": 2}


def _limits_table() -> tuple[list[str], np.ndarray]:
    """Per body joint Euler order and limits in radians: (23,) orders, (23, 3, 2) [lo, hi]."""
    orders, limits = [], np.zeros((len(BODY_JOINT_NAMES), 3, 2))
    for j, name in enumerate(BODY_JOINT_NAMES):
        left = name.replace("right_", "left_")
        order, boxes = _LEFT_AND_MIDLINE_DEG[left]
        for k, (axis, (lo, hi)) in enumerate(zip(order, boxes)):
            if name.startswith("right_") and axis in "YZ":
                lo, hi = -hi, -lo  # mirror through the x = 0 plane
            limits[j, k] = np.deg2rad([lo, hi])
        orders.append(order)
    return orders, limits


EULER_ORDERS, EULER_LIMITS = _limits_table()


def _elementary(axis: str, angle: np.ndarray) -> np.ndarray:
    """(...,) angles -> (..., 3, 3) rotations about one coordinate axis."""
    c, s = np.cos(angle), np.sin(angle)
    o, i = np.zeros_like(angle), np.ones_like(angle)
    rows = {
        "X": [i, o, o, o, c, -s, o, s, c],
        "Y": [c, o, s, o, i, o, -s, o, c],
        "Z": [c, -s, o, s, c, o, o, o, i],
    }[axis]
    return np.stack(rows, axis=-1).reshape(angle.shape + (3, 3))


def euler_to_matrix(angles: np.ndarray, order: str) -> np.ndarray:
    """Intrinsic Euler angles -> rotation matrices, ``R = R_A(a) R_B(b) R_C(c)`` for order "ABC".

    Args:
        angles: (..., 3) radians, in the order of ``order``.
        order: three distinct axes, e.g. ``"XZY"``.
    Returns:
        (..., 3, 3) rotation matrices.
    """
    rot = _elementary(order[0], angles[..., 0])
    for k in (1, 2):
        rot = rot @ _elementary(order[k], angles[..., k])
    return rot


def matrix_to_euler(rot: np.ndarray, order: str) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` with the middle angle in [-pi/2, pi/2].

    Args:
        rot: (..., 3, 3) rotation matrices.
        order: three distinct axes, e.g. ``"XYZ"``.
    Returns:
        (..., 3) angles in radians, in the order of ``order``.
    """
    i, j, k = (_AXIS[a] for a in order)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0  # +1 for cyclic orders (XYZ, YZX, ZXY)
    b = np.arcsin(np.clip(sign * rot[..., i, k], -1.0, 1.0))
    a = np.arctan2(-sign * rot[..., j, k], rot[..., k, k])
    c = np.arctan2(-sign * rot[..., i, j], rot[..., i, i])
    return np.stack([a, b, c], axis=-1)


def body_pose_to_euler(rotmats: np.ndarray) -> np.ndarray:
    """Per body joint Euler angles in each joint's own order.

    Args:
        rotmats: (..., 23, 3, 3) local rotations of SMPL joints 1..23.
    Returns:
        (..., 23, 3) radians, joint j in the order ``EULER_ORDERS[j]``.
    """
    return np.stack([matrix_to_euler(rotmats[..., j, :, :], o) for j, o in enumerate(EULER_ORDERS)], -2)


def euler_to_body_pose(euler: np.ndarray) -> np.ndarray:
    """Inverse of :func:`body_pose_to_euler`: (..., 23, 3) angles -> (..., 23, 3, 3) matrices."""
    return np.stack([euler_to_matrix(euler[..., j, :], o) for j, o in enumerate(EULER_ORDERS)], -3)


def clip_to_limits(euler: np.ndarray) -> np.ndarray:
    """Clip per-joint Euler angles (..., 23, 3) into :data:`EULER_LIMITS`."""
    return np.clip(euler, EULER_LIMITS[..., 0], EULER_LIMITS[..., 1])


def limit_violation(euler: np.ndarray) -> np.ndarray:
    """How far (radians, >= 0) each angle lies outside its limits: (..., 23, 3) -> (..., 23, 3)."""
    lo, hi = EULER_LIMITS[..., 0], EULER_LIMITS[..., 1]
    return np.maximum(lo - euler, 0.0) + np.maximum(euler - hi, 0.0)
