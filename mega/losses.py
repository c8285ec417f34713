"""The training objective of image-conditioned masked generative HMR (MEGA and GenHMR).

Terms (each logged on its own, each weight a config value; a zero weight still builds the term so that
every head keeps a gradient under DDP):

- ``mask``: cross-entropy on masked positions (MEGA section 3.3, GenHMR eq. 1); the mask ratio is drawn
  per sample from a schedule (cosine; linear and full-mask as the ablations), image tokens never masked.
- ``rotation`` (MEGA): squared Frobenius distance between predicted and true global rotation matrices.
- ``kp2d_heads`` (MEGA): confidence-weighted L1 between the 2D keypoints of the ground truth and the
  projection of the decoded body, posed with the predicted rotation and camera; the body's tokens are the
  ground-truth ids (the predicted argmax for samples without SMPL ground truth) and are detached, so this
  term trains the rotation and camera heads (and betas).
- ``betas``: squared error of the betas head (pose tokenizer only).
- GenHMR's training-time differentiable sampling: a straight-through Gumbel-softmax over the logits
  (hard one-hot forward, soft gradient backward; temperature cosine-annealed from ``tau_start`` to
  ``tau_end`` over the first ``anneal_fraction`` of training) gives soft code mixtures at masked positions
  (ground-truth one-hots at visible ones); the frozen tokenizer decodes them and the body model poses them:
  ``theta`` (squared error of the 24 rotation matrices, global included; the global rotation only for the
  mesh tokenizer), ``joints_3d`` (pelvis-aligned, confidence-weighted L1) and ``kp2d`` (as kp2d_heads, with
  gradients into the token logits). GenHMR's weights: mask 1, theta 1e-3, betas 5e-4, joints_3d 5e-2,
  kp2d 1e-2 (HMR 2.0's sums over joints and coordinates, means over samples).

Samples without SMPL ground truth (``has_smpl`` = 0) contribute only 2D terms; their tokens are all masked
in the input. Normalisers are global-batch counts (all-reduced under DDP), so 2 processes with half the
batch each compute the same gradient as 1 process with all of it; the masks and the Gumbel noise are
drawn for the global batch from generators shared by all ranks for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import Tensor, nn

from mega.body.rotations import axis_angle_to_matrix
from mega.samplers.gumbel import gumbel_noise, gumbel_softmax_st, gumbel_temperature
from mega.transformer.losses import masked_cross_entropy, masked_token_stats
from mega.transformer.masking import GlobalBatchMasks
from mega.types import BodyOutput

SMPL_PELVIS = 0


# ---------------------------------------------------------------------- per-sample terms
def rotation_distance(pred: Tensor, gt: Tensor) -> Tensor:
    """Squared Frobenius distance ||R - R_gt||^2: (B, ..., 3, 3) x2 -> (B,) summed over the other axes."""
    return (pred.float() - gt.float()).square().flatten(1).sum(1)


def keypoint_l1(pred: Tensor, gt: Tensor) -> Tensor:
    """Confidence-weighted L1: pred (B, J, D), gt (B, J, D + 1) (last column = confidence) -> (B,)."""
    conf = gt[..., -1:].float()
    return (conf * (pred.float() - gt[..., :-1].float()).abs()).flatten(1).sum(1)


def keypoint_3d_l1(pred: Tensor, gt: Tensor, root: int = SMPL_PELVIS) -> Tensor:
    """Root-aligned confidence-weighted L1: pred (B, J, 3), gt (B, J, 4) -> (B,) (0 where the root is unseen)."""
    root_seen = gt[:, root, 3:].float()  # (B, 1)
    pred = pred.float() - pred[:, root : root + 1].float()
    target = gt[..., :3].float() - gt[:, root : root + 1, :3].float()
    return keypoint_l1(pred, torch.cat([target, gt[..., 3:] * root_seen[:, None]], -1))


# ---------------------------------------------------------------------- the objective
@dataclass
class LossWeights:
    """Weights of the terms (see the module docstring). Defaults: MEGA's mask-only objective."""

    mask: float = 1.0
    rotation: float = 0.0
    kp2d_heads: float = 0.0
    betas: float = 0.0
    theta: float = 0.0
    joints_3d: float = 0.0
    kp2d: float = 0.0

    @property
    def differentiable(self) -> bool:
        """Whether any term needs GenHMR's straight-through Gumbel path."""
        return any(w > 0 for w in (self.theta, self.joints_3d, self.kp2d))


def _global_counts(counts: Tensor) -> Tensor:
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        counts = counts.clone()
        tdist.all_reduce(counts)
    return counts


class HMRObjective:
    """``loss_fn(model, batch, rng) -> (loss, terms)`` for :func:`mega.engine.train`.

    Args:
        weights: a :class:`LossWeights` or a mapping of its fields.
        total_steps: optimiser updates of the run (for the temperature schedule).
        mask_schedule: a key of ``mega.transformer.MASK_RATIO_SCHEDULES`` (cosine | linear | full ...).
        gumbel: GenHMR's annealing ``{tau_start, tau_end, anneal_fraction}``; used when theta, joints_3d or
            kp2d has a weight.
        keypoints: 2D keypoint sets scored: ``smpl24`` (the body's joints vs ``kp2d_smpl``) and/or ``coco17``
            (the body's COCO regressor vs ``kp2d_coco``).
        grad_accum: micro-batches per update (the temperature follows updates).
        seed / rank / world_size: shared mask and noise generators (see the module docstring).
    """

    def __init__(
        self,
        weights: LossWeights | Mapping[str, float],
        total_steps: int,
        mask_schedule: str = "cosine",
        gumbel: Mapping[str, float] | None = None,
        keypoints: tuple[str, ...] | list[str] = ("smpl24",),
        grad_accum: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.weights = weights if isinstance(weights, LossWeights) else LossWeights(**dict(weights))
        self.total_steps, self.grad_accum = int(total_steps), int(grad_accum)
        self.gumbel = {"tau_start": 1.0, "tau_end": 0.01, "anneal_fraction": 0.5, **dict(gumbel or {})}
        unknown = set(keypoints) - {"smpl24", "coco17"}
        if unknown:
            raise ValueError(f"loss keypoints: unknown sets {sorted(unknown)}; use smpl24 and/or coco17")
        self.keypoints = tuple(keypoints)
        self.rank, self.world_size = rank, world_size
        self.masks = GlobalBatchMasks(seed, mask_schedule, rank, world_size)
        self.noise = torch.Generator().manual_seed(int(seed) + 1)
        self.calls = 0

    # checkpointed by the engine (extra_state)
    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": self.masks.state_dict(),
            "noise": self.noise.get_state(),
            "calls": torch.tensor(self.calls),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks.load_state_dict(state["masks"])
        self.noise.set_state(state["noise"])
        self.calls = int(state["calls"])

    @property
    def step(self) -> int:
        """Optimiser updates done before the current micro-batch."""
        return self.calls // self.grad_accum

    def temperature(self) -> float:
        g = self.gumbel
        return gumbel_temperature(
            self.step, self.total_steps, g["tau_start"], g["tau_end"], g["anneal_fraction"]
        )

    def _keypoints_2d(
        self, inner: nn.Module, body_out: Any, cam: Tensor, batch: dict[str, Tensor], view_rot: Tensor | None
    ) -> Tensor:
        """(B,) summed confidence-weighted L1 over the configured 2D keypoint sets."""
        total = cam.new_zeros(cam.shape[0])
        if "smpl24" in self.keypoints:
            total = total + keypoint_l1(inner.project(body_out.joints, cam, view_rot), batch["kp2d_smpl"])
        if "coco17" in self.keypoints:
            reg = inner.body.keypoint_regressor("coco17").to(body_out.vertices)
            coco = torch.einsum("kv,bvc->bkc", reg, body_out.vertices)
            total = total + keypoint_l1(inner.project(coco, cam, view_rot), batch["kp2d_coco"])
        return total

    def __call__(
        self, model: nn.Module, batch: dict[str, Tensor], rng: Any = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        inner = model.module if hasattr(model, "module") else model
        w = self.weights
        img = batch["img"]
        B, L, K = img.shape[0], inner.transformer.num_tokens, inner.transformer.codebook_size
        device = img.device
        has_smpl = batch["has_smpl"].reshape(B).float() > 0.5  # (B,)
        gt_ids = inner.target_ids(batch["body_pose"], batch["betas"], batch["global_orient"])  # (B, L)
        mask = self.masks(B, L, device) | ~has_smpl[:, None]  # unknown tokens of 2D-only samples: all masked
        out = model(img, gt_ids.masked_fill(mask, inner.mask_id), mask, view_rot=inner.view_rotation(batch),
                    frozen=batch.get("frozen"))  # fmt: skip

        scored = mask & has_smpl[:, None]
        local = torch.stack(
            [torch.tensor(float(B), device=device), has_smpl.sum().float(), scored.sum().float()]
        )
        n_all, n_smpl, n_tok = (_global_counts(local) / self.world_size).clamp_min(1.0).unbind()
        # Each rank's term = its sum / (global count / W); DDP's mean over ranks = the global-batch mean.
        smpl_w = has_smpl.float()
        ce_sum = masked_cross_entropy(out.logits, gt_ids, scored, reduction="sum")
        correct = masked_token_stats(out.logits, gt_ids, scored)[1].float()
        terms: dict[str, Tensor] = {"mask": ce_sum / n_tok}
        gt_rot = axis_angle_to_matrix(batch["global_orient"].float().reshape(B, 3))
        terms["rotation"] = (rotation_distance(out.global_rot, gt_rot) * smpl_w).sum() / n_smpl
        if out.betas is not None:
            terms["betas"] = ((out.betas - batch["betas"].float()).square().sum(1) * smpl_w).sum() / n_smpl
        if w.kp2d_heads > 0 or not w.differentiable:  # else the Gumbel terms train the camera head
            head_ids = torch.where(has_smpl[:, None], gt_ids, out.logits.detach().argmax(-1))
            with torch.no_grad():
                canonical = inner.decode_body(
                    torch.eye(3, device=device).expand(B, 3, 3),
                    ids=head_ids,
                    betas=None if out.betas is None else out.betas.detach(),
                )
            heads_body = self._pose_detached(inner, canonical, out)
            terms["kp2d_heads"] = (
                self._keypoints_2d(inner, heads_body, out.cam, batch, out.view_rot).sum() / n_all
            )

        # acc: this rank's correct / (global count / W); the engine's mean over ranks is the global accuracy.
        logs: dict[str, Tensor] = {"acc": correct / n_tok, "mask_ratio": mask.float().mean()}
        if w.differentiable:
            tau = self.temperature()
            noise = self._global_noise(B, L, K, device)
            onehot = F.one_hot(gt_ids, K).float()
            probs = torch.where(mask[..., None], gumbel_softmax_st(out.logits, tau, noise=noise), onehot)
            soft = inner.decode_body(out.global_rot, probs=probs, betas=out.betas)
            if inner.kind == "pose":
                gt_pose = axis_angle_to_matrix(batch["body_pose"].float().reshape(B, 23, 3))
                gt_all = torch.cat([gt_rot[:, None], gt_pose], 1)
                theta = rotation_distance(soft.rot_mats, gt_all)
            else:
                theta = rotation_distance(out.global_rot, gt_rot)
            terms["theta"] = (theta * smpl_w).sum() / n_smpl
            terms["joints_3d"] = keypoint_3d_l1(soft.joints, batch["joints_3d"]).sum() / n_all
            terms["kp2d"] = self._keypoints_2d(inner, soft, out.cam, batch, out.view_rot).sum() / n_all
            logs["tau"] = torch.tensor(tau, device=device)
        loss = sum(getattr(w, name) * value for name, value in terms.items())
        self.calls += 1
        return loss, {**terms, **logs}

    def _pose_detached(self, inner: nn.Module, canonical: Any, out: Any) -> Any:
        """The body of (detached) ids posed with the predicted rotation (and betas): gradients reach the heads."""
        if inner.kind == "mesh":
            rot_t = out.global_rot.float().transpose(1, 2)
            return BodyOutput(vertices=canonical.vertices @ rot_t, joints=canonical.joints @ rot_t)
        pose = canonical.rot_mats[:, 1:].detach()  # decoded body pose (B, 23, 3, 3)
        root = out.global_rot.float()
        if getattr(inner.tokenizer, "include_global_orient", False):  # the tokens carry the orientation
            root = canonical.rot_mats[:, 0].detach()
        return inner.body(global_orient=root, body_pose=pose, betas=out.betas.float(), transl=None)

    def _global_noise(self, B: int, L: int, K: int, device: torch.device) -> Tensor:
        """(B, L, K) Gumbel noise: this rank's rows of a global-batch draw from the shared generator."""
        return gumbel_noise((B * self.world_size, L, K), self.noise, "cpu")[self.rank :: self.world_size].to(
            device
        )

    def describe(self) -> dict[str, Any]:
        return {"weights": asdict(self.weights), "gumbel": self.gumbel, "keypoints": list(self.keypoints)}
