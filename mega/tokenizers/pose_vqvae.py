"""Pose tokenizer (GenHMR, Saleem et al. 2025): 23 body-joint rotations (B, 23, 6) <-> L ids over K codes.

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

from mega.body.rotations import matrix_to_rot6d, rot6d_to_matrix
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


class PoseVQVAE(Tokenizer):
    """Body pose (B, 23, 6) -> ids (B, L) over K codes -> body pose (B, 23, 6).

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
        seed: seed of the quantiser's initial/reset draws.
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
    ) -> None:
        quantizer = VectorQuantizer(
            codebook_size, code_dim, decay=decay, dead_after=dead_after, usage_window=usage_window, seed=seed
        )
        super().__init__(init_kwargs(PoseVQVAE, locals()), quantizer, num_tokens)
        self.weights = {"pose": pose_weight, "vertices": vertex_weight, "joints": joint_weight}
        self.commitment_weight = commitment_weight
        J = NUM_BODY_JOINTS
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
        """6D body pose (B, 23, 6) -> latents (B, L, D)."""
        if x.dim() != 3 or x.shape[1:] != (NUM_BODY_JOINTS, 6):
            raise ValueError(f"expected 6D body poses (B, {NUM_BODY_JOINTS}, 6), got {tuple(x.shape)}")
        return self.encoder(x.float().transpose(1, 2)).transpose(1, 2)

    def decode_latent(self, z: Tensor) -> Tensor:
        """Code vectors (B, L, D) -> 6D body pose (B, 23, 6) (residual on the identity rotation)."""
        return self.decoder(z.transpose(1, 2)).transpose(1, 2).float() + self.identity_6d

    def decode(self, ids: Tensor, as_matrix: bool = False) -> Tensor:
        """Body pose from ids (B, L): (B, 23, 6), or (B, 23, 3, 3) rotation matrices if ``as_matrix``."""
        pose = super().decode(ids)
        return rot6d_to_matrix(pose) if as_matrix else pose

    def decode_soft(self, probs: Tensor, as_matrix: bool = False) -> Tensor:
        """Body pose from probabilities (B, L, K): (B, 23, 6), or (B, 23, 3, 3) if ``as_matrix``."""
        pose = super().decode_soft(probs)
        return rot6d_to_matrix(pose) if as_matrix else pose

    def inputs(self, batch: dict[str, Tensor], body: nn.Module | None = None) -> Tensor:
        """6D body poses (B, 23, 6) of a batch (what :meth:`encode` takes); ``body`` is not needed."""
        return matrix_to_rot6d(body_pose_matrices(batch))

    def _pose_and_body(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, Tensor, BodyOutput]:
        rotmats = body_pose_matrices(batch)
        betas = batch_betas(batch, rotmats.shape[0], getattr(body, "num_betas", 10), rotmats.device)
        with torch.no_grad():
            target = canonical_body(body, rotmats, betas)
        return rotmats, betas, target

    def loss(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """GenHMR's tokenizer loss: weighted L1 on rotation matrices, vertices, joints + commitment.

        Vertices and joints come from the body model with zero global orientation and the batch's
        betas (zeros when absent).

        Args:
            batch: dict with ``body_pose`` and optional ``betas`` (see :mod:`mega.tokenizers.base`).
            body: the body model (not owned by the tokenizer).
        Returns:
            ``(loss, logs)``; logs hold each term, ``mve_mm`` (teacher-forced), ``perplexity``,
            ``batch_usage`` and ``usage`` as floats.
        """
        rotmats, betas, target = self._pose_and_body(batch, body)
        pose6d, _, aux = self(matrix_to_rot6d(rotmats))
        pred_rot = rot6d_to_matrix(pose6d)
        pred = canonical_body(body, pred_rot, betas)
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
            both in the canonical frame with the batch's betas (no alignment); ``ids`` (B, L).
        """
        rotmats, betas, target = self._pose_and_body(batch, body)
        ids = self.encode(matrix_to_rot6d(rotmats))
        pred = canonical_body(body, self.decode(ids, as_matrix=True), betas)
        pve = (pred.vertices - target.vertices).norm(dim=-1).mean(1) * 1000
        return {"pve": pve, "mpjpe": (pred.joints - target.joints).norm(dim=-1).mean(1) * 1000, "ids": ids}
