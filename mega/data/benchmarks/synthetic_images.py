"""The embedded image benchmark as an evaluation index: the generated ``synthetic_images`` test split.

The images and labels are written by :mod:`mega.data.images.synthetic` (first use generates them); this
reads one split's npz into a :class:`BenchmarkIndex` like the 3DPW and EMDB readers do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mega.data.benchmarks.index import BenchmarkIndex
from mega.data.errors import MissingFileError
from mega.data.images.synthetic import ensure_synthetic_images, plain_options

log = logging.getLogger(__name__)


def build_synthetic_index(
    root: str | Path = "data/synthetic_images",
    split: str = "test",
    subset: str = "all",
    generate: Mapping[str, Any] | None = None,
    body_model: str = "free",
    body_model_path: str | None = None,
) -> BenchmarkIndex:
    """The benchmark index of one split (generated first if needed); ground truth is the free body's.

    Args:
        root: the image set's folder (image paths in the index are relative to it).
        split: ``test`` (the benchmark), ``val`` or ``train``. subset: ``all``, ``occluded`` (occluder
            over >= 10 % of the body's pixels) or ``truncated`` (>= 10 % of the vertices outside).
        generate: :func:`ensure_synthetic_images` options. body_model, body_model_path: ignored (the
            labels are already in the camera frame; score with ``body_model=free``).
    """
    if body_model != "free":
        log.warning(
            "synthetic_images ground truth is the free body; evaluate it with body_model=free, not %s",
            body_model,
        )
    root = Path(root)
    ensure_synthetic_images(root, **dict(plain_options(generate) or {}))
    path = root / f"{split}.npz"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: the image set at {root} has no split '{split}'")
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}
    keep = {
        "all": np.ones(len(a["imgname"]), bool),
        "occluded": a["occlusion"] >= 0.1,
        "truncated": a["truncation"] >= 0.1,
    }
    if subset not in keep:
        raise ValueError(f"unknown synthetic_images subset '{subset}' (expected {sorted(keep)})")
    m = keep[subset]
    row = {
        "image": a["imgname"][m],
        "sequence": a["sequence"][m],
        "frame": a["frame"][m],
        "person": np.zeros(int(m.sum()), np.int64),
        "gender": a["gender"][m],
        "global_orient": a["pose"][m, :3],
        "body_pose": a["pose"][m, 3:],
        "betas": a["shape"][m],
        "transl": a["trans"][m],
        "bbox_center": a["center"][m],
        "bbox_size": a["scale"][m] * 200,
        "cam_intrinsics": a["cam_int"][m],
        "image_size": a["img_size"][m],
    }
    return BenchmarkIndex.from_rows("synthetic_images", split, subset, [row])
