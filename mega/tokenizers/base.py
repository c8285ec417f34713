"""The contract shared by every tokenizer: ids (B, L) <-> body representation, one quantiser.

A tokenizer is an encoder to ``(B, L, D)`` latents, a :class:`VectorQuantizer` with K codes and a
decoder from ``(B, L, D)`` code vectors. Subclasses write ``encode_latent``, ``decode_latent``,
``loss`` and ``errors``; this base class derives ``encode``/``decode``/``decode_soft``/``forward``
from them, and keeps the constructor arguments so a checkpoint can rebuild the module
(:func:`mega.tokenizers.save_tokenizer`).

Batches given to ``loss``/``errors`` are dicts with ``body_pose`` ((B, 23, 3) axis-angle, (B, 69),
(B, 23, 3, 3) matrices or (B, 23, 6) 6D) and optionally ``betas`` (B, 10); the body model is passed
in and is never owned or saved by a tokenizer.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from mega.body.rotations import axis_angle_to_matrix, rot6d_to_matrix
from mega.tokenizers.quantizer import VectorQuantizer
from mega.types import BodyOutput

NUM_BODY_JOINTS = 23  # SMPL body joints below the pelvis (global orientation excluded)


def init_kwargs(cls: type, local_vars: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` taken from a constructor's ``locals()``."""
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return {name: local_vars[name] for name in names}


class Tokenizer(nn.Module):
    """Base class: encoder -> quantiser -> decoder with the ids/soft-probabilities contract.

    Args:
        config: the subclass's constructor arguments (plain values), saved in checkpoints.
        quantizer: the vector quantiser (K codes of dimension D).
        num_tokens: L, latent tokens per sample.
    """

    registry_name: str = ""

    def __init__(self, config: dict[str, Any], quantizer: VectorQuantizer, num_tokens: int) -> None:
        super().__init__()
        self.config = dict(config)
        self.quantizer = quantizer
        self._num_tokens = num_tokens

    @property
    def num_tokens(self) -> int:
        """L, the number of tokens per sample."""
        return self._num_tokens

    @property
    def codebook_size(self) -> int:
        """K, the number of codes."""
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        """D, the dimension of a code vector."""
        return self.quantizer.dim

    # ------------------------------------------------------------------ to implement
    def encode_latent(self, x: Tensor) -> Tensor:
        """Continuous encoder output: x -> (B, L, D)."""
        raise NotImplementedError

    def decode_latent(self, z: Tensor) -> Tensor:
        """Decoder: (B, L, D) code vectors -> x_hat."""
        raise NotImplementedError

    def prepare(self, x: Tensor) -> None:
        """Data-dependent set-up before a training forward (default: nothing)."""

    # ------------------------------------------------------------------ contract
    def encode(self, x: Tensor) -> Tensor:
        """Token ids of inputs.

        Args:
            x: a batch of inputs (subclass shape, e.g. (B, V, 3) or (B, 23, 6)).
        Returns:
            (B, L) int64 ids in ``[0, K)``.
        """
        return self.quantizer.nearest(self.encode_latent(x))

    def decode(self, ids: Tensor) -> Tensor:
        """Reconstruction from ids.

        Args:
            ids: (B, L) int64 in ``[0, K)``.
        Returns:
            x_hat (subclass shape).
        """
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise ValueError(f"ids must be (B, {self.num_tokens}), got {tuple(ids.shape)}")
        return self.decode_latent(self.quantizer.lookup(ids))

    def decode_soft(self, probs: Tensor) -> Tensor:
        """Differentiable reconstruction from a distribution over codes at each position.

        Args:
            probs: (B, L, K) probabilities (e.g. softmax or Gumbel-softmax of logits).
        Returns:
            x_hat decoded from the expected code vectors; one-hot probs give :meth:`decode`.
        """
        if probs.dim() != 3 or probs.shape[1] != self.num_tokens:
            raise ValueError(
                f"probs must be (B, {self.num_tokens}, {self.codebook_size}), got {tuple(probs.shape)}"
            )
        return self.decode_latent(self.quantizer.soft_lookup(probs))

    def decode_embeddings(self, codes: Tensor) -> Tensor:
        """Reconstruction from arbitrary code-space vectors (B, L, D) (e.g. refined soft tokens)."""
        return self.decode_latent(codes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Encode, quantise (updating the codebook in training mode) and decode.

        Args:
            x: a batch of inputs (subclass shape).
        Returns:
            ``(x_hat, ids (B, L), aux)`` where aux holds scalars ``commit_loss``, ``perplexity``,
            ``batch_usage`` and ``usage`` (see :class:`mega.tokenizers.quantizer.QuantizerOutput`).
        """
        if self.training:
            self.prepare(x)
        q = self.quantizer(self.encode_latent(x))
        aux = {
            "commit_loss": q.commit_loss,
            "perplexity": q.perplexity,
            "batch_usage": q.batch_usage,
            "usage": q.usage,
        }
        return self.decode_latent(q.z_q), q.ids, aux

    def inputs(self, batch: dict[str, Tensor], body: nn.Module) -> Tensor:
        """What :meth:`encode` takes, from a batch of body parameters (canonical meshes or 6D poses)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """Training loss of a batch of body poses (see the module docstring for the batch format)."""
        raise NotImplementedError

    def errors(self, batch: dict[str, Tensor], body: nn.Module) -> dict[str, Tensor]:
        """Per-sample reconstruction errors in mm through ids: ``pve``, ``mpjpe`` (B,) and ``ids`` (B, L)."""
        raise NotImplementedError


# ---------------------------------------------------------------------- batches and the body model
def body_pose_matrices(batch: dict[str, Tensor]) -> Tensor:
    """The batch's body pose as rotation matrices.

    Args:
        batch: dict with ``body_pose`` of shape (B, 23, 3) or (B, 69) axis-angle, (B, 23, 3, 3)
            matrices or (B, 23, 6) 6D.
    Returns:
        (B, 23, 3, 3) float32.
    """
    if "body_pose" not in batch:
        raise KeyError(
            f"batch has no 'body_pose' (keys: {sorted(batch)}); a tokenizer batch needs body_pose (B,23,3)"
        )
    pose = batch["body_pose"]
    if not torch.isfinite(pose).all():
        raise ValueError("batch['body_pose'] contains NaN or inf")
    pose = pose.float()
    if pose.dim() == 2 and pose.shape[1] == 3 * NUM_BODY_JOINTS:
        pose = pose.reshape(-1, NUM_BODY_JOINTS, 3)
    if pose.shape[1:] == (NUM_BODY_JOINTS, 3):
        return axis_angle_to_matrix(pose)
    if pose.shape[1:] == (NUM_BODY_JOINTS, 3, 3):
        return pose
    if pose.shape[1:] == (NUM_BODY_JOINTS, 6):
        return rot6d_to_matrix(pose)
    raise ValueError(
        f"batch['body_pose'] must be (B,23,3), (B,69), (B,23,3,3) or (B,23,6), got {tuple(pose.shape)}"
    )


def batch_betas(batch: dict[str, Tensor], batch_size: int, num_betas: int, device: torch.device) -> Tensor:
    """The batch's ``betas`` (B, num_betas), or zeros (mean shape) when absent."""
    betas = batch.get("betas")
    if betas is None:
        return torch.zeros(batch_size, num_betas, device=device)
    if betas.dim() != 2 or betas.shape[0] != batch_size:
        raise ValueError(f"batch['betas'] must be (B={batch_size}, n), got {tuple(betas.shape)}")
    if not torch.isfinite(betas).all():
        raise ValueError("batch['betas'] contains NaN or inf")
    return betas.float()[:, :num_betas]


def canonical_body(
    body: nn.Module, body_pose: Tensor, betas: Tensor, global_orient: Tensor | None = None
) -> BodyOutput:
    """Body in its canonical frame: zero global orientation (unless given), no translation.

    Args:
        body: a :mod:`mega.body` model.
        body_pose: (B, 23, 3, 3) rotation matrices.
        betas: (B, num_betas).
        global_orient: optional (B, 3, 3) root rotation (a pose tokenizer with the orientation).
    Returns:
        :class:`BodyOutput` with vertices (B, V, 3) and joints (B, 24, 3) in metres.
    """
    body_pose, betas = body_pose.float(), betas.float()
    if global_orient is None:
        global_orient = torch.zeros(body_pose.shape[0], 3, device=body_pose.device)
    # Skinning in bf16 would cost millimetres on targets and predictions: keep the body in float32.
    with torch.autocast(device_type=body_pose.device.type, enabled=False):
        return body(global_orient=global_orient.float(), body_pose=body_pose, betas=betas, transl=None)
