"""Per-vertex colour maps (uncertainty, errors) and a matching colour bar.

``scalar_to_colors`` maps values through a piecewise-linear approximation of matplotlib's
``viridis`` (11 control points, no matplotlib needed); ``colorbar`` draws the bar with tick labels,
to paste beside a rendering of the coloured mesh.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

# viridis at 0, 0.1, ..., 1 (RGB in [0, 1])
VIRIDIS = (
    (0.267, 0.005, 0.329),
    (0.283, 0.141, 0.458),
    (0.254, 0.265, 0.530),
    (0.207, 0.372, 0.553),
    (0.164, 0.471, 0.558),
    (0.128, 0.567, 0.551),
    (0.135, 0.659, 0.518),
    (0.267, 0.749, 0.441),
    (0.478, 0.821, 0.318),
    (0.741, 0.873, 0.150),
    (0.993, 0.906, 0.144),
)


def scalar_to_colors(values: Tensor, vmin: float | None = None, vmax: float | None = None) -> Tensor:
    """Map scalars to viridis colours.

    Args:
        values: (..., V) scalars (e.g. per-vertex error in mm).
        vmin, vmax: the range mapped to the ends of the map (None: the values' min / max).
    Returns:
        (..., V, 3) RGB in [0, 1].
    """
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    t = ((values.float() - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    table = torch.tensor(VIRIDIS, dtype=torch.float32, device=values.device)  # (11, 3)
    pos = t * (len(VIRIDIS) - 1)
    i0 = pos.floor().long().clamp(max=len(VIRIDIS) - 2)
    frac = (pos - i0)[..., None]
    return table[i0] * (1 - frac) + table[i0 + 1] * frac


def colorbar(
    vmin: float, vmax: float, height: int = 256, width: int = 70, label: str = "", ticks: int = 5
) -> np.ndarray:
    """A vertical colour bar (top = ``vmax``) with tick labels, as an RGB uint8 image.

    Args:
        vmin, vmax: range of the map. height, width: image size (pixels).
        label: text written at the top (e.g. ``mm``). ticks: number of labelled ticks.
    Returns:
        (height, width, 3) uint8, white background.
    """
    img = np.full((height, width, 3), 255, np.uint8)
    top, bottom, bar_w = 16, height - 8, max(8, width // 4)
    ramp = torch.linspace(1, 0, bottom - top)
    colors = (scalar_to_colors(ramp, 0, 1).numpy() * 255).astype(np.uint8)
    img[top:bottom, 4 : 4 + bar_w] = colors[:, None]
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(ticks):
        frac = k / max(ticks - 1, 1)
        y = int(round(bottom - 1 - frac * (bottom - top - 1)))
        value = vmin + frac * (vmax - vmin)
        cv2.line(img, (4 + bar_w, y), (7 + bar_w, y), (0, 0, 0), 1)
        cv2.putText(img, f"{value:.3g}", (9 + bar_w, y + 4), font, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    if label:
        cv2.putText(img, label, (2, 11), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img
