"""Joint-angle helpers of the procedural motion activities: the :class:`Pose` accumulator and curves.

Signs are those of :mod:`mega.data.motion.joint_limits`: hip flexion -x, abduction +z, external rotation +y;
knee flexion +x; ankle plantar flexion +x; toes extension -x; spine / neck flexion +x, side bend +z
(to the right), twist y; shoulder -z lowers the arm from the T-pose, then -x swings it forward;
elbow flexion -y, pronation x; wrist flexion -z. With the pelvis pitched forward by ``a`` and the hips
flexed by ``f``, the thigh leans ``f - a`` forward of the vertical; a foot is flat on the floor when
the ankle angle is ``(f - a) - knee`` (:func:`flat_ankle`).
"""

from __future__ import annotations

import numpy as np

from mega.data.motion.joint_limits import BODY_JOINT_NAMES, EULER_ORDERS

JOINT = {name: j for j, name in enumerate(BODY_JOINT_NAMES)}
LOWER = ("hip", "knee", "ankle", "foot")


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def flat_ankle(hip_flex: np.ndarray | float, pitch: np.ndarray | float, knee: np.ndarray | float):
    """Ankle angle that keeps the sole level, given hip flexion, pelvis pitch and knee flexion (deg)."""
    return (np.asarray(hip_flex) - np.asarray(pitch)) - np.asarray(knee)


class Pose:
    """Euler angles (N, 23, 3) in degrees, set by joint name and axis letter; right side mirrored."""

    def __init__(self, n: int) -> None:
        self.deg = np.zeros((n, len(BODY_JOINT_NAMES), 3))

    def add(self, name: str, axis: str, deg: np.ndarray | float) -> None:
        j = JOINT[name]
        sign = -1.0 if name.startswith("right_") and axis in "yz" else 1.0
        self.deg[:, j, EULER_ORDERS[j].index(axis.upper())] += sign * np.asarray(deg)

    def pair(self, base: str, axis: str, deg, right=None) -> None:
        """The same anatomical angle on both sides (or ``right`` for the right side)."""
        self.add(f"left_{base}", axis, deg)
        self.add(f"right_{base}", axis, deg if right is None else right)

    def spine(self, axis: str, deg) -> None:
        for name in ("spine1", "spine2", "spine3"):
            self.add(name, axis, deg)


def root(n: int, speed=0.0, yaw=0.0, pitch=0.0, roll=0.0, lift=0.0, **extra) -> dict[str, np.ndarray]:
    """Root motion dict, every value broadcast to (N,) (extra keys kept as they are)."""
    out = {
        k: np.broadcast_to(np.asarray(v, float), (n,)).copy()
        for k, v in (("speed", speed), ("yaw", yaw), ("pitch", pitch), ("roll", roll), ("lift", lift))
    }
    out.update(extra)
    return out


def pick_side(rng) -> tuple[str, str]:
    return ("left", "right") if rng.random() < 0.5 else ("right", "left")


def relaxed_arms(rng, p: Pose, scale=1.0) -> None:
    p.pair("shoulder", "z", -rng.uniform(65, 82) * scale)
    p.pair("elbow", "y", -rng.uniform(5, 25))


def hold_curve(rng, t, rise=(0.5, 1.2)) -> np.ndarray:
    """Goes 0 -> 1 (after a random start), stays, and sometimes comes back: (N,) in [0, 1]."""
    t_end = t[-1] if len(t) else 0.0
    w = smoothstep((t - rng.uniform(0.0, 0.35) * t_end) / rng.uniform(*rise))
    if rng.random() < 0.4:  # and back
        w = w * (1 - smoothstep((t - rng.uniform(0.65, 0.85) * t_end) / rng.uniform(*rise)))
    if rng.random() < 0.3:  # or the reverse: starts in the posture and leaves it
        w = 1 - w
    return w


def cycle_curve(rng, t, period=(2.5, 4.0)) -> np.ndarray:
    """Down-and-up depth in [0, 1], (N,)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(*period) + rng.uniform(0, 2 * np.pi))
