import math

import pytest
import torch

from mega.body import camera
from mega.body import rotations as R


def _random_rotations(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(n, 3, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_axis_angle_known_values(dtype):
    quarter_z = torch.tensor([0, 0, math.pi / 2], dtype=dtype)
    m = R.axis_angle_to_matrix(quarter_z)
    assert m.dtype == dtype
    # +90 deg about z sends x to y.
    torch.testing.assert_close(
        m @ torch.tensor([1.0, 0, 0], dtype=dtype), torch.tensor([0.0, 1, 0], dtype=dtype)
    )
    torch.testing.assert_close(R.axis_angle_to_matrix(torch.zeros(3, dtype=dtype)), torch.eye(3, dtype=dtype))
    half_x = R.axis_angle_to_matrix(torch.tensor([math.pi, 0, 0], dtype=dtype))
    torch.testing.assert_close(
        half_x, torch.diag(torch.tensor([1.0, -1, -1], dtype=dtype)), atol=1e-6, rtol=0
    )


def test_matrix_axis_angle_round_trip_all_angles():
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(500, 1, generator=g, dtype=torch.float64) * math.pi
    angle[-5:] = torch.tensor([0.0, 1e-9, 1e-4, math.pi - 1e-6, math.pi])[:, None]
    aa = axis * angle
    back = R.matrix_to_axis_angle(R.axis_angle_to_matrix(aa))
    # Near pi the axis sign is ambiguous: compare matrices there, vectors elsewhere.
    torch.testing.assert_close(R.axis_angle_to_matrix(back), R.axis_angle_to_matrix(aa), atol=1e-9, rtol=0)
    torch.testing.assert_close(back[:-2], aa[:-2], atol=1e-7, rtol=0)


def test_rot6d_layout_and_round_trip():
    rot = _random_rotations(200)
    r6 = R.matrix_to_rot6d(rot)
    torch.testing.assert_close(r6[:, :3], rot[:, :, 0])
    torch.testing.assert_close(r6[:, 3:], rot[:, :, 1])
    torch.testing.assert_close(R.rot6d_to_matrix(r6), rot)
    # Gram-Schmidt: any 6-vector with independent halves gives a proper rotation.
    m = R.rot6d_to_matrix(torch.randn(100, 6, dtype=torch.float64))
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(100, dtype=torch.float64))
    aa = R.matrix_to_axis_angle(rot)
    torch.testing.assert_close(R.rot6d_to_axis_angle(R.axis_angle_to_rot6d(aa)), aa)


def test_geodesic_angle():
    a = R.axis_angle_to_matrix(torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64))
    b = R.axis_angle_to_matrix(torch.tensor([[0.0, -0.2, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(R.geodesic_angle(a, b), torch.tensor([0.5], dtype=torch.float64))


def test_rotation_gradients_finite_at_zero():
    aa = torch.zeros(4, 3, requires_grad=True)
    R.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()
    r6 = torch.randn(4, 6, requires_grad=True)
    R.rot6d_to_matrix(r6).square().sum().backward()
    assert torch.isfinite(r6.grad).all()


def test_projection_known_values():
    k = camera.intrinsics(torch.tensor([1000.0]), torch.tensor([[320.0, 240.0]]))
    pts = torch.tensor([[[0.0, 0.0, 5.0], [1.0, -0.5, 2.0]]])
    uv = camera.project_points(pts, k)
    torch.testing.assert_close(uv, torch.tensor([[[320.0, 240.0], [820.0, -10.0]]]))


def _crop_setup(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    b = 6
    cam = torch.stack(
        [
            torch.rand(b, generator=g) * 0.5 + 0.7,
            torch.randn(b, generator=g) * 0.1,
            torch.randn(b, generator=g) * 0.1,
        ],
        -1,
    )
    center = torch.rand(b, 2, generator=g) * 400 + 100
    size = torch.rand(b, generator=g) * 200 + 100
    focal = torch.rand(b, generator=g) * 500 + 800
    img = torch.tensor([[640.0, 480.0]]).expand(b, 2)
    return [t.to(dtype) for t in (cam, center, size, focal, img)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weak_perspective_round_trip(dtype):
    cam, center, size, focal, img = _crop_setup(dtype)
    t = camera.weak_perspective_to_translation(cam, center, size, focal, img)
    assert t.dtype == dtype and (t[:, 2] > 0).all()
    torch.testing.assert_close(camera.translation_to_weak_perspective(t, center, size, focal, img), cam)


def test_weak_perspective_matches_perspective_for_planar_points():
    """Points at the body's depth project to s * (X + t) in normalised crop coordinates, exactly."""
    cam, center, size, focal, img = _crop_setup()
    t = camera.weak_perspective_to_translation(cam, center, size, focal, img)
    g = torch.Generator().manual_seed(4)
    pts = torch.cat(
        [
            torch.randn(6, 20, 2, generator=g, dtype=torch.float64) * 0.5,
            torch.zeros(6, 20, 1, dtype=torch.float64),
        ],
        -1,
    )
    uv = camera.project_points(pts + t[:, None], camera.intrinsics(focal, img / 2))
    crop_norm = (uv - center[:, None]) / (size[:, None, None] / 2)
    expected = cam[:, None, :1] * (pts[..., :2] + cam[:, None, 1:])
    torch.testing.assert_close(crop_norm, expected)


def test_crop_affine_maps_box_to_crop_and_inverts():
    center = torch.tensor([[300.0, 200.0], [50.0, 400.0]], dtype=torch.float64)
    size = torch.tensor([100.0, 256.0], dtype=torch.float64)
    a = camera.crop_affine(center, size, (256, 192))
    corners = torch.stack(
        [
            center + torch.stack([-size * 0.375, -size / 2], -1),
            center + torch.stack([size * 0.375, size / 2], -1),
        ],
        1,
    )
    mapped = camera.apply_affine(a, torch.cat([center[:, None], corners], 1))
    expected = torch.tensor([[96.0, 128.0], [0.0, 0.0], [192.0, 256.0]], dtype=torch.float64).expand(2, 3, 2)
    torch.testing.assert_close(mapped, expected)
    rot = camera.crop_affine(
        center, size, (256, 192), rotation_deg=torch.tensor([30.0, -75.0], dtype=torch.float64)
    )
    pts = torch.rand(2, 10, 2, dtype=torch.float64) * 500
    torch.testing.assert_close(
        camera.apply_affine(camera.invert_affine(rot), camera.apply_affine(rot, pts)), pts
    )
    # The rotation keeps the box centre fixed at the crop centre.
    torch.testing.assert_close(camera.apply_affine(rot, center[:, None])[:, 0], expected[:, 0])


def test_fit_weak_perspective_recovers_rotation_and_camera() -> None:
    from mega.body.camera import fit_weak_perspective
    from mega.body.rotations import axis_angle_to_matrix

    g = torch.Generator().manual_seed(0)
    B, J = 16, 24
    X = torch.randn(B, J, 3, generator=g) * torch.tensor([0.3, 0.8, 0.2])  # body-like, non-planar
    R = axis_angle_to_matrix(torch.randn(B, 3, generator=g) * 2.0)
    cam = torch.cat([0.5 + torch.rand(B, 1, generator=g), torch.randn(B, 2, generator=g) * 0.2], -1)
    x = cam[:, None, :1] * ((X @ R.transpose(1, 2))[..., :2] + cam[:, None, 1:])
    conf = (torch.rand(B, J, generator=g) > 0.2).float()
    x_noisy = torch.where(conf[..., None] > 0, x, torch.randn(B, J, 2, generator=g) * 5)  # unseen: garbage
    rot, cam_fit = fit_weak_perspective(X, x_noisy, conf)
    torch.testing.assert_close(rot, R, atol=1e-4, rtol=0)
    torch.testing.assert_close(cam_fit, cam, atol=1e-4, rtol=0)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(B), atol=1e-5)
    # a mirrored body is not a rotation: the fit stays proper (det +1) and is no longer exact
    rot_m, _ = fit_weak_perspective(X * torch.tensor([-1.0, 1, 1]), x, None)
    assert torch.allclose(torch.linalg.det(rot_m), torch.ones(B), atol=1e-5)
    assert (rot_m - R).abs().amax() > 1e-2


def test_solve_rotation_is_robust_to_a_misplaced_point_and_never_worse_than_its_start() -> None:
    from mega.body.camera import fit_weak_perspective, reprojection_error, solve_rotation
    from mega.body.rotations import axis_angle_to_matrix

    g = torch.Generator().manual_seed(3)
    B, J = 8, 17
    X = torch.randn(B, J, 3, generator=g) * torch.tensor([0.3, 0.8, 0.2])
    R = axis_angle_to_matrix(torch.randn(B, 3, generator=g))
    cam = torch.tensor([0.9, 0.05, -0.1]).expand(B, 3)
    x = cam[:, None, :1] * ((X @ R.transpose(1, 2))[..., :2] + cam[:, None, 1:])
    x[:, 0] += 0.6  # one keypoint far off (a limb the body got wrong)
    conf = torch.ones(B, J)
    affine, _ = fit_weak_perspective(X, x, conf)
    head = axis_angle_to_matrix(torch.randn(B, 3, generator=g))  # an unrelated candidate
    rot, cam_fit = solve_rotation(X, x, conf, [affine, head], iterations=150)

    def angle(a: torch.Tensor) -> torch.Tensor:
        return torch.arccos((((a.transpose(1, 2) @ R).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1))

    assert angle(rot).mean() < 0.5 * angle(affine).mean()  # the robust error ignores the misplaced point
    start = torch.minimum(
        reprojection_error(X, x, conf, affine, camera.fit_crop_camera(X @ affine.transpose(1, 2), x, conf)),
        reprojection_error(X, x, conf, head, camera.fit_crop_camera(X @ head.transpose(1, 2), x, conf)),
    )
    assert (reprojection_error(X, x, conf, rot, cam_fit) <= start + 1e-6).all()
