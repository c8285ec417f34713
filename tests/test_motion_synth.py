"""The procedural motion generator (activities, ground contact, mixture), its AMASS-format files, the
default-data entry point (stale data refused), joint limits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mega.body.joints import SMPL_PARENTS
from mega.body.rotations import axis_angle_to_matrix
from mega.body.synthetic import REST_JOINTS
from mega.data.motion import MOTION_DATASETS, ensure_synthetic_motion
from mega.data.motion.amass import list_motion_files, load_motion_npz
from mega.data.motion.joint_limits import (
    EULER_LIMITS,
    EULER_ORDERS,
    body_pose_to_euler,
    euler_to_matrix,
    limit_violation,
    matrix_to_euler,
)
from mega.data.motion.synth import (
    GENERATOR_VERSION,
    MANIFEST,
    MOTION_TYPES,
    generate_motion,
    write_synthetic_motion,
)
from mega.errors import is_user_error

SMALL = {"train": 18, "val": 5, "test": 5}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "motion"
    write_synthetic_motion(root, seed=3, sequences=SMALL)
    return root


def _read_all(folder: Path, **kw) -> dict[str, object]:
    return {p.relative_to(folder).as_posix(): load_motion_npz(p, **kw) for p in list_motion_files(folder)}


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


def test_euler_decomposition_matches_scipy_and_round_trips():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    for order in ("XYZ", "XZY", "YXZ", "ZYX"):
        angles = rng.uniform(-1.5, 1.5, (50, 3))
        rot = euler_to_matrix(angles, order)
        np.testing.assert_allclose(rot, Rotation.from_euler(order, angles).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler(rot, order), angles, atol=1e-9)
    # Middle angles stay within +-90 deg, so the decomposition of an in-limit pose is unique.
    middle = np.abs(EULER_LIMITS[:, 1]).max()
    assert middle < np.pi / 2 and len(EULER_ORDERS) == 23


def test_same_seed_same_files_and_other_seed_differs(tmp_path):
    small = {"train": 4, "val": 1, "test": 0}
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        write_synthetic_motion(tmp_path / name, seed=seed, sequences=small)
    first, again = _read_all(tmp_path / "first"), _read_all(tmp_path / "again")
    assert first.keys() == again.keys()
    for name, seq in first.items():
        for field in ("global_orient", "body_pose", "betas", "transl"):
            assert np.array_equal(getattr(seq, field), getattr(again[name], field)), (name, field)
    other = next(iter(_read_all(tmp_path / "other").values()))  # names hold the activity: compare by order
    mine = next(iter(first.values()))
    n = min(len(other), len(mine))
    assert not np.allclose(other.body_pose[:n], mine.body_pose[:n])


def test_layouts_framerates_and_skip_files_are_varied(synth_dir):
    files = list(synth_dir.rglob("*.npz"))
    assert any(p.name == "shape.npz" for p in files) and any(p.name.endswith("_stagei.npz") for p in files)
    assert any(p.name.endswith("_poses.npz") for p in files) and any(
        p.name.endswith("_stageii.npz") for p in files
    )
    with np.load(next(p for p in files if p.name.endswith("_stageii.npz"))) as g:
        assert "poses" not in g.files and g["gender"].dtype.kind == "S" and "mocap_frame_rate" in g.files
    seqs = _read_all(synth_dir / "train", target_fps=None)
    assert {s.fps for s in seqs.values()} == {30.0, 60.0}
    assert len(seqs) == SMALL["train"] and len(list_motion_files(synth_dir)) == sum(SMALL.values())


def test_files_are_z_up_and_reader_round_trips_the_generator(tmp_path):
    from mega.data.motion.amass import write_amass_npz, z_up_to_y_up

    seq = generate_motion(np.random.default_rng(7), "walk", 30.0, 2.0)
    rot = axis_angle_to_matrix(torch.from_numpy(seq["global_orient"])).numpy()
    assert (rot[:, 1, 1] > 0.9).all()  # y-up world: the body's up axis is the world's +y
    orient, transl = z_up_to_y_up(seq["global_orient"], seq["transl"], inverse=True)
    zup = axis_angle_to_matrix(torch.from_numpy(orient)).numpy()
    assert (zup[:, 2, 1] > 0.9).all()  # in the file, the body's up axis is the world's +z
    for layout in ("smplh", "g"):
        path = tmp_path / f"{layout}.npz"
        write_amass_npz(
            path, orient, seq["body_pose"], seq["pose_hand"], transl, np.zeros(16), "male", 30.0, layout
        )
        back = load_motion_npz(path, target_fps=None, hand_joints="index1")
        np.testing.assert_allclose(back.global_orient, seq["global_orient"], atol=1e-5)
        np.testing.assert_allclose(back.transl, seq["transl"], atol=1e-5)
        np.testing.assert_allclose(back.body_pose[:, :21], seq["body_pose"], atol=1e-6)
        np.testing.assert_allclose(back.body_pose[:, 21], seq["pose_hand"][:, 0], atol=1e-6)


def test_joint_limits_respected(synth_dir):
    for seq in _read_all(synth_dir, hand_joints="index1").values():
        rot = axis_angle_to_matrix(torch.from_numpy(seq.body_pose.astype(np.float64))).numpy()
        worst = limit_violation(body_pose_to_euler(rot)).max()
        assert worst < 1e-4, (seq.path, worst)


def test_variety_of_motion_types_poses_and_shapes(synth_dir):
    manifest = _manifest(synth_dir)
    types = {f: m for f, m in manifest["files"].items() if f.startswith("train/")}
    assert set(types.values()) == set(MOTION_TYPES)
    seqs = {f: load_motion_npz(synth_dir / f) for f in types}
    pose = np.concatenate([s.body_pose for s in seqs.values()])
    assert pose.std(0).mean() > 0.1  # not one pose
    assert all(s.body_pose.std(0).max() > 0.05 for s in seqs.values())  # every sequence moves
    knee = {
        m: np.mean([np.abs(s.body_pose[:, 3]).max() for f, s in seqs.items() if types[f] == m])
        for m in ("squat", "arm_swing")
    }
    assert knee["squat"] > knee["arm_swing"] + 0.8  # squats bend the knees

    def speed(s) -> float:  # metres per second over the ground
        return float(np.linalg.norm(s.transl[-1, [0, 2]] - s.transl[0, [0, 2]]) / len(s) * s.fps)

    travel = {
        m: np.mean([speed(s) for f, s in seqs.items() if types[f] == m]) for m in ("walk", "run", "squat")
    }
    assert travel["run"] > travel["walk"] > 0.8 > 0.2 > travel["squat"]  # metres per second
    betas = np.stack([s.betas[0] for s in seqs.values()])
    assert np.abs(betas).max() <= 2.5 and betas.std(0).min() > 0.3
    heading = np.array([s.global_orient[0] for s in seqs.values()])
    assert np.ptp(heading, axis=0).max() > 1.0


def test_splits_are_disjoint(synth_dir):
    subjects = {s: {p.parent.name for p in list_motion_files(synth_dir / s)} for s in SMALL}
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"])
    digests = {
        s: {load_motion_npz(p).body_pose.tobytes() for p in list_motion_files(synth_dir / s)} for s in SMALL
    }
    assert not (
        digests["train"] & digests["val"]
        or digests["train"] & digests["test"]
        or digests["val"] & digests["test"]
    )


@pytest.mark.parametrize("body_fixture", ["free_body", "smpl_body"])
def test_sign_conventions_on_a_body_model(request, body_fixture):
    body = request.getfixturevalue(body_fixture)

    cases = [(1, 0, 0.0), (4, 0, 60.0), (1, 0, -60.0), (16, 2, -90.0), (18, 1, -90.0), (17, 2, 90.0)]
    pose = torch.zeros(len(cases), 23, 3)
    for i, (joint, axis, deg) in enumerate(cases):
        pose[i, joint - 1, axis] = np.deg2rad(deg)
    zeros = torch.zeros(len(cases), 10)
    rest, knee, hip, down, elbow, right = body(
        global_orient=zeros[:, :3], body_pose=pose, betas=zeros
    ).joints.numpy()
    assert knee[7, 2] < rest[7, 2] - 0.1 and knee[7, 1] > rest[7, 1] + 0.05  # left knee +x: ankle back and up
    assert hip[4, 2] > rest[4, 2] + 0.1  # left hip flexion is negative x: knee forward
    # Left shoulder -z: the arm hangs down, elbow under the shoulder.
    assert down[18, 1] < rest[16, 1] - 0.2 and abs(down[18, 0] - rest[16, 0]) < 0.1
    assert elbow[20, 2] > rest[20, 2] + 0.1  # left elbow -y: forearm forward
    assert right[19, 1] < rest[17, 1] - 0.2  # right arm down is +z (mirrored)


def _forward_kinematics(body_pose: np.ndarray) -> np.ndarray:
    """(N, 23, 3) axis-angle -> (N, 24, 3) joints of an adult T-pose skeleton (root at rest)."""
    rest = REST_JOINTS - REST_JOINTS[0]
    rot = axis_angle_to_matrix(torch.from_numpy(body_pose.astype(np.float64))).numpy()
    glob = [np.broadcast_to(np.eye(3), (len(body_pose), 3, 3))] + [None] * 23
    pos = np.zeros((len(body_pose), 24, 3))
    for j in range(1, 24):
        p = SMPL_PARENTS[j]
        glob[j] = glob[p] @ rot[:, j - 1]
        pos[:, j] = pos[:, p] + glob[p] @ (rest[j] - rest[p])
    return pos


UPRIGHT = ("walk", "run", "turn", "arm_swing", "bend", "step")


@pytest.mark.parametrize("skeleton", ["rest_joints", "free_body"])
def test_upright_poses_keep_sides_and_hands_off_the_torso(request, skeleton, synth_dir):
    """Root removed, upright activities: left leg on the left, wrists off the torso, legs swing.

    Catches sign errors (a mirrored side, an arm bent into the body). On a fixed adult skeleton
    (every frame) and on the free body with each file's own betas.
    """
    types = _manifest(synth_dir)["files"]
    seqs = [
        load_motion_npz(synth_dir / f, target_fps=None if skeleton == "rest_joints" else 10)
        for f, m in types.items()
        if m in UPRIGHT
    ]
    pose = np.concatenate([s.body_pose for s in seqs])
    if skeleton == "rest_joints":
        j = _forward_kinematics(pose)
    else:
        betas = torch.from_numpy(np.concatenate([s.betas for s in seqs]))
        body = request.getfixturevalue("free_body")
        j = body(
            global_orient=torch.zeros(len(pose), 3), body_pose=torch.from_numpy(pose), betas=betas
        ).joints.numpy()
    assert (j[:, 0, 1] - j[:, [7, 8], 1].max(1) > 0.25).all()  # feet below the pelvis
    torso = j[:, [0, 3, 6, 9]]
    for wrist in (20, 21):
        assert np.linalg.norm(j[:, None, wrist] - torso, axis=-1).min() > 0.08  # joints lie ~10 cm deep
    assert (j[:, 7, 0] > j[:, 8, 0]).all() and (j[:, 4, 0] > j[:, 5, 0]).all()
    assert j[:, 7, 2].max() - j[:, 7, 2].min() > 0.5  # the legs do swing


def _world_vertices(body, seq) -> np.ndarray:
    """A read-back sequence posed on the free body in mega's y-up world: (N, V, 3)."""
    n = len(seq)
    out = body(
        global_orient=torch.from_numpy(seq.global_orient).float(),
        body_pose=torch.from_numpy(seq.body_pose).float(),
        betas=torch.from_numpy(seq.betas).float(),
        transl=torch.from_numpy(seq.transl).float(),
    )
    assert out.vertices.shape[0] == n
    return out.vertices.numpy()


def test_no_body_part_under_the_floor_and_the_body_touches_it(free_body, synth_dir):
    """Read back through the AMASS reader and posed on the free body: nothing below y = 0 (a few mm of
    float32 slack), and, except in runs (flight) and on stairs, the lowest vertex touches the floor."""
    for name, activity in _manifest(synth_dir)["files"].items():
        seq = load_motion_npz(synth_dir / name, target_fps=10)
        lowest = _world_vertices(free_body, seq)[..., 1].min(1)
        assert lowest.min() > -0.003, (name, activity, lowest.min())
        if activity not in ("run", "step", "mixture"):
            assert np.abs(lowest).max() < 0.003, (name, activity, np.abs(lowest).max())
        if activity == "step":  # standing on stairs: some frames above the floor, none below
            assert lowest.max() > 0.1, (name, lowest.max())


def _part_heights(body, activity: str, seeds: int = 3) -> dict[str, np.ndarray]:
    """Lowest height (m) per frame of body parts (by dominant skinning joint) over generated sequences."""
    from mega.data.motion.synth import vertex_parts

    owner = body.smpl.lbs_weights.argmax(1).numpy()
    parts = {**vertex_parts(body), "trunk": np.isin(owner, [0, 3, 6, 9]), "head": np.isin(owner, [12, 15])}
    out: dict[str, list] = {k: [] for k in parts}
    for s in range(seeds):
        rng = np.random.default_rng([11, s])
        seq = generate_motion(rng, activity, 15.0, 3.0, np.zeros(10), body)
        n = len(seq["transl"])
        pose = np.concatenate([seq["body_pose"], np.zeros((n, 2, 3))], 1)
        v = body(
            global_orient=torch.from_numpy(seq["global_orient"]).float(),
            body_pose=torch.from_numpy(pose).float(),
            transl=torch.from_numpy(seq["transl"]).float(),
        ).vertices.numpy()
        for k, mask in parts.items():
            out[k].append(v[:, mask, 1].min(1))
    return {k: np.concatenate(v) for k, v in out.items()}


def test_activities_put_the_right_parts_on_the_floor(free_body):
    """Crawling on hands and knees, lying on the trunk, sitting on the floor low, kneeling low."""
    crawl = _part_heights(free_body, "crawl")
    assert (crawl["hands"] < 0.05).mean() > 0.9 and (crawl["knees"] < 0.05).mean() > 0.9
    assert np.median(crawl["trunk"]) > 0.15  # the trunk is held up, not dragged
    lie = _part_heights(free_body, "lie")
    assert np.median(lie["trunk"]) < 0.1 and np.median(lie["head"]) < 0.4
    sit = _part_heights(free_body, "sit_floor")
    assert (sit["seat"] < 0.03).mean() > 0.45 and np.median(sit["seat"]) < 0.06  # else the hands or feet
    assert np.median(sit["feet"]) < 0.08
    walk = _part_heights(free_body, "walk")
    assert (walk["feet"] < 0.003).all() and walk["seat"].min() > 0.5


def test_generator_reaches_the_wide_joint_ranges():
    """Deep hip and knee flexion (as measured in real capture), wide wrists: what v1 never produced."""
    from mega.data.motion.synth import ACTIVITY_NAMES

    euler = []
    for activity in ACTIVITY_NAMES:
        for s in range(3):
            seq = generate_motion(np.random.default_rng([5, s]), activity, 5.0, 3.0)
            pose = np.concatenate([seq["body_pose"], np.zeros((len(seq["body_pose"]), 2, 3))], 1)
            euler.append(body_pose_to_euler(axis_angle_to_matrix(torch.from_numpy(pose)).numpy()))
    deg = np.rad2deg(np.concatenate(euler))
    assert deg[:, 0, 0].min() < -125 and deg[:, 3, 0].max() > 145  # left hip flexion, left knee flexion
    assert deg[:, 19, 2].min() < -45 and deg[:, 19, 2].max() > 45  # left wrist flexion and extension
    assert limit_violation(np.deg2rad(deg)).max() < 1e-4


def test_activity_mixture_is_proportional_and_validated(tmp_path):
    from mega.data.motion.synth import ACTIVITY_NAMES, activity_weights, allot_activities

    w = activity_weights({"walk": 2.0, "crawl": 1.0, "lie": 1.0})
    plan = allot_activities(20, w, np.random.default_rng(0))
    assert sorted(plan) == sorted(["walk"] * 10 + ["crawl"] * 5 + ["lie"] * 5)
    assert plan != sorted(plan) and set(w) == set(ACTIVITY_NAMES) and w["run"] == 0.0
    with pytest.raises(ValueError, match="unknown activities.*'jump'"):
        activity_weights({"jump": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        activity_weights({"walk": 0.0})
    manifest = write_synthetic_motion(
        tmp_path / "m", seed=0, sequences={"train": 3, "val": 0, "test": 0}, activities={"kneel": 1.0}
    )
    assert set(manifest["files"].values()) == {"kneel"} and manifest["version"] == GENERATOR_VERSION


def test_stale_motion_is_refused(tmp_path):
    """A folder made by another generator version, pose fingerprint or activity mixture is never read
    silently."""
    root, small = tmp_path / "synthetic_motion", {"train": 2, "val": 1, "test": 1}
    ensure_synthetic_motion(root, seed=0, sequences=small)
    manifest = _manifest(root)
    with pytest.raises(ValueError, match="delete the folder") as caught:
        ensure_synthetic_motion(root, seed=0, sequences=small, activities={"walk": 1.0})
    assert is_user_error(caught.value)  # one readable line from the scripts
    (root / MANIFEST).write_text(
        json.dumps({**manifest, "fingerprint": "0" * 16})
    )  # same version, other poses
    with pytest.raises(ValueError, match="delete the folder"):
        ensure_synthetic_motion(root, seed=0, sequences=small)
    manifest["version"] = GENERATOR_VERSION - 1
    manifest.pop("activities")
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="delete the folder"):
        ensure_synthetic_motion(root, seed=0, sequences=small)


def test_ensure_is_idempotent_race_safe_and_checks_the_seed(tmp_path):
    root, small = tmp_path / "data" / "synthetic_motion", {"train": 3, "val": 1, "test": 1}
    errors: list[BaseException] = []

    def call() -> None:
        try:
            ensure_synthetic_motion(root, seed=1, sequences=small)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and _manifest(root)["seed"] == 1
    assert [p.name for p in root.parent.iterdir()] == ["synthetic_motion"]  # no temporary folders left
    stamp = (root / MANIFEST).stat().st_mtime_ns
    assert ensure_synthetic_motion(root, seed=1, sequences=small) == root
    assert (root / MANIFEST).stat().st_mtime_ns == stamp  # not regenerated
    with pytest.raises(ValueError, match="delete the folder"):
        ensure_synthetic_motion(root, seed=2, sequences=small)


def test_registered_default_dataset_builds_every_split(tmp_path):
    kw = {
        "root": str(tmp_path / "synthetic_motion"),
        "seed": 0,
        "sequences": {"train": 4, "val": 2, "test": 2},
    }
    sets = {s: MOTION_DATASETS.build("synthetic_motion", split=s, **kw) for s in ("train", "val", "test")}
    assert all(len(d) > 0 for d in sets.values())
    assert all(all(n.startswith(f"{s}/{s}_subject") for n in d.seq_names) for s, d in sets.items())
    assert sets["train"][0]["body_pose"].shape == (23, 3)
