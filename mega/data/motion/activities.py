"""Activities of the procedural motion generator: joint-angle curves and root motion per activity.

Every activity is a function ``(rng, t (N,), pose: Pose) -> dict`` that adds Euler angles (degrees,
left side; the right side is mirrored) to ``pose`` and returns the root motion (all (N,)):
``speed`` (m/s along the heading), ``yaw`` (heading change, deg), ``pitch`` (forward lean of the
pelvis, deg: +90 lies prone, -90 lies supine), ``roll`` (deg, +90 lies on the right side) and
``lift`` (m above the support, for flight phases). Optional keys: ``levels`` (N, 2) support heights
of the left and right foot (stairs); ``level`` = (front part, back part), e.g. ``("hands", "knees")``
crawling or ``("feet", "seat")`` sitting on the floor: the pelvis is pitched until both touch the
floor together (``keep_trunk``: the spine takes back the extra lean). Feet are put on the ground afterwards
(:mod:`mega.data.motion.synth` grounds every frame on the body's mesh), so activities set postures,
not heights.

The upright activities are here, the low ones (sitting, kneeling, crawling, lying) in
:mod:`mega.data.motion.floor`; the angle helpers in :mod:`mega.data.motion.pose`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mega.data.motion.floor import crawl, kneel, lie, sit, sit_floor
from mega.data.motion.joint_limits import BODY_JOINT_NAMES
from mega.data.motion.pose import (
    JOINT,
    LOWER,
    Pose,
    cycle_curve,
    flat_ankle,
    hold_curve,
    pick_side,
    relaxed_arms,
    root,
    smoothstep,
)


def _gait(rng, t, p, period, hip_amp, hip_off, knee_amp, knee_base, arm_amp) -> np.ndarray:
    """Alternating legs with counter arm swing; returns the phase (N,) of the left leg."""
    phi = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    for side, ph in (("left", phi), ("right", phi + np.pi)):
        p.add(f"{side}_hip", "x", -(hip_off + hip_amp * np.sin(ph)))
        p.add(f"{side}_knee", "x", knee_base + knee_amp * np.clip(np.sin(ph + np.pi / 3), 0, None) ** 2)
        p.add(f"{side}_ankle", "x", -0.4 * hip_amp * np.sin(ph))
        p.add(f"{side}_shoulder", "x", arm_amp * np.sin(ph))
    p.add("spine2", "y", 0.2 * hip_amp * np.sin(phi))
    return phi


# ---------------------------------------------------------------------------------------- upright
def walk(rng, t, p):
    relaxed_arms(rng, p)
    phi = _gait(
        rng,
        t,
        p,
        rng.uniform(0.95, 1.25),
        rng.uniform(18, 30),
        rng.uniform(0, 6),
        rng.uniform(40, 65),
        rng.uniform(3, 8),
        rng.uniform(10, 30),
    )
    yaw = rng.uniform(-25, 25) * t - 4 * np.sin(phi)
    return root(len(t), rng.uniform(1.0, 1.6), yaw, pitch=rng.uniform(-3, 6))


def run(rng, t, p):
    p.pair("shoulder", "z", -rng.uniform(60, 75))
    p.pair("elbow", "y", -rng.uniform(75, 110))
    p.spine("x", rng.uniform(2, 6))
    phi = _gait(
        rng,
        t,
        p,
        rng.uniform(0.62, 0.78),
        rng.uniform(30, 45),
        rng.uniform(8, 16),
        rng.uniform(70, 110),
        rng.uniform(15, 25),
        rng.uniform(25, 45),
    )
    yaw = rng.uniform(-20, 20) * t - 6 * np.sin(phi)
    flight = rng.uniform(0.03, 0.08) * np.clip((np.abs(np.sin(phi)) - 0.7) / 0.3, 0, 1)
    return root(len(t), rng.uniform(2.5, 4.0), yaw, pitch=rng.uniform(4, 12), lift=flight)


def turn(rng, t, p):
    relaxed_arms(rng, p)
    _gait(
        rng,
        t,
        p,
        rng.uniform(0.8, 1.1),
        rng.uniform(6, 12),
        rng.uniform(5, 10),
        rng.uniform(20, 35),
        5.0,
        rng.uniform(3, 8),
    )
    turn_deg = rng.choice([-1, 1]) * rng.uniform(90, 270) * smoothstep(t / max(t[-1], 1e-6))
    return root(len(t), rng.uniform(0.0, 0.2), turn_deg)


def arm_swing(rng, t, p):
    p.pair("knee", "x", rng.uniform(0, 6))
    phase = 2 * np.pi * rng.uniform(0.4, 1.0) * t + rng.uniform(0, 2 * np.pi)
    lag = np.pi if rng.random() < 0.5 else 0.0
    s_l, s_r = 0.5 + 0.5 * np.sin(phase), 0.5 + 0.5 * np.sin(phase + lag)
    pattern = rng.integers(7)
    if pattern == 0:  # lateral raises from hanging to overhead
        amp = rng.uniform(60, 160)
        p.pair("shoulder", "z", -85 + amp * s_l, -85 + amp * s_r)
    elif pattern == 1:  # forward swings up to overhead
        amp = rng.uniform(60, 175)
        p.pair("shoulder", "z", -rng.uniform(75, 88))
        p.pair("shoulder", "x", -amp * s_l, -amp * s_r)
    elif pattern == 2:  # wave with one raised arm
        side, other = pick_side(rng)
        p.add(f"{side}_shoulder", "z", rng.uniform(0, 60))
        p.add(f"{side}_elbow", "y", -rng.uniform(60, 110) + 25 * np.sin(2.5 * phase))
        p.add(f"{side}_wrist", "z", 30 * np.sin(2.5 * phase))
        p.add(f"{other}_shoulder", "z", -rng.uniform(65, 80))
    elif pattern == 3:  # arm circles
        p.pair("shoulder", "x", -40 + 40 * np.cos(phase), -40 + 40 * np.cos(phase + lag))
        p.pair("shoulder", "z", -60 + 45 * np.sin(phase), -60 + 45 * np.sin(phase + lag))
    elif pattern == 4:  # jumping-jack arms and legs
        p.pair("shoulder", "z", -85 + rng.uniform(120, 160) * s_l)
        p.pair("hip", "z", rng.uniform(10, 25) * s_l)
    elif pattern == 5:  # forearms forward, wrists and forearms working (typing, turning, pouring)
        p.pair("shoulder", "z", -rng.uniform(70, 85))
        p.pair("shoulder", "x", -rng.uniform(20, 70))
        p.pair("elbow", "y", -rng.uniform(60, 110))
        p.pair("elbow", "x", rng.uniform(-70, 70) * np.sin(phase), rng.uniform(-70, 70) * np.sin(phase + lag))
        p.pair("wrist", "z", rng.uniform(-70, 60) * s_l, rng.uniform(-70, 60) * s_r)
        p.pair("wrist", "y", rng.uniform(-30, 30) * np.sin(phase))
        p.pair("wrist", "x", rng.uniform(-60, 60) * np.sin(phase))
    else:  # hands to the head / behind the neck, elbows out, shoulder twist
        p.pair("shoulder", "z", rng.uniform(-20, 25))
        p.pair("shoulder", "y", rng.uniform(30, 75) * s_l, rng.uniform(30, 75) * s_r)
        p.pair("elbow", "y", -rng.uniform(110, 150))
    p.pair("elbow", "y", -rng.uniform(0, 25))
    return root(len(t))


def bend(rng, t, p):
    d = cycle_curve(rng, t)
    p.pair("shoulder", "z", -rng.uniform(75, 88))
    if rng.random() < 0.25:  # sideways (+z bends to the right); the arms keep hanging vertically
        tilt = rng.choice([-1, 1]) * rng.uniform(10, 25) * d
        p.spine("z", tilt)
        p.add("left_shoulder", "z", -3 * tilt)
        p.add("right_shoulder", "z", 3 * tilt)
        return root(len(t), roll=-0.3 * tilt)
    pitch = rng.uniform(30, 90) * d  # the pelvis tips forward over straight(ish) legs
    trunk = rng.uniform(10, 90) * d  # spine flexion in all
    extra = rng.uniform(-5, 20) * d
    knee = rng.uniform(0, 35) * d
    p.spine("x", trunk / 3)
    p.pair("hip", "x", -(pitch + extra + 0.5 * knee))
    p.pair("knee", "x", knee)
    p.pair("ankle", "x", flat_ankle(pitch + extra + 0.5 * knee, pitch, knee))
    p.pair("shoulder", "x", -rng.uniform(0.7, 1.1) * (pitch + trunk) * np.ones_like(d))
    p.add("neck", "x", -rng.uniform(0, 30) * d)
    return root(len(t), pitch=pitch)


def squat(rng, t, p):
    deep = rng.random() < 0.6
    d = cycle_curve(rng, t) if rng.random() < 0.6 else hold_curve(rng, t)
    if deep:  # thighs past horizontal, heels down (or up on the toes)
        knee, hip, pitch = rng.uniform(130, 160), rng.uniform(110, 140), rng.uniform(15, 40)
    else:
        knee, hip, pitch = rng.uniform(50, 110), rng.uniform(45, 105), rng.uniform(5, 25)
    heels_up = deep and rng.random() < 0.3
    p.pair("hip", "x", -hip * d)
    p.pair("hip", "z", rng.uniform(5, 25) * d)
    p.pair("hip", "y", rng.uniform(0, 30) * d)
    p.pair("knee", "x", knee * d)
    ankle = flat_ankle(hip * d, pitch * d, knee * d)
    p.pair("ankle", "x", ankle + (rng.uniform(35, 55) * d if heels_up else 0))
    if heels_up:
        p.pair("foot", "x", -rng.uniform(40, 65) * d)
    p.spine("x", rng.uniform(-5, 10) * d)
    p.pair("shoulder", "z", -rng.uniform(75, 88))
    p.pair("shoulder", "x", -rng.uniform(20, 100) * d)
    p.pair("elbow", "y", -rng.uniform(0, 60) * d)
    p.add("neck", "x", -rng.uniform(0, 25) * d)
    return root(len(t), pitch=pitch * d)


def reach(rng, t, p):
    p.pair("knee", "x", rng.uniform(0, 6))
    t_up, t_down = rng.uniform(0.0, 0.8), rng.uniform(1.8, 3.5)
    r = smoothstep((t - t_up) / rng.uniform(0.5, 1.0)) * (1 - smoothstep((t - t_down) / 0.8))
    sides = [[("left", 1)], [("right", -1)], [("left", 1), ("right", -1)]][rng.integers(3)]
    kind = rng.integers(4)
    out = root(len(t))
    for side, _ in sides:
        if kind == 0:  # forward, up to overhead
            p.add(f"{side}_shoulder", "x", -rng.uniform(40, 175) * r)
            p.add(f"{side}_shoulder", "z", -85 + rng.uniform(0, 40) * r)
        elif kind == 1:  # up and out, overhead
            p.add(f"{side}_shoulder", "z", -85 + rng.uniform(120, 160) * r)
            p.add(f"{side}_collar", "z", rng.uniform(0, 35) * r)
        elif kind == 2:  # across the body / behind
            p.add(f"{side}_shoulder", "z", -85 + rng.uniform(0, 60) * r)
            p.add(f"{side}_shoulder", "x", -rng.uniform(30, 90) * r)
            p.add(f"{side}_shoulder", "y", rng.uniform(-80, 80) * r)
            p.add(f"{side}_collar", "y", rng.uniform(-20, 20) * r)
        else:  # down to the floor: bend and squat
            p.add(f"{side}_shoulder", "z", -85 + rng.uniform(0, 20) * r)
            p.add(f"{side}_shoulder", "x", -rng.uniform(60, 120) * r)
        p.add(f"{side}_elbow", "y", -rng.uniform(30, 70) * (1 - r) - rng.uniform(0, 20) * r)
        p.add(f"{side}_wrist", "z", rng.uniform(-40, 60) * r)
        p.add(f"{side}_elbow", "x", rng.uniform(-60, 60) * r)
    for side in {"left", "right"} - {s for s, _ in sides}:
        p.add(f"{side}_shoulder", "z", -rng.uniform(65, 80))
    if len(sides) == 1:  # the reaching shoulder goes forward: left reach = negative twist
        p.spine("y", -sides[0][1] * rng.uniform(0, 15) * r)
        p.spine("z", sides[0][1] * rng.uniform(0, 8) * r * (kind == 1))
    if kind == 3:
        pitch, knee = rng.uniform(30, 80), rng.uniform(0, 100)
        hip = pitch + 0.6 * knee
        p.spine("x", rng.uniform(5, 20) * r)
        p.pair("hip", "x", -hip * r)
        p.pair("knee", "x", knee * r)
        p.pair("ankle", "x", flat_ankle(hip * r, pitch * r, knee * r))
        out["pitch"] = pitch * r
    elif kind == 1:
        p.pair("ankle", "x", rng.uniform(0, 35) * r)  # up on the toes
        p.pair("foot", "x", -rng.uniform(0, 45) * r)
        p.spine("x", -rng.uniform(0, 8) * r)
    return out


def step(rng, t, p):
    """Stairs up or down, step over step: a foot lands one stair further at phase pi of its cycle.

    Each foot's support height is its stair (``levels``); a swinging foot is held above the lower of
    the stair it left and the one it lands on.
    """
    up = rng.random() < 0.55
    height, period = rng.uniform(0.12, 0.2), rng.uniform(1.1, 1.6)
    phi = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    pitch = rng.uniform(5, 15) if up else rng.uniform(-3, 5)
    relaxed_arms(rng, p)
    big_hip, big_knee = (rng.uniform(50, 70), 0.0) if up else (rng.uniform(30, 45), rng.uniform(45, 65))
    raw = np.zeros((len(t), 2))
    for k, (side, ph) in enumerate((("left", phi), ("right", phi + np.pi))):
        w = np.mod(ph, 2 * np.pi)
        swing, u = w < np.pi, np.where(w < np.pi, w / np.pi, (w - np.pi) / np.pi)
        if up:  # lift the leg high, land with the thigh up, straighten while the body rises
            hip = np.where(swing, big_hip * smoothstep(u / 0.8), big_hip * (1 - smoothstep(u / 0.9)))
            knee = hip + np.where(swing, 40 * np.sin(np.pi * u), 5)
            push = np.where(swing, -5, 25 * smoothstep((u - 0.7) / 0.3))
        else:  # reach forward and down with a straight leg, then bend the knee to lower the body
            hip = np.where(
                swing,
                big_hip * (1 - u) + 20 * u + 10 * np.sin(np.pi * u),
                20 + (big_hip - 20) * smoothstep(u),
            )
            knee = np.where(
                swing,
                big_knee * (1 - u) + 12 * u + 20 * np.sin(np.pi * u),
                12 + (big_knee - 12) * smoothstep(u),
            )
            push = np.where(swing, 25 * np.sin(np.pi * u) + 10 * u, 10 * (1 - smoothstep(u / 0.3)))
        p.add(f"{side}_hip", "x", -hip)
        p.add(f"{side}_knee", "x", knee)
        p.add(f"{side}_ankle", "x", flat_ankle(hip, pitch, knee) + push)
        p.add(f"{side}_shoulder", "x", 12 * np.sin(ph))
        landings = np.floor((ph - np.pi) / (2 * np.pi)) - np.floor((ph[0] - np.pi) / (2 * np.pi))
        raw[:, k] = 2 * landings + (
            2 * swing if not up else 0
        )  # down: a swinging foot is held above the next stair
    since = np.mod(np.array([phi[0] - np.pi, phi[0]]), 2 * np.pi)  # time since each foot last landed
    raw[:, int(np.argmin(since))] += 1  # the foot that landed last stands one stair further
    levels = raw - raw.min() if up else raw.max() - raw
    tread = rng.uniform(0.25, 0.32)
    return root(len(t), 2 * tread / period, rng.uniform(-5, 5) * t, pitch=pitch, levels=height * levels)


# -------------------------------------------------------------------------------------- mixtures
UPRIGHT = ("walk", "run", "turn", "arm_swing", "bend", "squat", "reach")  # flat ground only


def mixture(rng, t, p):
    """The upper body of one activity over the lower body of another, or a cross-fade of two upright ones."""
    n = len(t)
    if rng.random() < 0.5:
        lower, upper = Pose(n), Pose(n)
        out = ACTIVITIES[rng.choice(["walk", "squat", "turn", "sit", "run", "kneel", "sit_floor", "step"])](
            rng, t, lower
        )
        ACTIVITIES[rng.choice(["arm_swing", "reach"])](rng, t, upper)
        is_lower = np.array([name.split("_")[-1] in LOWER for name in BODY_JOINT_NAMES])
        p.deg += np.where(is_lower[:, None], lower.deg, upper.deg)
        spine = [JOINT[name] for name in ("spine1", "spine2", "spine3")]
        p.deg[:, spine] += lower.deg[:, spine]
        return out
    first, second = rng.choice(UPRIGHT, size=2, replace=False)
    a, b = Pose(n), Pose(n)
    root_a, root_b = ACTIVITIES[first](rng, t, a), ACTIVITIES[second](rng, t, b)
    w = smoothstep((t - rng.uniform(0.3, 0.7) * t[-1]) / rng.uniform(0.5, 1.0))
    p.deg += (1 - w)[:, None, None] * a.deg + w[:, None, None] * b.deg
    return {k: (1 - w) * root_a[k] + w * root_b[k] for k in ("speed", "yaw", "pitch", "roll", "lift")}


ACTIVITIES: dict[str, Callable] = {
    "walk": walk,
    "run": run,
    "turn": turn,
    "arm_swing": arm_swing,
    "bend": bend,
    "squat": squat,
    "reach": reach,
    "step": step,
    "sit": sit,
    "sit_floor": sit_floor,
    "kneel": kneel,
    "crawl": crawl,
    "lie": lie,
    "mixture": mixture,
}
