"""Per-person exports of recovered bodies: ``.obj`` / ``.ply`` meshes, an ``.npz`` of parameters, a JSON summary.

One call per person writes (atomically, :mod:`mega.atomic`) into ``out_dir``::

    <name>.obj    the mesh (camera frame, metres), loadable by trimesh / Blender / MeshLab
    <name>.ply    the same mesh, with per-vertex colours when given (e.g. the uncertainty map)
    <name>.npz    every array of ``params`` (vertices (Q, V, 3), joints, global_rot, cam, betas, body_pose, ...)
    <name>.json   the summary dict (plain JSON values) plus the names of the files written

Meshes are the vertices given (typically the first sample, or the mean of Q samples), in the
full-image camera frame (OpenCV: x right, y down, z forward), so several people of one image keep
their relative placement when the files are opened together.

:func:`write_glb` puts the people of one image in one binary glTF scene (one node per person) for 3D
viewers, in glTF's camera frame (x right, y up, z towards the viewer): the OpenCV camera frame turned
180 degrees about x, so ``(x, y, z) -> (x, -y, -z)``; the camera sits at the origin looking down -z.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from mega.atomic import atomic_path, write_json, write_npz, write_obj

FORMATS = ("obj", "ply", "npz", "json")


def plain(value: Any) -> Any:
    """numpy / torch scalars and arrays -> JSON values (lists, floats, ints)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_ply(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> None:
    """One mesh as binary ``.ply`` (atomically).

    Args:
        vertices: (V, 3) float. faces: (F, 3) int. colors: (V, 3) RGB in [0, 1] or uint8, or None.
    """
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces), process=False)
    if colors is not None:
        c = np.asarray(colors)
        if c.dtype != np.uint8:
            c = (np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8)
        mesh.visual.vertex_colors = np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1)
    with atomic_path(path) as tmp:
        mesh.export(tmp)


def export_person(
    out_dir: str | Path,
    name: str,
    vertices: np.ndarray,
    faces: np.ndarray,
    params: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    colors: np.ndarray | None = None,
    formats: Iterable[str] = FORMATS,
) -> dict[str, Path]:
    """Write one person's files.

    Args:
        out_dir: folder (created). name: file stem, e.g. ``frame_000010_p0``.
        vertices: (V, 3) the mesh to write. faces: (F, 3).
        params: arrays for the ``.npz`` (None values are skipped; torch tensors are converted).
        summary: plain values for the ``.json`` (arrays become lists).
        colors: (V, 3) per-vertex colours for the ``.ply``.
        formats: a subset of ``obj``, ``ply``, ``npz``, ``json``.
    Returns:
        ``{format: path}`` of the files written.
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"export formats {unknown} unknown; choose from {list(FORMATS)}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"export_person: vertices (V, 3) and faces (F, 3), got {v.shape} and {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"export_person: faces index vertices 0..{int(f.max())}, but there are {len(v)}")
    out_dir = Path(out_dir)
    paths = {fmt: out_dir / f"{name}.{fmt}" for fmt in formats}
    if "obj" in paths:
        write_obj(paths["obj"], v, f)
    if "ply" in paths:
        write_ply(paths["ply"], v, f, colors)
    if "npz" in paths:
        arrays = {}
        for key, value in (params or {}).items():
            if value is None:
                continue
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arrays[key] = np.asarray(value)
        arrays.setdefault("faces", f)
        write_npz(paths["npz"], **arrays)
    if "json" in paths:
        record = {"name": name, "num_vertices": len(v), **plain(summary or {})}
        record["files"] = {fmt: p.name for fmt, p in paths.items()}
        write_json(paths["json"], record)
    return paths


OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])  # the camera frame turned 180 degrees about x


def write_glb(
    path: str | Path,
    meshes: list[np.ndarray],
    faces: np.ndarray,
    colors: list[np.ndarray] | None = None,
    names: list[str] | None = None,
) -> Path:
    """The people of one image as one binary glTF (``.glb``) scene, one node per person (atomically).

    Args:
        meshes: per person (V, 3) vertices in the OpenCV camera frame (metres); written in glTF's camera
            frame (:data:`OPENCV_TO_GLTF`, so the faces keep their outward orientation).
        faces: (F, 3) shared by all meshes.
        colors: per person (V, 3) RGB in [0, 1] or uint8, or (3,) one colour; None: grey.
        names: node and mesh names (default ``person_<i>``).
    Returns:
        ``path``.
    """
    if not meshes:
        raise ValueError("write_glb: no mesh to write")
    names = names or [f"person_{i}" for i in range(len(meshes))]
    scene = trimesh.Scene()
    for i, (verts, name) in enumerate(zip(meshes, names)):
        v = np.asarray(verts, dtype=np.float64) @ OPENCV_TO_GLTF.T
        mesh = trimesh.Trimesh(v, np.asarray(faces, dtype=np.int64), process=False)
        c = np.asarray(colors[i] if colors is not None else (0.7, 0.7, 0.7))
        if c.dtype != np.uint8:
            c = (np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8)
        c = np.broadcast_to(c.reshape(-1, 3)[: len(v)] if c.ndim == 2 else c, (len(v), 3))
        mesh.visual.vertex_colors = np.concatenate([c, np.full((len(v), 1), 255, np.uint8)], 1)
        scene.add_geometry(mesh, node_name=name, geom_name=name)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(scene.export(file_type="glb"))
    return path
