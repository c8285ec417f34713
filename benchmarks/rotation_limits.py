"""What limits the global rotation that the CPU preset's heads read from the frozen BlazePose backbone?

Caches the frozen network's outputs for the synthetic train split (``--views`` augmented versions, the
``hmr_cpu`` preset's augmentation) and the test split (no augmentation), then prints:

- the network's own reading of the orientation: the rotation fitted in closed form (Kabsch) from its
  world landmarks (hips, shoulders) to the rest body's joints, and how often its left/right hips are
  in the true image order (a front/back confusion swaps them);
- a learning curve of the preset's heads alone (``mega.model.Heads`` on the same tokens, rotation
  relative to the crop's viewing ray, the rotation loss only) trained on 1/4, 1/2 and all of the train
  images, and for longer: mean / median geodesic error on train and test, and the share of flips
  (> 90 degrees);
- with ``--tune N`` instead: the heads alone against the heads trained together with BlazePose's last N
  convolutions (``trainable_blocks=N``; the cache keeps the tensor before them) at each ``--tune-lr``.

    python benchmarks/rotation_limits.py --root data/synthetic_images_cpu --steps 1500
    python benchmarks/rotation_limits.py --tune 41 --tune-lr 1e-4 3e-4
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from omegaconf import OmegaConf

import mega  # noqa: F401  (torchvision shim first)
from mega.backbones.blazepose import BlazePose
from mega.body import load_body_model
from mega.body.camera import viewing_ray_rotation
from mega.body.rotations import axis_angle_to_matrix
from mega.data.images import build_image_dataset
from mega.model import Heads

#: (SMPL-24 joint, BlazePose landmark): left hip, right hip, left shoulder, right shoulder.
TORSO = ((1, 23), (2, 24), (16, 11), (17, 12))


def geodesic_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) x2 -> (B,) angle of a^T b in degrees."""
    cos = ((a.transpose(1, 2) @ b).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def cache(backbone: BlazePose, root: str, split: str, views: int, augment: dict | None) -> dict:
    """The frozen outputs of every crop (``views`` epochs) and the crop-relative true rotation."""
    data = OmegaConf.to_container(OmegaConf.load("configs/images/synthetic_images.yaml"), resolve=True)
    data.update(root=root, crop_size=256, generate={}, augment=augment)
    ds = build_image_dataset(data, split)
    raw: dict[str, list] = {}
    for epoch in range(views):
        ds.set_epoch(epoch)
        for batch in torch.utils.data.DataLoader(ds, batch_size=16):
            with torch.no_grad():
                out = backbone.frozen_outputs(batch["img"])
            ray = viewing_ray_rotation(batch["bbox_center"], batch["cam_int"])
            out["R"] = ray.transpose(1, 2) @ axis_angle_to_matrix(batch["global_orient"])
            out["kp2d"] = batch["kp2d_smpl"]
            for k, v in out.items():
                raw.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in raw.items()}


def kabsch_from_world(world: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """(B, 39, 3) world landmarks, (24, 3) rest joints -> (B, 3, 3) R with R @ rest ~ world (torso)."""
    src = rest[[j for j, _ in TORSO]].expand(world.shape[0], -1, -1)
    dst = world[:, [m for _, m in TORSO]]
    src, dst = src - src.mean(1, keepdim=True), dst - dst.mean(1, keepdim=True)
    U, _, Vh = torch.linalg.svd(src.transpose(1, 2) @ dst)
    V = Vh.transpose(1, 2)
    D = torch.ones(world.shape[0], 3)
    D[:, 2] = torch.det(V @ U.transpose(1, 2))
    return V @ torch.diag_embed(D) @ U.transpose(1, 2)


def train_heads(
    backbone: BlazePose,
    train: dict,
    test: dict,
    pool: torch.Tensor,
    steps: int,
    seed: int,
    tune_lr: float = 0.0,
) -> str:
    """Train fresh heads (+ the landmark embedding, + the backbone's trainable convolutions at ``tune_lr``
    when > 0; a copy, so runs do not share updates) on rows ``pool`` of ``train``; one table row."""
    torch.manual_seed(seed)
    backbone = copy.deepcopy(backbone)
    heads = Heads(backbone.dim, 256, None, num_tokens=backbone.num_tokens, spatial_dim=16)
    embed = backbone.landmark_embed
    for p in embed.parameters():
        torch.nn.init.normal_(p, std=0.02)
    groups = [{"params": [*heads.parameters(), *embed.parameters()]}]
    tuned = [p for p in backbone.net.parameters() if p.requires_grad]
    if tune_lr > 0:
        groups.append({"params": tuned, "lr": tune_lr, "weight_decay": 0.0})
    else:
        backbone.net.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    keys = [k for k in train if k not in ("R", "kp2d")]

    def predict(d: dict, idx: torch.Tensor) -> torch.Tensor:
        return heads(backbone.from_frozen({k: d[k][idx] for k in keys}))[0]

    for _ in range(steps):
        idx = pool[torch.randint(0, len(pool), (32,))]
        loss = (predict(train, idx) - train["R"][idx]).square().flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        e_tr = geodesic_deg(predict(train, pool[::4]), train["R"][pool[::4]])
        e_te = geodesic_deg(predict(test, torch.arange(len(test["R"]))), test["R"])
    what = f"+ {len(tuned)} tensors at lr {tune_lr:g}" if tune_lr > 0 else "heads alone"
    return (f"| {what} | {len(pool)} | {steps} | {e_tr.mean():.1f} / {e_tr.median():.1f} | {e_te.mean():.1f} / "
            f"{e_te.median():.1f} | {(e_te > 90).float().mean() * 100:.1f} % |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/synthetic_images_cpu")
    ap.add_argument("--views", type=int, default=2, help="augmented versions of each train crop")
    ap.add_argument("--steps", type=int, default=1500, help="updates of the learning curve's runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tune", type=int, default=0, metavar="N",
                    help="instead of the learning curve: heads alone against heads + BlazePose's last N "
                    "convolutions (e.g. 41: the 8 x 8 stage and the regression branch; the cut is cached)")  # fmt: skip
    ap.add_argument(
        "--tune-lr", type=float, nargs="+", default=[1e-4], help="lr(s) of the tuned convolutions"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    backbone = BlazePose(freeze=not args.tune, trainable_blocks=args.tune or None).eval()
    preset = OmegaConf.to_container(OmegaConf.load("configs/experiment/hmr_cpu.yaml"), resolve=True)
    train = cache(backbone, args.root, "train", args.views, preset["images"]["augment"])
    test = cache(backbone, args.root, "test", 1, None)
    print(f"{args.root}: {len(train['R'])} train crops, {len(test['R'])} test crops cached in "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip

    header = (
        "\n| trained | train crops | updates | train mean / median | test mean / median | test flips |\n"
        + "|---" * 6
        + "|"
    )
    if args.tune:
        print(header)
        pool = torch.arange(len(train["R"]))
        for lr in (0.0, *args.tune_lr):
            print(train_heads(backbone, train, test, pool, args.steps, seed=0, tune_lr=lr), flush=True)
        return
    body = load_body_model("free")
    with torch.no_grad():
        rest = body(global_orient=torch.eye(3)[None], body_pose=torch.eye(3).expand(1, 23, 3, 3),
                    betas=torch.zeros(1, 10)).joints[0]  # fmt: skip
    print("\n| the network's own reading | split | mean / median (deg) | flips | L/R hip order right |")
    print("|---|---|---|---|---|")
    for name, d in (("train", train), ("test", test)):
        err = geodesic_deg(kabsch_from_world(d["world"], rest), d["R"])
        order = torch.sign(d["kp2d"][:, 1, 0] - d["kp2d"][:, 2, 0]) == torch.sign(
            d["landmarks"][:, 23, 0] - d["landmarks"][:, 24, 0]
        )
        print(f"| Kabsch from world landmarks | {name} | {err.mean():.1f} / {err.median():.1f} | "
              f"{(err > 90).float().mean() * 100:.1f} % | {order.float().mean() * 100:.1f} % |")  # fmt: skip

    print(header)
    n = len(train["R"]) // args.views  # rows of one view; a subset keeps every view of its images
    for frac, steps in ((0.25, args.steps), (0.5, args.steps), (1.0, args.steps), (1.0, 4 * args.steps)):
        keep = torch.arange(int(n * frac))
        pool = torch.cat([keep + v * n for v in range(args.views)])
        print(train_heads(backbone, train, test, pool, steps, seed=0), flush=True)


if __name__ == "__main__":
    main()
