"""The free default body through the `free` loader: SMPL semantics, shape space, mesh quality."""

import math

import numpy as np
import torch
import trimesh

from mega.body import FREE_BODY_FILE, read_model_file


def _zeros(b):
    return torch.zeros(b, 3), torch.zeros(b, 23, 3), torch.zeros(b, 10)


def test_zero_pose_gives_template_and_rig_joints(free_body):
    out = free_body(*_zeros(2))
    torch.testing.assert_close(out.vertices[0], free_body.v_template)
    data = read_model_file(FREE_BODY_FILE)
    rig = torch.as_tensor(data["rig_joints"], dtype=torch.float32)
    assert rig.shape == (24, 3)
    # Regressed rest joints coincide with the rig's SMPL-mapped joints (1 mm).
    torch.testing.assert_close(out.joints[0], rig, atol=1e-3, rtol=0)
    assert 1000 <= free_body.num_vertices <= 7000


def test_canonical_frame_and_t_pose(free_body):
    j = free_body(*_zeros(1)).joints[0]
    names = free_body.joint_names
    at = {n: j[i] for i, n in enumerate(names)}
    assert at["head"][1] > at["neck"][1] > at["pelvis"][1] > at["left_knee"][1] > at["left_ankle"][1]  # y up
    assert at["left_hip"][0] > 0 > at["right_hip"][0] and at["left_wrist"][0] > 0.4  # body's left on +x
    assert at["left_foot"][2] > at["left_ankle"][2]  # toes point forward: facing +z
    nose = free_body.keypoint_regressor("coco17")[0] @ free_body.v_template
    assert nose[2] > at["head"][2]
    # T-pose: arms horizontal, wrists about shoulder height.
    for side in ("left", "right"):
        assert abs(float(at[f"{side}_wrist"][1] - at[f"{side}_shoulder"][1])) < 0.08
    height = free_body.v_template[:, 1].max() - free_body.v_template[:, 1].min()
    assert 1.5 < float(height) < 1.95


def test_left_knee_flexion_moves_only_the_left_lower_leg(free_body):
    go, bp, betas = _zeros(1)
    rest = free_body(go, bp, betas)
    bp[0, 3] = torch.tensor([math.pi / 3, 0, 0])  # body_pose[3] is joint 4, left_knee
    bent = free_body(go, bp, betas)
    moved = (bent.vertices - rest.vertices).norm(dim=-1)[0]
    left_hip_y = rest.joints[0, 1, 1]
    above_hip = rest.vertices[0, :, 1] > left_hip_y + 0.02
    assert moved[above_hip].max() < 1e-6
    right_side = rest.vertices[0, :, 0] < -0.03
    assert moved[right_side].max() < 1e-6
    knee_y = rest.joints[0, 4, 1]
    shin = (rest.vertices[0, :, 1] < knee_y - 0.1) & (rest.vertices[0, :, 0] > 0)
    assert moved[shin].min() > 0.05
    # SMPL semantics: positive rotation about x flexes the knee, the foot goes back (-z) and up.
    ankle_rest, ankle_bent = rest.joints[0, 7], bent.joints[0, 7]
    assert ankle_bent[2] < ankle_rest[2] - 0.1 and ankle_bent[1] > ankle_rest[1] + 0.05


def test_each_beta_changes_the_mesh(free_body):
    go, bp, _ = _zeros(10)
    betas = torch.eye(10) * 2.0
    v = free_body(go, bp, betas).vertices
    delta = (v - free_body.v_template).norm(dim=-1).amax(dim=-1)
    assert (delta > 0.001).all(), delta  # >= 1 mm somewhere at 2 sigma


def test_mesh_is_closed(free_body):
    mesh = trimesh.Trimesh(free_body.v_template.numpy(), free_body.faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0.03  # outward normals and a human-sized volume (m^3)


def test_batch_of_512_and_gradients(free_body):
    g = torch.Generator().manual_seed(0)
    go = (torch.randn(512, 3, generator=g) * 0.3).requires_grad_()
    bp = (torch.randn(512, 23, 3, generator=g) * 0.2).requires_grad_()
    betas = torch.randn(512, 10, generator=g).requires_grad_()
    out = free_body(go, bp, betas)
    assert out.vertices.shape == (512, free_body.num_vertices, 3)
    assert torch.isfinite(out.vertices).all()
    (out.vertices.square().mean() + out.joints.square().mean()).backward()
    for t in (go, bp, betas):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_regressors_are_normalised():
    data = read_model_file(FREE_BODY_FILE)
    np.testing.assert_allclose(data["J_regressor"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(data["coco17_regressor"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-5)


def test_regressed_joints_stay_on_the_skeleton_when_limbs_bend(free_body):
    """J_regressor @ posed vertices stays within 10 mm of the FK joints over bent poses and shapes
    (a T-pose-only fit put an 86-degree elbow 110 mm off its joint)."""
    from mega.body.skeleton_drift import bent_poses, joint_drift

    poses = bent_poses()
    assert {"elbow_86", "knee_90", "shoulder_down_80", "hip_flex_90", "sit"} <= set(poses)
    g = torch.Generator().manual_seed(3)
    pose = torch.stack(list(poses.values())).repeat(3, 1, 1)
    betas = torch.randn(len(pose), 10, generator=g).clamp(-2, 2)
    drift = joint_drift(free_body, pose, betas) * 1e3  # (B, 24) mm
    assert drift.max() < 10.0, drift.max()
    assert drift.mean() < 1.5, drift.mean()
    # The measurement itself can fail: a regressor that ignores the pose (rest joints) drifts far.
    bent = free_body(torch.zeros(1, 3), poses["elbow_86"][None])
    assert (bent.joints - free_body(*_zeros(1)).joints).norm(dim=-1).max() > 0.2
