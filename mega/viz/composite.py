"""Compositing rendered layers over images, and silhouette outlines of masks.

Images here are float tensors (B, H, W, 3) in [0, 1] or uint8 arrays (H, W, 3); helpers convert.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def to_float_image(image: np.ndarray | Tensor) -> Tensor:
    """uint8 (H, W, 3) / (B, H, W, 3) array or tensor -> float tensor in [0, 1] (same shape)."""
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def to_uint8(image: Tensor) -> np.ndarray:
    """Float tensor in [0, 1] (..., 3) -> uint8 numpy array (rounded, clipped)."""
    return (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def composite(foreground: Tensor, alpha: Tensor, background: Tensor, opacity: float = 1.0) -> Tensor:
    """``fg * a + bg * (1 - a)`` with ``a = opacity * alpha``.

    Args:
        foreground: (B, H, W, 3) float. alpha: (B, H, W) in [0, 1].
        background: (B, H, W, 3) float in [0, 1] (or uint8, converted).
        opacity: global factor on alpha (e.g. 0.6 for a see-through overlay).
    Returns:
        (B, H, W, 3) float.
    """
    bg = to_float_image(background).to(foreground)
    if bg.shape != foreground.shape:
        raise ValueError(
            f"composite: background {tuple(bg.shape)} and foreground {tuple(foreground.shape)} differ"
        )
    a = (opacity * alpha).to(foreground)[..., None]
    return foreground * a + bg * (1 - a)


def outline(mask: Tensor, width: int = 1) -> Tensor:
    """Inner boundary of a mask: pixels of the mask with a 4-neighbour outside it.

    Args:
        mask: (B, H, W) bool (pixels outside the image count as outside the mask).
        width: boundary thickness in pixels.
    Returns:
        (B, H, W) bool.
    """
    m = mask.float()[:, None]
    k = 2 * width + 1
    eroded = -torch.nn.functional.max_pool2d(-m, k, stride=1, padding=width)
    # max_pool pads with -inf, so the border of the image never erodes; add it explicitly.
    inner = eroded[:, 0] > 0.5
    if width > 0:
        inner[:, :width], inner[:, -width:], inner[:, :, :width], inner[:, :, -width:] = (False,) * 4
    return mask & ~inner
