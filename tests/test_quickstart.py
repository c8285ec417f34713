"""`make quickstart`'s script: poses a body and exports loadable meshes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import trimesh

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_exports_meshes(tmp_path, synthetic_smpl_dir):
    cmd = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "body_model=smpl",
           f"body_model.path={synthetic_smpl_dir}", "num_random=2", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    meshes = tmp_path / "meshes"
    objs = sorted(p.stem for p in meshes.glob("*.obj"))
    assert objs == ["arms_down", "knee_bend", "random_0", "random_1", "sitting", "t_pose"]
    data = np.load(meshes / "meshes.npz")
    assert data["vertices"].shape == (6, 6890, 3)
    mesh = trimesh.load(meshes / "knee_bend.obj", process=False)
    i = list(data["names"]).index("knee_bend")
    np.testing.assert_allclose(mesh.vertices, data["vertices"][i], atol=1e-5)
    assert not np.allclose(data["vertices"][i], data["vertices"][list(data["names"]).index("t_pose")])
