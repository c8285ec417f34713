"""The compact benchmark index shared by the 3DPW and EMDB readers, and a torch Dataset over it.

``scripts/prepare_data.py`` reads a benchmark's own files once (slow: pickles, image headers) and
writes one ``.npz`` index; evaluation loads that in milliseconds. Each row is one person in one
image. The image path is built from the row's own sequence and frame id, in the same loop that
reads that frame's pose, so images and ground truth cannot drift apart.

Index fields (N rows):

==============  ============  ==========================================================
field           dtype/shape   meaning
==============  ============  ==========================================================
image           str (N,)      image path relative to the dataset root
sequence        str (N,)      sequence id
frame           int64 (N,)    image frame index in the sequence
person          int64 (N,)    person index in the sequence (3DPW has 1 or 2)
gender          str (N,)      ``male`` / ``female`` / ``neutral``
global_orient   f32 (N, 3)    axis-angle root orientation, camera frame (OpenCV)
body_pose       f32 (N, 69)   axis-angle, 23 joints
betas           f32 (N, 10)
transl          f32 (N, 3)    camera-frame translation (SMPL's ``transl`` argument), metres
bbox_center     f32 (N, 2)    pixels
bbox_size       f32 (N,)      side of the square box, pixels (margin included)
cam_intrinsics  f32 (N, 3, 3)
image_size      int64 (N, 2)  (width, height) pixels
==============  ============  ==========================================================

Metadata: ``dataset``, ``split``, ``subset``, ``format_version``.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mega.data.errors import BenchmarkError, MissingFileError
from mega.safe_pickle import UnsafePickleError, load_pickle

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

# field -> (numpy dtype kind, trailing shape)
FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "image": ("U", ()),
    "sequence": ("U", ()),
    "frame": ("i", ()),
    "person": ("i", ()),
    "gender": ("U", ()),
    "global_orient": ("f", (3,)),
    "body_pose": ("f", (69,)),
    "betas": ("f", (10,)),
    "transl": ("f", (3,)),
    "bbox_center": ("f", (2,)),
    "bbox_size": ("f", ()),
    "cam_intrinsics": ("f", (3, 3)),
    "image_size": ("i", (2,)),
}
GENDERS = ("male", "female", "neutral")


def read_pickle(path: Path) -> dict[str, Any]:
    """Load a benchmark pickle (Python-2 pickles need latin1; it is harmless for Python-3 ones).

    Only data classes are unpickled (:mod:`mega.safe_pickle`); anything else raises ``UnsafePickleError``.
    """
    if not path.is_file():
        raise MissingFileError(f"annotation file not found: {path}")
    try:
        data = load_pickle(path)  # restricted: a crafted file is refused before anything in it runs
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, MemoryError) as err:
        raise BenchmarkError(
            f"{path}: truncated or corrupt pickle ({type(err).__name__}: {err}); download it again"
        ) from err
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return data


def require(data: dict[str, Any], field: str, path: Path) -> Any:
    """``data[field]`` with dotted access (``camera.extrinsics``); a clear error if absent."""
    node: Any = data
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BenchmarkError(f"{path}: missing field '{field}'")
        node = node[part]
    return node


def as_array(
    value: Any, field: str, path: Path, shape: Sequence[int | None], dtype: type = np.float64
) -> np.ndarray:
    """``value`` as an array of the given shape (None = any size); a clear error otherwise."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(f"{path}: field '{field}' is not numeric ({err})") from err
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise BenchmarkError(f"{path}: field '{field}' has shape {arr.shape}, expected {want}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BenchmarkError(f"{path}: field '{field}' contains NaN or inf")
    return arr


def square_bbox(xy_min: np.ndarray, xy_max: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Square box around axis-aligned extents: centre and side ``margin * max(w, h)``.

    Args:
        xy_min: (N, 2) minimum x, y. xy_max: (N, 2) maximum x, y. margin: e.g. 1.2.
    Returns:
        centre (N, 2) and side (N,), pixels.
    """
    center = (xy_min + xy_max) / 2
    size = margin * (xy_max - xy_min).max(axis=-1)
    return center, size


def world_to_camera(
    global_orient: np.ndarray, transl: np.ndarray, extrinsics: np.ndarray, rest_pelvis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move SMPL parameters from the world frame into the camera frame.

    SMPL rotates about its rest pelvis ``J0(beta)``, so with ``X_cam = R X_w + t``:
    ``orient_cam = R orient_w`` and ``transl_cam = R (J0 + transl_w) + t - J0``.

    Args:
        global_orient: (N, 3) world axis-angle. transl: (N, 3) world translation.
        extrinsics: (N, 4, 4) world -> camera. rest_pelvis: (N, 3) ``J0(beta)`` of the GT body.
    Returns:
        camera-frame global_orient (N, 3) and transl (N, 3), float64.
    """
    from mega.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    rot, t = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    root = axis_angle_to_matrix(torch.from_numpy(global_orient).double())
    orient = matrix_to_axis_angle(torch.from_numpy(rot).double() @ root).numpy()
    transl_cam = np.einsum("nij,nj->ni", rot, rest_pelvis + transl) + t - rest_pelvis
    return orient, transl_cam


def make_body_factory(name: str = "smpl", path: str | Path | None = None) -> Callable[[str], Any]:
    """A cached ``gender -> body model`` function for ground truth (and predictions).

    Args:
        name: body-model registry name (``smpl`` or ``free``; ``free`` ignores the gender).
        path: model file or folder for ``smpl``; None for the default location.
    Returns:
        Callable mapping ``neutral`` / ``male`` / ``female`` to a body model, built once per gender.
    """
    from mega.body import load_body_model

    kwargs = {} if path is None else {"path": path}

    @functools.cache
    def factory(gender: str) -> Any:
        if gender not in GENDERS:
            raise ValueError(f"unknown gender '{gender}' (expected one of {GENDERS})")
        return load_body_model(name, gender=gender, **kwargs)

    return factory


def rest_pelvis_fn(
    body_factory: Callable[[str], Any], chunk: int = 512
) -> Callable[[np.ndarray, str], np.ndarray]:
    """``(betas (N, 10), gender) -> J0(beta) (N, 3)``: the rest pelvis of each sample's GT body."""

    def pelvis(betas: np.ndarray, gender: str) -> np.ndarray:
        body = body_factory(gender)
        out = []
        with torch.no_grad():
            for start in range(0, len(betas), chunk):
                b = torch.as_tensor(betas[start : start + chunk], dtype=torch.float32)
                eye = torch.eye(3).expand(
                    len(b), 3, 3
                )  # matrices: a (3, 3) axis-angle batch reads as one matrix
                out.append(
                    body(global_orient=eye, body_pose=b.new_zeros(len(b), 23, 3), betas=b).joints[:, 0]
                )
        return torch.cat(out).double().numpy() if out else np.zeros((0, 3))

    return pelvis


@dataclass
class BenchmarkIndex:
    """Columns of a prepared benchmark (see the module docstring for the fields)."""

    dataset: str
    split: str
    subset: str
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["frame"])

    def validate(self, source: str | Path = "<memory>") -> BenchmarkIndex:
        """Check every field's presence, dtype, shape and finiteness; returns self."""
        n = None
        for field, (kind, trailing) in FIELDS.items():
            if field not in self.arrays:
                raise BenchmarkError(
                    f"{source}: index misses field '{field}'; run scripts/prepare_data.py again"
                )
            arr = self.arrays[field]
            n = len(arr) if n is None else n
            if arr.dtype.kind != kind or arr.shape != (n, *trailing):
                raise BenchmarkError(
                    f"{source}: index field '{field}' is {arr.dtype}{arr.shape}, expected kind '{kind}' shape "
                    f"({n}, {', '.join(map(str, trailing))})"
                )
            if kind == "f" and not np.isfinite(arr).all():
                raise BenchmarkError(f"{source}: index field '{field}' contains NaN or inf")
        bad = sorted(set(self.arrays["gender"].tolist()) - set(GENDERS))
        if bad:
            raise BenchmarkError(f"{source}: index field 'gender' has unknown values {bad}")
        return self

    @classmethod
    def from_rows(
        cls, dataset: str, split: str, subset: str, parts: list[dict[str, np.ndarray]]
    ) -> BenchmarkIndex:
        """Concatenate per-sequence column dicts and cast them to the index dtypes."""
        arrays = {}
        for field, (kind, trailing) in FIELDS.items():
            cols = [p[field] for p in parts]
            if not cols:
                arr = np.zeros((0, *trailing))
            else:
                arr = np.concatenate([np.asarray(c).reshape(-1, *trailing) for c in cols])
            arrays[field] = arr.astype({"U": np.str_, "i": np.int64, "f": np.float32}[kind])
        return cls(dataset, split, subset, arrays).validate()

    def save(self, path: str | Path) -> Path:
        """Validate, then write the index as ``.npz`` atomically (temp file + rename)."""
        self.validate()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"dataset": self.dataset, "split": self.split, "subset": self.subset}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    format_version=np.int64(FORMAT_VERSION),
                    **{f"meta_{k}": np.str_(v) for k, v in meta.items()},
                    **self.arrays,
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkIndex:
        """Read and validate an index written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"benchmark index not found: {path}; build it with "
                "`python scripts/prepare_data.py benchmark=3dpw|emdb benchmark.root=...`"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                raw = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise BenchmarkError(
                f"{path}: unreadable index ({err}); run scripts/prepare_data.py again"
            ) from err
        version = int(raw.pop("format_version", -1))
        if version != FORMAT_VERSION:
            raise BenchmarkError(
                f"{path}: index format {version}, expected {FORMAT_VERSION}; prepare it again"
            )
        meta = {k[5:]: str(raw.pop(k)) for k in list(raw) if k.startswith("meta_")}
        for key in ("dataset", "split", "subset"):
            if key not in meta:
                raise BenchmarkError(f"{path}: index misses field 'meta_{key}'")
        return cls(meta["dataset"], meta["split"], meta["subset"], raw).validate(path)


class BenchmarkDataset(Dataset):
    """One item per index row: ground truth and metadata, plus the image crop if asked for.

    Args:
        index: a :class:`BenchmarkIndex` or the path of a saved one.
        root: dataset root the image paths are relative to (needed only with ``image_transform``).
        image_transform: ``(PIL image, item) -> (3, H, W) tensor`` (e.g. a crop around
            ``item['bbox_center']``); if given, the item gets ``img``. None: images are not opened.
    """

    def __init__(
        self,
        index: BenchmarkIndex | str | Path,
        root: str | Path | None = None,
        image_transform: Callable[[Any, dict[str, Any]], Tensor] | None = None,
    ) -> None:
        self.index = index if isinstance(index, BenchmarkIndex) else BenchmarkIndex.load(index)
        self.root = Path(root) if root is not None else None
        self.image_transform = image_transform
        if image_transform is not None and self.root is None:
            raise ValueError("BenchmarkDataset: image_transform needs the dataset root")

    @property
    def name(self) -> str:
        """``dataset`` (``split``, ``subset``) for tables and file names."""
        return f"{self.index.dataset} ({self.index.split}, {self.index.subset})"

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item ``i``: ``index`` int, ``image``/``sequence``/``gender`` str, ``frame``/``person`` int,
        ``global_orient`` (3,), ``body_pose`` (69,), ``betas`` (10,), ``transl`` (3,), ``bbox_center``
        (2,), ``bbox_size`` (), ``cam_intrinsics`` (3, 3), ``image_size`` (2,), and ``img`` if asked."""
        a = self.index.arrays
        item: dict[str, Any] = {"index": i}
        for field, (kind, _) in FIELDS.items():
            value = a[field][i]
            if kind == "U":
                item[field] = str(value)
            elif kind == "i" and value.ndim == 0:
                item[field] = int(value)
            else:
                item[field] = torch.from_numpy(np.array(value))
        if self.image_transform is not None:
            from PIL import Image

            path = self.root / item["image"]
            if not path.is_file():
                raise MissingFileError(
                    f"image not found: {path} (sequence {item['sequence']}, frame {item['frame']})"
                )
            try:
                with Image.open(path) as img:
                    rgb = img.convert("RGB")
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                raise BenchmarkError(
                    f"cannot read image {path} ({err}); evaluation skips no sample: restore the file"
                ) from err
            item["img"] = self.image_transform(rgb, item)
        return item
