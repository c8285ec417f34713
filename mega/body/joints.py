"""Joint sets and their names: SMPL-24, H36M-17, LSP-14, COCO-17; the H36M regressor.

Index constants live here and nowhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# Mirror permutation of the 24 joints (left <-> right).
SMPL_FLIP = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
SMPL_HIPS = (1, 2)  # mid-hip pelvis (EMDB, smpl24 protocols)

# Rows of J_regressor_h36m.npy; left limbs come first (verified on the real file, see notes).
H36M_JOINT_NAMES = (
    "pelvis", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle", "spine",
    "thorax", "jaw", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
    "right_wrist",
)  # fmt: skip
H36M_PELVIS = 0

# LSP-14 order (R ankle ... L wrist, neck, head top) and where each comes from in H36M-17.
LSP14_JOINT_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)  # fmt: skip
H36M_TO_LSP14 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10]

COCO17_JOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

log = logging.getLogger(__name__)
ROW_SUM_TOLERANCE = 1e-3  # above this, loading the H36M regressor warns

H36M_REGRESSOR_HELP = (
    "J_regressor_h36m.npy (17 x 6890, derived from SMPL, so not shipped) comes with SPIN's data "
    "(http://visiondata.cis.upenn.edu/spin/data.tar.gz) or mmhuman3d; put it at "
    "data/body_models/J_regressor_h36m.npy (see data/README.md)."
)


def load_h36m_regressor(path: str | Path, num_vertices: int = 6890) -> Tensor:
    """Load the H36M joint regressor.

    Args:
        path: ``J_regressor_h36m.npy``.
        num_vertices: the body's vertex count (checked).
    Returns:
        (17, V) float32 tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"H36M regressor not found: {path}. {H36M_REGRESSOR_HELP}")
    try:
        reg = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read H36M regressor {path}: {err}. {H36M_REGRESSOR_HELP}") from err
    if reg.shape != (17, num_vertices):
        raise ValueError(f"{path}: expected shape (17, {num_vertices}), got {reg.shape}")
    if not np.isfinite(reg).all():
        raise ValueError(f"{path}: contains NaN or inf")
    check_row_sums(reg, str(path))
    return torch.as_tensor(np.ascontiguousarray(reg), dtype=torch.float32)


def check_row_sums(reg: np.ndarray, name: str, root: int = H36M_PELVIS) -> float:
    """Say how far a joint regressor's rows sum from 1, and what that costs; returns max |1 - sum|.

    A row summing to s_j maps a body translated by t to ``J_j + s_j t``: after subtracting the root
    joint, ``(s_j - s_root) t`` remains. Prediction and ground truth carry different translations
    when a predictor gives none (the ground truth sits metres in front of the camera), so that leak
    becomes joint error. Logged as a warning above :data:`ROW_SUM_TOLERANCE`, else at info level.

    Args:
        reg: (J, V) regressor. name: for the message. root: the row subtracted as the root.
    """
    sums = np.asarray(reg, dtype=np.float64).sum(axis=1)
    deviation = float(np.abs(sums - 1.0).max())
    leak_mm_per_m = float(np.abs(sums - sums[root]).max()) * 1000.0
    msg = (
        f"{name}: rows sum to {sums.min():.6f}..{sums.max():.6f} (max |1 - sum| = {deviation:.2e}); "
        f"root-aligned joints move up to {leak_mm_per_m:.3f} mm per metre of translation between prediction "
        "and ground truth (give predictions the ground truth's translation, or none to both, to avoid it)"
    )
    log.log(logging.WARNING if deviation > ROW_SUM_TOLERANCE else logging.INFO, msg)
    return deviation
