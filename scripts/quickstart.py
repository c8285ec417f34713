"""Pose the body model in a few named poses and random shapes, export .obj meshes and one .npz.

python scripts/quickstart.py                       # the free default body
python scripts/quickstart.py body_model=smpl       # your SMPL files (data/README.md)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import mega  # noqa: F401  (torchvision shim before anything else)
from mega.atomic import write_npz, write_obj
from mega.body import load_body_model
from mega.errors import entry_point

log = logging.getLogger("quickstart")


def named_poses() -> dict[str, torch.Tensor]:
    """A few SMPL-semantics poses, each (23, 3) axis-angle body pose."""
    poses = {name: torch.zeros(23, 3) for name in ("t_pose", "arms_down", "knee_bend", "sitting")}
    poses["arms_down"][15] = torch.tensor([0, 0, -1.2])  # joint 16 left_shoulder: arm down
    poses["arms_down"][16] = torch.tensor([0, 0, 1.2])  # joint 17 right_shoulder
    poses["knee_bend"][3] = torch.tensor([math.pi / 2, 0, 0])  # joint 4 left_knee
    for hip, knee in ((0, 3), (1, 4)):  # hips flex forward (-x), knees flex (+x)
        poses["sitting"][hip] = torch.tensor([-math.pi / 2, 0, 0])
        poses["sitting"][knee] = torch.tensor([math.pi / 2, 0, 0])
    return poses


@hydra.main(config_path="../configs", config_name="quickstart", version_base="1.3")
@entry_point  # user errors: one message, no traceback (mega/errors.py)
def main(cfg: DictConfig) -> None:
    body = load_body_model(**OmegaConf.to_container(cfg.body_model))
    poses = named_poses()
    g = torch.Generator().manual_seed(cfg.seed)
    names = list(poses)
    body_pose = torch.stack(list(poses.values()))
    betas = torch.zeros(len(names), body.num_betas)
    for i in range(cfg.num_random):
        names.append(f"random_{i}")
        body_pose = torch.cat([body_pose, torch.randn(1, 23, 3, generator=g) * 0.2])
        betas = torch.cat([betas, torch.randn(1, body.num_betas, generator=g)])
    with torch.no_grad():
        out = body(torch.zeros(len(names), 3), body_pose, betas)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = body.faces.numpy()
    for i, name in enumerate(names):
        write_obj(out_dir / f"{name}.obj", out.vertices[i].numpy(), faces)
        v = out.vertices[i]
        height = float(v[:, 1].max() - v[:, 1].min())
        log.info("%-10s height %.3f m  pelvis (%.3f, %.3f, %.3f)", name, height, *out.joints[i, 0].tolist())
    write_npz(out_dir / "meshes.npz", names=np.array(names), vertices=out.vertices.numpy(), joints=out.joints.numpy(),
             body_pose=body_pose.numpy(), betas=betas.numpy(), faces=faces)  # fmt: skip
    log.info(
        "%s body (%d vertices): wrote %d meshes to %s", body.name, body.num_vertices, len(names), out_dir
    )


if __name__ == "__main__":
    main()
