"""The pure-torch renderer (mega.viz): rasteriser vs a slow per-triangle reference, shading, drawing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mega.viz import (
    colorbar,
    composite,
    draw_keypoints,
    interpolate,
    outline,
    rasterize,
    scalar_to_colors,
    shade,
    to_uint8,
)


def reference_rasterize(verts: np.ndarray, faces: np.ndarray, K: np.ndarray, h: int, w: int):  # noqa: N803
    """One triangle at a time, every pixel of the image, float64: (depth (H, W), face id (H, W))."""
    depth = np.full((h, w), np.inf)
    face_id = np.full((h, w), -1)
    u = (np.arange(w) + 0.5)[None, :]
    v = (np.arange(h) + 0.5)[:, None]
    for f, tri in enumerate(faces):
        p = verts[tri]
        if p[:, 2].min() < 1e-2:
            continue
        uv = (p @ K.T)[:, :2] / p[:, 2:]
        ws = []
        for k in range(3):
            a, b = uv[(k + 1) % 3], uv[(k + 2) % 3]
            ws.append((b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0]))
        ws = np.stack(ws)  # (3, H, W)
        area = ws.sum(0)
        if abs(area.flat[0]) < 1e-12:
            continue
        lam = ws / area
        inside = (lam >= 0).all(0)
        z = 1.0 / (lam / p[:, 2, None, None]).sum(0)
        closer = inside & ((z < depth) | ((z == depth) & (f < face_id)))
        depth[closer], face_id[closer] = z[closer], f
    return depth, face_id


def random_mesh(gen: torch.Generator, n_faces: int, size: float):
    """Random triangles in front of the camera (independent vertices, so many overlaps)."""
    centers = torch.rand(n_faces, 1, 3, generator=gen) * torch.tensor([2.0, 2.0, 3.0]) + torch.tensor(
        [-1.0, -1.0, 2.0]
    )
    verts = (centers + size * torch.randn(n_faces, 3, 3, generator=gen)).reshape(-1, 3)
    faces = torch.arange(3 * n_faces).reshape(n_faces, 3)
    return verts, faces


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_on_random_meshes(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    h, w = 40, 56
    verts, faces = random_mesh(gen, 60, 0.4)
    K = torch.tensor([[50.0, 0, 27.0], [0, 45.0, 21.0], [0, 0, 1]])  # noqa: N806
    batch = torch.stack([verts, verts * torch.tensor([1.0, 1.0, 1.3])])  # two different frames
    frags = rasterize(batch, faces, K.expand(2, 3, 3), h, w, chunk=997)  # small chunks: many passes
    for b in range(2):
        depth, face_id = reference_rasterize(
            batch[b].double().numpy(), faces.numpy(), K.double().numpy(), h, w
        )
        got_d, got_f = frags.depth[b].numpy(), frags.face_id[b].numpy()
        assert ((got_f >= 0) == (face_id >= 0)).mean() > 0.995  # coverage, up to pixels on edges
        both = (got_f >= 0) & (face_id >= 0)
        assert both.sum() > 0.3 * h * w
        same = got_f[both] == face_id[both]
        assert same.mean() > 0.99
        # where the face differs, it is a tie (two faces at the same depth, or an edge pixel)
        np.testing.assert_allclose(got_d[both][same], depth[both][same], rtol=1e-4)
        assert np.isinf(got_d[got_f < 0]).all()


def test_barycentrics_interpolate_depth_and_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(3)
    verts, faces = random_mesh(gen, 30, 0.5)
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])  # noqa: N806
    frags = rasterize(verts[None], faces, K[None], 32, 32)
    m = frags.mask
    assert m.any()
    torch.testing.assert_close(frags.bary[m].sum(-1), torch.ones(int(m.sum())), atol=1e-5, rtol=0)
    assert (frags.bary[m] > -1e-4).all()
    z = interpolate(frags, verts[None, :, 2:], faces)[..., 0]
    torch.testing.assert_close(z[m], frags.depth[m], rtol=1e-4, atol=1e-5)


def test_square_plane_known_coverage_and_depth() -> None:
    """A fronto-parallel square covering pixels [8, 24) x [8, 24) at depth 2."""
    f, c, z = 32.0, 16.0, 2.0
    # corners at u = 8 and u = 24 exactly -> pixel centres 8.5 ... 23.5 are inside
    half = (24 - 16) / f * z
    verts = torch.tensor([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    K = torch.tensor([[f, 0, c], [0, f, c], [0, 0, 1]])  # noqa: N806
    frags = rasterize(verts[None], faces, K, 32, 32)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 8:24] = True
    assert torch.equal(frags.mask[0], expected)
    torch.testing.assert_close(frags.depth[0][expected], torch.full((256,), z))
    # shading: normal faces the camera, light from the camera -> albedo * (ambient + diffuse)
    colors = torch.tensor([0.5, 0.25, 1.0]).expand(1, 4, 3)
    rgb, alpha = shade(frags, verts[None], faces, colors, torch.tensor([0.0, 0.0, -1.0]), 0.3, 0.5)
    torch.testing.assert_close(rgb[0][expected], torch.tensor([0.4, 0.2, 0.8]).expand(256, 3))
    assert torch.equal(alpha[0] > 0, expected) and rgb[0][~expected].abs().max() == 0
    # light from the side (perpendicular to the normal): ambient only
    rgb, _ = shade(frags, verts[None], faces, colors, torch.tensor([1.0, 0.0, 0.0]), 0.3, 0.5)
    torch.testing.assert_close(rgb[0, 16, 16], torch.tensor([0.15, 0.075, 0.3]))
    # behind-the-camera and near-plane faces are dropped
    assert not rasterize(verts[None] * torch.tensor([1, 1, -1.0]), faces, K, 32, 32).mask.any()


def test_nearer_face_wins_and_batches_are_independent() -> None:
    verts = torch.tensor([[-1.0, -1, 2], [1, -1, 2], [0, 1, 2], [-1, -1, 3], [1, -1, 3], [0, 1, 3]])
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])  # the far one first
    K = torch.tensor([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]])  # noqa: N806
    batch = torch.stack([verts, verts + torch.tensor([0, 0, 100.0])])
    batch[1, :3, 2] = 200.0  # in frame 1 the first triangle is now behind
    frags = rasterize(batch, faces, K.expand(2, 3, 3), 16, 16)
    assert (frags.face_id[0][frags.mask[0]] == 1).all()
    assert (frags.face_id[1][frags.mask[1]] == 0).all()
    # the triangle is symmetric about the principal point's column: coverage too
    m = frags.mask[0]
    assert torch.equal(m[:, :8], m[:, 8:].flip(1))


def test_composite_outline_and_colors() -> None:
    fg = torch.ones(1, 4, 4, 3)
    alpha = torch.zeros(1, 4, 4)
    alpha[0, 1:3, 1:3] = 1
    out = composite(fg, alpha, np.zeros((1, 4, 4, 3), np.uint8), opacity=0.5)
    assert out[0, 1, 1, 0] == 0.5 and out[0, 0, 0, 0] == 0
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:5, 1:5] = True
    ring = outline(mask)
    assert int(ring.sum()) == 12 and not ring[0, 2:4, 2:4].any()
    assert int(outline(torch.ones(1, 5, 5, dtype=torch.bool)).sum()) == 16  # the image border counts
    c = scalar_to_colors(torch.tensor([0.0, 5.0, 10.0]))
    torch.testing.assert_close(c[0], torch.tensor([0.267, 0.005, 0.329]))
    torch.testing.assert_close(c[2], torch.tensor([0.993, 0.906, 0.144]))
    bar = colorbar(0, 30, label="mm")
    assert bar.shape == (256, 70, 3) and bar.dtype == np.uint8 and bar.std() > 10
    assert to_uint8(torch.tensor([[0.0, 0.5, 1.2]])).tolist() == [[0, 128, 255]]


def test_draw_keypoints_marks_the_points() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    kp = np.zeros((17, 3))
    kp[:, 0] = 10 + 2.5 * np.arange(17)
    kp[:, 1] = 32.5
    kp[:, 2] = 1
    kp[16, 2] = 0
    out = draw_keypoints(img, kp, "coco17", radius=1.5)
    assert out[32, 10].any() and out[32, 50].any() and not out[5, 5].any()
    assert not img.any()  # the input is untouched
    with pytest.raises(ValueError, match="coco17 needs 17"):
        draw_keypoints(img, kp[:5], "coco17")


def test_rasterize_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="vertices must be"):
        rasterize(torch.zeros(5, 3), torch.zeros(1, 3, dtype=torch.long), torch.eye(3), 4, 4)
    assert math.isinf(
        float(rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), torch.eye(3), 4, 4).depth.min())
    )
