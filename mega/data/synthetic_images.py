"""The embedded image benchmark ``synthetic_images``: the free body rendered into full images with GT.

Written on first use (:func:`ensure_synthetic_images`) or by ``python scripts/prepare_data.py
dataset=synthetic_images``, deterministically from a seed, into ``root``::

    root/MANIFEST.json                  generator version and every option (checked on reuse)
    root/{train,val,test}.npz           labels in the SPIN / BEDLAM-CLIFF npz format (CONTRACTS.md)
    root/images/<split>/000123.jpg      256 x 256 RGB frames (``imgname`` is relative to ``root``)

Splits follow the procedural motion data's own train / val / test sequences
(:func:`mega.data.motion.synthetic_motion`), so test poses come from held-out sequences. Per image:

- a random frame of the split's motion, 10 random betas ~ N(0, 1) clipped to +-2.5, one neutral body;
- a perspective camera: focal length ``focal * max(W, H)``, all-round yaw about the person (or within
  ``facing_deg`` of the person's front), elevation and a small roll; principal point at the frame centre;
- the person's projected extent (longer side) ``box_px`` pixels, at a random place in the frame,
  fully inside it or (``truncated`` of the images) cut by a border by 15-50 % of the extent;
- "clothing": per-region colours (skin, hair, top, trousers, shoes; sleeve and leg lengths vary;
  left and right always alike) under Lambert shading from a random light, with a colour tint;
- a procedural background (:mod:`mega.data.procedural`), and in ``occluded`` of the images one or two
  textured shapes over the body; pixel noise and JPEG compression.

Labels (N images): ``imgname``; ``pose`` (N, 72) axis-angle with the global orientation in the
camera frame (OpenCV); ``shape`` (N, 10); ``trans`` (N, 3) so that ``body(pose, shape, trans)`` is the
camera-frame mesh; ``cam_int`` (N, 3, 3); ``S`` (N, 24, 4) camera-frame joints + 1; ``j2d_smpl``
(N, 24, 3) and ``j2d_coco`` (N, 17, 3) projected keypoints (pixels, continuous coordinates with the
origin at the image corner) + visibility (1 inside the frame and not under an occluder, else 0; body
self-occlusion does not count); ``center`` (N, 2) and ``scale`` (N,) = side / 200 of the square box
``bbox_margin`` x the in-frame extent of the projected mesh; ``has_smpl``; ``gender`` (neutral);
``img_size`` (N, 2) = (W, H); ``sequence`` / ``frame`` (the motion frame); ``truncation`` (N,) fraction
of vertices outside the frame; ``occlusion`` (N,) fraction of body pixels hidden by occluders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from mega.body import load_body_model
from mega.body.parts import HAIR, LEGS, REGIONS, SHOES, SKIN, TOP, TROUSERS, garment_labels
from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from mega.data.benchmark import BENCHMARKS, BenchmarkIndex, MissingFileError
from mega.data.procedural import backgrounds, random_colors, shape_masks, textures
from mega.viz import composite, project_vertices, rasterize, shade

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST = "MANIFEST.json"
DEFAULT_SIZES = {"train": 20000, "val": 1000, "test": 1000}
DEFAULT_MOTION = {
    "root": "data/synthetic_motion",
    "seed": 0,
    "sequences": {"train": 200, "val": 20, "test": 20},
}
BATCH = 64  # images drawn per random stream: the output depends on it, so it is not an option
SKIN_TONES = (
    (0.96, 0.80, 0.69),
    (0.89, 0.67, 0.53),
    (0.76, 0.53, 0.38),
    (0.55, 0.37, 0.25),
    (0.36, 0.24, 0.16),
)
HAIR_COLORS = (
    (0.08, 0.06, 0.05),
    (0.25, 0.15, 0.08),
    (0.55, 0.38, 0.20),
    (0.85, 0.72, 0.45),
    (0.6, 0.6, 0.6),
)


@dataclass(frozen=True)
class SceneOptions:
    """Scene sampling ranges (uniform unless said). Changing any needs a new ``root``."""

    width: int = 256
    height: int = 256
    box_px: tuple[float, float] = (60.0, 200.0)  # longer side of the person's projected extent
    focal: tuple[float, float] = (1.0, 3.0)  # focal length / max(width, height)
    elevation_deg: tuple[float, float] = (-10.0, 35.0)  # camera above the pelvis: positive
    roll_deg: float = 8.0  # uniform in +-roll
    facing_deg: float = 180.0  # camera within +-facing of the person's front (180: all-round yaw)
    truncated: float = 0.15  # fraction of images cut by the frame border
    occluded: float = 0.3  # fraction of images with occluders
    betas_std: float = 1.0
    betas_clip: float = 2.5
    bbox_margin: float = 1.2
    noise: float = 0.02  # pixel noise std, uniform in [0, noise]
    image_format: str = "jpg"  # jpg | png
    jpeg_quality: int = 90


def _rot(axis: int, angle: Tensor) -> Tensor:
    """(B,) angles -> (B, 3, 3) rotations about x (0), y (1) or z (2)."""
    aa = torch.zeros(len(angle), 3)
    aa[:, axis] = angle
    return axis_angle_to_matrix(aa)


def camera_rotation(yaw: Tensor, elevation: Tensor, roll: Tensor) -> Tensor:
    """World (y up, person facing +z at zero yaw) -> OpenCV camera rotation, (B, 3, 3).

    Zero angles: the camera looks at the person's front, horizontally. Yaw turns the person about the
    vertical, elevation lifts the camera (it looks down), roll turns the image.
    """
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    return _rot(2, roll) @ _rot(0, elevation) @ flip @ _rot(1, yaw)


def heading(global_orient: Tensor) -> Tensor:
    """(B, 3) world (y-up) root orientations -> (B,) heading angle about y (0 = facing +z).

    Read off the body's left-right axis (SMPL +x), which stays horizontal for standing, lying and crawling
    bodies alike: front = left x up.
    """
    left = axis_angle_to_matrix(global_orient.float())[:, :, 0]
    return torch.atan2(-left[:, 2], left[:, 0])


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def place_people(
    gen: torch.Generator, rel: Tensor, focal: Tensor, opts: SceneOptions, iterations: int = 4
) -> tuple[Tensor, Tensor, Tensor]:
    """Depth and pelvis pixel of each person, so that the exact perspective projection of the mesh has
    the sampled size and lies inside the frame (or is cut by one border, for ``truncated`` people).

    Weak perspective gives the first guess; a few fixed-point steps on the exact projection correct
    it (pixels move monotonically with the depth and the pelvis pixel).

    Args:
        rel: (B, V, 3) camera-frame vertices relative to the pelvis. focal: (B,) pixels.
    Returns:
        depth (B,), pelvis pixel (B, 2), truncated (B,) bool (chosen to be cut by a border).
    """
    b = len(rel)
    size = torch.tensor([opts.width, opts.height], dtype=torch.float32)
    target = _uniform(gen, b, *opts.box_px)
    depth = focal * (rel[..., :2].amax(1) - rel[..., :2].amin(1)).amax(-1) / target
    f = focal[:, None, None]

    def project(depth: Tensor, offset: Tensor) -> Tensor:  # pixels relative to the centre; offset: pelvis px
        return (f * rel[..., :2] + offset[:, None] * depth[:, None, None]) / (
            rel[..., 2:] + depth[:, None, None]
        )

    zero = torch.zeros(b, 2)
    for _ in range(iterations):  # exact size at a centred position
        px = project(depth, zero)
        depth = depth * (px.amax(1) - px.amin(1)).amax(-1) / target
    px = project(depth, zero)
    lo, hi = px.amin(1) + size / 2, px.amax(1) + size / 2  # box with the pelvis at the centre
    low, high = -lo, size - hi  # pelvis offsets keeping the box inside
    shift = low + (high - low).clamp_min(0) * torch.rand(b, 2, generator=gen)
    truncated = torch.rand(b, generator=gen) < opts.truncated
    axis = torch.randint(0, 2, (b,), generator=gen)
    far_side = torch.rand(b, generator=gen) < 0.5
    cut = _uniform(gen, b, 0.15, 0.5) * (hi - lo).gather(1, axis[:, None])[:, 0]
    rows = torch.arange(b)
    for _ in range(iterations):  # offset (pixels) = pelvis pixel - centre; refine on the exact box
        px = project(depth, shift) + size / 2
        lo, hi = px.amin(1), px.amax(1)
        fix = torch.where(lo < 0, -lo, torch.where(hi > size, size - hi, torch.zeros_like(lo)))
        fix = torch.where(hi - lo > size, (size - lo - hi) / 2, fix)  # too big: centre it
        edge = torch.where(far_side, size[axis] + cut - hi[rows, axis], -cut - lo[rows, axis])
        fix[rows[truncated], axis[truncated]] = edge[truncated]
        other = 1 - axis
        keep = torch.where(lo < 0, -lo, torch.where(hi > size, size - hi, torch.zeros_like(lo)))
        fix[rows[truncated], other[truncated]] = keep[rows[truncated], other[truncated]]
        shift = shift + fix
    return depth, shift + size / 2, truncated


def clothing_colors(gen: torch.Generator, labels: Tensor) -> Tensor:
    """Per-vertex albedo from per-image region colours.

    Args:
        labels: (B, V) region index per vertex.
    Returns:
        (B, V, 3) RGB in [0, 1].
    """
    b = len(labels)
    palette = torch.zeros(b, len(REGIONS), 3)
    tones, hair = torch.tensor(SKIN_TONES), torch.tensor(HAIR_COLORS)
    t = torch.rand(b, generator=gen) * (len(tones) - 1)
    i = t.floor().long().clamp(max=len(tones) - 2)
    palette[:, SKIN] = tones[i] + (t - i)[:, None] * (tones[i + 1] - tones[i])
    palette[:, HAIR] = hair[torch.randint(0, len(hair), (b,), generator=gen)]
    palette[:, TOP] = random_colors(gen, (b,), value=(0.15, 1.0))
    palette[:, TROUSERS] = random_colors(gen, (b,), saturation=(0.0, 0.8), value=(0.1, 0.9))
    palette[:, SHOES] = random_colors(gen, (b,), saturation=(0.0, 0.6), value=(0.05, 0.9))
    return palette.gather(1, labels[..., None].expand(-1, -1, 3))


def _seed(seed: int, split: str, stream: int) -> int:
    digest = hashlib.sha256(f"synthetic_images/{seed}/{split}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SceneRenderer:
    """Renders batches of posed free bodies into labelled images (one :class:`SceneOptions`)."""

    def __init__(self, opts: SceneOptions, body: Any | None = None) -> None:
        self.opts = opts
        self.body = body if body is not None else load_body_model("free")
        smpl = self.body.smpl
        rest_joints = self.body.J_regressor @ self.body.v_template
        self.garments = garment_labels(smpl.lbs_weights, self.body.v_template, rest_joints)  # (6, V)
        self.coco = self.body.keypoint_regressor("coco17")  # (17, V)

    @torch.no_grad()
    def render(self, gen: torch.Generator, global_orient: Tensor, body_pose: Tensor) -> dict[str, Any]:
        """One batch.

        Args:
            gen: the batch's random stream. global_orient: (B, 3) world (y-up) root orientation.
            body_pose: (B, 23, 3) axis-angle.
        Returns:
            ``images`` (B, H, W, 3) uint8 and per-image label arrays (see the module docstring).
        """
        o, b = self.opts, len(global_orient)
        h, w = o.height, o.width
        betas = (torch.randn(b, 10, generator=gen) * o.betas_std).clamp(-o.betas_clip, o.betas_clip)
        rot = camera_rotation(
            self._camera_yaw(gen, global_orient),
            torch.deg2rad(_uniform(gen, b, *o.elevation_deg)),
            torch.deg2rad(_uniform(gen, b, -o.roll_deg, o.roll_deg)),
        )
        orient = matrix_to_axis_angle(rot @ axis_angle_to_matrix(global_orient.float()))
        out = self.body(global_orient=orient, body_pose=body_pose.float(), betas=betas)
        pelvis3d = out.joints[:, 0]
        focal = _uniform(gen, b, *o.focal) * max(w, h)
        depth, pelvis_px, _ = place_people(gen, out.vertices - pelvis3d[:, None], focal, o)
        center = torch.tensor([w / 2, h / 2])
        target = torch.cat([(pelvis_px - center) / focal[:, None] * depth[:, None], depth[:, None]], -1)
        transl = target - pelvis3d
        verts, joints = out.vertices + transl[:, None], out.joints + transl[:, None]
        K = torch.zeros(b, 3, 3)  # noqa: N806
        K[:, 0, 0], K[:, 1, 1], K[:, :2, 2], K[:, 2, 2] = focal, focal, center, 1.0

        # appearance
        garment = torch.multinomial(torch.tensor([0.2, 0.45, 0.35]), b, True, generator=gen) * len(LEGS)
        garment += torch.multinomial(torch.tensor([0.3, 0.7]), b, True, generator=gen)
        colors = clothing_colors(gen, self.garments[garment])
        light = torch.stack(
            [_uniform(gen, b, -1, 1), _uniform(gen, b, -1, 0.5), -_uniform(gen, b, 0.2, 1)], -1
        )
        frags = rasterize(verts, self.body.faces, K, h, w)
        rgb, alpha = shade(frags, verts, self.body.faces, colors, light,
                           _uniform(gen, b, 0.25, 0.5), _uniform(gen, b, 0.5, 0.9))  # fmt: skip
        tint = (1 + 0.08 * torch.randn(b, 1, 1, 3, generator=gen)).clamp(0.8, 1.2)
        img = composite((rgb * tint).clamp(0, 1), alpha, backgrounds(gen, b, h, w))

        # 2D keypoints and occluders
        j2d_smpl = project_vertices(joints, K)
        j2d_coco = project_vertices(torch.einsum("kv,bvc->bkc", self.coco, verts), K)
        v2d = project_vertices(verts, K)
        occ = self._occluders(gen, img, j2d_smpl, v2d)
        img = (
            img + _uniform(gen, b, 0, o.noise)[:, None, None, None] * torch.randn(img.shape, generator=gen)
        ).clamp(0, 1)

        frame = torch.tensor([w, h], dtype=torch.float32)
        lo = torch.minimum(v2d.amin(1).clamp_min(0), frame - 1)  # in-frame extent of the mesh
        hi = torch.maximum(torch.minimum(v2d.amax(1), frame), lo + 1)
        inside = ((v2d >= 0) & (v2d < torch.tensor([w, h]))).all(-1)
        body_px = alpha.sum((1, 2)).clamp_min(1)
        return {
            "images": (img * 255 + 0.5).to(torch.uint8).numpy(),
            "pose": torch.cat([orient, body_pose.reshape(b, 69).float()], 1).numpy(),
            "shape": betas.numpy(),
            "trans": transl.numpy(),
            "cam_int": K.numpy(),
            "S": torch.cat([joints, torch.ones(b, 24, 1)], -1).numpy(),
            "j2d_smpl": self._visibility(j2d_smpl, occ).numpy(),
            "j2d_coco": self._visibility(j2d_coco, occ).numpy(),
            "center": ((lo + hi) / 2).numpy(),
            "scale": (o.bbox_margin * (hi - lo).amax(-1) / 200).numpy(),
            "truncation": (1 - inside.float().mean(1)).numpy(),
            "occlusion": ((alpha > 0) & occ).sum((1, 2)).div(body_px).numpy(),
        }

    def _camera_yaw(self, gen: torch.Generator, global_orient: Tensor) -> Tensor:
        """(B,) camera yaw about the person: all-round, or within +-facing_deg of the person's front."""
        b, facing = len(global_orient), float(self.opts.facing_deg)
        if facing >= 180.0:
            return torch.rand(b, generator=gen) * 2 * math.pi
        return torch.deg2rad(_uniform(gen, b, -facing, facing)) - heading(global_orient)

    def _occluders(self, gen: torch.Generator, img: Tensor, j2d: Tensor, v2d: Tensor) -> Tensor:
        """Paint one or two textured shapes over the body of ``occluded`` of the images (in place).

        Returns:
            (B, H, W) bool mask of occluder pixels.
        """
        o, b = self.opts, len(img)
        h, w = o.height, o.width
        occ = torch.zeros(b, h, w, dtype=torch.bool)
        chosen = (torch.rand(b, generator=gen) < o.occluded).nonzero().squeeze(1)
        count = torch.randint(1, 3, (b,), generator=gen)
        extent = (v2d.amax(1) - v2d.amin(1)).amax(-1)  # (B,) px
        for k in range(2):
            idx = chosen[count[chosen] > k]
            if len(idx) == 0:
                continue
            joint = torch.randint(0, 24, (len(idx),), generator=gen)
            centers = j2d[idx, joint] + 0.1 * extent[idx, None] * torch.randn(len(idx), 2, generator=gen)
            sizes = extent[idx, None] * (0.15 + 0.35 * torch.rand(len(idx), 2, generator=gen))
            masks = shape_masks(gen, centers, sizes, h, w)
            tex = textures(gen, len(idx), h, w)
            img[idx] = torch.where(masks[..., None], tex, img[idx])
            occ[idx] |= masks
        return occ

    def _visibility(self, kp: Tensor, occ: Tensor) -> Tensor:
        """(B, K, 2) pixels -> (B, K, 3) with 1 = inside the frame and not under an occluder."""
        w, h = self.opts.width, self.opts.height
        inside = (kp[..., 0] >= 0) & (kp[..., 0] < w) & (kp[..., 1] >= 0) & (kp[..., 1] < h)
        col = kp[..., 0].floor().long().clamp(0, w - 1)
        row = kp[..., 1].floor().long().clamp(0, h - 1)
        hidden = occ[torch.arange(len(kp))[:, None], row, col]
        return torch.cat([kp, (inside & ~hidden).float()[..., None]], -1)


def _motion_split(motion: Mapping[str, Any], split: str, create: bool = False):
    """The motion frames of ``split`` (a :class:`mega.data.motion.MotionDataset`).

    With ``create``, a missing motion folder is generated first (``ensure_synthetic_motion``). An
    existing folder is read as it is, whatever version of the motion generator wrote it, as long as
    its seed and sequence counts are the ones asked for: the images depend on the motion files, and
    a motion-code change must not stop a running image generation (nor invalidate a finished set).
    """
    from mega.data.motion import MotionDataset, ensure_synthetic_motion  # noqa: PLC0415
    from mega.data.motion_synth import MANIFEST as MOTION_MANIFEST  # noqa: PLC0415

    root = Path(motion["root"])
    wanted = {"seed": motion.get("seed", 0), "sequences": dict(motion.get("sequences") or {})}
    if not (root / MOTION_MANIFEST).is_file():
        if not create:
            raise FileNotFoundError(f"motion data {root} is missing (no {MOTION_MANIFEST})")
        ensure_synthetic_motion(root, seed=wanted["seed"], sequences=wanted["sequences"] or None)
    found = json.loads((root / MOTION_MANIFEST).read_text())
    made = {"seed": found.get("seed"), "sequences": found.get("sequences")}
    if wanted["sequences"] and made != wanted:
        raise ValueError(f"{root} holds motion made with {made}, not {wanted}: pick another motion.root")
    return MotionDataset(root, split=split, split_protocol="folders")


def _motion_version(motion: Mapping[str, Any]) -> Any:
    from mega.data.motion_synth import MANIFEST as MOTION_MANIFEST  # noqa: PLC0415

    found = json.loads((Path(motion["root"]) / MOTION_MANIFEST).read_text())
    return {k: found[k] for k in ("version", "fingerprint") if k in found}


def _encode(image: np.ndarray, opts: SceneOptions) -> bytes:
    bgr = np.ascontiguousarray(image[..., ::-1])
    if opts.image_format == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, opts.jpeg_quality])
    if not ok:
        raise RuntimeError("synthetic_images: image encoding failed")
    return buf.tobytes()


_WORKER: dict[str, Any] = {}  # per-process state of the batch workers


def _init_worker(
    root: str, split: str, seed: int, opts: SceneOptions, motion: Mapping[str, Any], threads: int
) -> None:
    torch.set_num_threads(threads)
    data = _motion_split(motion, split)
    renderer = _WORKER["renderer"] if _WORKER.get("opts") == opts else SceneRenderer(opts)
    _WORKER.update(root=Path(root), split=split, seed=seed, opts=opts, data=data,
                   seq_start=torch.as_tensor(data.seq_start), renderer=renderer)  # fmt: skip


def _render_batch(task: tuple[int, int, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch ``k`` (its first image is number ``start``) of motion frames ``idx``: writes its images and
    returns its label arrays (with ``imgname``)."""
    k, start, idx = task
    w = _WORKER
    data, opts, split = w["data"], w["opts"], w["split"]
    idx = torch.as_tensor(idx)
    item = data[idx]
    gen = torch.Generator().manual_seed(_seed(w["seed"], split, k))
    out = w["renderer"].render(gen, item["global_orient"], item["body_pose"])
    names = []
    for j, image in enumerate(out.pop("images")):
        name = f"images/{split}/{start + j:06d}.{opts.image_format}"
        (w["root"] / name).write_bytes(_encode(image, opts))
        names.append(name)
    seq = item["seq_id"]
    out["imgname"] = np.array(names)
    out["sequence"] = np.array([data.seq_names[i] for i in seq.tolist()])
    out["frame"] = (idx - w["seq_start"][seq]).numpy().astype(np.int64)
    return out


def generate_split(
    root: str | Path,
    split: str,
    count: int,
    seed: int = 0,
    opts: SceneOptions | None = None,
    motion: Mapping[str, Any] | None = None,
    progress: bool = True,
    workers: int = 1,
    threads: int = 1,
) -> Path:
    """Render ``count`` images of ``split`` into ``root/images/<split>/`` and write ``root/<split>.npz``.

    The images of batch k (of :data:`BATCH`) come from the random stream ``(seed, split, k)`` and the
    motion frames from the stream ``(seed, split, -1)``, so a split is reproducible on its own and the
    result does not depend on ``workers`` (processes rendering batches in parallel) or ``threads``.
    Returns:
        the npz path (written atomically, after every image).
    """
    import multiprocessing  # noqa: PLC0415

    from tqdm import tqdm  # noqa: PLC0415

    from mega.atomic import write_npz  # noqa: PLC0415

    opts = opts or SceneOptions()
    motion = dict(motion or DEFAULT_MOTION)
    root = Path(root)
    n_frames = len(_motion_split(motion, split, create=True))  # generates the motion data first if needed
    g = torch.Generator().manual_seed(_seed(seed, split, -1))
    frames = (
        torch.randperm(n_frames, generator=g)[:count]
        if count <= n_frames
        else torch.randint(0, n_frames, (count,), generator=g)
    )
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    tasks = [
        (k, start, frames[start : start + BATCH].numpy()) for k, start in enumerate(range(0, count, BATCH))
    ]
    init = (str(root), split, seed, opts, motion, threads)
    parts: dict[str, list[np.ndarray]] = {}
    bar = tqdm(total=count, desc=f"synthetic_images {split}", unit="img", disable=not progress)
    if (
        workers > 1
    ):  # a failing worker start raises BrokenProcessPool here (multiprocessing.Pool would retry forever)
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init)
        results = pool.map(_render_batch, tasks)
    else:
        pool = None
        _init_worker(*init)
        results = map(_render_batch, tasks)
    try:
        for out in results:
            for key, value in out.items():
                parts.setdefault(key, []).append(value)
            bar.update(len(out["imgname"]))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    n = len(arrays["imgname"])
    arrays.update(
        has_smpl=np.ones(n, np.float32),
        gender=np.array(["neutral"] * n),
        img_size=np.tile(np.array([[opts.width, opts.height]], np.int64), (n, 1)),
    )
    arrays = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}
    path = root / f"{split}.npz"
    write_npz(path, **arrays)
    return path


def _options(kwargs: Mapping[str, Any]) -> SceneOptions:
    fields = SceneOptions.__dataclass_fields__
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(f"synthetic_images: unknown option(s) {unknown}; known: {sorted(fields)}")
    return SceneOptions(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in kwargs.items()})


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: PLC0415

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def ensure_synthetic_images(
    root: str | Path | Mapping[str, Any] = "data/synthetic_images",
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
    motion: Mapping[str, Any] | None = None,
    threads: int = 1,
    progress: bool = True,
    workers: int = 1,
    **scene: Any,
) -> Path:
    """Generate the image benchmark into ``root`` unless it is already there (then return at once).

    Args:
        root: target folder, or a config: a dataset / data config (its ``root`` and ``generate``
            sub-mapping are used, other keys ignored) or a flat mapping of ``root`` and the options below.
        seed: generator seed. sizes: images per split (default 20000 / 1000 / 1000).
        motion: kwargs of :func:`mega.data.motion.synthetic_motion` (``root``, ``seed``, ``sequences``).
        threads: torch threads per process while generating. progress: tqdm bars.
        workers: processes rendering in parallel (the images do not depend on it, nor on ``threads``).
        **scene: :class:`SceneOptions` fields (``width``, ``height``, ``box_px`` ...).
    Returns:
        ``root``.
    Raises:
        ValueError: ``root`` holds images made with other options (delete it or pick another root).

    Concurrent callers (DDP ranks, two scripts) are safe: one generates into a temporary sibling
    folder and renames it into place; a caller that finds another's lock file waits for it.
    """
    if isinstance(root, Mapping) or hasattr(root, "keys"):
        cfg = dict(_plain(root))
        if "generate" in cfg:  # a dataset / data config: its root and generator options, nothing else
            cfg = {"root": cfg.get("root", "data/synthetic_images"), **dict(cfg["generate"] or {})}
        return ensure_synthetic_images(**{"root": "data/synthetic_images", **cfg})
    root = Path(root)
    opts = _options(_plain(scene))
    sizes = dict(_plain(sizes) or DEFAULT_SIZES)
    motion = {**DEFAULT_MOTION, **dict(_plain(motion) or {})}
    # What the images depend on. The motion folder's location is not part of it (a copy elsewhere
    # holds the same motions); the motion generator's version is recorded but not compared.
    content = {k: v for k, v in motion.items() if k != "root"}
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "sizes": sizes, "scene": json.loads(json.dumps(asdict(opts))),
              "motion": json.loads(json.dumps(content))}  # fmt: skip

    def existing() -> bool:
        if not (root / MANIFEST).is_file():
            return False
        found = json.loads((root / MANIFEST).read_text())
        made = {k: found.get(k) for k in wanted}
        if isinstance(made["scene"], dict):  # sets written before an option existed used its default
            made["scene"] = {**json.loads(json.dumps(asdict(SceneOptions()))), **made["scene"]}
        if made != wanted:
            raise ValueError(
                f"{root} holds synthetic images made with {made}, not {wanted}: delete the folder or choose "
                "another root"
            )
        return True

    if existing():
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists but has no {MANIFEST}: it is not a generated image set; delete it "
                         "or choose another root")  # fmt: skip
    lock = root.parent / f".{root.name}.lock"
    root.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            if existing():
                return root
            if not _lock_alive(lock):
                lock.unlink(missing_ok=True)
                continue
            log.info("waiting for another process generating %s (lock %s)", root, lock)
            time.sleep(5)
    try:
        if existing():
            return root
        for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by a killed generator
            if not _lock_alive_pid(stale.name.split("-")[-2]):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        log.info("generating synthetic images into %s (seed %d, sizes %s)", root, seed, sizes)
        old_threads = torch.get_num_threads()
        t0 = time.perf_counter()
        try:
            for split, count in sizes.items():
                generate_split(tmp, split, count, seed, opts, motion, progress, workers, threads)
            manifest = {**wanted, "motion_root": str(motion["root"]), "motion_version": _motion_version(motion),
                        "seconds": round(time.perf_counter() - t0, 1), "workers": workers}  # fmt: skip
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            if root.is_dir():
                root.rmdir()
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            torch.set_num_threads(old_threads)
    finally:
        lock.unlink(missing_ok=True)
    return root


def _lock_alive(lock: Path) -> bool:
    try:
        pid = lock.read_text()
    except OSError:
        return True  # being written right now
    return _lock_alive_pid(pid) if pid else True


def _lock_alive_pid(pid: str) -> bool:
    """Whether process ``pid`` (a string) still runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OverflowError):
        return False
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) > 0


@BENCHMARKS.register("synthetic_images")
def build_synthetic_index(
    root: str | Path = "data/synthetic_images",
    split: str = "test",
    subset: str = "all",
    generate: Mapping[str, Any] | None = None,
    body_model: str = "free",
    body_model_path: str | None = None,
) -> BenchmarkIndex:
    """The benchmark index of one split (generated first if needed); ground truth is the free body's.

    Args:
        root: the image set's folder (image paths in the index are relative to it).
        split: ``test`` (the benchmark), ``val`` or ``train``. subset: ``all``, ``occluded`` (occluder
            over >= 10 % of the body's pixels) or ``truncated`` (>= 10 % of the vertices outside).
        generate: :func:`ensure_synthetic_images` options. body_model, body_model_path: ignored (the
            labels are already in the camera frame; score with ``body_model=free``).
    """
    if body_model != "free":
        log.warning(
            "synthetic_images ground truth is the free body; evaluate it with body_model=free, not %s",
            body_model,
        )
    root = Path(root)
    ensure_synthetic_images(root, **dict(_plain(generate) or {}))
    path = root / f"{split}.npz"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: the image set at {root} has no split '{split}'")
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}
    keep = {
        "all": np.ones(len(a["imgname"]), bool),
        "occluded": a["occlusion"] >= 0.1,
        "truncated": a["truncation"] >= 0.1,
    }
    if subset not in keep:
        raise ValueError(f"unknown synthetic_images subset '{subset}' (expected {sorted(keep)})")
    m = keep[subset]
    row = {
        "image": a["imgname"][m], "sequence": a["sequence"][m], "frame": a["frame"][m],
        "person": np.zeros(int(m.sum()), np.int64), "gender": a["gender"][m],
        "global_orient": a["pose"][m, :3], "body_pose": a["pose"][m, 3:], "betas": a["shape"][m],
        "transl": a["trans"][m], "bbox_center": a["center"][m], "bbox_size": a["scale"][m] * 200,
        "cam_intrinsics": a["cam_int"][m], "image_size": a["img_size"][m],
    }  # fmt: skip
    return BenchmarkIndex.from_rows("synthetic_images", split, subset, [row])
