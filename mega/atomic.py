"""Atomic file writes: everything goes to a temporary file beside the destination, then one rename.

A crash or an error half-way never leaves a truncated file and never destroys the previous version:
the destination only ever holds a complete old file or a complete new one. Scripts write their
results (JSON summaries, meshes, npz arrays, CSVs) through these helpers; :func:`read_json_object` reads
such a file back (a manifest) with an error that names it when it was damaged.

    with atomic_path(out / "meshes.npz") as tmp:   # tmp ends in ".npz", as numpy and trimesh expect
        np.savez(tmp, vertices=v)
    write_json(out / "summary.json", summary)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import trimesh


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write instead of ``path``; renamed onto ``path`` if the block succeeds.

    The temporary file lives in the destination's folder (created if needed), so the rename stays on
    one file system, and ends with the destination's suffix (``np.savez`` and ``trimesh`` pick the
    format from it). On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Read a JSON object (a manifest) written by :func:`write_json`; ``error`` names the file otherwise.

    The reading counterpart for files that a crash, a disk error or an editor may have damaged.

    Raises:
        error: the file is unreadable, not UTF-8, not JSON, or not a JSON object; the message names it.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise error(
            f"{path}: not a readable JSON file ({type(err).__name__}: {err}); delete it or restore it"
        ) from err
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}; delete it or restore it")
    return data


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays with ``np.savez`` atomically (``path`` should end in ``.npz``)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write one mesh, (V, 3) vertices and (F, 3) faces, as a Wavefront ``.obj`` atomically."""
    with atomic_path(path) as tmp:
        trimesh.Trimesh(vertices, faces, process=False).export(tmp)
