"""Picture building blocks for the demo: people rendered over an image, a side view, colour-mapped
meshes with a colour bar, labelled panels side by side, PNG writing.

Everything takes camera-frame vertices (OpenCV: x right, y down, z forward, metres) of N people that
share one face list, and returns uint8 RGB images (H, W, 3). Several people are rasterised together
as one mesh, so nearer people hide farther ones.

>>> img = overlay(frame, verts, body.faces, K)                # (H, W, 3) uint8: the mesh over the frame
>>> side = side_view(verts, body.faces, 256, 256)             # the same people seen from their right
>>> panel = hstack([label(img, "deterministic"), side])       # one picture
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from mega.atomic import atomic_path
from mega.viz.colormap import colorbar, scalar_to_colors
from mega.viz.composite import composite, to_uint8
from mega.viz.raster import rasterize
from mega.viz.shading import shade

#: one light for every picture: from above and behind the camera (direction towards the light)
LIGHT = (0.3, -0.6, -1.0)
#: body colours of people 0, 1, 2, ... (RGB in [0, 1]), repeated when there are more
PALETTE = ((0.65, 0.74, 0.86), (0.93, 0.68, 0.55), (0.62, 0.85, 0.62), (0.87, 0.70, 0.87), (0.92, 0.86, 0.55))


def person_colors(num_people: int, num_vertices: int) -> Tensor:
    """(N, V, 3) one palette colour per person."""
    rows = [PALETTE[i % len(PALETTE)] for i in range(num_people)]
    return torch.tensor(rows, dtype=torch.float32)[:, None].expand(num_people, num_vertices, 3)


def _merge(vertices: Tensor, faces: Tensor, colors: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """N meshes (N, V, 3) with one face list -> one mesh (1, N V, 3), faces (N F, 3), colours (1, N V, 3)."""
    n, v = vertices.shape[:2]
    faces = faces.long().to(vertices.device)
    all_faces = torch.cat([faces + i * v for i in range(n)]) if n else faces[:0]
    cols = person_colors(n, v) if colors is None else colors.float().expand(n, v, 3)
    return vertices.reshape(1, n * v, 3).float(), all_faces, cols.reshape(1, n * v, 3).to(vertices.device)


def render(
    vertices: Tensor,
    faces: Tensor,
    K: Tensor,
    height: int,
    width: int,
    colors: Tensor | None = None,  # noqa: N803
) -> tuple[Tensor, Tensor]:
    """Render N people into one image.

    Args:
        vertices: (N, V, 3) camera frame. faces: (F, 3). K: (3, 3) intrinsics.
        colors: (N, V, 3) / (N, 1, 3) albedo in [0, 1], or None (the palette).
    Returns:
        rgb (H, W, 3) float in [0, 1] (black background) and alpha (H, W).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"render: vertices must be (N, V, 3), got {tuple(vertices.shape)}")
    if vertices.shape[0] == 0:
        return torch.zeros(height, width, 3), torch.zeros(height, width)
    verts, all_faces, cols = _merge(vertices, faces, colors)
    frags = rasterize(verts, all_faces, K.float().reshape(1, 3, 3), height, width)
    rgb, alpha = shade(frags, verts, all_faces, cols, torch.tensor(LIGHT))
    return rgb[0], alpha[0]


def overlay(
    image: np.ndarray,
    vertices: Tensor,
    faces: Tensor,
    K: Tensor,  # noqa: N803
    colors: Tensor | None = None,
    opacity: float = 0.9,
) -> np.ndarray:
    """People rendered over ``image`` (H, W, 3) uint8 with intrinsics ``K`` (3, 3); returns uint8."""
    h, w = image.shape[:2]
    rgb, alpha = render(vertices, faces, K, h, w, colors)
    return to_uint8(composite(rgb[None], alpha[None], torch.from_numpy(image)[None], opacity)[0])


def side_view(
    vertices: Tensor,
    faces: Tensor,
    height: int,
    width: int,
    colors: Tensor | None = None,
    yaw_deg: float = 90.0,
    margin: float = 1.15,
    background: float = 1.0,
) -> np.ndarray:
    """The people turned by ``yaw_deg`` about the vertical axis through their centre, framed to fit.

    ``yaw_deg = 90`` looks at them from their right-hand side (the camera's left), which shows depth
    errors the overlay hides; 0 gives a framed front view. A distant camera (near-orthographic) keeps
    the people's relative sizes.

    Args:
        vertices: (N, V, 3) camera frame. faces: (F, 3). height, width: panel size in pixels.
        colors: as :func:`render`. margin: free space around the fitted extent. background: grey level.
    Returns:
        (height, width, 3) uint8.
    """
    if vertices.shape[0] == 0:
        return np.full((height, width, 3), int(255 * background), np.uint8)
    pts = vertices.float()
    centre = (pts.reshape(-1, 3).amin(0) + pts.reshape(-1, 3).amax(0)) / 2
    a = math.radians(yaw_deg)
    # rotation about the camera's y axis (vertical, pointing down)
    rot = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    p = (pts - centre) @ rot.T
    lo, hi = p.reshape(-1, 3).amin(0), p.reshape(-1, 3).amax(0)
    ext_x, ext_y = float(hi[0] - lo[0]) * margin, float(hi[1] - lo[1]) * margin
    dist = 10.0 + float(hi[2] - lo[2])
    focal = dist * min(width / max(ext_x, 1e-3), height / max(ext_y, 1e-3))
    mid = (lo + hi) / 2
    shift = torch.tensor([-float(mid[0]), -float(mid[1]), dist])
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])  # noqa: N806
    rgb, alpha = render(p + shift, faces, K, height, width, colors)
    bg = torch.full((1, height, width, 3), background)
    return to_uint8(composite(rgb[None], alpha[None], bg)[0])


def colormap_view(
    vertices: Tensor,
    faces: Tensor,
    values: Tensor,
    height: int,
    width: int,
    vmax: float,
    label_text: str = "mm",
    yaw_deg: float = 0.0,
    bar_width: int = 64,
) -> np.ndarray:
    """People coloured by a per-vertex scalar (e.g. the SD of Q samples in mm), framed, with a colour bar.

    Args:
        vertices: (N, V, 3). values: (N, V) scalars mapped from 0 to ``vmax``.
        height, width: size of the mesh panel; the colour bar (``bar_width`` wide) is added on the right.
    Returns:
        (height, width + bar_width, 3) uint8.
    """
    colors = scalar_to_colors(values.float(), 0.0, vmax)
    mesh = side_view(vertices, faces, height, width, colors=colors, yaw_deg=yaw_deg)
    return np.concatenate([mesh, scaled_colorbar(0.0, vmax, height, bar_width, label_text)], 1)


def scaled_colorbar(
    vmin: float, vmax: float, height: int, width: int, label_text: str = "", ticks: int = 5
) -> np.ndarray:
    """:func:`mega.viz.colormap.colorbar` with text sized to the bar (legible on tall panels).

    Returns:
        (height, width, 3) uint8; top = ``vmax``.
    """
    if height <= 300:
        return colorbar(vmin, vmax, height, width, label_text, ticks)
    s = height / 300
    small = colorbar(vmin, vmax, 300, max(8, round(width / s)), label_text, ticks)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def label(image: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """A copy of ``image`` with ``text`` on a white strip at its top-left corner (lines split at newlines)."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    s = scale if scale is not None else max(0.35, min(1.0, w / 700))
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(s * 1.6)))
    y = 0
    for line in text.split("\n"):
        (tw, th), base = cv2.getTextSize(line, font, s, thick)
        out[y : y + th + base + 6, : tw + 8] = 255
        cv2.putText(out, line, (4, y + th + 3), font, s, (0, 0, 0), thick, cv2.LINE_AA)
        y += th + base + 6
    return out


def hstack(panels: list[np.ndarray], height: int | None = None, gap: int = 4) -> np.ndarray:
    """Panels side by side, each resized to ``height`` (default: the first one's), white gaps between."""
    if not panels:
        raise ValueError("hstack: no panels")
    h = height or panels[0].shape[0]
    parts = []
    for i, p in enumerate(panels):
        if p.shape[0] != h:
            p = cv2.resize(p, (max(1, round(p.shape[1] * h / p.shape[0])), h), interpolation=cv2.INTER_AREA)
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(p)
    return np.concatenate(parts, 1)


def vstack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows one above the other, padded with white on the right to the widest one."""
    w = max(r.shape[1] for r in rows)
    parts = []
    for i, r in enumerate(rows):
        if i:
            parts.append(np.full((gap, w, 3), 255, np.uint8))
        pad = np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)
        parts.append(np.concatenate([r, pad], 1))
    return np.concatenate(parts, 0)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image[..., ::-1])):
            raise OSError(f"could not write {path}")
    return path
