"""tools/rotation_by_facing.py: facing angles of known orientations and the per-bucket table."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "rotation_by_facing.py"
spec = importlib.util.spec_from_file_location("rotation_by_facing", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_facing_angles_of_known_orientations():
    # SMPL's body faces +z; the camera looks along +z from the origin, the person 5 m ahead
    yaw = np.array([0.0, math.pi, math.pi / 2, -math.pi / 3])
    orient = np.stack([np.zeros(4), yaw, np.zeros(4)], axis=1)  # rotations about the vertical (y) axis
    ahead = np.tile([0.0, 0.0, 5.0], (4, 1))
    np.testing.assert_allclose(tool.facing_angles(orient, ahead), [180.0, 0.0, 90.0, 120.0], atol=1e-9)
    np.testing.assert_allclose(tool.facing_angles(orient, None), [180.0, 0.0, 90.0, 120.0], atol=1e-9)
    # off the optical axis the direction to the camera is the pelvis ray: a person at 45 degrees to the
    # right (x = z) turned to face the origin (yaw 180 + 45 degrees) faces the camera exactly
    turned = np.array([[0.0, math.pi + math.pi / 4, 0.0]])
    assert tool.facing_angles(turned, np.array([[5.0, 0.0, 5.0]]))[0] == pytest.approx(0.0, abs=1e-9)
    assert tool.facing_angles(turned, None)[0] == pytest.approx(45.0, abs=1e-9)


def test_breakdown_and_the_command(tmp_path, capsys):
    err = np.array([10.0, 170.0, 20.0, 30.0, 100.0])
    facing = np.array([5.0, 50.0, 90.0, 150.0, 180.0])
    rows = tool.breakdown(err, facing)
    assert [r["n"] for r in rows] == [2, 1, 2]
    assert rows[0]["mean"] == pytest.approx(90.0) and rows[0]["flips"] == pytest.approx(50.0)
    assert rows[2]["median"] == pytest.approx(65.0) and rows[2]["to"] == 180.0
    # the command: a per_sample.csv of two rows of a three-row npz
    yaw = np.array([0.0, math.pi, math.pi / 2])
    pose = np.zeros((3, 72))
    pose[:, 1] = yaw
    S = np.zeros((3, 24, 4))
    S[:, 0, 2] = 4.0
    np.savez(tmp_path / "test.npz", pose=pose, S=S)
    (tmp_path / "per_sample.csv").write_text("index,image,rot_err_deg\n1,a.jpg,150.0\n2,b.jpg,12.0\n")
    assert tool.main([str(tmp_path / "per_sample.csv"), str(tmp_path / "test.npz")]) == 0
    out = capsys.readouterr().out
    assert "| 0-60 | 1 | 150.0 | 150.0 | 100.0 % |" in out and "| 60-120 | 1 | 12.0 | 12.0 | 0.0 % |" in out
    (tmp_path / "bad.csv").write_text("index,pve\n0,1.0\n")
    with pytest.raises(SystemExit, match="no rot_err_deg column"):
        tool.main([str(tmp_path / "bad.csv"), str(tmp_path / "test.npz")])
