"""Tiny image datasets with exact ground truth, render-free (synthetic content only, never real data).

People are the free body posed at random in front of a known camera; their SMPL-24 joints and COCO-17
keypoints are projected into a blank image on which a bright dot marks every SMPL joint, so pixels,
2D keypoints and 3D parameters all agree exactly. Writers produce the key variants of the SPIN /
BEDLAM-CLIFF / MEGA / 4D-Humans npz files and 4D-Humans webdataset shards.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mega.body import load_body_model
from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from mega.data.images.dataset import SPIN24_TO_COCO17

WIDTH, HEIGHT = 200, 160
CAM_INT = np.array([[220.0, 0.0, 100.0], [0.0, 220.0, 80.0], [0.0, 0.0, 1.0]])
BACKGROUND = 40
DOT = 255


def make_people(n: int, seed: int = 0, cam_int: np.ndarray = CAM_INT) -> dict[str, np.ndarray]:
    """Random people of the free body in the camera frame.

    Returns:
        ``pose`` (n, 72), ``betas`` (n, 10), ``transl`` (n, 3), ``joints`` (n, 24, 3) camera frame,
        ``j2d_smpl`` (n, 24, 3), ``j2d_coco`` (n, 17, 3) pixels + conf 1, ``center`` (n, 2), ``scale`` (n,).
    """
    g = torch.Generator().manual_seed(seed)
    body = load_body_model("free")
    upright = torch.tensor([np.pi, 0.0, 0.0])  # body y-up -> camera y-down
    yaw = (torch.rand(n, generator=g) * 2 - 1) * np.pi
    rot = axis_angle_to_matrix(upright.expand(n, 3)) @ axis_angle_to_matrix(
        torch.stack([torch.zeros(n), yaw, torch.zeros(n)], -1)
    )
    go = matrix_to_axis_angle(rot)
    body_pose = torch.randn(n, 23, 3, generator=g) * 0.25
    betas = torch.randn(n, 10, generator=g)
    transl = torch.stack(
        [
            (torch.rand(n, generator=g) - 0.5) * 0.6,
            (torch.rand(n, generator=g) - 0.5) * 0.4,
            4.0 + torch.rand(n, generator=g),
        ],
        -1,
    )
    with torch.no_grad():
        out = body(global_orient=go, body_pose=body_pose, betas=betas, transl=transl)
        coco = torch.einsum("kv,bvc->bkc", body.keypoint_regressor("coco17"), out.vertices)
    k = torch.as_tensor(cam_int, dtype=torch.float32)

    def proj(x: torch.Tensor) -> np.ndarray:
        uvw = x @ k.T
        uv = (uvw[..., :2] / uvw[..., 2:]).numpy().astype(np.float64)
        return np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1)

    j2d_smpl, j2d_coco = proj(out.joints), proj(coco)
    lo, hi = j2d_smpl[..., :2].min(1), j2d_smpl[..., :2].max(1)
    return {
        "pose": torch.cat([go, body_pose.reshape(n, 69)], 1).numpy().astype(np.float64),
        "betas": betas.numpy().astype(np.float64),
        "transl": transl.numpy().astype(np.float64),
        "joints": out.joints.numpy().astype(np.float64),
        "j2d_smpl": j2d_smpl,
        "j2d_coco": j2d_coco,
        "center": (lo + hi) / 2,
        "scale": 1.2 * (hi - lo).max(1) / 200.0,
    }


def draw_dots(kp: np.ndarray, size: tuple[int, int] = (WIDTH, HEIGHT), radius: float = 2.5) -> np.ndarray:
    """(H, W, 3) uint8: background with a bright disc at every keypoint (continuous pixel coordinates)."""
    w, h = size
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    for x, y in kp[:, :2]:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = DOT
    return img


def save_image(img: np.ndarray, path: Path, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": quality} if path.suffix == ".jpg" else {}
    Image.fromarray(img).save(path, **kwargs)


def write_npz_dataset(
    root: Path, n: int = 4, seed: int = 0, variant: str = "ours", ext: str = ".png"
) -> dict:
    """Write ``root/<variant>.npz`` and its images under ``root/images``; returns the people.

    Variants: ``ours`` (the contract's keys, all present), ``spin`` (``part`` + ``pose`` + ``shape`` +
    ``has_smpl``, no camera: CLIFF's default K is used to project), ``bedlam`` (``pose_cam``, 11 betas,
    ``trans_cam``, bytes gender), ``mega`` (``root_orient`` + ``pose_body`` 63, ``betas``, ``j2d``, m/f),
    ``hmr2`` (4D-Humans eval: ``body_pose``, ``has_body_pose``, OpenPose ``body_keypoints_2d``, pixel
    ``scale`` (N, 2)).
    """
    cam = (
        CAM_INT
        if variant != "spin"
        else np.array(
            [[np.hypot(WIDTH, HEIGHT), 0, WIDTH / 2], [0, np.hypot(WIDTH, HEIGHT), HEIGHT / 2], [0, 0, 1.0]]
        )
    )
    p = make_people(n, seed, cam)
    names = []
    for i in range(n):
        name = f"images/{variant}_{i:03d}{ext}"
        save_image(draw_dots(p["j2d_smpl"][i]), root / name)
        names.append(name)
    keys: dict[str, np.ndarray] = {"imgname": np.array(names), "center": p["center"]}
    s = np.concatenate([p["joints"], np.ones((n, 24, 1))], -1)
    if variant == "ours":
        keys.update(
            scale=p["scale"],
            j2d_coco=p["j2d_coco"],
            j2d_smpl=p["j2d_smpl"],
            pose=p["pose"],
            shape=p["betas"],
            has_smpl=np.ones(n),
            S=s,
            trans=p["transl"],
            cam_int=np.repeat(cam[None], n, 0),
            gender=np.array(["neutral"] * n),
            sequence=np.array([f"seq{i // 2}" for i in range(n)]),
            frame=np.arange(n, dtype=np.int64),
            img_size=np.tile([WIDTH, HEIGHT], (n, 1)),
        )
    elif variant == "spin":
        part = np.zeros((n, 24, 3))
        part[:, SPIN24_TO_COCO17] = p["j2d_coco"]
        has = (np.arange(n) % 2 == 0).astype(np.float64)
        keys.update(
            scale=p["scale"],
            part=part,
            pose=p["pose"] * has[:, None],
            shape=p["betas"] * has[:, None],
            has_smpl=has,
            S=s,
        )
    elif variant == "bedlam":
        keys.update(
            scale=p["scale"],
            pose_cam=p["pose"],
            shape=np.concatenate([p["betas"], np.zeros((n, 1))], 1),
            trans_cam=p["transl"],
            cam_int=np.repeat(cam[None], n, 0),
            j2d_coco=p["j2d_coco"],
            gender=np.array([b"male", b"female"] * (n // 2) + [b"neutral"] * (n % 2)),
        )
    elif variant == "mega":
        keys.update(
            scale=p["scale"],
            root_orient=p["pose"][:, :3],
            pose_body=p["pose"][:, 3:66],
            betas=p["betas"],
            j2d=p["j2d_smpl"],
            cam_int=np.repeat(cam[None], n, 0),
            gender=np.array(["m", "f"] * (n // 2) + ["m"] * (n % 2)),
        )
    elif variant == "hmr2":
        op = np.zeros((n, 25, 3))
        op[:, [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]] = p["j2d_coco"]
        side = p["scale"] * 200
        keys.update(
            scale=np.stack([side, side], 1),
            body_pose=p["pose"],
            has_body_pose=np.ones(n),
            betas=p["betas"],
            body_keypoints_2d=op,
            cam_int=np.repeat(cam[None], n, 0),
        )
    else:
        raise ValueError(variant)
    np.savez(root / f"{variant}.npz", **keys)
    return p


def write_shards(root: Path, n: int = 5, per_shard: int = 3, seed: int = 0) -> tuple[list[Path], dict]:
    """4D-Humans webdataset shards: ``<key>.jpg`` + ``<key>.data.pyd`` (a list with one person each)."""
    p = make_people(
        n,
        seed,
        np.array(
            [[np.hypot(WIDTH, HEIGHT), 0, WIDTH / 2], [0, np.hypot(WIDTH, HEIGHT), HEIGHT / 2], [0, 0, 1.0]]
        ),
    )
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, n, per_shard):
        path = root / f"{s // per_shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s, min(n, s + per_shard)):
                buf = io.BytesIO()
                Image.fromarray(draw_dots(p["j2d_smpl"][i])).save(buf, format="JPEG", quality=95)
                kp2d = np.zeros((44, 3))
                kp2d[[0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]] = p["j2d_coco"][i]
                person = {
                    "center": p["center"][i],
                    "scale": np.full(2, p["scale"][i]),
                    "keypoints_2d": kp2d,
                    "keypoints_3d": np.zeros((44, 4)),
                    "body_pose": p["pose"][i],
                    "betas": p["betas"][i],
                    "has_body_pose": 1.0,
                    "has_betas": 1.0,
                    "extra_info": {},
                }
                for suffix, data in ((".jpg", buf.getvalue()), (".data.pyd", pickle.dumps([person]))):
                    info = tarfile.TarInfo(f"sample{i:04d}{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths, p
