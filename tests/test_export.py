"""mega.export: per-person .obj / .ply / .npz / .json round trips, colours, and clear errors; the demo's
picture helpers (mega.viz.views): overlays land where the camera projects, side views fit the panel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from mega.export import export_person, plain
from mega.viz import project_vertices
from mega.viz.views import hstack, label, overlay, scaled_colorbar, side_view, vstack


def _tetra():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) + [0.1, -0.2, 3.0]
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def test_every_format_round_trips(tmp_path):
    v, f = _tetra()
    colors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    params = {"vertices": torch.tensor(v[None]), "betas": np.arange(10.0), "skipped": None}
    paths = export_person(
        tmp_path / "out", "img_p0", v, f, params, {"score": np.float32(0.5), "box": np.ones(4)}, colors
    )
    assert sorted(paths) == ["json", "npz", "obj", "ply"] and all(p.is_file() for p in paths.values())
    obj = trimesh.load(paths["obj"], process=False)
    np.testing.assert_allclose(obj.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(obj.faces, f)
    ply = trimesh.load(paths["ply"], process=False)
    np.testing.assert_allclose(ply.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(ply.visual.vertex_colors[:, :3], (colors * 255 + 0.5).astype(np.uint8))
    data = np.load(paths["npz"])
    assert set(data.files) == {"vertices", "betas", "faces"} and data["vertices"].shape == (1, 4, 3)
    meta = json.loads(paths["json"].read_text())
    assert meta["num_vertices"] == 4 and meta["score"] == 0.5 and meta["box"] == [1.0] * 4
    assert meta["files"] == {
        "obj": "img_p0.obj",
        "ply": "img_p0.ply",
        "npz": "img_p0.npz",
        "json": "img_p0.json",
    }
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_subset_of_formats_and_errors(tmp_path):
    v, f = _tetra()
    assert list(export_person(tmp_path, "a", v, f, formats=["obj"])) == ["obj"]
    assert not (tmp_path / "a.ply").exists()
    with pytest.raises(ValueError, match=r"export formats \['stl'\] unknown"):
        export_person(tmp_path, "b", v, f, formats=["obj", "stl"])
    with pytest.raises(ValueError, match=r"vertices \(V, 3\) and faces \(F, 3\)"):
        export_person(tmp_path, "c", v[:, :2], f)
    with pytest.raises(ValueError, match="faces index vertices 0..4, but there are 4"):
        export_person(tmp_path, "d", v, f + 1)


def test_plain_makes_json_values():
    out = plain({"a": torch.ones(2), "b": (np.int64(3), np.zeros((1, 2))), 1: "x"})
    assert out == {"a": [1.0, 1.0], "b": [3, [[0.0, 0.0]]], "1": "x"}
    json.dumps(out)


def _box_mesh(center, size=0.4):
    """A closed cube (8 vertices, 12 triangles) at ``center`` (camera frame)."""
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float32) * size / 2
    hull = trimesh.convex.convex_hull(c)
    return torch.tensor(hull.vertices + center, dtype=torch.float32), torch.tensor(hull.faces)


def test_overlay_covers_the_projected_mesh_and_nothing_far_from_it():
    verts, faces = _box_mesh([0.2, 0.1, 3.0])
    K = torch.tensor([[200.0, 0, 80], [0, 200.0, 60], [0, 0, 1]])  # noqa: N806
    image = np.zeros((120, 160, 3), np.uint8)
    out = overlay(image, verts[None], faces, K)
    covered = out.sum(-1) > 0
    uv = project_vertices(verts[None], K[None])[0].numpy()
    lo, hi = uv.min(0), uv.max(0)
    centre = ((lo + hi) / 2).astype(int)
    assert covered[centre[1], centre[0]]
    ys, xs = np.nonzero(covered)
    assert xs.min() >= lo[0] - 1 and xs.max() <= hi[0] + 1 and ys.min() >= lo[1] - 1 and ys.max() <= hi[1] + 1


def test_side_view_fits_two_people_and_shows_depth():
    a, faces = _box_mesh([0.0, 0.0, 3.0])
    b, _ = _box_mesh([0.0, 0.0, 5.0])  # 2 m behind the first: side by side in a side view
    side = side_view(torch.stack([a, b]), faces, 100, 200)
    mask = (side < 250).any(-1)
    cols = np.nonzero(mask.any(0))[0]
    assert 0 < cols.min() and cols.max() < 199  # framed with a margin
    assert not mask[:, (cols.min() + cols.max()) // 2].any()  # a gap between the two: depth shows
    front = side_view(torch.stack([a, b]), faces, 100, 200, yaw_deg=0.0)
    front_cols = np.nonzero((front < 250).any(-1).any(0))[0]
    assert (front_cols.max() - front_cols.min()) < (cols.max() - cols.min())  # overlapping from the front


def test_panels_stack_and_label():
    a = np.zeros((50, 80, 3), np.uint8)
    b = np.zeros((100, 40, 3), np.uint8)
    row = hstack([a, b], height=50, gap=4)
    assert row.shape == (50, 80 + 4 + 20, 3)
    grid = vstack([row, a])
    assert grid.shape == (104, 104, 3) and (grid[54:, 80:] == 255).all()
    assert (label(a, "x")[:5, :5] == 255).any() and not label(a, "x")[-1].any()
    assert scaled_colorbar(0, 10, 600, 96, "mm").shape == (600, 96, 3)
