"""Lambert shading of rasterised meshes with per-vertex colours.

Colours and normals are interpolated with the fragments' perspective-correct barycentrics (smooth
shading from area-weighted vertex normals). Lighting is two-sided: a normal pointing away from the
camera is flipped, so open meshes and back faces still get light.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mega.viz.raster import Fragments


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: (B, V, 3). faces: (F, 3) long.
    Returns:
        (B, V, 3) unit normals (zero for unused vertices).
    """
    tri = vertices[:, faces]  # (B, F, 3, 3)
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)  # (B, F, 3)
    vn = torch.zeros_like(vertices)
    for k in range(3):
        vn.index_add_(1, faces[:, k], fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


def interpolate_packed(
    fragments: Fragments, attributes: Tensor, faces: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Interpolate per-vertex attributes at the covered pixels only.

    Args:
        fragments: rasteriser output (B, H, W). attributes: (B, V, C). faces: (F, 3) long.
    Returns:
        batch index (N,), flat pixel index (N,) into H * W, and values (N, C) of the N covered pixels.
    """
    b, h, w = fragments.face_id.shape
    fid = fragments.face_id.view(b, h * w)
    bb, pix = (fid >= 0).nonzero(as_tuple=True)
    vid = faces.to(attributes.device)[fid[bb, pix]]  # (N, 3)
    vals = attributes[bb[:, None], vid]  # (N, 3, C)
    weights = fragments.bary.view(b, h * w, 3)[bb, pix].to(attributes.dtype)
    return bb, pix, (weights[..., None] * vals).sum(1)


def interpolate(fragments: Fragments, attributes: Tensor, faces: Tensor) -> Tensor:
    """Interpolate per-vertex attributes at every pixel.

    Args:
        fragments: rasteriser output (B, H, W). attributes: (B, V, C). faces: (F, 3) long.
    Returns:
        (B, H, W, C); zeros on the background.
    """
    b, h, w = fragments.face_id.shape
    out = attributes.new_zeros(b, h * w, attributes.shape[-1])
    bb, pix, vals = interpolate_packed(fragments, attributes, faces)
    out[bb, pix] = vals
    return out.view(b, h, w, -1)


def shade(
    fragments: Fragments,
    vertices: Tensor,
    faces: Tensor,
    vertex_colors: Tensor,
    light_dir: Tensor,
    ambient: float | Tensor = 0.4,
    diffuse: float | Tensor = 0.6,
) -> tuple[Tensor, Tensor]:
    """Lambert shading: ``colour * (ambient + diffuse * max(0, n . l))``.

    Args:
        fragments: rasteriser output for ``vertices``.
        vertices: (B, V, 3) camera-frame vertices. faces: (F, 3) long.
        vertex_colors: (B, V, 3) albedo in [0, 1] (or (V, 3), shared).
        light_dir: (B, 3) direction from the surface towards the light, camera frame (or (3,)).
        ambient, diffuse: floats or (B,) tensors.
    Returns:
        rgb (B, H, W, 3) in [0, 1] (black background) and alpha (B, H, W) (1 where a face covers).
    """
    b, h, w = fragments.face_id.shape
    faces = faces.to(vertices.device)
    if vertex_colors.dim() == 2:
        vertex_colors = vertex_colors.expand(b, -1, -1)
    light = torch.nn.functional.normalize(light_dir.to(vertices).expand(b, 3), dim=-1)
    attrs = torch.cat([vertex_normals(vertices, faces), vertices, vertex_colors.to(vertices.dtype)], -1)
    bb, pix, vals = interpolate_packed(fragments, attrs, faces)  # only covered pixels: one gather
    normals, points, albedo = vals.split(3, dim=-1)
    facing_away = (normals * points).sum(-1, keepdim=True) > 0  # the camera sits at the origin
    normals = torch.where(facing_away, -normals, normals)
    normals = torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
    lambert = (normals * light[bb]).sum(-1).clamp_min(0)  # (N,)
    amb = torch.as_tensor(ambient, dtype=vertices.dtype, device=vertices.device).expand(b)[bb]
    dif = torch.as_tensor(diffuse, dtype=vertices.dtype, device=vertices.device).expand(b)[bb]
    rgb = vertices.new_zeros(b, h * w, 3)
    rgb[bb, pix] = (albedo * (amb + dif * lambert)[:, None]).clamp(0, 1)
    return rgb.view(b, h, w, 3), fragments.mask.to(vertices.dtype)
