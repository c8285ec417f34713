"""Activities of the procedural motion generator: joint-angle curves and root motion per activity.

Every activity is a function ``(rng, t (N,), pose: Pose) -> dict`` that adds Euler angles (degrees,
left side; the right side is mirrored) to ``pose`` and returns the root motion (all (N,)):
``speed`` (m/s along the heading), ``yaw`` (heading change, deg), ``pitch`` (forward lean of the
pelvis, deg: +90 lies prone, -90 lies supine), ``roll`` (deg, +90 lies on the right side) and
``lift`` (m above the support, for flight phases). Optional keys: ``levels`` (N, 2) support heights
of the left and right foot (stairs); ``level`` = (front part, back part), e.g. ``("hands", "knees")``
crawling or ``("feet", "seat")`` sitting on the floor: the pelvis is pitched until both touch the
floor together (``keep_trunk``: the spine takes back the extra lean). Feet are put on the ground afterwards
(:mod:`mega.data.motion_synth` grounds every frame on the body's mesh), so activities set postures,
not heights.

Signs are those of :mod:`mega.data.joint_limits`: hip flexion -x, abduction +z, external rotation +y;
knee flexion +x; ankle plantar flexion +x; toes extension -x; spine / neck flexion +x, side bend +z
(to the right), twist y; shoulder -z lowers the arm from the T-pose, then -x swings it forward;
elbow flexion -y, pronation x; wrist flexion -z. With the pelvis pitched forward by ``a`` and the hips
flexed by ``f``, the thigh leans ``f - a`` forward of the vertical; a foot is flat on the floor when
the ankle angle is ``(f - a) - knee`` (:func:`flat_ankle`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mega.data.joint_limits import BODY_JOINT_NAMES, EULER_ORDERS

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
    out = {k: np.broadcast_to(np.asarray(v, float), (n,)).copy()
           for k, v in (("speed", speed), ("yaw", yaw), ("pitch", pitch), ("roll", roll), ("lift", lift))}  # fmt: skip
    out.update(extra)
    return out


def _side(rng) -> tuple[str, str]:
    return ("left", "right") if rng.random() < 0.5 else ("right", "left")


def _relaxed_arms(rng, p: Pose, scale=1.0) -> None:
    p.pair("shoulder", "z", -rng.uniform(65, 82) * scale)
    p.pair("elbow", "y", -rng.uniform(5, 25))


def _hold(rng, t, rise=(0.5, 1.2)) -> np.ndarray:
    """Goes 0 -> 1 (after a random start), stays, and sometimes comes back: (N,) in [0, 1]."""
    t_end = t[-1] if len(t) else 0.0
    w = smoothstep((t - rng.uniform(0.0, 0.35) * t_end) / rng.uniform(*rise))
    if rng.random() < 0.4:  # and back
        w = w * (1 - smoothstep((t - rng.uniform(0.65, 0.85) * t_end) / rng.uniform(*rise)))
    if rng.random() < 0.3:  # or the reverse: starts in the posture and leaves it
        w = 1 - w
    return w


def _cycle(rng, t, period=(2.5, 4.0)) -> np.ndarray:
    """Down-and-up depth in [0, 1], (N,)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * t / rng.uniform(*period) + rng.uniform(0, 2 * np.pi))


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
    _relaxed_arms(rng, p)
    phi = _gait(rng, t, p, rng.uniform(0.95, 1.25), rng.uniform(18, 30), rng.uniform(0, 6),
                rng.uniform(40, 65), rng.uniform(3, 8), rng.uniform(10, 30))  # fmt: skip
    yaw = rng.uniform(-25, 25) * t - 4 * np.sin(phi)
    return root(len(t), rng.uniform(1.0, 1.6), yaw, pitch=rng.uniform(-3, 6))


def run(rng, t, p):
    p.pair("shoulder", "z", -rng.uniform(60, 75))
    p.pair("elbow", "y", -rng.uniform(75, 110))
    p.spine("x", rng.uniform(2, 6))
    phi = _gait(rng, t, p, rng.uniform(0.62, 0.78), rng.uniform(30, 45), rng.uniform(8, 16),
                rng.uniform(70, 110), rng.uniform(15, 25), rng.uniform(25, 45))  # fmt: skip
    yaw = rng.uniform(-20, 20) * t - 6 * np.sin(phi)
    flight = rng.uniform(0.03, 0.08) * np.clip((np.abs(np.sin(phi)) - 0.7) / 0.3, 0, 1)
    return root(len(t), rng.uniform(2.5, 4.0), yaw, pitch=rng.uniform(4, 12), lift=flight)


def turn(rng, t, p):
    _relaxed_arms(rng, p)
    _gait(rng, t, p, rng.uniform(0.8, 1.1), rng.uniform(6, 12), rng.uniform(5, 10), rng.uniform(20, 35), 5.0,
          rng.uniform(3, 8))  # fmt: skip
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
        side, other = _side(rng)
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
    d = _cycle(rng, t)
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
    d = _cycle(rng, t) if rng.random() < 0.6 else _hold(rng, t)
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
    _relaxed_arms(rng, p)
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


# ------------------------------------------------------------------------------ low / on the floor
def sit(rng, t, p):
    """On a chair (implicit: the feet carry the grounding): sitting down or up, or seated activity."""
    w = _hold(rng, t, (0.8, 1.5))
    pitch = rng.uniform(-15, 12)  # slouched (-) to upright / leaning forward (+)
    hip, knee = rng.uniform(80, 105), rng.uniform(60, 110)
    p.pair("hip", "x", -hip * w)
    p.pair("knee", "x", knee * w)
    p.pair("ankle", "x", flat_ankle(hip * w, pitch * w, knee * w) + rng.uniform(-10, 10) * w)
    p.pair("hip", "z", rng.uniform(-5, 20) * w)
    legs = rng.integers(4)
    side, _ = _side(rng)
    if legs == 1:  # crossed legs: one thigh over the other
        p.add(f"{side}_hip", "x", -rng.uniform(10, 25) * w)
        p.add(f"{side}_hip", "z", -rng.uniform(20, 30) * w)
        p.add(f"{side}_hip", "y", -rng.uniform(0, 20) * w)
    elif legs == 2:  # ankle on the other knee ("figure four")
        p.add(f"{side}_hip", "z", rng.uniform(25, 40) * w)
        p.add(f"{side}_hip", "y", rng.uniform(30, 45) * w)
        p.add(f"{side}_knee", "x", rng.uniform(0, 30) * w)
    elif legs == 3:  # legs stretched out
        p.pair("knee", "x", -rng.uniform(30, 55) * w)
        p.pair("ankle", "x", rng.uniform(20, 45) * w)
    p.spine("x", (-pitch / 3 + rng.uniform(-3, 10)) * w)
    p.pair("shoulder", "z", -rng.uniform(65, 85))
    p.pair("shoulder", "x", -rng.uniform(10, 70) * w)
    p.pair("elbow", "y", -rng.uniform(20, 110) * w)
    p.pair("wrist", "z", rng.uniform(-40, 40) * w)
    back = -rng.uniform(0.1, 0.2) * w  # the pelvis moves back onto the seat
    return root(len(t), np.gradient(back, t), pitch=pitch * w)


def sit_floor(rng, t, p):
    """Sitting on the floor: legs long, cross-legged, knees hugged, one leg folded; the upper body moves."""
    kind = rng.integers(4)
    n = len(t)
    sway = np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    if kind == 0:  # long sitting, leaning back on the hands
        pitch = rng.uniform(-25, 5) + 5 * sway
        knee = rng.uniform(0, 40)
        hip = 90 + pitch + knee / 2 + rng.uniform(-5, 5)  # the knees rise so the heels stay down
        p.pair("hip", "x", -hip)
        p.pair("knee", "x", knee)
        p.pair("ankle", "x", rng.uniform(10, 40))
        p.pair("shoulder", "z", -rng.uniform(65, 80))
        p.pair("shoulder", "x", rng.uniform(20, 55) * np.ones(n))
        p.pair("elbow", "y", -rng.uniform(15, 50))  # bent, or the hands would lift the seat
        p.pair("wrist", "z", rng.uniform(30, 70))
    elif kind == 1:  # cross-legged: thighs out and rotated, each shin under the other knee
        pitch = rng.uniform(-25, 5) + 5 * sway  # knees above the hips, ankles under the other knee
        p.pair("hip", "x", -(rng.uniform(105, 115) + pitch))  # (angles solved on the skeleton)
        p.pair("hip", "z", rng.uniform(20, 30))
        p.pair("hip", "y", rng.uniform(55, 60))
        p.pair("knee", "x", rng.uniform(90, 105))
        p.pair("ankle", "x", rng.uniform(20, 40))  # feet pointed, lying on their outer edges
        p.pair("ankle", "z", rng.uniform(10, 25))
        p.pair("shoulder", "z", -rng.uniform(70, 85))
        p.pair("shoulder", "x", -rng.uniform(10, 45))
        p.pair("elbow", "y", -rng.uniform(20, 80))
    elif kind == 2:  # knees up, hugging them
        pitch = rng.uniform(-25, 0) + 4 * sway
        thigh = rng.uniform(
            115, 140
        )  # from the vertical; shins lean forward so feet and seat share the floor
        hip, knee = thigh + pitch, 2 * thigh - 180 + rng.uniform(0, 15)
        p.pair("hip", "x", -hip)
        p.pair("knee", "x", knee)
        p.pair("ankle", "x", flat_ankle(hip, pitch, knee))
        p.spine("x", rng.uniform(5, 15))
        p.pair("shoulder", "z", -rng.uniform(60, 80))
        p.pair("shoulder", "x", -rng.uniform(50, 80))
        p.pair("elbow", "y", -rng.uniform(70, 120))
    else:  # one leg folded in (cross-legged), the other long
        pitch = rng.uniform(-25, 0) + 4 * sway
        side, other = _side(rng)
        p.add(f"{side}_hip", "x", -(rng.uniform(105, 115) + pitch))
        p.add(f"{side}_hip", "z", rng.uniform(20, 30))
        p.add(f"{side}_hip", "y", rng.uniform(55, 60))
        p.add(f"{side}_knee", "x", rng.uniform(90, 105))
        knee = rng.uniform(0, 30)
        p.add(f"{other}_hip", "x", -(90 + pitch + knee / 2 + rng.uniform(-5, 5)))
        p.add(f"{other}_hip", "z", rng.uniform(0, 25))
        p.add(f"{other}_knee", "x", knee)
        p.pair("ankle", "x", rng.uniform(10, 40))
        p.pair("shoulder", "z", -rng.uniform(60, 80))
        p.pair("shoulder", "x", -rng.uniform(0, 40))
        p.pair("elbow", "y", -rng.uniform(10, 60))
    p.spine("x", rng.uniform(0, 8) * sway)
    p.spine("y", rng.uniform(0, 12) * sway)
    if rng.random() < 0.5:  # one arm reaching or gesturing
        side, _ = _side(rng)
        r = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
        p.add(f"{side}_shoulder", "x", -rng.uniform(20, 120) * r)
        p.add(f"{side}_elbow", "y", -rng.uniform(0, 60) * r)
    return root(n, pitch=pitch, level=("feet", "seat"), keep_trunk=True)


def _kneeling_leg(rng, p: Pose, side: str, tucked: bool, w=1.0, knee: float | None = None) -> None:
    """Knee (unless given) and foot of a leg kneeling with the thigh about vertical.

    The shin rises towards the foot so that the knee, not the toes, is lowest: foot back flat (ankle
    fully extended, toes pointed, knee 120-140) or toes tucked under (knee 100-120).
    """
    if knee is None:
        knee = rng.uniform(100, 120) if tucked else rng.uniform(120, 140)
        p.add(f"{side}_knee", "x", knee * w)
    if tucked:
        p.add(f"{side}_ankle", "x", -rng.uniform(5, 25) * w)
        p.add(f"{side}_foot", "x", -rng.uniform(50, 70) * w)
    else:
        p.add(f"{side}_ankle", "x", rng.uniform(50, 60) * w)
        p.add(f"{side}_foot", "x", rng.uniform(15, 40) * w)


def kneel(rng, t, p):
    """Kneeling: upright on both knees, sitting on the heels, on one knee; down from standing or held."""
    kind = rng.integers(3)
    w = _hold(rng, t, (0.8, 1.4)) if rng.random() < 0.5 else np.ones(len(t))
    tucked = rng.random() < 0.4
    if kind == 0:  # upright on both knees
        pitch = rng.uniform(-5, 15)
        hip = pitch + rng.uniform(-10, 15)
        p.pair("hip", "x", -hip * w)
    elif kind == 1:  # sitting on the heels (seiza) or leaning forward from it
        pitch = rng.uniform(-5, 20)  # more and the hanging hands would reach the floor first
        thigh = rng.uniform(60, 72)  # from the vertical: knees lower than the hips, shins flat
        p.pair("hip", "x", -(thigh + pitch) * w)
        knee = min(160.0, thigh + 90 + rng.uniform(0, 10))
        p.pair("knee", "x", knee * w)
        p.spine("x", rng.uniform(0, 20) * w)
    else:  # on one knee, the other foot in front
        pitch = rng.uniform(-5, 15)
        down, front = _side(rng)
        p.add(f"{down}_hip", "x", -(pitch + rng.uniform(-20, 5)) * w)
        f_hip, f_knee = rng.uniform(75, 110), rng.uniform(75, 110)
        p.add(f"{front}_hip", "x", -f_hip * w)
        p.add(f"{front}_hip", "z", rng.uniform(0, 15) * w)
        p.add(f"{front}_knee", "x", f_knee * w)
        p.add(f"{front}_ankle", "x", flat_ankle(f_hip * w, pitch * w, f_knee * w))
    kneeling = [("left", "right"), ("left", "right"), (down,) if kind == 2 else ()][kind]
    for side in kneeling:
        if kind == 2:  # the thigh of the kneeling leg leans back: less knee flexion keeps the shin low
            knee = rng.uniform(90, 105) if tucked else rng.uniform(105, 120)
            p.add(f"{side}_knee", "x", knee * w)
        _kneeling_leg(rng, p, side, tucked, w, knee if kind in (1, 2) else None)
    _relaxed_arms(rng, p)
    if rng.random() < 0.5:  # hands working in front, low
        p.pair("shoulder", "x", -rng.uniform(20, 80) * w)
        p.pair("elbow", "y", -rng.uniform(10, 80) * w)
    return root(len(t), pitch=pitch * w)


def crawl(rng, t, p):
    """On hands and knees, diagonal gait (left hand with right knee); hands and knees share the floor."""
    period = rng.uniform(1.2, 2.0)
    phi = 2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
    pitch = rng.uniform(75, 90)
    trunk = rng.uniform(-5, 10)  # spine flexion (+) or a sagging back (-)
    p.spine("x", trunk / 3)
    p.add("neck", "x", -rng.uniform(20, 45))
    p.add("head", "x", -rng.uniform(0, 20))
    amp = rng.uniform(8, 18)
    tucked = False  # toes tucked under lets the toes, not the knees, take the floor while crawling
    for side, ph in (("left", phi), ("right", phi + np.pi)):
        hip = pitch + rng.uniform(-5, 5) + amp * np.sin(ph)
        knee = (rng.uniform(100, 120) if tucked else rng.uniform(120, 140)) + 12 * np.clip(
            np.cos(ph), 0, None
        )
        p.add(f"{side}_hip", "x", -hip)
        p.add(f"{side}_hip", "z", rng.uniform(0, 12))
        p.add(f"{side}_knee", "x", knee)
        _kneeling_leg(rng, p, side, tucked, knee=knee)
        arm = ph + np.pi  # the opposite arm moves with this leg
        p.add(f"{side}_shoulder", "z", -rng.uniform(80, 90))
        p.add(f"{side}_shoulder", "x", -(pitch + trunk) - amp * np.sin(arm))
        p.add(f"{side}_elbow", "y", -rng.uniform(0, 20) - 15 * np.clip(np.cos(arm), 0, None))
        p.add(f"{side}_elbow", "x", -rng.uniform(30, 70))
        p.add(f"{side}_wrist", "z", rng.uniform(45, 75))
    speed = rng.uniform(0.25, 0.55)
    return root(len(t), speed, rng.uniform(-15, 15) * t, pitch=pitch, level=("hands", "knees"))


def lie(rng, t, p):
    """Lying supine, prone or on a side, limbs moving; sometimes sitting up from supine or lying down."""
    kind = rng.integers(4)
    n = len(t)
    c = _cycle(rng, t, (2.0, 4.0))
    out = root(n)
    if kind in (0, 3):  # supine
        out["pitch"][:] = -rng.uniform(82, 95)
        out["level"] = ("feet", "seat")  # legs and back share the floor: the pelvis tilts until they do
        moves = rng.integers(4)
        if moves == 0:  # knees up, feet flat beside the seat (knee = 2 x hip), one knee moving
            hip = rng.uniform(30, 60)
            knee = 2 * hip + rng.uniform(0, 10)
            p.pair("hip", "x", -hip, -hip * (1 - 0.5 * c))
            p.pair("knee", "x", knee, knee * (1 - 0.5 * c))
            p.pair("ankle", "x", flat_ankle(hip, out["pitch"], knee))
        elif moves == 1:  # straight leg raises
            side, _ = _side(rng)
            p.add(f"{side}_hip", "x", -rng.uniform(40, 90) * c)
            p.pair("ankle", "x", rng.uniform(10, 40))
        elif moves == 2:  # knees to the chest
            p.pair("hip", "x", -rng.uniform(90, 135) * c)
            p.pair("knee", "x", rng.uniform(100, 150) * c)
            p.pair("ankle", "x", rng.uniform(10, 40))
        else:  # legs apart and together
            p.pair("hip", "z", rng.uniform(10, 45) * c)
            p.pair("hip", "y", rng.uniform(0, 30))
            p.pair("ankle", "x", rng.uniform(20, 45))
        arms = rng.integers(3)
        if arms == 0:
            p.pair("shoulder", "z", -rng.uniform(40, 85))
        elif arms == 1:  # overhead
            p.pair("shoulder", "z", rng.uniform(40, 75))
            p.pair("elbow", "y", -rng.uniform(0, 60))
        else:  # hands on the belly / behind the head
            p.pair("shoulder", "z", -rng.uniform(50, 80))
            p.pair("shoulder", "x", -rng.uniform(20, 50))
            p.pair("elbow", "y", -rng.uniform(80, 130))
        if kind == 3:  # sitting up from lying (or lying down): the trunk rises, the legs stay down
            w = _hold(rng, t, (1.0, 1.8))
            rise = rng.uniform(70, 95) * w
            out["pitch"] += rise
            p.pair("hip", "x", -rise)
            p.pair("shoulder", "x", -rng.uniform(0, 40) * w)
            p.spine("x", rng.uniform(0, 12) * w)
    elif kind == 1:  # prone
        p.pair("ankle", "x", rng.uniform(30, 55))
        p.pair("knee", "x", rng.uniform(0, 110) * c, rng.uniform(0, 20) * c)
        p.add("neck", "y", rng.choice([-1, 1]) * rng.uniform(20, 50))
        p.add("neck", "x", -rng.uniform(0, 35))
        if rng.random() < 0.5:  # arms folded under the head
            p.pair("shoulder", "z", rng.uniform(10, 40))
            p.pair("shoulder", "y", rng.uniform(30, 60))
            p.pair("elbow", "y", -rng.uniform(110, 150))
        else:
            p.pair("shoulder", "z", -rng.uniform(60, 85))
        out["pitch"][:] = rng.uniform(85, 95)
    else:  # on a side, hips and knees bent; the top leg and arm move
        side = rng.choice([-1, 1])
        hip, knee = rng.uniform(20, 80), rng.uniform(30, 110)
        p.pair("hip", "x", -hip, -(hip + rng.uniform(-20, 20)))
        p.pair("knee", "x", knee, knee + rng.uniform(-20, 20))
        top = "left" if side > 0 else "right"  # roll +90 lies on the right side: the left is on top
        p.add(f"{top}_hip", "z", rng.uniform(0, 35) * c)
        p.add(f"{top}_shoulder", "z", -rng.uniform(40, 85) + rng.uniform(0, 60) * c)
        bottom = "right" if top == "left" else "left"
        p.add(f"{bottom}_shoulder", "z", -rng.uniform(70, 90))  # the lower arm forward along the floor
        p.add(f"{bottom}_shoulder", "x", -rng.uniform(60, 120))
        p.add(f"{bottom}_elbow", "y", -rng.uniform(0, 90))
        p.add("neck", "z", -side * rng.uniform(10, 30))
        out["roll"][:] = side * rng.uniform(80, 95)
    return out


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
    "walk": walk, "run": run, "turn": turn, "arm_swing": arm_swing, "bend": bend, "squat": squat,
    "reach": reach, "step": step, "sit": sit, "sit_floor": sit_floor, "kneel": kneel, "crawl": crawl,
    "lie": lie, "mixture": mixture,
}  # fmt: skip
