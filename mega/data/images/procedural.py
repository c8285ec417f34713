"""Procedural image content for synthetic images: backgrounds and shape masks (occluders, clutter).

Everything is batched torch on float images (B, H, W, 3) in [0, 1], drawn from an explicit
``torch.Generator``. A background is a two-colour gradient, plus low-frequency colour noise, plus
(for some) a stripe or checker pattern, a floor / wall split, and a few flat rectangles and ellipses
as clutter; together they give textured, cluttered scenes with no licensed picture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor


def _uniform(gen: Tensor | torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def random_colors(
    gen: torch.Generator, shape: tuple[int, ...], saturation=(0.0, 1.0), value=(0.1, 1.0)
) -> Tensor:
    """Random RGB colours (..., 3) from uniform hue and the given saturation / value ranges."""
    h = torch.rand(shape, generator=gen) * 6
    s = _uniform(gen, shape, *saturation)
    v = _uniform(gen, shape, *value)
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[..., None]) % 6  # HSV -> RGB
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def pixel_grid(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates: x (1, H, W) and y (1, H, W) in pixels (+0.5 convention)."""
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return x[None], y[None]


def shape_masks(
    gen: torch.Generator, centers: Tensor, sizes: Tensor, h: int, w: int, ellipse_prob: float = 0.5
) -> Tensor:
    """Rotated rectangles or ellipses.

    Args:
        centers: (N, 2) pixels. sizes: (N, 2) full width and height in pixels.
        h, w: image size. ellipse_prob: chance of an ellipse instead of a rectangle.
    Returns:
        (N, H, W) bool masks.
    """
    n = len(centers)
    x, y = pixel_grid(h, w)
    angle = torch.rand(n, generator=gen) * math.pi
    ellipse = (torch.rand(n, generator=gen) < ellipse_prob).tolist()
    cos, sin = angle.cos(), angle.sin()
    half = (sizes / 2).clamp_min(0.5)
    reach = half.norm(dim=-1) + 1  # every shape lies within this distance of its centre
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):  # only the shape's bounding square is evaluated
        cx, cy, r = float(centers[i, 0]), float(centers[i, 1]), float(reach[i])
        x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
        y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = x[0, y0:y1, x0:x1] - centers[i, 0], y[0, y0:y1, x0:x1] - centers[i, 1]
        u = (cos[i] * dx + sin[i] * dy) / half[i, 0]
        v = (-sin[i] * dx + cos[i] * dy) / half[i, 1]
        out[i, y0:y1, x0:x1] = u * u + v * v <= 1 if ellipse[i] else (u.abs() <= 1) & (v.abs() <= 1)
    return out


def textures(gen: torch.Generator, n: int, h: int, w: int) -> Tensor:
    """Flat, two-colour striped, or gradient fills (N, H, W, 3) for shapes."""
    x, y = pixel_grid(h, w)
    c1, c2 = random_colors(gen, (n,)), random_colors(gen, (n,))
    angle = torch.rand(n, generator=gen)[:, None, None] * math.pi
    period = _uniform(gen, (n,), 4, 40)[:, None, None]
    phase = (x * angle.cos() + y * angle.sin()) / period
    kind = torch.randint(0, 3, (n,), generator=gen)[:, None, None]
    t = torch.where(
        kind == 0, torch.zeros_like(phase), torch.where(kind == 1, (phase.floor() % 2), phase.frac())
    )
    return c1[:, None, None] * (1 - t[..., None]) + c2[:, None, None] * t[..., None]


def backgrounds(
    gen: torch.Generator, n: int, h: int, w: int, clutter: tuple[int, int] = (0, 6), reduce: int = 2
) -> Tensor:
    """Random procedural backgrounds.

    Args:
        gen: random generator. n: how many. h, w: size.
        clutter: min and max number of flat shapes drawn on each.
        reduce: drawn at (h, w) / reduce and upsampled bilinearly (4x cheaper at 2; softer edges).
    Returns:
        (N, H, W, 3) float in [0, 1].
    """
    if reduce > 1:
        small = backgrounds(gen, n, -(-h // reduce), -(-w // reduce), clutter, 1).permute(0, 3, 1, 2)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    x, y = pixel_grid(h, w)
    # two-colour linear gradient in a random direction
    c1, c2 = random_colors(gen, (n,), (0.0, 0.7)), random_colors(gen, (n,), (0.0, 0.7))
    angle = torch.rand(n, generator=gen)[:, None, None] * 2 * math.pi
    t = ((x / w - 0.5) * angle.cos() + (y / h - 0.5) * angle.sin() + 0.5).clamp(0, 1)[..., None]
    img = c1[:, None, None] * (1 - t) + c2[:, None, None] * t
    # low-frequency colour noise at a random scale
    cells = int(torch.randint(2, 9, (), generator=gen))
    noise = torch.rand(n, 3, cells, cells, generator=gen) - 0.5
    noise = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    img = img + _uniform(gen, (n,), 0.05, 0.4)[:, None, None, None] * noise
    # stripes / checker on some
    period = _uniform(gen, (n,), 6, 60)[:, None, None] * h / 256
    rot = torch.rand(n, generator=gen)[:, None, None] * math.pi
    u = (x * rot.cos() + y * rot.sin()) / period
    v = (-x * rot.sin() + y * rot.cos()) / period
    pattern = torch.where(
        torch.rand(n, 1, 1, generator=gen) < 0.5, u.floor() % 2, (u.floor() + v.floor()) % 2
    )
    strength = torch.where(
        torch.rand(n, generator=gen) < 0.35, _uniform(gen, (n,), 0.05, 0.3), torch.zeros(n)
    )
    img = img + strength[:, None, None, None] * (pattern[..., None] - 0.5)
    # a floor / wall split on some
    horizon = _uniform(gen, (n,), 0.3, 0.8)[:, None, None] * h
    floor = (torch.rand(n, generator=gen) < 0.4)[:, None, None] & (y > horizon)
    floor_color = random_colors(gen, (n,), value=(0.2, 0.8))
    img = torch.where(floor[..., None], 0.5 * img + 0.5 * floor_color[:, None, None], img)
    # clutter: flat shapes anywhere
    counts = torch.randint(clutter[0], clutter[1] + 1, (n,), generator=gen)
    k = int(counts.max()) if n else 0
    if k:
        centers = torch.rand(n * k, 2, generator=gen) * torch.tensor([w, h])
        sizes = _uniform(gen, (n * k, 2), 0.05, 0.5) * max(h, w)
        masks = shape_masks(gen, centers, sizes, h, w).view(n, k, h, w)
        masks &= (torch.arange(k)[None] < counts[:, None])[..., None, None]
        colors = random_colors(gen, (n, k))
        for j in range(k):  # later shapes on top
            img = torch.where(masks[:, j, ..., None], colors[:, j, None, None], img)
    return img.clamp(0, 1)
