"""Procedural human motion for the free body, written as AMASS files (the embedded default data).

Each sequence is one *activity* (:mod:`mega.data.motion.activities`) with random parameters:
locomotion (``walk``, ``run``, ``turn``, ``step``: stairs up and down), upright work (``arm_swing``,
``reach`` forward / overhead / across / to the floor, ``bend``, ``squat`` shallow or deep), postures
near or on the floor (``sit`` on a chair, ``sit_floor``, ``kneel``, ``crawl`` on hands and knees,
``lie`` supine / prone / on a side, sitting up) and ``mixture`` (an upper-body activity over a
lower-body one, or a cross-fade of two upright ones). Which activities a split holds is a weighted
mixture (``activities``, :data:`DEFAULT_ACTIVITIES`): sequences are allotted in proportion to the
weights (largest remainder) and shuffled with the seed.

Slow random wobble is added to every joint, and every angle is clipped to the anatomical ranges of
:mod:`mega.data.motion.joint_limits` before it is turned into axis-angle, so poses stay within limits.
Bodies get varied shapes (10 betas ~ N(0, 1) clipped to +-2.5), genders, headings and tilts.

Ground contact: every frame is posed on the free body with the subject's betas and lifted so that
its lowest vertex lies on the floor (world y = 0 in mega's y-up frame, z = 0 in the file), or, on
stairs, so that each foot stands on its stair; runs add a flight phase. Whatever the activity puts
lowest touches the floor (soles standing, knees and toes kneeling, hands and knees crawling, seat
and legs sitting on the floor, back lying); crawling also pitches the trunk so that hands and knees
touch together. No vertex of the free body goes below the floor. With another body (SMPL) the
heights are off by the difference in body shape. Feet may slide (no foot locking).

Files are written the way AMASS ships them, so the real reader is exercised: world Z-up, frame rate
30 or 60 fps, subjects alternating between the classic layout (``poses`` (N, 156), str gender,
``mocap_framerate``, a per-subject ``shape.npz``) and the newer one (split keys, bytes gender,
``mocap_frame_rate``, a ``*_stagei.npz``). Everything is deterministic given the seed (and the free
body file); the splits use disjoint seed streams and subjects. :data:`GENERATOR_VERSION` and
:func:`generator_fingerprint` (a hash of probe poses) are stored in the manifest;
:func:`mega.data.motion.dataset.ensure_synthetic_motion` refuses a folder made by another version or whose
poses differ, so stale motion is never read silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from mega.atomic import read_json_object
from mega.body.rotations import matrix_to_axis_angle
from mega.data.motion.activities import ACTIVITIES
from mega.data.motion.amass import GENDERS, MotionFileError, write_amass_npz, z_up_to_y_up
from mega.data.motion.joint_limits import (
    BODY_JOINT_NAMES,
    clip_to_limits,
    euler_to_body_pose,
    euler_to_matrix,
)
from mega.data.motion.pose import JOINT, Pose
from mega.errors import ConfigError

log = logging.getLogger(__name__)

ACTIVITY_NAMES: tuple[str, ...] = tuple(ACTIVITIES)
MOTION_TYPES = ACTIVITY_NAMES  # the former name
# Mixture weights (normalised when used): upright and floor activities about equally often.
DEFAULT_ACTIVITIES: dict[str, float] = {
    "walk": 1.0, "run": 0.5, "turn": 0.4, "step": 0.7, "arm_swing": 0.6, "reach": 0.8, "bend": 0.7,
    "squat": 0.9, "sit": 0.8, "sit_floor": 0.7, "kneel": 0.8, "crawl": 0.6, "lie": 0.8, "mixture": 0.9,
}  # fmt: skip
DEFAULT_SEQUENCES = {"train": 200, "val": 20, "test": 20}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SEQUENCES_PER_SUBJECT = 5
FILE_FPS = (30.0, 60.0)
DURATION_S = (2.5, 4.0)
GENERATOR_VERSION = 3  # 1: locomotion-centred, narrow limits, no ground; 2: a work-in-progress state of 3
MANIFEST = "MANIFEST.json"
_ALLOT_STREAM = 1_000_003  # seed-sequence word of the per-split activity shuffle


def activity_weights(activities: Mapping[str, float] | None = None) -> dict[str, float]:
    """Validated, normalised mixture weights (all of :data:`ACTIVITY_NAMES`, zeros for absent ones)."""
    given = dict(DEFAULT_ACTIVITIES if activities is None else activities)
    unknown = sorted(set(given) - set(ACTIVITY_NAMES))
    if unknown:
        raise ConfigError(f"motion.activities: unknown activities {unknown}; known: {list(ACTIVITY_NAMES)}")
    weights = {name: float(given.get(name, 0.0)) for name in ACTIVITY_NAMES}
    if any(w < 0 or not np.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"motion.activities: weights must be >= 0 with a positive sum, got {given}")
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def allot_activities(count: int, weights: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    """``count`` activity names in proportion to ``weights`` (largest remainder), shuffled by ``rng``."""
    names = list(weights)
    quota = np.array([weights[n] for n in names]) * count
    base = np.floor(quota).astype(int)
    order = np.argsort(-(quota - base), kind="stable")
    base[order[: count - base.sum()]] += 1
    out = [n for n, c in zip(names, base) for _ in range(c)]
    return [out[i] for i in rng.permutation(len(out))]


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


@lru_cache(maxsize=1)
def _default_body():
    from mega.body import load_body_model

    return load_body_model("free")


def vertex_parts(body) -> dict[str, np.ndarray]:
    """Vertex masks (V,) bool of the body parts the generator grounds, by dominant skinning weight."""
    owner = body.smpl.lbs_weights.argmax(1).numpy()
    rest = body.v_template.detach().numpy()
    pelvis = (body.J_regressor @ body.v_template)[0].detach().numpy()
    near = (np.linalg.norm(rest - pelvis, axis=1) < 0.2) & (rest[:, 1] < pelvis[1])
    return {
        "left_foot": np.isin(owner, [7, 10]), "right_foot": np.isin(owner, [8, 11]),
        "feet": np.isin(owner, [7, 8, 10, 11]), "hands": np.isin(owner, [20, 21, 22, 23]),
        "knees": np.isin(owner, [4, 5]), "seat": near & np.isin(owner, [0, 1, 2]),
    }  # fmt: skip


@torch.no_grad()
def posed_vertices(body, global_orient: np.ndarray, body_pose: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """(N, 3), (N, 23, 3) axis-angle, (10,) -> (N, V, 3) vertices without translation (float32)."""
    n = len(global_orient)
    out = body(
        global_orient=torch.as_tensor(global_orient, dtype=torch.float32),
        body_pose=torch.as_tensor(body_pose, dtype=torch.float32).reshape(n, 23, 3),
        betas=torch.as_tensor(np.tile(betas[:10], (n, 1)), dtype=torch.float32),
    )
    return out.vertices.numpy()


def _root_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Heading about y, then forward pitch about x, then roll about z: (N,) radians -> (N, 3, 3)."""
    return euler_to_matrix(np.stack([yaw, pitch, roll], -1), "YXZ")


def _ground(body, betas, root, yaw, pitch, roll, euler, body_pose):
    """Put a sequence on the floor (see the module docstring): returns (pitch (N,), body_pose, height (N,))."""
    n = len(pitch)
    parts = vertex_parts(body)
    verts = posed_vertices(body, _axis_angle(_root_rotation(yaw, pitch, roll)), body_pose, betas)
    if "level" in root:  # pitch about the pelvis until a front and a back part touch the floor together
        front, back = root["level"]
        pitch0 = pitch.copy()
        for _ in range(3):
            local = verts @ _root_rotation(yaw, np.zeros(n), np.zeros(n))  # heading removed: forward = +z
            a, b = local[:, parts[front]], local[:, parts[back]]
            a, b = a[np.arange(n), a[..., 1].argmin(1)], b[np.arange(n), b[..., 1].argmin(1)]
            pitch = pitch + np.arctan2(a[:, 1] - b[:, 1], np.maximum(a[:, 2] - b[:, 2], 0.2))
            verts = posed_vertices(body, _axis_angle(_root_rotation(yaw, pitch, roll)), body_pose, betas)
        if root.get("keep_trunk"):  # the spine takes back the pelvis's extra lean (the legs do not move)
            spine = [JOINT[name] for name in ("spine1", "spine2", "spine3")]
            euler = euler.copy()
            euler[:, spine, 0] -= (pitch - pitch0)[:, None] / 3
            body_pose = _axis_angle(euler_to_body_pose(clip_to_limits(euler)))
            body_pose[:, 21:] = 0.0
            verts = posed_vertices(body, _axis_angle(_root_rotation(yaw, pitch, roll)), body_pose, betas)
    height = -verts[..., 1].min(1)
    if "levels" in root:  # stairs: each foot on its own step
        for k, side in enumerate(("left_foot", "right_foot")):
            height = np.maximum(height, root["levels"][:, k] - verts[:, parts[side], 1].min(1))
    return pitch, body_pose, height


def generate_motion(
    rng: np.random.Generator,
    motion: str,
    fps: float,
    duration: float,
    betas: np.ndarray | None = None,
    body=None,
    ground: bool = True,
) -> dict[str, np.ndarray]:
    """One procedural sequence in mega's y-up world, its feet (or whatever is lowest) on the floor.

    Args:
        rng: the sequence's own generator (the result is a pure function of its state).
        motion: one of :data:`ACTIVITY_NAMES`.
        fps: frame rate; duration: seconds.
        betas: (>= 10,) the subject's shape, for grounding (zeros if None).
        body: the body model that grounds the frames (the free body if None).
        ground: False skips the body model entirely (root height 0, no levelling): the activity's
            own poses, as :func:`generator_fingerprint` hashes them.
    Returns:
        ``global_orient`` (N, 3), ``body_pose`` (N, 21, 3) (SMPL joints 1..21), ``pose_hand``
        (N, 30, 3) (SMPL-H fingers, left first), ``transl`` (N, 3); axis-angle radians and metres.
    """
    if motion not in ACTIVITIES:
        raise ConfigError(f"unknown activity {motion!r}; known: {list(ACTIVITY_NAMES)}")
    body = _default_body() if body is None and ground else body
    betas = np.zeros(10) if betas is None else np.asarray(betas, float)[:10]
    n = max(2, int(round(duration * fps)))
    t = np.arange(n) / fps
    pose = Pose(n)
    root = ACTIVITIES[motion](rng, t, pose)
    if motion != "crawl":  # hands held in varied attitudes (crawling keeps them flat on the floor)
        for side in ("left", "right"):
            pose.add(f"{side}_wrist", "z", rng.uniform(-60, 50) + _wobble(rng, t, 15.0, ()))
            pose.add(f"{side}_wrist", "y", rng.uniform(-25, 30))
            pose.add(f"{side}_wrist", "x", rng.uniform(-50, 50))
    # Per-sequence attitudes real capture shows and the activities leave out: the head looking down or
    # up, arms turned in or out about their long axis, forearms pronated or supinated, toes in or out.
    pose.add("neck", "x", rng.uniform(-15, 30))
    pose.add("head", "x", rng.uniform(-10, 20))
    for side in ("left", "right"):
        pose.add(f"{side}_shoulder", "y", rng.uniform(-30, 30))
        pose.add(f"{side}_elbow", "x", rng.uniform(-60, 60) if motion != "crawl" else 0.0)
        toes = rng.uniform(-20, 20)
        if motion not in ("crawl", "sit_floor", "kneel", "lie"):  # their leg postures are solved as they are
            pose.add(f"{side}_hip", "y", toes)
    pose.deg += _wobble(rng, t, 3.0, (len(BODY_JOINT_NAMES), 3))
    pose.deg[:, [JOINT["neck"], JOINT["head"]], 1] += _wobble(rng, t, 12.0, (2,))
    euler = clip_to_limits(np.deg2rad(pose.deg))
    body_pose = _axis_angle(euler_to_body_pose(euler))
    body_pose[:, 21:] = 0.0  # SMPL hand joints: the reader's default (zeros) is what gets grounded
    tilt = np.deg2rad(_wobble(rng, t, 3.0, (2,)))
    yaw = rng.uniform(0, 2 * np.pi) + np.deg2rad(root["yaw"])
    pitch, roll = np.deg2rad(root["pitch"]) + tilt[:, 0], np.deg2rad(root["roll"]) + tilt[:, 1]
    if ground:
        pitch, body_pose, height = _ground(body, betas, root, yaw, pitch, roll, euler, body_pose)
    else:
        height = np.zeros(n)
    root_rot = _root_rotation(yaw, pitch, roll)
    heading = np.stack([np.sin(yaw), np.zeros(n), np.cos(yaw)], -1)
    travel = np.cumsum(root["speed"][:, None] * heading, axis=0) / fps
    start = np.array([rng.uniform(-1, 1), 0.0, rng.uniform(-1, 1)])
    transl = start + travel + (height + root["lift"])[:, None] * np.array([0.0, 1.0, 0.0])
    curl = rng.uniform(0, 25)
    hand = np.zeros((n, 30, 3))
    hand[:, :15, 2], hand[:, 15:, 2] = -np.deg2rad(curl), np.deg2rad(curl)
    return {"global_orient": _axis_angle(root_rot), "body_pose": body_pose[:, :21], "pose_hand": hand,
            "transl": transl}  # fmt: skip


@lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """16 hex digits over the poses of a short probe sequence per activity (fixed seed).

    Stored in the manifest next to :data:`GENERATOR_VERSION`, so a change of the generator's poses is
    caught even when nobody bumps the version. Probes are made without grounding (``ground=False``), so
    the fingerprint does not depend on the body file (the grounding's levelling does); values are
    rounded to 1e-5 rad so the last float bits do not matter.
    """
    import hashlib

    h = hashlib.sha256()
    for k, activity in enumerate(ACTIVITY_NAMES):
        seq = generate_motion(np.random.default_rng([990_017, k]), activity, 5.0, 1.0, ground=False)
        for key in ("global_orient", "body_pose"):
            h.update(np.round(seq[key], 5).astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def _subject(rng: np.random.Generator) -> dict:
    betas = np.zeros(16)
    betas[:10] = np.clip(rng.standard_normal(10), -2.5, 2.5)
    return {"betas": betas, "gender": str(rng.choice(GENDERS)), "fps": float(rng.choice(FILE_FPS))}


def write_synthetic_motion(
    root: str | Path,
    seed: int = 0,
    sequences: Mapping[str, int] | None = None,
    activities: Mapping[str, float] | None = None,
) -> dict:
    """Generate every split and write it as AMASS files under ``root/<split>/<subject>/``.

    Not atomic by itself: :func:`mega.data.motion.dataset.ensure_synthetic_motion` writes into a temporary
    folder and renames it. The manifest (``MANIFEST.json``) is written last.

    Args:
        root: output folder (created).
        seed: the one seed; split s, subject k, sequence j draw from ``SeedSequence([seed, s, k, j])``.
        sequences: number of sequences per split (default :data:`DEFAULT_SEQUENCES`).
        activities: mixture weights by activity name (default :data:`DEFAULT_ACTIVITIES`); each split
            holds them in proportion (:func:`allot_activities`).
    Returns:
        the manifest: generator version, seed, counts, normalised weights and the activity of every file.
    """
    root = Path(root)
    sequences = dict(DEFAULT_SEQUENCES if sequences is None else sequences)
    weights = activity_weights(activities)
    body = _default_body()
    files: dict[str, str] = {}
    frames = dict.fromkeys(sequences, 0)
    for split, count in sequences.items():
        if split not in SPLIT_IDS:
            raise ConfigError(f"motion.sequences: unknown split {split!r}; use {list(SPLIT_IDS)}")
        sid = SPLIT_IDS[split]
        plan = allot_activities(count, weights, np.random.default_rng([seed, sid, _ALLOT_STREAM]))
        for k in range(-(-count // SEQUENCES_PER_SUBJECT)):
            subject = _subject(np.random.default_rng([seed, sid, k]))
            layout = "smplh" if k % 2 == 0 else "g"
            folder = root / split / f"{split}_subject{k:02d}"
            for j in range(min(SEQUENCES_PER_SUBJECT, count - k * SEQUENCES_PER_SUBJECT)):
                rng = np.random.default_rng([seed, sid, k, j + 1])
                motion = plan[k * SEQUENCES_PER_SUBJECT + j]
                seq = generate_motion(
                    rng, motion, subject["fps"], rng.uniform(*DURATION_S), subject["betas"], body
                )
                orient, transl = z_up_to_y_up(seq["global_orient"], seq["transl"], inverse=True)
                name = f"{j:02d}_{motion}_" + ("poses.npz" if layout == "smplh" else "stageii.npz")
                write_amass_npz(folder / name, orient, seq["body_pose"], seq["pose_hand"], transl,
                                subject["betas"], subject["gender"], subject["fps"], layout)  # fmt: skip
                files[(folder / name).relative_to(root).as_posix()] = motion
                frames[split] += len(orient)
            # Per-subject files that readers must skip.
            extra = folder / ("shape.npz" if layout == "smplh" else f"{folder.name}_stagei.npz")
            np.savez(extra, betas=subject["betas"], gender=np.array(subject["gender"]))
    manifest = {"generator": __name__, "version": GENERATOR_VERSION, "fingerprint": generator_fingerprint(),
                "seed": seed, "sequences": sequences,
                "activities": weights, "grounded_on": getattr(body, "name", "free"), "frames": frames,
                "files": files}  # fmt: skip
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("wrote %s synthetic sequences (%s frames) to %s", sequences, frames, root)
    return manifest


def ensure_synthetic_motion(
    root: str | Path = "data/synthetic_motion",
    seed: int = 0,
    sequences: Mapping[str, int] | None = None,
    activities: Mapping[str, float] | None = None,
) -> Path:
    """Generate the embedded default motion data into ``root`` unless it is already there.

    Idempotent and safe under concurrent callers (DDP ranks): each writes into its own temporary
    sibling folder and renames it into place; the first rename wins, the others discard theirs.

    Args:
        root: target folder. seed: generator seed. sequences: per-split counts (default 200/20/20).
        activities: activity mixture weights (default ``motion_synth.DEFAULT_ACTIVITIES``).
    Returns:
        ``root``.
    Raises:
        ValueError: ``root`` holds data generated with another seed, size, activity mixture or
            generator version (stale motion is never read silently).
    """
    root = Path(root)
    wanted = {"version": GENERATOR_VERSION, "fingerprint": generator_fingerprint(), "seed": seed,
              "sequences": dict(sequences or DEFAULT_SEQUENCES), "activities": activity_weights(activities)}  # fmt: skip

    def existing() -> dict | None:
        if not (root / MANIFEST).is_file():
            return None
        found = read_json_object(root / MANIFEST, MotionFileError)
        if {k: found.get(k) for k in wanted} != wanted:
            made = {k: found.get(k) for k in wanted}
            raise MotionFileError(
                f"{root} holds synthetic motion made with {made} (its {MANIFEST}), not {wanted}: delete the "
                "folder or choose another motion.root"
            )
        return found

    if existing() is not None:
        return root
    if root.exists() and any(root.iterdir()):
        raise MotionFileError(f"{root} exists but has no {MANIFEST}: it is not generated motion; delete it or "
                         "choose another motion.root")  # fmt: skip
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log.info("generating the default synthetic motion data into %s (seed %d)", root, seed)
    write_synthetic_motion(tmp, seed=seed, sequences=wanted["sequences"], activities=activities)
    try:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if existing() is None:  # nobody else finished it either
            raise
    return root
