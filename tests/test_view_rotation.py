"""Crop-relative rotation (CLIFF): the viewing-ray rotation and the crop camera's projection in its frame,
checked against a full perspective projection of a far body seen through an off-centre crop."""

from __future__ import annotations

import torch

from mega.body.camera import viewing_ray_rotation
from mega.body.rotations import geodesic_angle
from mega.model import HMRModel


def _intrinsics(n: int, f: float = 600.0, c: float = 300.0) -> torch.Tensor:
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]]).expand(n, 3, 3)


def test_ray_rotation_turns_the_optical_axis_onto_the_ray():
    centers = torch.tensor([[300.0, 300.0], [500.0, 300.0], [20.0, -150.0], [300.0, 900.0]])
    K = _intrinsics(4)
    R = viewing_ray_rotation(centers, K)
    ray = torch.cat([(centers - 300.0) / 600.0, torch.ones(4, 1)], 1)
    torch.testing.assert_close(R @ torch.tensor([0.0, 0.0, 1.0]), ray / ray.norm(dim=1, keepdim=True))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4))
    torch.testing.assert_close(R[0], torch.eye(3))  # a centred box
    # the smallest rotation: its angle is the angle between the axis and the ray
    angle = geodesic_angle(torch.eye(3).expand(4, 3, 3), R)
    torch.testing.assert_close(angle, torch.acos(ray[:, 2] / ray.norm(dim=1)), atol=1e-3, rtol=0)


def test_projection_in_the_ray_frame_matches_perspective_for_a_far_body():
    g = torch.Generator().manual_seed(0)
    n, f, bbox = 3, 600.0, 100.0
    K = _intrinsics(n, f)
    centers = torch.tensor([[520.0, 310.0], [90.0, 120.0], [300.0, 560.0]])
    R = viewing_ray_rotation(centers, K)
    points = (torch.rand(n, 20, 3, generator=g) - 0.5) * 0.6  # a body-sized cloud around its centre
    depth = 40.0  # far: perspective ~ weak perspective in the ray's frame
    ray = R[:, :, 2]
    world = points + (depth / ray[:, 2:3] * ray)[:, None]  # centre on the ray, at depth z = 40
    proj = world @ K.transpose(1, 2)
    px = proj[..., :2] / proj[..., 2:]
    crop = (px - centers[:, None]) / (bbox / 2)  # normalised crop coordinates
    dist = depth / ray[:, 2]  # distance along the ray
    cam = torch.stack([2 * f / (dist * bbox), torch.zeros(n), torch.zeros(n)], dim=1)
    got = HMRModel.project(points, cam, R)
    # what is left is the crop's own foreshortening (a square crop of the image plane is stretched by
    # 1 / cos(ray angle) across the offset): under 1 % of the crop here
    assert (got - crop).abs().max() < 0.02
    # without the ray frame the same crop is off by more than twice as much (the error the rotation fixes)
    assert (HMRModel.project(points, cam) - crop).abs().max() > 2 * (got - crop).abs().max()
