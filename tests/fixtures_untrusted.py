"""Crafted data files whose pickles run a shell command when unpickled naively (tests and benchmarks).

Each writer puts a :class:`Payload` inside a file of one user-supplied format, the way someone could
post a "SMPL_NEUTRAL.pkl" or a dataset shard: unpickling it with plain ``pickle`` runs
``touch <marker>``. A safe reader refuses the file and the marker is never created.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import tarfile
from pathlib import Path

import numpy as np
from fixtures_benchmarks import write_py2_pickle
from fixtures_images import write_npz_dataset


class Payload:
    """Unpickled by plain ``pickle``, this calls ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def crafted_smpl(folder: Path, marker: Path) -> Path:
    """An SMPL ``.pkl`` (Python-2 protocol) with the payload as its first entry."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"payload": Payload(marker), "f": np.zeros((1, 3), np.uint32)}, protocol=2))
    return path


def crafted_3dpw(folder: Path, marker: Path) -> Path:
    """A 3DPW ``sequenceFiles/test/<sequence>.pkl``: a Python-2 pickle whose ``genders`` is the payload."""
    path = folder / "sequenceFiles" / "test" / "downtown_crafted_00.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_py2_pickle({"sequence": "downtown_crafted_00", "genders": Payload(marker)}, path)
    return path


def crafted_shard(folder: Path, marker: Path) -> Path:
    """A 4D-Humans webdataset shard whose one sample's ``data.pyd`` holds the payload."""
    path = folder / "000000.tar"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("sample0000.jpg", b"\xff\xd8\xff\xd9"),
            ("sample0000.data.pyd", pickle.dumps([Payload(marker)])),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def crafted_npz(folder: Path, marker: Path) -> Path:
    """An image-label npz (the fixture's keys) whose ``imgname`` is an object array holding the payload."""
    write_npz_dataset(folder, n=2)
    path = folder / "ours.npz"
    with np.load(path) as f:
        keys = {k: f[k] for k in f.files}
    keys["imgname"] = np.array([Payload(marker), "images/ours_001.png"], dtype=object)
    np.savez(path, **keys)
    return path


CRAFTED = {
    "SMPL .pkl": crafted_smpl,
    "3DPW .pkl": crafted_3dpw,
    "shard data.pyd": crafted_shard,
    "npz object array": crafted_npz,
}


def read_with_project_reader(kind: str, path: Path) -> None:
    """Read a file of format ``kind`` (a key of :data:`CRAFTED`) the way the project reads it."""
    if kind == "SMPL .pkl":
        from mega.body.model_files import read_model_file

        read_model_file(path)
    elif kind == "3DPW .pkl":
        from mega.data.benchmarks.threedpw import read_sequence

        read_sequence(path, path.parents[2], margin=1.2, pelvis_fn=None)
    elif kind == "shard data.pyd":
        from mega.data.images.shards import ImageShardDataset

        next(iter(ImageShardDataset([str(path)], shuffle_buffer=0, shuffle_shards=False)))
    elif kind == "npz object array":
        from mega.data.images.npz import read_image_npz

        read_image_npz(path)
    else:
        raise KeyError(kind)
