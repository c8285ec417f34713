"""Metrics (per-sample errors), named evaluation protocols and the evaluator.

>>> from mega.metrics import mpjpe, pa_mpjpe, pve, apd
>>> err = pa_mpjpe(pred_joints, gt_joints)  # (B, J, 3), (B, J, 3) -> (B,), input units
"""

from __future__ import annotations

from mega.metrics.errors import (
    apd,
    best_of_q,
    mean_distance_to,
    mean_of_q,
    mpjpe,
    pa_mpjpe,
    pa_pve,
    per_vertex_std,
    procrustes_align,
    pve,
    similarity_procrustes,
)
from mega.metrics.protocols import PROTOCOLS, Protocol, build_protocol

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "apd",
    "best_of_q",
    "build_protocol",
    "mean_distance_to",
    "mean_of_q",
    "mpjpe",
    "pa_mpjpe",
    "pa_pve",
    "per_vertex_std",
    "procrustes_align",
    "pve",
    "similarity_procrustes",
]
