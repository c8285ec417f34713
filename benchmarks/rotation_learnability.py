"""How much of the global body rotation can the CPU backbone learn from synthetic crops, and in how many steps?

Trains the HMR model's image path alone (backbone -> pooled feature -> :class:`mega.model.Heads`) on the
rotation loss and the heads' 2D reprojection of the ground-truth body (MEGA's two head terms, no tokens),
then scores the validation split against three references:

- ``upright`` / ``mean``: one constant rotation for every image (upright and facing the camera; the
  chordal mean of the split's rotations): what a head that ignores the image reaches;
- ``from GT 2D``: the rotation solved in closed form from the true 2D keypoints and the true canonical
  joints (:func:`mega.body.camera.fit_weak_perspective`): the rotation is in the keypoints once the
  pose is known.

Prints geodesic errors (degrees) and the rotation loss ||R - R_gt||_F^2. Example (issue 9's diagnosis)::

    python benchmarks/rotation_learnability.py --root data/synthetic_images_cpu --steps 1000
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from omegaconf import OmegaConf

import mega  # noqa: F401  (torchvision shim first)
from mega.backbones import build_backbone
from mega.body import load_body_model
from mega.body.camera import fit_weak_perspective
from mega.body.rotations import axis_angle_to_matrix
from mega.data.images import build_image_dataset
from mega.model import UPRIGHT, Heads


def geodesic_deg(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) x2 -> (B,) rotation angle of pred^T gt in degrees."""
    cos = ((pred.transpose(1, 2) @ gt).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def canonical_joints(body, batch: dict) -> torch.Tensor:
    """(B, 24, 3) joints of the true pose and shape with no global rotation."""
    B = batch["img"].shape[0]
    with torch.no_grad():
        pose = axis_angle_to_matrix(batch["body_pose"].reshape(B, 23, 3).float())
        out = body(global_orient=torch.eye(3).expand(B, 3, 3), body_pose=pose, betas=batch["betas"].float())
    return out.joints


def summary(name: str, pred: torch.Tensor, gt: torch.Tensor) -> str:
    deg = geodesic_deg(pred, gt)
    frob = (pred - gt).square().flatten(1).sum(1)
    return f"| {name} | {deg.mean():.1f} | {deg.median():.1f} | {frob.mean():.3f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/synthetic_images_cpu", help="a generated synthetic_images set")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val", type=int, default=200, help="validation images scored")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data = OmegaConf.to_container(OmegaConf.load("configs/images/synthetic_images.yaml"), resolve=True)
    data.update(root=args.root, crop_size=args.crop, generate={})
    train, val = build_image_dataset(data, "train"), build_image_dataset(data, "val")
    cfg = OmegaConf.to_container(OmegaConf.load("configs/backbone/tiny_cnn.yaml"), resolve=True)
    backbone = build_backbone(**{**cfg, "input_size": args.crop, "pyramid_scales": []})
    heads = Heads(backbone.dim, 128, None)
    body = load_body_model("free")
    params = [*backbone.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.05)
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    loader = torch.utils.data.DataLoader(
        train, batch_size=args.batch, shuffle=True, num_workers=1, drop_last=True, persistent_workers=True
    )
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            B = batch["img"].shape[0]
            rot, cam, _ = heads(backbone(batch["img"]).pooled)
            gt = axis_angle_to_matrix(batch["global_orient"].reshape(B, 3).float())
            loss_rot = (rot - gt).square().flatten(1).sum(1).mean()
            joints = canonical_joints(body, batch) @ rot.transpose(1, 2)
            proj = cam[:, None, :1] * (joints[..., :2] + cam[:, None, 1:])
            kp = batch["kp2d_smpl"]
            loss_2d = (kp[..., 2:] * (proj - kp[..., :2]).abs()).flatten(1).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            (loss_rot + 0.1 * loss_2d).backward()
            opt.step()
            sched.step()
            step += 1
            if step % max(1, args.steps // 5) == 0:
                print(
                    f"step {step}: train rotation loss {loss_rot.item():.3f}, 2D {loss_2d.item():.2f}",
                    flush=True,
                )
            if step >= args.steps:
                break
    seconds = time.perf_counter() - t0

    backbone.eval()
    heads.eval()
    preds, gts, fits = [], [], []
    subset = torch.utils.data.Subset(val, range(min(args.val, len(val))))
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(subset, batch_size=50):
            B = batch["img"].shape[0]
            preds.append(heads(backbone(batch["img"]).pooled)[0])
            gts.append(axis_angle_to_matrix(batch["global_orient"].reshape(B, 3).float()))
            kp = batch["kp2d_smpl"]
            fits.append(fit_weak_perspective(canonical_joints(body, batch), kp[..., :2], kp[..., 2])[0])
    pred, gt, fit = torch.cat(preds), torch.cat(gts), torch.cat(fits)
    U, _, Vh = torch.linalg.svd(gt.mean(0))
    mean = (U @ torch.diag(torch.tensor([1.0, 1.0, float(torch.det(U @ Vh))])) @ Vh).expand_as(gt)
    print(
        f"\n{args.root}: {args.steps} steps of {args.batch} in {seconds:.0f} s ({args.threads} threads); "
        f"{len(gt)} validation crops"
    )
    print("| rotation | geodesic mean (deg) | median | ||R - R_gt||^2 |\n|---|---|---|---|")
    print(summary("upright, facing the camera", torch.tensor(UPRIGHT).expand_as(gt), gt))
    print(summary("mean rotation of the split", mean, gt))
    print(summary(f"trained heads ({args.steps} steps)", pred, gt))
    print(summary("solved from GT 2D keypoints + GT pose", fit, gt))


if __name__ == "__main__":
    main()
