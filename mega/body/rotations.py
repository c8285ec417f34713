"""Every rotation conversion in mega: axis-angle <-> matrix <-> 6D.

Axis-angle is used at the boundaries (datasets, smplx), matrices inside, 6D for network outputs.

6D layout (the one used everywhere in mega): the first two **columns** of the rotation matrix,
concatenated: ``r6 = [R[:, 0], R[:, 1]]`` i.e. ``(R00, R10, R20, R01, R11, R21)``. Decoding runs
Gram-Schmidt on the two 3-vectors and completes the frame with their cross product. (SPIN reads a
6-vector as a row-major 3x2 matrix instead; 4D-Humans uses two consecutive 3-vectors as here.)

All functions are batched over any leading dims, differentiable, and keep the input dtype
(float32 or float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues' formula.

    Args:
        aa: (..., 3) axis * angle (radians).
    Returns:
        (..., 3, 3) rotation matrices.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = torch.sqrt(theta2.clamp_min(1e-12))
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with Taylor series near zero (keeps gradients finite).
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    k = _skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(rot: Tensor) -> Tensor:
    """Inverse of :func:`axis_angle_to_matrix`, angle in [0, pi].

    Goes through a unit quaternion, which is stable for every angle including 0 and pi.

    Args:
        rot: (..., 3, 3) rotation matrices.
    Returns:
        (..., 3) axis-angle.
    """
    q = matrix_to_quaternion(rot)  # (..., 4) w, x, y, z with w >= 0
    w, xyz = q[..., :1], q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    # angle / sin(angle/2); -> 2 as s -> 0.
    scale = torch.where(s < 1e-6, 2.0 / w.clamp_min(1e-6), angle / s.clamp_min(1e-12))
    return xyz * scale


def matrix_to_quaternion(rot: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0."""
    m = rot
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate magnitudes; pick the best-conditioned one per element.
    q_abs = torch.sqrt(
        torch.stack(
            [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
        ).clamp_min(1e-12)
    )
    m21, m12, m02, m20, m10, m01 = (
        m[..., 2, 1],
        m[..., 1, 2],
        m[..., 0, 2],
        m[..., 2, 0],
        m[..., 1, 0],
        m[..., 0, 1],
    )
    cands = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        dim=-2,
    )  # (..., 4, 4)
    cands = cands / (2 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def rot6d_to_matrix(r6: Tensor) -> Tensor:
    """6D (two columns) -> rotation matrix by Gram-Schmidt.

    Args:
        r6: (..., 6) laid out as ``[col0 (3), col1 (3)]``.
    Returns:
        (..., 3, 3) with columns ``b1, b2, b1 x b2``.
    """
    a1, a2 = r6[..., :3], r6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(rot: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, column 0 first."""
    return torch.cat([rot[..., :, 0], rot[..., :, 1]], dim=-1)


def axis_angle_to_rot6d(aa: Tensor) -> Tensor:
    """(..., 3) -> (..., 6)."""
    return matrix_to_rot6d(axis_angle_to_matrix(aa))


def rot6d_to_axis_angle(r6: Tensor) -> Tensor:
    """(..., 6) -> (..., 3)."""
    return matrix_to_axis_angle(rot6d_to_matrix(r6))


def geodesic_angle(r1: Tensor, r2: Tensor) -> Tensor:
    """Angle (radians) of ``r1^T r2``: (..., 3, 3), (..., 3, 3) -> (...)."""
    tr = (r1.transpose(-1, -2) @ r2).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.acos(((tr - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7))
