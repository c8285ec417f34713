"""Low activities of the procedural motion generator: sitting (chair, floor), kneeling, crawling, lying.

Same contract as :mod:`mega.data.motion.activities` (which lists them all in ``ACTIVITIES``).
"""

from __future__ import annotations

import numpy as np

from mega.data.motion.pose import Pose, cycle_curve, flat_ankle, hold_curve, pick_side, relaxed_arms, root


def sit(rng, t, p):
    """On a chair (implicit: the feet carry the grounding): sitting down or up, or seated activity."""
    w = hold_curve(rng, t, (0.8, 1.5))
    pitch = rng.uniform(-15, 12)  # slouched (-) to upright / leaning forward (+)
    hip, knee = rng.uniform(80, 105), rng.uniform(60, 110)
    p.pair("hip", "x", -hip * w)
    p.pair("knee", "x", knee * w)
    p.pair("ankle", "x", flat_ankle(hip * w, pitch * w, knee * w) + rng.uniform(-10, 10) * w)
    p.pair("hip", "z", rng.uniform(-5, 20) * w)
    legs = rng.integers(4)
    side, _ = pick_side(rng)
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
    pitch = (_long_sitting, _cross_legged, _hugging_knees, _one_leg_folded)[kind](rng, p, sway, n)
    p.spine("x", rng.uniform(0, 8) * sway)
    p.spine("y", rng.uniform(0, 12) * sway)
    if rng.random() < 0.5:  # one arm reaching or gesturing
        side, _ = pick_side(rng)
        r = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
        p.add(f"{side}_shoulder", "x", -rng.uniform(20, 120) * r)
        p.add(f"{side}_elbow", "y", -rng.uniform(0, 60) * r)
    return root(n, pitch=pitch, level=("feet", "seat"), keep_trunk=True)


def _long_sitting(rng, p, sway, n):
    """Long sitting, leaning back on the hands; returns the trunk pitch (deg, per frame)."""
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
    return pitch


def _cross_legged(rng, p, sway, n):
    """Cross-legged: thighs out and rotated, each shin under the other knee; returns the trunk pitch."""
    pitch = rng.uniform(-25, 5) + 5 * sway  # knees above the hips, ankles under the other knee
    _folded_leg(rng, p.pair, pitch)
    p.pair("ankle", "x", rng.uniform(20, 40))  # feet pointed, lying on their outer edges
    p.pair("ankle", "z", rng.uniform(10, 25))
    p.pair("shoulder", "z", -rng.uniform(70, 85))
    p.pair("shoulder", "x", -rng.uniform(10, 45))
    p.pair("elbow", "y", -rng.uniform(20, 80))
    return pitch


def _folded_leg(rng, turn, pitch) -> None:
    """A leg folded in as in cross-legged sitting (angles solved on the skeleton): thigh out and rotated, the
    shin under the other knee. ``turn(joint, axis, deg)`` sets one side's angle (``Pose.add``) or both
    (``Pose.pair``)."""
    turn("hip", "x", -(rng.uniform(105, 115) + pitch))
    turn("hip", "z", rng.uniform(20, 30))
    turn("hip", "y", rng.uniform(55, 60))
    turn("knee", "x", rng.uniform(90, 105))


def _hugging_knees(rng, p, sway, n):
    """Knees up, hugging them; returns the trunk pitch."""
    pitch = rng.uniform(-25, 0) + 4 * sway
    # thigh from the vertical; shins lean forward so feet and seat share the floor
    thigh = rng.uniform(115, 140)
    hip, knee = thigh + pitch, 2 * thigh - 180 + rng.uniform(0, 15)
    p.pair("hip", "x", -hip)
    p.pair("knee", "x", knee)
    p.pair("ankle", "x", flat_ankle(hip, pitch, knee))
    p.spine("x", rng.uniform(5, 15))
    p.pair("shoulder", "z", -rng.uniform(60, 80))
    p.pair("shoulder", "x", -rng.uniform(50, 80))
    p.pair("elbow", "y", -rng.uniform(70, 120))
    return pitch


def _one_leg_folded(rng, p, sway, n):
    """One leg folded in (cross-legged), the other long; returns the trunk pitch."""
    pitch = rng.uniform(-25, 0) + 4 * sway
    side, other = pick_side(rng)
    _folded_leg(rng, lambda joint, axis, deg: p.add(f"{side}_{joint}", axis, deg), pitch)
    knee = rng.uniform(0, 30)
    p.add(f"{other}_hip", "x", -(90 + pitch + knee / 2 + rng.uniform(-5, 5)))
    p.add(f"{other}_hip", "z", rng.uniform(0, 25))
    p.add(f"{other}_knee", "x", knee)
    p.pair("ankle", "x", rng.uniform(10, 40))
    p.pair("shoulder", "z", -rng.uniform(60, 80))
    p.pair("shoulder", "x", -rng.uniform(0, 40))
    p.pair("elbow", "y", -rng.uniform(10, 60))
    return pitch


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
    w = hold_curve(rng, t, (0.8, 1.4)) if rng.random() < 0.5 else np.ones(len(t))
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
        down, front = pick_side(rng)
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
    relaxed_arms(rng, p)
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
    c = cycle_curve(rng, t, (2.0, 4.0))
    out = root(n)
    if kind in (0, 3):  # supine (3: sitting up from lying, or lying down)
        _lie_supine(rng, t, p, out, c, sit_up=kind == 3)
    elif kind == 1:
        _lie_prone(rng, p, out, c)
    else:
        _lie_on_side(rng, p, out, c)
    return out


def _lie_supine(rng, t, p, out, c, sit_up: bool) -> None:
    """Supine: knees up, leg raises, knees to the chest or legs apart; three arm placements."""
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
        side, _ = pick_side(rng)
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
    if sit_up:  # sitting up from lying (or lying down): the trunk rises, the legs stay down
        w = hold_curve(rng, t, (1.0, 1.8))
        rise = rng.uniform(70, 95) * w
        out["pitch"] += rise
        p.pair("hip", "x", -rise)
        p.pair("shoulder", "x", -rng.uniform(0, 40) * w)
        p.spine("x", rng.uniform(0, 12) * w)


def _lie_prone(rng, p, out, c) -> None:
    """Prone: knees bending, head turned, arms folded under the head or along the body."""
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


def _lie_on_side(rng, p, out, c) -> None:
    """On a side, hips and knees bent; the top leg and arm move."""
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
