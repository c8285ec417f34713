"""Contact sheet of an image set in the npz format, checked against its own SMPL labels.

    python tools/contact_sheet.py                                   # data/synthetic_images, train
    python tools/contact_sheet.py --root data/synthetic_images --split test --count 16 \\
        --out outputs/figures/synthetic_contact_sheet.png

For every image of the split the labelled body (``pose``, ``shape``, ``trans`` through the free body)
is posed and projected with ``cam_int``; the script prints the largest distance in pixels between the
projected joints / COCO-17 keypoints and the stored ``j2d_smpl`` / ``j2d_coco`` (a label-consistency
check). The sheet shows ``count`` images with the projected mesh's outline (yellow, rendered with
mega.viz), the stored COCO-17 keypoints and skeleton (left blue, right red, hidden hollow) and the
square box (white).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

import mega  # noqa: F401  (torchvision shim)
from mega.atomic import atomic_path
from mega.body import load_body_model
from mega.viz import draw_keypoints, outline, project_vertices, rasterize


def pose_bodies(body, labels: dict[str, np.ndarray], rows: np.ndarray):
    """Camera-frame vertices (N, V, 3), joints (N, 24, 3) and COCO-17 points (N, 17, 3) of ``rows``."""
    pose = torch.as_tensor(labels["pose"][rows], dtype=torch.float32)
    with torch.no_grad():
        out = body(
            global_orient=pose[:, :3],
            body_pose=pose[:, 3:].reshape(-1, 23, 3),
            betas=torch.as_tensor(labels["shape"][rows], dtype=torch.float32),
            transl=torch.as_tensor(labels["trans"][rows], dtype=torch.float32),
        )
    coco = torch.einsum("kv,bvc->bkc", body.keypoint_regressor("coco17"), out.vertices)
    return out.vertices, out.joints, coco


def keypoint_errors(body, labels: dict[str, np.ndarray], chunk: int = 256) -> dict[str, float]:
    """Max and mean px distance between projected labelled 3D points and the stored 2D keypoints."""
    worst = {"j2d_smpl": 0.0, "j2d_coco": 0.0}
    total = {"j2d_smpl": 0.0, "j2d_coco": 0.0}
    n = len(labels["imgname"])
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        _, joints, coco = pose_bodies(body, labels, rows)
        K = torch.as_tensor(labels["cam_int"][rows], dtype=torch.float32)  # noqa: N806
        for key, pts in (("j2d_smpl", joints), ("j2d_coco", coco)):
            err = (project_vertices(pts, K) - torch.as_tensor(labels[key][rows, :, :2])).norm(dim=-1)
            worst[key] = max(worst[key], float(err.max()))
            total[key] += float(err.mean(1).sum())
    return {
        **{f"{k} max px": v for k, v in worst.items()},
        **{f"{k} mean px": v / n for k, v in total.items()},
    }


def annotate(image: np.ndarray, verts: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, labels, i):  # noqa: N803
    """One image with the mesh outline, the COCO-17 keypoints and the box drawn on it."""
    h, w = image.shape[:2]
    mask = rasterize(verts[None], faces, K[None], h, w).mask
    out = image.copy()
    out[outline(mask)[0].numpy()] = (255, 230, 0)
    c, side = labels["center"][i], labels["scale"][i] * 200
    p0 = tuple(int(round(v)) for v in c - side / 2)
    p1 = tuple(int(round(v)) for v in c + side / 2)
    cv2.rectangle(out, p0, p1, (255, 255, 255), 1)
    return draw_keypoints(out, labels["j2d_coco"][i], "coco17", radius=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synthetic_images")
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--first", type=int, default=0, help="index of the first image shown")
    parser.add_argument("--out", default="outputs/figures/synthetic_contact_sheet.png")
    args = parser.parse_args()
    root = Path(args.root)
    npz = root / f"{args.split}.npz"
    if not npz.is_file():
        raise SystemExit(
            f"{npz} not found: generate it with `python scripts/prepare_data.py benchmark=synthetic_images`"
        )
    with np.load(npz) as f:
        labels = {k: f[k] for k in f.files}
    body = load_body_model("free")
    errors = keypoint_errors(body, labels)
    print(f"{npz}: {len(labels['imgname'])} images; projected labelled joints vs stored 2D keypoints:")
    for key, value in errors.items():
        print(f"  {key:18s} {value:.3g}")

    rows = np.arange(args.first, min(args.first + args.count, len(labels["imgname"])))
    verts, _, _ = pose_bodies(body, labels, rows)
    tiles = []
    for k, i in enumerate(rows):
        bgr = cv2.imread(str(root / str(labels["imgname"][i])), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {root / str(labels['imgname'][i])}")
        K = torch.as_tensor(labels["cam_int"][i], dtype=torch.float32)  # noqa: N806
        tiles.append(annotate(bgr[..., ::-1].copy(), verts[k], body.faces, K, labels, i))
    cols = args.columns
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[r : r + cols], 1) for r in range(0, len(tiles), cols)], 0)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp), np.ascontiguousarray(sheet[..., ::-1]))
    print(f"contact sheet ({len(rows)} images) -> {out}")


if __name__ == "__main__":
    main()
