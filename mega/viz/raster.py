"""A batched pure-torch z-buffer rasteriser: camera-frame triangles -> depth, face id, barycentrics.

No OpenGL and no compiled extension: every (face, pixel) pair inside a face's pixel bounding box is
enumerated as one flat tensor (in chunks, to bound memory), tested with the three edge functions,
and the nearest face per pixel is kept with one ``scatter_reduce(amin)`` on a packed 64-bit key
(the float32 depth's bits in the high word, the face index in the low word: smaller depth wins,
equal depths go to the smaller face index, so the result is deterministic).

Conventions: OpenCV camera frame (x right, y down, z forward, metres) and pixel coordinates with the
origin at the top-left corner; pixel ``(row i, column j)`` is sampled at its centre ``u = j + 0.5,
v = i + 0.5`` (so the image spans ``[0, width] x [0, height]`` exactly like the keypoints and boxes
of the data files). ``depth`` is the camera-frame z of the surface. Barycentrics are perspective
correct (they interpolate camera-frame attributes). Faces with a vertex closer than ``near`` are
dropped (no clipping); both sides of a triangle are drawn (no back-face culling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Fragments:
    """Per-pixel rasterisation result.

    Attributes:
        depth: (B, H, W) camera-frame z of the nearest surface; ``inf`` where there is none.
        face_id: (B, H, W) long index into ``faces`` of the nearest triangle; -1 = background.
        bary: (B, H, W, 3) perspective-correct barycentric weights of that triangle's vertices
            (zeros on the background).
    """

    depth: Tensor
    face_id: Tensor
    bary: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool: a face covers the pixel."""
        return self.face_id >= 0


def project_vertices(vertices: Tensor, K: Tensor) -> Tensor:  # noqa: N803
    """Camera-frame points (B, V, 3) -> pixel coordinates (B, V, 2) (pixel centres at +0.5)."""
    uvw = vertices @ K.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(1e-9)


def edge_coefficients(tri_uv: Tensor) -> Tensor:
    """Affine edge functions of screen triangles.

    Args:
        tri_uv: (T, 3, 2) pixel coordinates of the corners.
    Returns:
        (T, 3, 3): row k holds (A, B, C) with ``w_k(u, v) = A u + B v + C`` the doubled signed area
        of (corner k+1, corner k+2, p), i.e. the unnormalised barycentric weight of corner k.
    """
    a = tri_uv.roll(-1, dims=1)  # corner k+1
    b = tri_uv.roll(-2, dims=1)  # corner k+2
    ea, eb = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    return torch.stack([-eb, ea, eb * a[..., 0] - ea * a[..., 1]], -1)


def rasterize(
    vertices: Tensor,
    faces: Tensor,
    K: Tensor,  # noqa: N803
    height: int,
    width: int,
    near: float = 1e-2,
    chunk: int = 1 << 18,
) -> Fragments:
    """Rasterise a batch of meshes that share one face list.

    Args:
        vertices: (B, V, 3) camera-frame vertices (z > 0 in front of the camera).
        faces: (F, 3) long vertex indices.
        K: (B, 3, 3) intrinsics (or (3, 3), shared).
        height, width: image size in pixels.
        near: faces with any vertex at z < near are skipped.
        chunk: (face, pixel) candidates processed at once (memory ~ 60 bytes each).
    Returns:
        :class:`Fragments` with depth (B, H, W), face_id (B, H, W), bary (B, H, W, 3).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"rasterize: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be (F, 3), got {tuple(faces.shape)}")
    b, device = vertices.shape[0], vertices.device
    K = K.to(vertices.dtype)  # noqa: N806
    if K.dim() == 2:
        K = K.expand(b, 3, 3)  # noqa: N806
    if K.shape != (b, 3, 3):
        raise ValueError(f"rasterize: K must be (B, 3, 3) or (3, 3), got {tuple(K.shape)}")
    faces = faces.to(device=device, dtype=torch.long)
    n_faces = faces.shape[0]
    hw = height * width
    uv = project_vertices(vertices, K)  # (B, V, 2)
    tri_uv = uv[:, faces].reshape(-1, 3, 2)  # (B*F, 3, 2)
    tri_z = vertices[:, faces, 2].reshape(-1, 3)  # (B*F, 3)
    boxes = _FaceBoxes.of(tri_uv, tri_z, n_faces, height, width, near)
    best = _nearest_per_pixel(boxes, b * hw, width, chunk)
    hit = best != torch.iinfo(torch.int64).max
    face_id = torch.where(hit, best & 0xFFFFFFFF, torch.full_like(best, -1))
    depth = torch.full((b * hw,), float("inf"), device=device)
    depth[hit] = (best[hit] >> 32).int().view(torch.float32)
    bary = torch.zeros(b * hw, 3, dtype=vertices.dtype, device=device)
    if hit.any():
        pix = hit.nonzero().squeeze(1)
        face = (pix // hw) * n_faces + face_id[pix]
        c = edge_coefficients(tri_uv[face])  # (N, 3, 3)
        fx = (pix % width).to(c.dtype) + 0.5
        fy = ((pix % hw) // width).to(c.dtype) + 0.5
        w = c[..., 0] * fx[:, None] + c[..., 1] * fy[:, None] + c[..., 2]
        w = w / tri_z[face]  # perspective-correct: screen weights / z, renormalised
        bary[pix] = w / w.sum(-1, keepdim=True)
    return Fragments(
        depth=depth.view(b, height, width).to(vertices.dtype),
        face_id=face_id.view(b, height, width),
        bary=bary.view(b, height, width, 3),
    )


@dataclass
class _FaceBoxes:
    """The T faces that can cover a pixel, each with its pixel bounding box and its screen-space planes.

    Attributes:
        planes: (T, 12) edge functions w_k = A u + B v + C (3 x 3, oriented so that inside is w >= 0) and
            1/z as an affine function of (u, v) (3).
        pix0: (T,) flat index (batch included) of the box's first pixel. key_face: (T,) face index in its mesh.
        lo: (T, 2) first pixel column / row of the box. box_w: (T,) box width. counts: (T,) box pixels.
    """

    planes: Tensor
    pix0: Tensor
    key_face: Tensor
    lo: Tensor
    box_w: Tensor
    counts: Tensor

    @classmethod
    def of(
        cls, tri_uv: Tensor, tri_z: Tensor, n_faces: int, height: int, width: int, near: float
    ) -> _FaceBoxes:
        """From every face's pixel coordinates (B*F, 3, 2) and depths (B*F, 3); faces behind ``near``, outside
        the image, degenerate or not finite are left out."""
        # Pixel-index bounding box of each face: columns j with j + 0.5 in [min u, max u].
        lo = torch.ceil(tri_uv.amin(1) - 0.5).clamp_min(0)
        hi = torch.floor(tri_uv.amax(1) - 0.5)
        hi[:, 0].clamp_(max=width - 1)
        hi[:, 1].clamp_(max=height - 1)
        coef = edge_coefficients(tri_uv)  # (B*F, 3, 3): w_k = A u + B v + C
        area = coef[:, :, 2].sum(1)  # doubled signed area (w0 + w1 + w2 is constant)
        valid = (tri_z.amin(1) >= near) & (hi >= lo).all(1) & (area.abs() > 1e-12)
        valid &= torch.isfinite(tri_uv).all(2).all(1)
        ids = valid.nonzero().squeeze(1)  # (T,) flat face index b * F + f
        lo, hi = lo[ids].long(), hi[ids].long()
        # Orient every face so that inside means w >= 0; 1/z is affine in screen space: (w / z).sum / area.
        coef = coef[ids] * area[ids].sign()[:, None, None]
        inv_z = (coef / tri_z[ids][:, :, None]).sum(1) / area[ids].abs()[:, None]  # (T, 3)
        planes = torch.cat([coef.reshape(-1, 9), inv_z], 1)  # (T, 12)
        pix0 = (
            (ids // n_faces) * (height * width) + lo[:, 1] * width + lo[:, 0]
        )  # (T,) first pixel of each box
        box_w = hi[:, 0] - lo[:, 0] + 1
        counts = box_w * (hi[:, 1] - lo[:, 1] + 1)  # (T,)
        return cls(planes, pix0, ids % n_faces, lo, box_w, counts)


def _nearest_per_pixel(boxes: _FaceBoxes, num_pixels: int, width: int, chunk: int) -> Tensor:
    """(B*H*W,) int64 per pixel: (float32 depth bits << 32) | face index of the nearest covering face, or the
    int64 maximum where no face covers it. The (face, pixel) candidates run in chunks of ``chunk``."""
    planes, lo, box_w, counts = boxes.planes, boxes.lo, boxes.box_w, boxes.counts
    device = planes.device
    empty = torch.iinfo(torch.int64).max
    best = torch.full((num_pixels,), empty, dtype=torch.int64, device=device)
    ends = torch.cumsum(counts, 0)
    start_face = 0
    while start_face < len(counts):
        # Faces [start_face, stop) whose candidates fit in one chunk (at least one face).
        base = ends[start_face - 1] if start_face > 0 else ends.new_zeros(())
        stop = max(int(torch.searchsorted(ends, base + chunk, right=True)), start_face + 1)
        cnt = counts[start_face:stop]
        local = torch.repeat_interleave(torch.arange(stop - start_face, device=device), cnt)
        offset = torch.arange(len(local), device=device) - (ends[start_face:stop] - cnt - base)[local]
        bw = box_w[start_face:stop][local]
        dy = offset // bw
        dx = offset - dy * bw
        px = (lo[start_face:stop, 0][local] + dx).to(planes.dtype) + 0.5
        py = (lo[start_face:stop, 1][local] + dy).to(planes.dtype) + 0.5
        p = planes[start_face:stop][local]  # (N, 12)
        w0 = p[:, 0] * px + p[:, 1] * py + p[:, 2]
        w1 = p[:, 3] * px + p[:, 4] * py + p[:, 5]
        w2 = p[:, 6] * px + p[:, 7] * py + p[:, 8]
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        depth = (1.0 / (p[:, 9] * px + p[:, 10] * py + p[:, 11])).float()
        key = (depth.view(torch.int32).long() << 32) | boxes.key_face[start_face:stop][local]
        key = torch.where(inside, key, empty)
        pix = boxes.pix0[start_face:stop][local] + dy * width + dx
        best.scatter_reduce_(0, pix, key, reduce="amin")
        start_face = stop
    return best
