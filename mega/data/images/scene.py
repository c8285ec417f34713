"""The scenes of the embedded image benchmark: camera, placement, clothing and the renderer.

One :class:`SceneRenderer` turns a batch of world-frame poses into labelled images under one
:class:`SceneOptions` (the sampling ranges); :mod:`mega.data.images.synthetic` draws the poses, runs it
in reproducible random streams and writes the files. What an image holds is listed there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mega.body import load_body_model
from mega.body.parts import HAIR, LEGS, REGIONS, SHOES, SKIN, TOP, TROUSERS, garment_labels
from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from mega.data.images.procedural import backgrounds, random_colors, shape_masks, textures
from mega.viz import composite, project_vertices, rasterize, shade

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
        orient, betas, transl, verts, joints, K = self._posed_and_placed(gen, global_orient, body_pose)  # noqa: N806
        img, alpha = self._appearance(gen, verts, K)

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

    def _posed_and_placed(self, gen: torch.Generator, global_orient: Tensor, body_pose: Tensor) -> tuple:
        """Shape, camera view and placement of B bodies: ``(orient (B, 3) in the camera frame, betas (B, 10),
        transl (B, 3), vertices (B, V, 3), joints (B, 24, 3), K (B, 3, 3))``."""
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
        K = torch.zeros(b, 3, 3)  # noqa: N806
        K[:, 0, 0], K[:, 1, 1], K[:, :2, 2], K[:, 2, 2] = focal, focal, center, 1.0
        return orient, betas, transl, out.vertices + transl[:, None], out.joints + transl[:, None], K

    def _appearance(self, gen: torch.Generator, verts: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:  # noqa: N803
        """Clothing colours, light, shading, a tint and a background: images (B, H, W, 3) in [0, 1] and the
        body's coverage (B, H, W)."""
        o, b = self.opts, len(verts)
        garment = torch.multinomial(torch.tensor([0.2, 0.45, 0.35]), b, True, generator=gen) * len(LEGS)
        garment += torch.multinomial(torch.tensor([0.3, 0.7]), b, True, generator=gen)
        colors = clothing_colors(gen, self.garments[garment])
        light = torch.stack(
            [_uniform(gen, b, -1, 1), _uniform(gen, b, -1, 0.5), -_uniform(gen, b, 0.2, 1)], -1
        )
        frags = rasterize(verts, self.body.faces, K, o.height, o.width)
        ambient, diffuse = _uniform(gen, b, 0.25, 0.5), _uniform(gen, b, 0.5, 0.9)
        rgb, alpha = shade(frags, verts, self.body.faces, colors, light, ambient, diffuse)
        tint = (1 + 0.08 * torch.randn(b, 1, 1, 3, generator=gen)).clamp(0.8, 1.2)
        return composite((rgb * tint).clamp(0, 1), alpha, backgrounds(gen, b, o.height, o.width)), alpha

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
