"""Per-sample error metrics: pure, batched torch functions in the input's units.

Every function returns one value per sample (``(B,)``), never a batch mean: the evaluator averages
over the whole dataset at the end, so the result cannot depend on the batch size.

``mpjpe`` and ``pve`` do **not** align anything: the protocol (``mega.metrics.protocols``) subtracts
its root first. ``pa_mpjpe`` and ``pa_pve`` align the prediction onto the ground truth with a
similarity Procrustes whose rotation is proper (det = +1), so a mirror image is not a match.

Multi-hypothesis helpers take Q samples per image, ``(B, Q, N, 3)``: best-of-Q is a per-metric
minimum (``best_of_q``), as in ProHMR, 4D-Humans, HuManiFlow and MEGA; the mean-of-Q mesh, APD, the
per-vertex standard deviation and the distance to a reference (the deterministic prediction) follow
MEGA's supplementary (Table 4 and the diversity study).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_pair(pred: Tensor, gt: Tensor) -> None:
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"expected pred and gt of equal shape (B, N, 3); got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )


def mean_point_distance(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean Euclidean distance between corresponding points, no alignment.

    Args:
        pred: (B, N, 3) predicted points.
        gt: (B, N, 3) ground-truth points.
    Returns:
        (B,) mean over the N points of ``||pred - gt||``.
    """
    _check_pair(pred, gt)
    return (pred - gt).norm(dim=-1).mean(dim=-1)


def mpjpe(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean per-joint position error (no alignment; align with the protocol first).

    Args:
        pred: (B, J, 3) predicted joints.
        gt: (B, J, 3) ground-truth joints.
    Returns:
        (B,) per-sample error in the input's units.
    """
    return mean_point_distance(pred, gt)


def pve(pred: Tensor, gt: Tensor) -> Tensor:
    """Per-vertex error (a.k.a. MVE, V2V; no alignment; align with the protocol first).

    Args:
        pred: (B, V, 3) predicted vertices.
        gt: (B, V, 3) ground-truth vertices (same topology).
    Returns:
        (B,) per-sample error in the input's units.
    """
    return mean_point_distance(pred, gt)


def similarity_procrustes(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity transform ``(s, R, t)`` minimising ``sum_j ||s R pred_j + t - gt_j||^2``.

    Closed form (Umeyama): centre both sets, ``K = X^T Y`` (3, 3), SVD ``K = U S V^T``,
    ``Z = diag(1, 1, sign det(V U^T))``, ``R = V Z U^T`` (det R = +1), ``s = tr(Z S) / sum ||X||^2``
    (scale from the prediction's variance), ``t = mu_gt - s R mu_pred``. Computed in float64.

    Args:
        pred: (B, N, 3) points to align (explicit layout: points along dim 1).
        gt: (B, N, 3) target points.
    Returns:
        scale (B,), rotation (B, 3, 3) with det +1, translation (B, 3); all float64.
    """
    _check_pair(pred, gt)
    p, g = pred.double(), gt.double()
    mu_p, mu_g = p.mean(dim=1, keepdim=True), g.mean(dim=1, keepdim=True)
    x, y = p - mu_p, g - mu_g
    var = (x * x).sum(dim=(1, 2))  # (B,)
    k = x.transpose(1, 2) @ y  # (B, 3, 3) = sum_j x_j y_j^T
    u, sigma, vh = torch.linalg.svd(k)
    v = vh.transpose(1, 2)
    sign = torch.sign(torch.linalg.det(v @ u.transpose(1, 2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    z = torch.ones_like(sigma)
    z[:, 2] = sign
    rot = v @ torch.diag_embed(z) @ u.transpose(1, 2)
    scale = (z * sigma).sum(dim=1) / var.clamp_min(torch.finfo(torch.float64).tiny)
    transl = mu_g[:, 0] - scale[:, None] * (rot @ mu_p[:, 0, :, None])[..., 0]
    return scale, rot, transl


def apply_similarity(points: Tensor, scale: Tensor, rot: Tensor, transl: Tensor) -> Tensor:
    """Apply ``x -> s R x + t`` to every point.

    Args:
        points: (B, N, 3).
        scale: (B,). rot: (B, 3, 3). transl: (B, 3).
    Returns:
        (B, N, 3) transformed points, in ``points``' dtype.
    """
    out = scale[:, None, None] * (points.to(rot.dtype) @ rot.transpose(1, 2)) + transl[:, None, :]
    return out.to(points.dtype)


def procrustes_align(pred: Tensor, gt: Tensor) -> Tensor:
    """``pred`` moved onto ``gt`` by the best similarity transform (proper rotation).

    Args:
        pred: (B, N, 3). gt: (B, N, 3).
    Returns:
        (B, N, 3) aligned prediction, in ``pred``'s dtype.
    """
    scale, rot, transl = similarity_procrustes(pred, gt)
    return apply_similarity(pred, scale, rot, transl)


def _aligned_error(pred: Tensor, gt: Tensor) -> Tensor:
    scale, rot, transl = similarity_procrustes(pred, gt)
    aligned = apply_similarity(pred.double(), scale, rot, transl)
    return (aligned - gt.double()).norm(dim=-1).mean(dim=-1).to(pred.dtype)


def pa_mpjpe(pred: Tensor, gt: Tensor) -> Tensor:
    """MPJPE after similarity Procrustes of the prediction onto the ground truth.

    Invariant to any similarity transform of ``pred``; independent of the root choice. Not
    symmetric in general (the scale comes from the prediction's variance).

    Args:
        pred: (B, J, 3) predicted joints.
        gt: (B, J, 3) ground-truth joints.
    Returns:
        (B,) per-sample error in the input's units.
    """
    return _aligned_error(pred, gt)


def pa_pve(pred: Tensor, gt: Tensor) -> Tensor:
    """PVE after a similarity Procrustes solved on the vertices themselves.

    This is variant (a) of the formats note section 6.2 (HuManiFlow, MEGA's ``pa_v2v``), not EMDB's
    ``MVE_PA`` (which applies the joint-estimated transform to the vertices).

    Args:
        pred: (B, V, 3) predicted vertices.
        gt: (B, V, 3) ground-truth vertices.
    Returns:
        (B,) per-sample error in the input's units.
    """
    return _aligned_error(pred, gt)


def _check_samples(samples: Tensor) -> None:
    if samples.ndim != 4 or samples.shape[-1] != 3:
        raise ValueError(f"expected samples of shape (B, Q, N, 3); got {tuple(samples.shape)}")


def apd(samples: Tensor) -> Tensor:
    """Average pairwise distance between the Q samples of each image (MEGA's diversity metric).

    ``APD = 2 / (Q (Q - 1)) * sum_{i<j} mean_n ||x_i,n - x_j,n||``; 0 when Q = 1.

    Args:
        samples: (B, Q, N, 3) Q point sets (joints or vertices) per image.
    Returns:
        (B,) in the input's units (MEGA reports it in cm).
    """
    _check_samples(samples)
    b, q = samples.shape[:2]
    if q < 2:
        return samples.new_zeros(b)
    diff = samples[:, :, None] - samples[:, None, :]  # (B, Q, Q, N, 3)
    dist = diff.norm(dim=-1).mean(dim=-1)  # (B, Q, Q); zero diagonal
    return dist.sum(dim=(1, 2)) / (q * (q - 1))


def mean_of_q(samples: Tensor) -> Tensor:
    """The mean mesh (or joint set) of the Q samples of each image.

    Args:
        samples: (B, Q, N, 3).
    Returns:
        (B, N, 3).
    """
    _check_samples(samples)
    return samples.mean(dim=1)


def per_vertex_std(samples: Tensor) -> Tensor:
    """Standard deviation of each vertex's position over the Q samples.

    ``std_n = sqrt(1/Q sum_q ||x_q,n - mean_n||^2)`` (a true std over 3D positions; MEGA's
    uncertainty colours use the mean absolute deviation instead, see :func:`mean_distance_to`).

    Args:
        samples: (B, Q, V, 3).
    Returns:
        (B, V) in the input's units.
    """
    centred = samples - mean_of_q(samples)[:, None]
    return (centred * centred).sum(dim=-1).mean(dim=1).sqrt()


def mean_distance_to(samples: Tensor, reference: Tensor) -> Tensor:
    """Mean distance of every sample's points to a reference set (MEGA's ``mesh_variance``).

    Args:
        samples: (B, Q, N, 3).
        reference: (B, N, 3), e.g. the sample mean or the deterministic prediction.
    Returns:
        (B,) ``1/(Q N) sum_q sum_n ||x_q,n - ref_n||``.
    """
    _check_samples(samples)
    if reference.shape != samples.shape[:1] + samples.shape[2:]:
        raise ValueError(
            f"reference must be (B, N, 3); got {tuple(reference.shape)} for {tuple(samples.shape)}"
        )
    return (samples - reference[:, None]).norm(dim=-1).mean(dim=(1, 2))


def best_of_q(errors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Best-of-Q: each metric takes its own minimum over the samples.

    The best sample for one metric need not be the best for another (formats note section 0.9).

    Args:
        errors: name -> (B, Q) per-sample, per-hypothesis errors.
    Returns:
        name -> (B,) minimum over Q.
    """
    out = {}
    for name, value in errors.items():
        if value.ndim != 2:
            raise ValueError(f"best_of_q expects (B, Q) errors; '{name}' has shape {tuple(value.shape)}")
        out[name] = value.min(dim=1).values
    return out
