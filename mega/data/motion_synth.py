"""Procedural human motion for the free body, written as AMASS files (the embedded default data).

Each sequence is one motion type with random parameters: ``walk`` and ``run`` cycles (legs, counter
arm swing, bob, curved paths), ``arm_swing`` (lateral raises, forward swings, waving, circles),
``bend`` (forward or sideways), ``squat``, ``sit`` (down or up), ``reach`` (one or both arms, torso
twist), ``turn`` (in place, stepping) and ``mixture`` (an upper-body motion over a lower-body one, or a
cross-fade between two motions). Slow random wobble is added to every joint, and every angle is
clipped to :mod:`mega.data.joint_limits` before it is turned into axis-angle, so poses stay within
limits. Bodies get varied shapes (10 betas ~ N(0, 1) clipped to +-2.5), genders, headings and tilts.

Poses follow SMPL's conventions (signs are worked out in :mod:`mega.data.joint_limits`); angles below
are written for the left side in degrees and mirrored for the right. The root translation is relative
(bob, lowering, travel); feet are not solved onto a floor.

Files are written the way AMASS ships them, so the real reader is exercised: world Z-up, frame rate
30 or 60 fps, subjects alternating between the classic layout (``poses`` (N, 156), str gender,
``mocap_framerate``, a per-subject ``shape.npz``) and the newer one (split keys, bytes gender,
``mocap_frame_rate``, a ``*_stagei.npz``). Everything is deterministic given the seed; the splits use
disjoint seed streams and subjects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mega.body.rotations import matrix_to_axis_angle
from mega.data.amass import GENDERS, write_amass_npz, z_up_to_y_up
from mega.data.joint_limits import (
    BODY_JOINT_NAMES,
    EULER_ORDERS,
    clip_to_limits,
    euler_to_body_pose,
    euler_to_matrix,
)

log = logging.getLogger(__name__)

MOTION_TYPES = ("walk", "run", "arm_swing", "bend", "squat", "sit", "reach", "turn", "mixture")
DEFAULT_SEQUENCES = {"train": 200, "val": 20, "test": 20}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SEQUENCES_PER_SUBJECT = 5
FILE_FPS = (30.0, 60.0)
DURATION_S = (2.5, 4.0)
GENERATOR_VERSION = 1
MANIFEST = "MANIFEST.json"

_JOINT = {name: j for j, name in enumerate(BODY_JOINT_NAMES)}
_LOWER = ("hip", "knee", "ankle", "foot")


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class _Pose:
    """Euler angles (N, 23, 3) in degrees, set by joint name and axis letter; right side mirrored."""

    def __init__(self, n: int) -> None:
        self.deg = np.zeros((n, len(BODY_JOINT_NAMES), 3))

    def add(self, name: str, axis: str, deg: np.ndarray | float) -> None:
        j = _JOINT[name]
        sign = -1.0 if name.startswith("right_") and axis in "yz" else 1.0
        self.deg[:, j, EULER_ORDERS[j].index(axis.upper())] += sign * np.asarray(deg)

    def pair(
        self, base: str, axis: str, deg: np.ndarray | float, right: np.ndarray | float | None = None
    ) -> None:
        """The same anatomical angle on both sides (or ``right`` for the right side)."""
        self.add(f"left_{base}", axis, deg)
        self.add(f"right_{base}", axis, deg if right is None else right)

    def spine(self, axis: str, deg: np.ndarray | float) -> None:
        for name in ("spine1", "spine2", "spine3"):
            self.add(name, axis, deg)


def _root(n: int, speed: np.ndarray | float = 0.0, yaw: np.ndarray | float = 0.0,
          height: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:  # fmt: skip
    """Root motion: forward speed (m/s), heading change (deg) and height offset (m), each (N,)."""
    return {k: np.broadcast_to(np.asarray(v, float), (n,)).copy()
            for k, v in (("speed", speed), ("yaw", yaw), ("height", height))}  # fmt: skip


def _relaxed(rng: np.random.Generator, p: _Pose) -> None:
    p.pair("shoulder", "z", -rng.uniform(65, 80))
    p.pair("elbow", "y", -rng.uniform(5, 25))
    p.pair("knee", "x", rng.uniform(0, 6))


def _gait(rng, t, p, period, hip_amp, hip_off, knee_amp, knee_base, arm_amp) -> np.ndarray:
    """Alternating legs with counter arm swing; returns the phase (N,) of the left leg."""
    phi = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    for side, ph in (("left", phi), ("right", phi + np.pi)):
        p.add(f"{side}_hip", "x", -(hip_off + hip_amp * np.sin(ph)))  # flexion is negative x
        p.add(f"{side}_knee", "x", knee_base + knee_amp * np.clip(np.sin(ph + np.pi / 3), 0, None) ** 2)
        p.add(f"{side}_ankle", "x", -0.4 * hip_amp * np.sin(ph))  # toes down when the leg is behind
        p.add(f"{side}_shoulder", "x", arm_amp * np.sin(ph))  # arm forward when the same-side leg is back
    p.add("spine2", "y", 0.2 * hip_amp * np.sin(phi))
    return phi


def _walk(rng, t, p):
    _relaxed(rng, p)
    period = rng.uniform(0.95, 1.25)
    phi = _gait(rng, t, p, period, rng.uniform(18, 28), rng.uniform(0, 6), rng.uniform(40, 60),
                rng.uniform(3, 8), rng.uniform(10, 25))  # fmt: skip
    yaw = rng.uniform(-25, 25) * t - 4 * np.sin(phi)
    return _root(len(t), rng.uniform(1.0, 1.6), yaw, 0.015 * np.cos(2 * phi))


def _run(rng, t, p):
    p.pair("shoulder", "z", -rng.uniform(60, 75))
    p.pair("elbow", "y", -rng.uniform(75, 100))
    p.spine("x", rng.uniform(3, 6))
    phi = _gait(rng, t, p, rng.uniform(0.62, 0.78), rng.uniform(30, 40), rng.uniform(8, 14),
                rng.uniform(70, 95), rng.uniform(15, 25), rng.uniform(25, 40))  # fmt: skip
    yaw = rng.uniform(-20, 20) * t - 6 * np.sin(phi)
    return _root(len(t), rng.uniform(2.5, 3.8), yaw, 0.04 * np.cos(2 * phi))


def _arm_swing(rng, t, p):
    p.pair("knee", "x", rng.uniform(0, 6))
    phase = 2 * np.pi * rng.uniform(0.4, 1.0) * t + rng.uniform(0, 2 * np.pi)
    lag = np.pi if rng.random() < 0.5 else 0.0
    s_l, s_r = 0.5 + 0.5 * np.sin(phase), 0.5 + 0.5 * np.sin(phase + lag)
    pattern = rng.integers(4)
    if pattern == 0:  # lateral raises: from hanging (-80) up to above the horizontal
        amp = rng.uniform(60, 110)
        p.pair("shoulder", "z", -80 + amp * s_l, -80 + amp * s_r)
    elif pattern == 1:  # forward swings with the arms down
        amp = rng.uniform(60, 150)
        p.pair("shoulder", "z", -rng.uniform(75, 85))
        p.pair("shoulder", "x", -amp * s_l, -amp * s_r)
    elif pattern == 2:  # wave with one raised arm
        side, other = ("left", "right") if rng.random() < 0.5 else ("right", "left")
        p.add(f"{side}_shoulder", "z", rng.uniform(0, 30))
        p.add(f"{side}_elbow", "y", -rng.uniform(60, 100) + 25 * np.sin(2.5 * phase))
        p.add(f"{other}_shoulder", "z", -rng.uniform(65, 80))
    else:  # arm circles
        p.pair("shoulder", "x", -40 + 40 * np.cos(phase), -40 + 40 * np.cos(phase + lag))
        p.pair("shoulder", "z", -60 + 30 * np.sin(phase), -60 + 30 * np.sin(phase + lag))
    p.pair("elbow", "y", -rng.uniform(0, 30))
    return _root(len(t))


def _cycle(rng, t) -> np.ndarray:
    """Down-and-up depth in [0, 1] with a 2.5-4 s period, (N,)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(2.5, 4.0) + rng.uniform(0, 2 * np.pi))


def _bend(rng, t, p):
    d = _cycle(rng, t)
    p.pair("shoulder", "z", -rng.uniform(75, 85))
    if rng.random() < 0.3:  # sideways (+z bends to the right); the arms keep hanging vertically
        tilt = rng.choice([-1, 1]) * rng.uniform(10, 22) * d
        p.spine("z", tilt)
        p.add("left_shoulder", "z", -3 * tilt)
        p.add("right_shoulder", "z", 3 * tilt)  # mirrored: the actual angle is also -3 * tilt
        return _root(len(t))
    trunk, hip = 3 * rng.uniform(20, 40), rng.uniform(20, 60)
    p.spine("x", trunk / 3 * d)
    p.pair("hip", "x", -hip * d)
    p.pair("knee", "x", rng.uniform(0, 25) * d)
    p.pair("shoulder", "x", -0.7 * (trunk + hip) * d)  # arms keep hanging towards the floor
    return _root(len(t))


def _squat(rng, t, p):
    d = _cycle(rng, t)
    p.pair("hip", "x", -rng.uniform(80, 110) * d)
    p.pair("hip", "z", rng.uniform(5, 15) * d)
    p.pair("knee", "x", rng.uniform(90, 130) * d)
    p.pair("ankle", "x", -rng.uniform(15, 30) * d)
    p.add("spine1", "x", rng.uniform(10, 25) * d)
    p.pair("shoulder", "z", -rng.uniform(75, 85))
    p.pair("shoulder", "x", -rng.uniform(40, 90) * d)
    p.pair("elbow", "y", -rng.uniform(0, 30))
    return _root(len(t), height=-rng.uniform(0.3, 0.45) * d)


def _sit(rng, t, p):
    w = _smoothstep((t - rng.uniform(0.2, 1.0)) / rng.uniform(0.8, 1.5))
    if rng.random() < 0.5:  # standing up instead
        w = 1.0 - w
    p.pair("hip", "x", -rng.uniform(80, 95) * w)
    p.pair("knee", "x", rng.uniform(80, 100) * w)
    p.pair("ankle", "x", -rng.uniform(0, 10) * w)
    p.spine("x", rng.uniform(0, 10) * w)
    p.pair("shoulder", "z", -rng.uniform(65, 80))
    p.pair("shoulder", "x", -rng.uniform(20, 45) * w)
    p.pair("elbow", "y", -rng.uniform(30, 70) * w)
    back = -0.15 * w  # the pelvis moves back onto the seat
    return _root(len(t), np.gradient(back, t), height=-rng.uniform(0.4, 0.5) * w)


def _reach(rng, t, p):
    p.pair("knee", "x", rng.uniform(0, 6))
    t_up, t_down = rng.uniform(0.0, 0.8), rng.uniform(1.8, 3.5)
    r = _smoothstep((t - t_up) / rng.uniform(0.5, 1.0)) * (1 - _smoothstep((t - t_down) / 0.8))
    sides = [[("left", 1)], [("right", -1)], [("left", 1), ("right", -1)]][rng.integers(3)]
    swing = -rng.uniform(40, 160)
    for side, _ in sides:
        p.add(f"{side}_shoulder", "x", swing * r)
        p.add(f"{side}_shoulder", "z", -80 + rng.uniform(0, 60) * r)
        p.add(f"{side}_elbow", "y", -rng.uniform(30, 70) * (1 - r) - rng.uniform(0, 15) * r)
    for side in {"left", "right"} - {s for s, _ in sides}:
        p.add(f"{side}_shoulder", "z", -rng.uniform(65, 80))
    if len(sides) == 1:  # the reaching shoulder goes forward: left reach = negative twist
        p.spine("y", -sides[0][1] * rng.uniform(0, 8) * r)
    if swing > -80:  # low reach: bend over
        p.spine("x", rng.uniform(5, 12) * r)
        p.pair("hip", "x", -rng.uniform(0, 30) * r)
    return _root(len(t))


def _turn(rng, t, p):
    _relaxed(rng, p)
    _gait(rng, t, p, rng.uniform(0.8, 1.1), rng.uniform(6, 12), rng.uniform(5, 10), rng.uniform(20, 35), 5.0,
          rng.uniform(3, 8))  # fmt: skip
    turn = rng.choice([-1, 1]) * rng.uniform(90, 270) * _smoothstep(t / t[-1] if t[-1] > 0 else t)
    return _root(len(t), rng.uniform(0.0, 0.2), turn)


def _mixture(rng, t, p):
    if rng.random() < 0.5:  # upper body of one motion over the lower body of another
        lower, upper = _Pose(len(t)), _Pose(len(t))
        root = _MOTIONS[rng.choice(["walk", "squat", "turn", "sit", "run"])](rng, t, lower)
        _MOTIONS[rng.choice(["arm_swing", "reach"])](rng, t, upper)
        is_lower = np.array([n.split("_")[-1] in _LOWER for n in BODY_JOINT_NAMES])
        p.deg += np.where(is_lower[:, None], lower.deg, upper.deg)
        spine = [_JOINT[n] for n in ("spine1", "spine2", "spine3")]
        p.deg[:, spine] += lower.deg[:, spine]
        return root
    first, second = rng.choice([m for m in MOTION_TYPES if m != "mixture"], size=2, replace=False)
    a, b = _Pose(len(t)), _Pose(len(t))
    root_a, root_b = _MOTIONS[first](rng, t, a), _MOTIONS[second](rng, t, b)
    w = _smoothstep((t - rng.uniform(0.3, 0.7) * t[-1]) / rng.uniform(0.5, 1.0))
    p.deg += (1 - w)[:, None, None] * a.deg + w[:, None, None] * b.deg
    return {k: (1 - w) * root_a[k] + w * root_b[k] for k in root_a}


_MOTIONS: dict[str, Callable] = {
    "walk": _walk, "run": _run, "arm_swing": _arm_swing, "bend": _bend, "squat": _squat,
    "sit": _sit, "reach": _reach, "turn": _turn, "mixture": _mixture,
}  # fmt: skip


def _wobble(rng: np.random.Generator, t: np.ndarray, amp_deg: float, shape: tuple[int, ...]) -> np.ndarray:
    """Slow smooth noise: two random sinusoids per channel, (N, *shape) degrees."""
    out = np.zeros((len(t),) + shape)
    for _ in range(2):
        amp = rng.uniform(0, amp_deg, shape)
        freq, phase = rng.uniform(0.1, 1.0, shape), rng.uniform(0, 2 * np.pi, shape)
        out += amp * np.sin(2 * np.pi * freq * t.reshape((-1,) + (1,) * len(shape)) + phase)
    return out


def _axis_angle(rot: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(torch.from_numpy(rot)).numpy()


def generate_motion(
    rng: np.random.Generator, motion: str, fps: float, duration: float
) -> dict[str, np.ndarray]:
    """One procedural sequence in mega's y-up world.

    Args:
        rng: the sequence's own generator (the result is a pure function of its state).
        motion: one of :data:`MOTION_TYPES`.
        fps: frame rate; duration: seconds.
    Returns:
        ``global_orient`` (N, 3), ``body_pose`` (N, 21, 3) (SMPL joints 1..21), ``pose_hand``
        (N, 30, 3) (SMPL-H fingers, left first), ``transl`` (N, 3); axis-angle radians and metres.
    """
    n = max(2, int(round(duration * fps)))
    t = np.arange(n) / fps
    pose = _Pose(n)
    root = _MOTIONS[motion](rng, t, pose)
    pose.deg += _wobble(rng, t, 3.0, (len(BODY_JOINT_NAMES), 3))
    pose.deg[:, [_JOINT["neck"], _JOINT["head"]], 1] += _wobble(rng, t, 12.0, (2,))
    euler = clip_to_limits(np.deg2rad(pose.deg))
    body = _axis_angle(euler_to_body_pose(euler))[:, :21]
    # Root: heading (about y), then small pitch / roll wobble; travel along the heading.
    tilt = np.deg2rad(_wobble(rng, t, 3.0, (2,)))
    yaw = rng.uniform(0, 2 * np.pi) + np.deg2rad(root["yaw"])
    root_rot = euler_to_matrix(np.stack([yaw, tilt[:, 0], tilt[:, 1]], -1), "YXZ")
    heading = np.stack([np.sin(yaw), np.zeros(n), np.cos(yaw)], -1)
    travel = np.cumsum(root["speed"][:, None] * heading, axis=0) / fps
    start = np.array([rng.uniform(-1, 1), 0.0, rng.uniform(-1, 1)])
    transl = start + travel + root["height"][:, None] * np.array([0.0, 1.0, 0.0])
    curl = rng.uniform(0, 25)
    hand = np.zeros((n, 30, 3))
    hand[:, :15, 2], hand[:, 15:, 2] = -np.deg2rad(curl), np.deg2rad(curl)
    return {"global_orient": _axis_angle(root_rot), "body_pose": body, "pose_hand": hand, "transl": transl}


def _subject(rng: np.random.Generator) -> dict:
    betas = np.zeros(16)
    betas[:10] = np.clip(rng.standard_normal(10), -2.5, 2.5)
    return {"betas": betas, "gender": str(rng.choice(GENDERS)), "fps": float(rng.choice(FILE_FPS))}


def write_synthetic_motion(root: str | Path, seed: int = 0, sequences: dict[str, int] | None = None) -> dict:
    """Generate every split and write it as AMASS files under ``root/<split>/<subject>/``.

    Not atomic by itself: :func:`mega.data.motion.ensure_synthetic_motion` writes into a temporary
    folder and renames it. The manifest (``MANIFEST.json``) is written last.

    Args:
        root: output folder (created).
        seed: the one seed; split s, subject k, sequence j draw from ``SeedSequence([seed, s, k, j])``.
        sequences: number of sequences per split (default :data:`DEFAULT_SEQUENCES`).
    Returns:
        the manifest: seed, version, per-split counts and the motion type of every file.
    """
    root = Path(root)
    sequences = dict(DEFAULT_SEQUENCES if sequences is None else sequences)
    files: dict[str, str] = {}
    frames = dict.fromkeys(sequences, 0)
    for split, count in sequences.items():
        sid = SPLIT_IDS[split]
        for k in range(-(-count // SEQUENCES_PER_SUBJECT)):
            subject = _subject(np.random.default_rng([seed, sid, k]))
            layout = "smplh" if k % 2 == 0 else "g"
            folder = root / split / f"{split}_subject{k:02d}"
            for j in range(min(SEQUENCES_PER_SUBJECT, count - k * SEQUENCES_PER_SUBJECT)):
                rng = np.random.default_rng([seed, sid, k, j + 1])
                motion = MOTION_TYPES[(k * SEQUENCES_PER_SUBJECT + j + sid) % len(MOTION_TYPES)]
                seq = generate_motion(rng, motion, subject["fps"], rng.uniform(*DURATION_S))
                orient, transl = z_up_to_y_up(seq["global_orient"], seq["transl"], inverse=True)
                name = f"{j:02d}_{motion}_" + ("poses.npz" if layout == "smplh" else "stageii.npz")
                write_amass_npz(folder / name, orient, seq["body_pose"], seq["pose_hand"], transl,
                                subject["betas"], subject["gender"], subject["fps"], layout)  # fmt: skip
                files[(folder / name).relative_to(root).as_posix()] = motion
                frames[split] += len(orient)
            # Per-subject files that readers must skip.
            extra = folder / ("shape.npz" if layout == "smplh" else f"{folder.name}_stagei.npz")
            np.savez(extra, betas=subject["betas"], gender=np.array(subject["gender"]))
    manifest = {"generator": __name__, "version": GENERATOR_VERSION, "seed": seed, "sequences": sequences,
                "frames": frames, "files": files}  # fmt: skip
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("wrote %s synthetic sequences (%s frames) to %s", sequences, frames, root)
    return manifest
