"""Synthetic SMPL-format model files for tests: random but valid, with SMPL's real sizes.

6890 vertices, 13776 faces (a closed UV sphere of 82 rings x 84 segments + 2 poles squashed to a
body-sized ellipsoid: F = 2V - 4 like SMPL), 24 joints with SMPL's kinematic tree, 10 betas,
207 pose blend shapes. Written both as a chumpy-style ``.pkl`` (``v_template`` and ``shapedirs``
pickled as ``chumpy.ch.Ch`` objects, ``J_regressor`` as a scipy sparse matrix, root parent
4294967295, as in the official files) and as ``.npz``, so tests exercise the real ``smpl`` loading
path without the licensed files. Nothing here resembles SMPL's actual shape space.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from mega.body.joints import SMPL_PARENTS

NUM_VERTICES, NUM_FACES = 6890, 13776
_RINGS, _SEGMENTS = 82, 84

# Approximate rest joints of a T-posed adult (metres, y up, facing +z, left on +x).
REST_JOINTS = np.array(
    [
        [0.0, -0.22, 0.02],
        [0.06, -0.31, 0.01],
        [-0.06, -0.31, 0.01],
        [0.0, -0.11, -0.01],
        [0.10, -0.69, 0.01],
        [-0.10, -0.69, 0.01],
        [0.0, 0.03, 0.01],
        [0.09, -1.09, -0.03],
        [-0.09, -1.09, -0.03],
        [0.0, 0.09, 0.03],
        [0.12, -1.15, 0.09],
        [-0.12, -1.15, 0.09],
        [0.0, 0.29, -0.01],
        [0.07, 0.20, 0.0],
        [-0.07, 0.20, 0.0],
        [0.0, 0.35, 0.05],
        [0.17, 0.23, -0.01],
        [-0.17, 0.23, -0.01],
        [0.43, 0.21, -0.03],
        [-0.43, 0.21, -0.03],
        [0.68, 0.22, -0.03],
        [-0.68, 0.22, -0.03],
        [0.77, 0.21, -0.04],
        [-0.77, 0.21, -0.04],
    ]
)

_GENDER_FILES = {"neutral": "SMPL_NEUTRAL", "male": "SMPL_MALE", "female": "SMPL_FEMALE"}


def _uv_sphere() -> tuple[np.ndarray, np.ndarray]:
    """Closed UV sphere: (6890, 3) unit vertices and (13776, 3) outward-wound faces."""
    theta = np.linspace(0, np.pi, _RINGS + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, _SEGMENTS, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]])
    top, bottom = 0, len(verts) - 1
    faces = []
    idx = lambda r, s: 1 + r * _SEGMENTS + s % _SEGMENTS  # noqa: E731
    for s in range(_SEGMENTS):
        faces.append([top, idx(0, s + 1), idx(0, s)])
        faces.append([bottom, idx(_RINGS - 1, s), idx(_RINGS - 1, s + 1)])
        for r in range(_RINGS - 1):
            a, b, c, d = idx(r, s), idx(r, s + 1), idx(r + 1, s), idx(r + 1, s + 1)
            faces += [[a, b, d], [a, d, c]]
    return verts, np.asarray(faces)


def synthetic_smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random but valid SMPL-format arrays with SMPL's sizes (see module docstring)."""
    rng = np.random.default_rng(seed)
    unit, faces = _uv_sphere()
    v_template = unit * np.array([0.8, 0.72, 0.13]) + np.array([0.0, -0.38, 0.0])
    v_template += rng.normal(0, 0.002, v_template.shape)
    d2 = ((v_template[:, None] - REST_JOINTS[None]) ** 2).sum(-1)  # (V, 24)
    logits = -d2 / 0.01
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    nearest = np.argsort(d2, axis=0)[:30]  # (30, 24)
    rows = np.repeat(np.arange(24), 30)
    j_regressor = scipy.sparse.csc_matrix(
        (np.full(24 * 30, 1 / 30), (rows, nearest.T.reshape(-1))), shape=(24, NUM_VERTICES)
    )
    kintree = np.stack([np.array(SMPL_PARENTS, dtype=np.int64), np.arange(24)])
    kintree[0, 0] = 4294967295
    return {
        "v_template": v_template.astype(np.float64),
        "shapedirs": rng.normal(0, 0.01, (NUM_VERTICES, 3, 10)),
        "posedirs": rng.normal(0, 0.002, (NUM_VERTICES, 3, 207)).astype(np.float32),
        "J_regressor": j_regressor,
        "weights": weights.astype(np.float64),
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
    }


def _chumpy_modules() -> tuple[type, dict[str, types.ModuleType]]:
    """A stand-in ``chumpy.ch.Ch`` class importable by name, so pickles reference chumpy."""
    ch_mod = types.ModuleType("chumpy.ch")
    root = types.ModuleType("chumpy")
    cls = type("Ch", (), {"__module__": "chumpy.ch"})
    ch_mod.Ch = cls
    root.ch = ch_mod
    return cls, {"chumpy": root, "chumpy.ch": ch_mod}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
    os.replace(tmp, path)


def write_synthetic_smpl(
    folder: str | Path, seed: int = 0, genders=("neutral", "male", "female")
) -> dict[str, Path]:
    """Write ``SMPL_{NEUTRAL,MALE,FEMALE}.pkl`` (chumpy-style) and ``.npz`` into ``folder``.

    Args:
        folder: output folder (created).
        seed: base seed; each gender gets its own arrays.
        genders: which files to write.
    Returns:
        gender -> path of the ``.pkl`` file (the ``.npz`` sits beside it with the same stem).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, gender in enumerate(genders):
        arrays = synthetic_smpl_arrays(seed * 10 + i)
        stem = folder / _GENDER_FILES[gender]
        npz = {k: (v.toarray() if scipy.sparse.issparse(v) else v) for k, v in arrays.items()}
        _atomic_write(stem.with_suffix(".npz"), lambda fh, a=npz: np.savez(fh, **a))
        ch_cls, modules = _chumpy_modules()
        pkl = dict(arrays)
        for key in ("v_template", "shapedirs"):
            obj = ch_cls.__new__(ch_cls)
            obj.__dict__.update({"x": arrays[key]})
            pkl[key] = obj
        saved = {k: sys.modules.get(k) for k in modules}
        sys.modules.update(modules)
        try:
            _atomic_write(stem.with_suffix(".pkl"), lambda fh, a=pkl: pickle.dump(a, fh, protocol=2))
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v
        out[gender] = stem.with_suffix(".pkl")
    return out
