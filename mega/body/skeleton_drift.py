"""How far a body's regressed joints drift off its kinematic skeleton when limbs bend.

SMPL-format models give two sets of 24 joints for a posed body: the skeleton's forward-kinematics
joints (``BodyOutput.joints``) and ``J_regressor @ posed vertices`` (what every mesh-based metric
uses: tokenizer MPJPE, the ``smpl24`` protocol, joints regressed from a predicted mesh). At rest they
coincide by construction; a regressor whose vertices lie far from its joint lets the two part when
the limb bends. :func:`joint_drift` measures the gap, :func:`bent_poses` is a fixed set of bent
poses, and ``python -m mega.body.skeleton_drift`` prints the table (bent poses + held-out procedural
motion) for the free body or any SMPL-format file.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from torch import Tensor

from mega.body.joints import SMPL_JOINT_NAMES
from mega.body.model import BodyModel

_J = {name: j for j, name in enumerate(SMPL_JOINT_NAMES)}


def _set(pose: Tensor, joint: str, axis: int, degrees: float) -> None:
    pose[_J[joint] - 1, axis] = math.radians(degrees)


def bent_poses() -> dict[str, Tensor]:
    """Named single- and multi-joint bends, each ``body_pose`` (23, 3) axis-angle (SMPL signs, see
    :mod:`mega.data.motion.joint_limits`: elbow flexion = -y on the left, knee flexion = +x ...)."""
    spec: dict[str, list[tuple[str, int, float]]] = {
        "elbow_86": [("left_elbow", 1, -86.0), ("right_elbow", 1, 86.0)],
        "elbow_130": [("left_elbow", 1, -130.0), ("right_elbow", 1, 130.0)],
        "knee_90": [("left_knee", 0, 90.0), ("right_knee", 0, 90.0)],
        "knee_130": [("left_knee", 0, 130.0), ("right_knee", 0, 130.0)],
        "hip_flex_90": [("left_hip", 0, -90.0), ("right_hip", 0, -90.0)],
        "hip_abduct_45": [("left_hip", 2, 45.0), ("right_hip", 2, -45.0)],
        "shoulder_down_80": [("left_shoulder", 2, -80.0), ("right_shoulder", 2, 80.0)],
        "shoulder_up_60": [("left_shoulder", 2, 60.0), ("right_shoulder", 2, -60.0)],
        "shoulder_fwd_90": [("left_shoulder", 1, 90.0), ("right_shoulder", 1, -90.0)],
        "wrist_60": [("left_wrist", 2, -60.0), ("right_wrist", 2, 60.0)],
        "spine_bend_40": [("spine1", 0, 15.0), ("spine2", 0, 15.0), ("spine3", 0, 10.0)],
        "neck_40": [("neck", 0, 25.0), ("head", 0, 15.0)],
        "ankle_40": [("left_ankle", 0, 40.0), ("right_ankle", 0, -30.0)],
        "sit": [
            ("left_hip", 0, -90.0),
            ("right_hip", 0, -90.0),
            ("left_knee", 0, 90.0),
            ("right_knee", 0, 90.0),
            ("left_shoulder", 2, -70.0),
            ("right_shoulder", 2, 70.0),
            ("left_elbow", 1, -60.0),
            ("right_elbow", 1, 60.0),
        ],
    }
    out = {}
    for name, bends in spec.items():
        pose = torch.zeros(23, 3)
        for joint, axis, deg in bends:
            _set(pose, joint, axis, deg)
        out[name] = pose
    return out


@torch.no_grad()
def joint_drift(body: BodyModel, body_pose: Tensor, betas: Tensor | None = None) -> Tensor:
    """Distance (B, 24) in metres between ``J_regressor @ vertices`` and the FK joints.

    Args:
        body: an SMPL-format body model. body_pose: (B, 23, 3) axis-angle. betas: (B, 10) or None.
    """
    batch = body_pose.shape[0]
    out = body(global_orient=torch.zeros(batch, 3), body_pose=body_pose, betas=betas)
    regressed = torch.einsum("kv,bvc->bkc", body.J_regressor.to(out.vertices.dtype), out.vertices)
    return (regressed - out.joints).norm(dim=-1)


def procedural_poses(num_per_type: int = 2, seed: int = 990_001, stride: int = 4) -> Tensor:
    """Held-out procedural motion (``mega.data.motion.synth``, a seed stream no split uses):
    ``num_per_type`` sequences of every motion type, every ``stride``-th frame -> (N, 23, 3)."""
    from mega.data.motion.synth import MOTION_TYPES, generate_motion

    poses = []
    for k, motion in enumerate(MOTION_TYPES):
        for i in range(num_per_type):
            rng = np.random.default_rng([seed, k, i])
            body = generate_motion(rng, motion, 30.0, 3.0)["body_pose"][::stride]  # (n, 21, 3)
            poses.append(np.concatenate([body, np.zeros((len(body), 2, 3))], axis=1))
    return torch.as_tensor(np.concatenate(poses), dtype=torch.float32)


def drift_report(body: BodyModel, seed: int = 0) -> dict[str, Tensor]:
    """Drift (mm) per bent pose (24,) and over held-out motion (N, 24); random shapes beta ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    report = {}
    for name, pose in bent_poses().items():
        betas = torch.randn(8, body.num_betas, generator=gen).clamp(-2, 2)
        betas[0] = 0.0
        report[name] = 1e3 * joint_drift(body, pose.expand(8, 23, 3), betas).mean(0)
    motion = procedural_poses()
    betas = torch.randn(len(motion), body.num_betas, generator=gen).clamp(-2, 2)
    report["motion"] = 1e3 * joint_drift(body, motion, betas)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="free", help="body model name (free | smpl)")
    parser.add_argument("--path", default=None, help="model file (default: the shipped free body)")
    args = parser.parse_args()
    from mega.body import load_body_model

    body = load_body_model(args.model, **({"path": args.path} if args.path else {}))
    report = drift_report(body)
    print("| pose | mean mm | max mm | worst joint |\n|---|---|---|---|")
    for name, d in report.items():
        per_joint = d.mean(0) if d.dim() == 2 else d
        worst = int(per_joint.argmax())
        print(
            f"| {name} | {d.mean():.1f} | {d.max():.1f} | {SMPL_JOINT_NAMES[worst]} {per_joint[worst]:.1f} |"
        )
    motion = report["motion"].mean(0)
    print(
        "\nheld-out motion, per joint (mm): "
        + ", ".join(f"{n} {v:.1f}" for n, v in zip(SMPL_JOINT_NAMES, motion.tolist()))
    )


if __name__ == "__main__":
    main()
