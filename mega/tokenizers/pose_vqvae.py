"""Pose tokenizer (GenHMR, Saleem et al. 2025): joint rotations (B, J, 6) <-> L ids over K codes.

J = 24 with ``include_global_orient`` (GenHMR: "the resulting pose parameters ... include both the
global orientation and the local rotations of the body joints"; the image stage then regresses only
shape and camera), else the 23 body joints. With the orientation in the tokens, training rotates
each pose's global orientation by a random rotation (``rotation_augment_deg``; GenHMR: "we rotate the
poses at varying degrees") so the tokens cover every camera-frame orientation, not only the
mocap's upright world frame.

GenHMR's supplementary: ResBlocks and 1D convolutions in encoder and decoder, one quantisation
layer, 96 tokens over a 2048 x 256 codebook; losses L1 on pose, mesh vertices and joints (weights
1.0, 0.5, 0.3), an embedding term (0.02) and a commitment term; EMA codebook with resets. The paper
does not say how 23 joints become 96 positions; here a learned linear map along the sequence axis
(23 -> L in the encoder, L -> 23 in the decoder) sits between two stacks of 1D residual conv blocks.
With an EMA codebook the embedding term ||sg[z] - c|| has no gradient (the EMA replaces it); as in
the T2M-GPT quantiser that TokenHMR reuses, the 0.02 weight goes to the commitment ||z - sg[c]||.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mega.body.rotations import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_matrix
from mega.tokenizers.base import (
    NUM_BODY_JOINTS,
    Tokenizer,
    batch_betas,
    body_pose_matrices,
    canonical_body,
    init_kwargs,
)
from mega.tokenizers.quantizer import VectorQuantizer
from mega.types import BodyOutput

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # first two columns of the identity matrix


class ResBlock1d(nn.Module):
    """x + conv1(relu(conv3(relu(x)))) over the sequence axis; (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Resample(nn.Module):
    """Learned linear map along the sequence axis: (B, C, T_in) -> (B, C, T_out)."""

    def __init__(self, length_in: int, length_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(length_in, length_out)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T_in) -> (B, C, T_out)."""
        return self.proj(x)


def _conv_stack(channels: int, num_blocks: int) -> list[nn.Module]:
    return [ResBlock1d(channels, dilation=3 ** (i % 2)) for i in range(num_blocks)]


def global_orient_matrices(batch: dict[str, Tensor]) -> Tensor:
    """The batch's ``global_orient`` ((B, 3) axis-angle, (B, 3, 3) or (B, 6) 6D) as (B, 3, 3) float32."""
    if "global_orient" not in batch:
        raise KeyError(
            f"batch has no 'global_orient' (keys: {sorted(batch)}); a pose tokenizer with "
            "include_global_orient=true needs global_orient (B,3) next to body_pose"
        )
    go = batch["global_orient"].float()
    if not torch.isfinite(go).all():
        raise ValueError("batch['global_orient'] contains NaN or inf")
    if go.dim() == 2 and go.shape[1] == 3:
        return axis_angle_to_matrix(go)
    if go.dim() == 3 and go.shape[1:] == (3, 3):
        return go
    if go.dim() == 2 and go.shape[1] == 6:
        return rot6d_to_matrix(go)
    raise ValueError(f"batch['global_orient'] must be (B,3), (B,3,3) or (B,6), got {tuple(go.shape)}")


def random_rotations(num: int, max_deg: float, generator: torch.Generator) -> Tensor:
    """(num, 3, 3) rotations about uniformly random axes by angles uniform in [0, max_deg] degrees
    (180: every orientation reachable)."""
    axis = torch.randn(num, 3, generator=generator)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-8)
    angle = torch.rand(num, 1, generator=generator) * torch.pi * max_deg / 180.0
    return axis_angle_to_matrix(axis * angle)


class PoseVQVAE(Tokenizer):
    """Joint rotations (B, J, 6) -> ids (B, L) over K codes -> joint rotations (B, J, 6).

    J = 24 (global orientation first, then SMPL's 23 body joints) with ``include_global_orient``,
    else 23. :meth:`split_pose` separates a decoded (B, J, ...) pose into orientation and body pose.

    Args:
        num_tokens: L (GenHMR: 96).
        codebook_size: K (GenHMR: 2048).
        code_dim: D (GenHMR: 256).
        width: channels of the 1D convolutions.
        num_blocks: residual blocks in each of the two stacks of encoder and decoder.
        pose_weight: weight of the L1 loss on rotation matrices (GenHMR lambda_theta = 1.0).
        vertex_weight: weight of the L1 loss on canonical vertices (lambda_V = 0.5).
        joint_weight: weight of the L1 loss on canonical joints (lambda_J = 0.3).
        commitment_weight: weight of the commitment loss (GenHMR's lambda_E = 0.02, see above).
        decay: EMA decay of the codebook.
        dead_after: training steps after which an unused code is reset (0: never).
        usage_window: window, in steps, of the reported codebook usage.
        seed: seed of the quantiser's initial/reset draws (the augmentation draws use seed + 1 + rank).
        include_global_orient: tokenize the global orientation too (24 rotations; GenHMR).
        rotation_augment_deg: in training with ``include_global_orient``, left-multiply each global
            orientation by a random rotation of up to this angle (0: off; 180: any orientation).
    """

    registry_name = "pose_vqvae"

    def __init__(
        self,
        num_tokens: int = 96,
        codebook_size: int = 2048,
        code_dim: int = 256,
        width: int = 256,
        num_blocks: int = 2,
        pose_weight: float = 1.0,
        vertex_weight: float = 0.5,
        joint_weight: float = 0.3,
        commitment_weight: float = 0.02,
        decay: float = 0.99,
        dead_after: int = 200,
        usage_window: int = 200,
        seed: int = 0,
        include_global_orient: bool = False,
        rotation_augment_deg: float = 0.0,
    ) -> None:
        quantizer = VectorQuantizer(
            codebook_size, code_dim, decay=decay, dead_after=dead_after, usage_window=usage_window, seed=seed
        )
        super().__init__(init_kwargs(PoseVQVAE, locals()), quantizer, num_tokens)
        self.weights = {"pose": pose_weight, "vertices": vertex_weight, "joints": joint_weight}
        self.commitment_weight = commitment_weight
        if not 0.0 <= rotation_augment_deg <= 180.0:
            raise ValueError(f"rotation_augment_deg must be in [0, 180], got {rotation_augment_deg}")
        self.include_global_orient = bool(include_global_orient)
        self.rotation_augment_deg = float(rotation_augment_deg)
        self.num_joints = J = NUM_BODY_JOINTS + int(self.include_global_orient)
        self._augment_seed = seed + 1
        self._augment_gen: torch.Generator | None = None
        self.encoder = nn.Sequential(
            nn.Conv1d(6, width, 3, padding=1),
            *_conv_stack(width, num_blocks),
            Resample(J, num_tokens),
            *_conv_stack(width, num_blocks),
            nn.ReLU(),
            nn.Conv1d(width, code_dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(code_dim, width, 3, padding=1),
            *_conv_stack(width, num_blocks),
            Resample(num_tokens, J),
            *_conv_stack(width, num_blocks),
            nn.ReLU(),
            nn.Conv1d(width, 6, 3, padding=1),
        )
        self.register_buffer("identity_6d", torch.tensor(IDENTITY_6D), persistent=False)

    def encode_latent(self, x: Tensor) -> Tensor:
        """6D pose (B, J, 6) -> latents (B, L, D)."""
        if x.dim() != 3 or x.shape[1:] != (self.num_joints, 6):
            what = "global orientation + 23 body joints" if self.include_global_orient else "23 body joints"
            raise ValueError(f"expected 6D poses (B, {self.num_joints}, 6) ({what}), got {tuple(x.shape)}")
        return self.encoder(x.float().transpose(1, 2)).transpose(1, 2)

    def decode_latent(self, z: Tensor) -> Tensor:
        """Code vectors (B, L, D) -> 6D pose (B, J, 6) (residual on the identity rotation)."""
        return self.decoder(z.transpose(1, 2)).transpose(1, 2).float() + self.identity_6d

    def decode(self, ids: Tensor, as_matrix: bool = False) -> Tensor:
        """Pose from ids (B, L): (B, J, 6), or (B, J, 3, 3) rotation matrices if ``as_matrix``."""
        pose = super().decode(ids)
        return rot6d_to_matrix(pose) if as_matrix else pose

    def decode_soft(self, probs: Tensor, as_matrix: bool = False) -> Tensor:
        """Pose from probabilities (B, L, K): (B, J, 6), or (B, J, 3, 3) if ``as_matrix``."""
        pose = super().decode_soft(probs)
        return rot6d_to_matrix(pose) if as_matrix else pose

    def split_pose(self, pose: Tensor) -> tuple[Tensor | None, Tensor]:
        """A decoded pose (B, J, ...) -> (global orientation (B, ...) or None, body pose (B, 23, ...))."""
        if pose.shape[1] != self.num_joints:
            raise ValueError(f"expected a pose with {self.num_joints} joints, got {tuple(pose.shape)}")
        return (pose[:, 0], pose[:, 1:]) if self.include_global_orient else (None, pose)

    def pose_matrices(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, J, 3, 3) rotations this tokenizer encodes: [global_orient,] body_pose."""
        rotmats = body_pose_matrices(batch)
        if not self.include_global_orient:
            return rotmats
        return torch.cat([global_orient_matrices(batch).to(rotmats)[:, None], rotmats], dim=1)

    def inputs(self, batch: dict[str, Tensor], body: nn.Module | None = None) -> Tensor:
        """6D poses (B, J, 6) of a batch (what :meth:`encode` takes); ``body`` is not needed."""
        return matrix_to_rot6d(self.pose_matrices(batch))

    def _augment(self, rotmats: Tensor) -> Tensor:
        """Training only: random rotation of the global orientation (see ``rotation_augment_deg``)."""
        if not (self.training and self.include_global_orient and self.rotation_augment_deg > 0):
            return rotmats
        if self._augment_gen is None:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            self._augment_gen = torch.Generator().manual_seed(self._augment_seed + rank)
        rot = random_rotations(rotmats.shape[0], self.rotation_augment_deg, self._augment_gen).to(rotmats)
        return torch.cat([(rot @ rotmats[:, 0])[:, None], rotmats[:, 1:]], dim=1)

    def _pose_and_body(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, Tensor, BodyOutput]:
        rotmats = self._augment(self.pose_matrices(batch))
        betas = batch_betas(batch, rotmats.shape[0], getattr(body, "num_betas", 10), rotmats.device)
        with torch.no_grad():
            target = self._body(body, rotmats, betas)
        return rotmats, betas, target

    def _body(self, body: nn.Module, rotmats: Tensor, betas: Tensor) -> BodyOutput:
        """Body of (B, J, 3, 3) rotations: canonical (zero orientation) or oriented, no translation."""
        orient, body_pose = self.split_pose(rotmats)
        return canonical_body(body, body_pose, betas, global_orient=orient)

    def loss(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """GenHMR's tokenizer loss: weighted L1 on rotation matrices, vertices, joints + commitment.

        Vertices and joints come from the body model with the batch's betas (zeros when absent), with
        zero global orientation or, with ``include_global_orient``, the (augmented) orientation.

        Args:
            batch: dict with ``body_pose``, optional ``betas`` (see :mod:`mega.tokenizers.base`) and,
                with ``include_global_orient``, ``global_orient`` (B, 3).
            body: the body model (not owned by the tokenizer).
        Returns:
            ``(loss, logs)``; logs hold each term, ``mve_mm`` (teacher-forced), ``perplexity``,
            ``batch_usage`` and ``usage`` as floats.
        """
        rotmats, betas, target = self._pose_and_body(batch, body)
        pose6d, _, aux = self(matrix_to_rot6d(rotmats))
        pred_rot = rot6d_to_matrix(pose6d)
        pred = self._body(body, pred_rot, betas)
        terms = {
            "pose": (pred_rot - rotmats).abs().mean(),
            "vertices": (pred.vertices - target.vertices).abs().mean(),
            "joints": (pred.joints - target.joints).abs().mean(),
        }
        loss = (
            sum(self.weights[k] * v for k, v in terms.items()) + self.commitment_weight * aux["commit_loss"]
        )
        mve = (pred.vertices.detach() - target.vertices).norm(dim=-1).mean() * 1000
        logs = {k: v.item() for k, v in terms.items()}
        logs.update({"commit": aux["commit_loss"].item(), "mve_mm": mve.item()})
        logs.update({k: aux[k].item() for k in ("perplexity", "batch_usage", "usage")})
        return loss, logs

    @torch.no_grad()
    def errors(self, batch: dict[str, Tensor], body: nn.Module) -> dict[str, Tensor]:
        """Per-sample errors of ``decode(encode(pose))`` through the body model, in mm.

        Returns:
            ``pve`` (B,) mean vertex error (GenHMR's MVE) and ``mpjpe`` (B,) over the 24 joints,
            both in the canonical frame (or, with ``include_global_orient``, in the batch's orientation)
            with the batch's betas (no alignment); ``ids`` (B, L).
        """
        rotmats, betas, target = self._pose_and_body(batch, body)
        ids = self.encode(matrix_to_rot6d(rotmats))
        pred = self._body(body, self.decode(ids, as_matrix=True), betas)
        pve = (pred.vertices - target.vertices).norm(dim=-1).mean(1) * 1000
        return {"pve": pve, "mpjpe": (pred.joints - target.joints).norm(dim=-1).mean(1) * 1000, "ids": ids}
