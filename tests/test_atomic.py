"""Atomic writes: complete files or the old file, never a half-written one, and no temporary left over."""

import json

import numpy as np
import pytest
import trimesh

from mega.atomic import atomic_path, write_json, write_npz, write_obj, write_text


def test_round_trips_and_no_temporary_files(tmp_path):
    write_json(tmp_path / "a" / "s.json", {"x": [1, 2.5], "name": "pve"})  # creates the folder
    assert json.loads((tmp_path / "a" / "s.json").read_text()) == {"x": [1, 2.5], "name": "pve"}
    write_text(tmp_path / "t.csv", "a,b\r\n1,2\r\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n1,2\r\n"  # newlines kept as given (CSV)
    v = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    write_npz(tmp_path / "m.npz", vertices=v)
    with np.load(tmp_path / "m.npz") as f:
        assert np.array_equal(f["vertices"], v)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    write_obj(tmp_path / "m.obj", v, faces)
    mesh = trimesh.load(tmp_path / "m.obj", process=False)
    assert np.allclose(mesh.vertices, v, atol=1e-6) and np.array_equal(mesh.faces, faces)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["a/s.json", "m.npz", "m.obj", "t.csv"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"version": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".json") and tmp != path
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with pytest.raises(TypeError):  # not JSON-serialisable: nothing written at all
        write_json(tmp_path / "new.json", {"x": object()})
    assert not (tmp_path / "new.json").exists() and len(list(tmp_path.iterdir())) == 1
