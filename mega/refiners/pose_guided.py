"""GenHMR's 2D pose-guided refinement (PGR): gradient steps on the decoded tokens' code vectors.

Registry entry ``pose_guided`` of :data:`mega.refiners.REFINERS` (``configs/refiner/pose_guided.yaml``).

GenHMR ("2D Pose-Guided Refinement", eqs. 2-4): starting from the tokens of uncertainty-guided sampling,
with the whole network frozen, the pose embeddings Y (here: the code vectors of the L tokens, (B, L, D),
which the frozen tokenizer decodes) are updated by plain gradient descent ``Y <- Y - eta grad G`` for P
iterations, where

    G = sum_j c_j || Pi(J'_j) - J2D_j ||^2  +  lambda || theta' - theta_0 ||^2

is the confidence-weighted squared 2D reprojection error of the decoded body's keypoints plus a prior
that keeps the decoded output (the body pose for the pose tokenizer, the canonical mesh for the mesh
tokenizer) near its starting value. Both terms are means (over confident keypoints; over the decoded
output's entries), so eta means the same for 17 or 12 keypoints and for a 6890- or 1229-vertex mesh.
One safeguard beyond the paper: a row whose objective would rise keeps its point and halves its step,
so G never increases (plain gradient descent diverges when eta is too large for the decoder's
curvature, which differs between tokenizers). Keypoints are in the normalised crop coordinates of the model's
crop camera (``mega.body.camera``; x_norm = 2 x_px / S - 1), so eta does not depend on the crop size.
The rotation, camera and shape heads stay as predicted (the paper refines the pose tokens only).

Keypoints are COCO-17: the body's own COCO-17 regressor when it has one (the free body), else the 12
limb joints SMPL's skeleton shares with COCO (face keypoints are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# COCO-17 keypoint -> SMPL-24 joint for the limbs (COCO order: shoulders 5/6, elbows 7/8, wrists 9/10,
# hips 11/12, knees 13/14, ankles 15/16; SMPL: see mega.body.joints.SMPL_JOINT_NAMES).
COCO17_LIMBS_FROM_SMPL24 = {
    5: 16,
    6: 17,
    7: 18,
    8: 19,
    9: 20,
    10: 21,
    11: 1,
    12: 2,
    13: 4,
    14: 5,
    15: 7,
    16: 8,
}


@dataclass
class RefinementTrace:
    """Per-iteration record of one refinement.

    Attributes:
        reprojection: (P + 1, R) confidence-weighted mean 2D error per row at the start and after each
            step, in normalised crop units (multiply by S / 2 for crop pixels).
        prior: (P + 1, R) prior term per row (0 at the start).
        extra: ``objective`` (P + 1, R): G after each step (non-increasing).
    """

    reprojection: Tensor
    prior: Tensor
    extra: dict[str, Any] = field(default_factory=dict)


def coco17_keypoints(body: Any, vertices: Tensor, joints: Tensor) -> tuple[Tensor, Tensor]:
    """COCO-17 keypoints of posed bodies and which of them are modelled.

    Args:
        body: the body model (its ``keypoint_regressor('coco17')`` is used when it has one).
        vertices: (R, V, 3); joints: (R, 24, 3) SMPL joints.
    Returns:
        keypoints (R, 17, 3) and a (17,) float mask (0 for keypoints the body cannot place).
    """
    names = getattr(body, "keypoint_names", lambda: [])()
    if "coco17" in names:
        reg = body.keypoint_regressor("coco17").to(vertices)
        return torch.einsum("kv,rvc->rkc", reg, vertices), vertices.new_ones(17)
    out = joints.new_zeros(joints.shape[0], 17, 3)
    valid = joints.new_zeros(17)
    for coco, smpl in COCO17_LIMBS_FROM_SMPL24.items():
        out[:, coco], valid[coco] = joints[:, smpl], 1.0
    return out, valid


class PoseGuidedRefiner:
    """P gradient steps on token code vectors so the decoded body's projected keypoints fit 2D keypoints.

    Args:
        iterations: P (GenHMR: 5-10 suffice; their Table 3 sweeps 1-20).
        step_size: eta of ``Y <- Y - eta grad G``.
        prior_weight: lambda of the prior on the decoded pose / canonical mesh.
        min_confidence: keypoints below this confidence are ignored.
    """

    def __init__(
        self,
        iterations: int = 10,
        step_size: float = 1000.0,
        prior_weight: float = 1.0,
        min_confidence: float = 0.1,
    ) -> None:
        if iterations < 0 or step_size <= 0 or prior_weight < 0:
            raise ValueError(
                f"pose_guided: iterations >= 0, step_size > 0, prior_weight >= 0 (got {iterations}, "
                f"{step_size}, {prior_weight})"
            )
        self.iterations, self.step_size = iterations, step_size
        self.prior_weight, self.min_confidence = prior_weight, min_confidence

    def _objective(
        self,
        model: Any,
        y: Tensor,
        rot: Tensor,
        cam: Tensor,
        betas: Tensor | None,
        keypoints: Tensor,
        conf: Tensor,
        start: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """G per row with its gradient, the mean 2D error and the prior term (all (R,), grad (R, L, D))."""
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            out = model.decode_body(rot, codes=y, betas=betas)
            kp, valid = coco17_keypoints(model.body, out.vertices, out.joints)
            w = conf * valid  # (R, 17)
            wsum = w.sum(-1).clamp_min(1e-9)
            sq = ((model.project(kp, cam) - keypoints[..., :2]) ** 2).sum(-1)  # (R, 17)
            term_2d = (w * sq).sum(-1) / wsum
            term_prior = ((model.tokenizer.decode_embeddings(y) - start) ** 2).flatten(1).mean(-1)
            g = term_2d + self.prior_weight * term_prior
            (grad,) = torch.autograd.grad(g.sum(), y)  # rows are independent: sum = per-row gradients
        mean_err = (w * sq.detach().sqrt()).sum(-1) / wsum
        return g.detach(), grad, mean_err, term_prior.detach()

    def __call__(
        self,
        model: Any,
        codes: Tensor,
        global_rot: Tensor,
        cam: Tensor,
        betas: Tensor | None,
        keypoints: Tensor,
    ) -> tuple[Tensor, RefinementTrace]:
        """Refine code vectors.

        Args:
            model: the HMR model (``decode_body(rot, codes=..., betas=...)``, ``project``, ``tokenizer``).
            codes: (R, L, D) starting code vectors (the codebook rows of the sampled ids).
            global_rot: (R, 3, 3); cam: (R, 3) crop camera; betas: (R, 10) or None.
            keypoints: (R, 17, 3) COCO-17 ``x, y, confidence`` in normalised crop coordinates.
        Returns:
            refined codes (R, L, D) (detached) and the trace.
        """
        conf = keypoints[..., 2] * (keypoints[..., 2] >= self.min_confidence)
        with torch.no_grad():
            start = model.tokenizer.decode_embeddings(codes).detach()
        y = codes.detach().clone()
        eta = torch.full((y.shape[0], 1, 1), float(self.step_size), device=y.device)
        g, grad, err, prior = self._objective(model, y, global_rot, cam, betas, keypoints, conf, start)
        errs, priors, objective = [err], [prior], [g]
        for _ in range(self.iterations):
            cand = y - eta * grad
            g_c, grad_c, err_c, prior_c = self._objective(
                model, cand, global_rot, cam, betas, keypoints, conf, start
            )
            ok = g_c <= g  # a row whose objective would rise keeps its point and halves its step
            k = ok[:, None, None]
            y, grad = torch.where(k, cand, y), torch.where(k, grad_c, grad)
            g, err, prior = (
                torch.where(ok, g_c, g),
                torch.where(ok, err_c, err),
                torch.where(ok, prior_c, prior),
            )
            eta = torch.where(k, eta, 0.5 * eta)
            errs.append(err), priors.append(prior), objective.append(g)
        trace = RefinementTrace(torch.stack(errs), torch.stack(priors), {"objective": torch.stack(objective)})
        return y.detach(), trace
