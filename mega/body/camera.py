"""Cameras: perspective projection, the weak-perspective crop camera, and crop affines.

Conventions: OpenCV camera frame (x right, y down, z forward), pixels with the origin at the top-left
corner of the image. The crop camera follows HMR2/CLIFF: ``cam = (s, tx, ty)`` maps a body point
``X`` to normalised crop coordinates in [-1, 1] as ``s * (X[:2] + (tx, ty))``; its full-image
translation puts the body at depth ``tz = 2 f / (s b)`` (``b`` the box side in pixels) and shifts
it by the box's offset from the image centre.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mega.body.rotations import axis_angle_to_matrix


def intrinsics(focal: Tensor, principal: Tensor) -> Tensor:
    """Pinhole intrinsics.

    Args:
        focal: (B,) or (B, 2) focal length(s) in pixels.
        principal: (B, 2) principal point in pixels.
    Returns:
        (B, 3, 3) K.
    """
    f = focal[:, None].expand(-1, 2) if focal.dim() == 1 else focal
    k = torch.zeros(f.shape[0], 3, 3, dtype=f.dtype, device=f.device)
    k[:, 0, 0], k[:, 1, 1] = f[:, 0], f[:, 1]
    k[:, :2, 2] = principal
    k[:, 2, 2] = 1
    return k


def project_points(points: Tensor, K: Tensor, eps: float = 1e-6) -> Tensor:  # noqa: N803
    """Perspective projection of camera-frame points.

    Args:
        points: (B, N, 3) in the camera frame (z > 0 in front).
        K: (B, 3, 3) intrinsics.
    Returns:
        (B, N, 2) pixel coordinates.
    """
    uvw = points @ K.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:].clamp_min(eps)


def weak_perspective_to_translation(
    cam: Tensor, bbox_center: Tensor, bbox_size: Tensor, focal: Tensor, img_size: Tensor
) -> Tensor:
    """Crop camera -> full-image camera translation (CLIFF's crop-to-full conversion).

    Args:
        cam: (B, 3) ``(s, tx, ty)`` of the crop camera.
        bbox_center: (B, 2) box centre in image pixels.
        bbox_size: (B,) box side in pixels.
        focal: (B,) focal length of the full image in pixels.
        img_size: (B, 2) image ``(width, height)``; the principal point is its centre.
    Returns:
        (B, 3) translation of the body in the full-image camera frame.
    """
    s, tx, ty = cam.unbind(-1)
    sb = s * bbox_size
    offset = bbox_center - img_size / 2
    tz = 2 * focal / sb
    return torch.stack([tx + 2 * offset[:, 0] / sb, ty + 2 * offset[:, 1] / sb, tz], dim=-1)


def translation_to_weak_perspective(
    transl: Tensor, bbox_center: Tensor, bbox_size: Tensor, focal: Tensor, img_size: Tensor
) -> Tensor:
    """Inverse of :func:`weak_perspective_to_translation`: (B, 3) translation -> (B, 3) ``(s, tx, ty)``."""
    s = 2 * focal / (bbox_size * transl[:, 2])
    sb = s * bbox_size
    offset = bbox_center - img_size / 2
    return torch.stack(
        [s, transl[:, 0] - 2 * offset[:, 0] / sb, transl[:, 1] - 2 * offset[:, 1] / sb], dim=-1
    )


def crop_affine(
    bbox_center: Tensor, bbox_size: Tensor, out_hw: tuple[int, int], rotation_deg: Tensor | None = None
) -> Tensor:
    """Affine that maps image pixels into a crop of the box.

    The box has the crop's aspect ratio: height ``bbox_size``, width ``bbox_size * W / H``. The crop
    is rotated by ``rotation_deg`` (counter-clockwise in the image) about the box centre.

    Args:
        bbox_center: (B, 2) box centre in image pixels.
        bbox_size: (B,) box height in pixels.
        out_hw: crop (height, width).
        rotation_deg: (B,) or None.
    Returns:
        (B, 2, 3) ``A`` with ``crop_px = A[:, :, :2] @ img_px + A[:, :, 2]`` (usable with cv2.warpAffine).
    """
    h, w = out_hw
    scale = h / bbox_size  # (B,)
    angle = torch.zeros_like(scale) if rotation_deg is None else rotation_deg * (math.pi / 180)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # Rotation by -angle in image coordinates (y down) = counter-clockwise on screen.
    lin = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (B, 2, 2)
    centre = bbox_center.new_tensor([w / 2, h / 2])
    shift = centre - (lin @ bbox_center[..., None])[..., 0]
    return torch.cat([lin, shift[..., None]], dim=-1)


def invert_affine(affine: Tensor) -> Tensor:
    """(B, 2, 3) -> (B, 2, 3) inverse affine (crop pixels -> image pixels)."""
    lin_inv = torch.linalg.inv(affine[:, :, :2])
    return torch.cat([lin_inv, -(lin_inv @ affine[:, :, 2:])], dim=-1)


def apply_affine(affine: Tensor, points: Tensor) -> Tensor:
    """Apply (B, 2, 3) affines to (B, N, 2) points -> (B, N, 2)."""
    return points @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]


def fit_weak_perspective(
    points: Tensor, keypoints: Tensor, conf: Tensor | None = None, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Rotation and crop camera that best map 3D points onto 2D keypoints: ``x ~ s ((R X)[:2] + t)``.

    Scaled-orthographic fit in closed form: weighted least squares for the 2x3 affine map of the
    centred points, its rows completed by their cross product and projected to the nearest rotation
    (SVD), then the best scale and shift for that rotation. Exact for noise-free scaled-orthographic
    data of non-planar points; the 3D shape must be known (no depth-reversal ambiguity then).

    Args:
        points: (B, J, 3) body-frame points (e.g. the decoded canonical joints).
        keypoints: (B, J, 2) their 2D positions (crop coordinates).
        conf: (B, J) weights (0 = unseen); None = all ones.

    Returns:
        rotation (B, 3, 3) and camera (B, 3) ``(s, tx, ty)``, the HMR2/CLIFF crop camera of mega.model.
    """
    points, keypoints = points.float(), keypoints.float()
    w = (torch.ones(points.shape[:2], device=points.device) if conf is None else conf.float())[..., None]
    total = w.sum(1, keepdim=True).clamp_min(eps)
    mean3, mean2 = (w * points).sum(1, keepdim=True) / total, (w * keypoints).sum(1, keepdim=True) / total
    X, x = points - mean3, keypoints - mean2
    gram = (w * X).transpose(1, 2) @ X + eps * torch.eye(3, device=X.device)
    affine = torch.linalg.solve(gram, (w * X).transpose(1, 2) @ x).transpose(1, 2)  # (B, 2, 3)
    r1, r2 = affine[:, 0], affine[:, 1]
    r3 = torch.linalg.cross(r1, r2, dim=-1)
    r3 = (
        r3
        / r3.norm(dim=-1, keepdim=True).clamp_min(eps)
        * (r1.norm(dim=-1) * r2.norm(dim=-1)).sqrt()[:, None]
    )
    U, _, Vh = torch.linalg.svd(torch.stack([r1, r2, r3], 1))
    fix = torch.ones(len(points), 3, device=points.device)
    fix[:, 2] = torch.sign(torch.linalg.det(U @ Vh))
    rot = U @ torch.diag_embed(fix) @ Vh
    return rot, fit_crop_camera(points @ rot.transpose(1, 2), keypoints, conf, eps)


def fit_crop_camera(
    points: Tensor, keypoints: Tensor, conf: Tensor | None = None, eps: float = 1e-8, min_scale: float = 0.05
) -> Tensor:
    """Scale and shift of the crop camera ``x ~ s (X[:2] + t)`` for already rotated points (least squares).

    Args:
        points: (B, J, 3) camera-frame-oriented points; keypoints: (B, J, 2); conf: (B, J) weights or None.
        min_scale: the least scale returned: a body that fits its keypoints badly would otherwise get a
            scale near or below 0, i.e. a translation far away or behind the camera.
    Returns:
        (B, 3) ``(s, tx, ty)``.
    """
    points, keypoints = points.float(), keypoints.float()
    w = (torch.ones(points.shape[:2], device=points.device) if conf is None else conf.float())[..., None]
    total = w.sum(1, keepdim=True).clamp_min(eps)
    mean3, mean2 = (
        (w * points[..., :2]).sum(1, keepdim=True) / total,
        (w * keypoints).sum(1, keepdim=True) / total,
    )
    proj, x = points[..., :2] - mean3, keypoints - mean2
    s = ((w * proj * x).sum((1, 2)) / (w * proj.square()).sum((1, 2)).clamp_min(eps)).clamp_min(min_scale)
    shift = mean2[:, 0] / s[:, None] - mean3[:, 0]
    return torch.cat([s[:, None], shift], -1)


def reprojection_error(points: Tensor, keypoints: Tensor, conf: Tensor, rot: Tensor, cam: Tensor) -> Tensor:
    """(B,) confidence-weighted mean 2D distance of ``s ((R X)[:2] + t)`` to the keypoints."""
    proj = cam[:, None, :1] * ((points @ rot.transpose(1, 2))[..., :2] + cam[:, None, 1:])
    dist = ((proj - keypoints).square().sum(-1) + 1e-12).sqrt()
    return (conf * dist).sum(1) / conf.sum(1).clamp_min(1e-8)


def solve_rotation(
    points: Tensor,
    keypoints: Tensor,
    conf: Tensor,
    candidates: list[Tensor],
    iterations: int = 100,
    lr: float = 0.02,
) -> tuple[Tensor, Tensor]:
    """The rotation and crop camera with the least mean 2D distance (robust to a few misplaced points).

    Starts from the best of ``candidates`` (each (B, 3, 3), e.g. :func:`fit_weak_perspective`'s and a
    network's), then runs ``iterations`` Adam steps on the 6D rotation; the camera of every rotation is
    its least-squares one (:func:`fit_crop_camera`). The best state seen is returned, so the error never
    exceeds the best candidate's.

    Args:
        points: (B, J, 3); keypoints: (B, J, 2); conf: (B, J). Returns (B, 3, 3) and (B, 3).
    """
    from mega.body.rotations import matrix_to_rot6d, rot6d_to_matrix

    points, keypoints, conf = points.float(), keypoints.float(), conf.float()
    best_rot, best_cam, best_err = None, None, None
    for rot in candidates:
        rot = rot.float()
        cam = fit_crop_camera(points @ rot.transpose(1, 2), keypoints, conf)
        err = reprojection_error(points, keypoints, conf, rot, cam)
        if best_err is None:
            best_rot, best_cam, best_err = rot, cam, err
        else:
            better = err < best_err
            best_rot = torch.where(better[:, None, None], rot, best_rot)
            best_cam = torch.where(better[:, None], cam, best_cam)
            best_err = torch.minimum(err, best_err)
    with torch.enable_grad():
        r6 = matrix_to_rot6d(best_rot).detach().requires_grad_(True)
        opt = torch.optim.Adam([r6], lr=lr)
        for _ in range(iterations):
            rot = rot6d_to_matrix(r6)
            # the least-squares camera of this rotation (a free scale would shrink to hide a poor fit)
            cam = fit_crop_camera(points @ rot.transpose(1, 2), keypoints, conf)
            err = reprojection_error(points, keypoints, conf, rot, cam)
            with torch.no_grad():
                better = err < best_err
                best_rot = torch.where(better[:, None, None], rot, best_rot)
                best_cam = torch.where(better[:, None], cam, best_cam)
                best_err = torch.minimum(err, best_err)
            opt.zero_grad()
            err.sum().backward()
            opt.step()
    return best_rot.detach(), best_cam.detach()


def viewing_ray_rotation(bbox_center: Tensor, cam_int: Tensor) -> Tensor:
    """The rotation that turns the camera's optical axis onto the ray through the box centre.

    A square crop around an off-centre box sees the body along that ray, not along the optical axis:
    a model that predicts the body's rotation relative to the crop (CLIFF's observation) gets the
    camera-frame rotation as ``viewing_ray_rotation(...) @ R_crop``. The rotation is the smallest one
    (about the axis z x ray), so a centred box gives the identity.

    Args:
        bbox_center: (B, 2) box centre in image pixels.
        cam_int: (B, 3, 3) intrinsics (focal lengths and principal point in pixels).
    Returns:
        (B, 3, 3) rotation R with R @ (0, 0, 1) = the unit ray through the box centre.
    """
    f = torch.stack([cam_int[:, 0, 0], cam_int[:, 1, 1]], dim=-1)
    xy = (bbox_center.to(f) - cam_int[:, :2, 2]) / f  # (B, 2) the ray's slope
    ray = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=-1)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    axis = torch.stack([-ray[:, 1], ray[:, 0], torch.zeros_like(ray[:, 0])], dim=-1)  # z x ray
    sin, cos = axis.norm(dim=-1, keepdim=True), ray[:, 2:3]
    angle = torch.atan2(sin, cos)
    axis = axis / sin.clamp_min(1e-12)
    return axis_angle_to_matrix(axis * angle)
