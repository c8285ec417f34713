"""Unconditional mesh generation with the self-supervised pre-trained transformer (MEGA supplementary C).

The network is wrapped as a ``logits_fn`` (it knows nothing about sampling), a sampler from
``SAMPLERS`` turns it into token ids (MEGA: MaskGIT, 20 steps, temperature (1.2 (1 - t/T))^6), and the
frozen tokenizer decodes the ids into canonical meshes: directly for the mesh tokenizer, through the
body model with the mean shape for the pose tokenizer. The same decoding serves the reference set of
uniformly random token ids.

Meshes returned here are canonical: zero global orientation, centred on their vertex centroid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from mega.samplers.deterministic import SamplerResult
from mega.tokenizers import MeshTokenizer, PoseVQVAE, Tokenizer
from mega.tokenizers.base import batch_betas, body_pose_matrices
from mega.tokenizers.mesh_vqvae import canonical_mesh

log = logging.getLogger(__name__)

Sampler = Callable[..., SamplerResult]  # a SAMPLERS instance, called as in mega/samplers/__init__.py


@dataclass
class GeneratedMeshes:
    """A generated set.

    Attributes:
        ids: (N, L) int64 token ids.
        vertices: (N, V, 3) float32 canonical meshes, metres, on the CPU.
    """

    ids: Tensor
    vertices: Tensor


@torch.no_grad()
def generate_ids(
    model: nn.Module,
    sampler: Sampler,
    num: int,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 250,
    device: torch.device | str | None = None,
) -> Tensor:
    """Token ids of ``num`` unconditional samples, ``batch_size`` rows per sampler call.

    Args:
        model: the pre-trained masked transformer (put in eval mode here); reads ``num_tokens`` and
            ``codebook_size`` from it.
        sampler: a ``SAMPLERS`` instance (e.g. ``MaskGITSampler`` with MEGA's generation settings).
        num: N, samples to draw.
        generator: the only source of randomness (seeded runs repeat for the same ``batch_size``).
        batch_size: rows per call.
        device: where the rows go (default: the model's device).

    Returns:
        (N, L) int64 ids in [0, K), on the CPU.
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be >= 1, got {num}, {batch_size}")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    logits_fn = model.logits_fn()  # unconditional
    chunks = []
    for start in range(0, num, batch_size):
        rows = min(batch_size, num - start)
        result = sampler(
            logits_fn,
            batch_size=rows,
            num_tokens=model.num_tokens,
            codebook_size=model.codebook_size,
            num_samples=1,
            generator=generator,
            device=device,
        )
        chunks.append(result.ids[:, 0].cpu())  # (rows, L)
    return torch.cat(chunks)


def random_token_ids(
    num: int, num_tokens: int, codebook_size: int, generator: torch.Generator | None
) -> Tensor:
    """Uniformly random ids, the reference "no prior" set.

    Args:
        num: N.
        num_tokens: L.
        codebook_size: K.
        generator: source of the draws.

    Returns:
        (N, L) int64 in [0, K).
    """
    return torch.randint(0, codebook_size, (num, num_tokens), generator=generator)


@torch.no_grad()
def decode_meshes(
    tokenizer: Tokenizer, ids: Tensor, body: nn.Module | None = None, *, batch_size: int = 500
) -> Tensor:
    """Canonical meshes of token ids.

    Args:
        tokenizer: a mesh tokenizer (decodes meshes) or a pose tokenizer (decodes body poses, posed here
            with ``body`` and the mean shape, betas = 0).
        ids: (N, L) int64 in [0, K).
        body: the body model; required for the pose tokenizer.
        batch_size: rows per decoder call.

    Returns:
        (N, V, 3) float32 meshes on the CPU, each centred on its vertex centroid.
    """
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    chunks = []
    for start in range(0, ids.shape[0], batch_size):
        chunk = ids[start : start + batch_size].to(device)
        if isinstance(tokenizer, MeshTokenizer):
            vertices = tokenizer.decode(chunk)
        elif isinstance(tokenizer, PoseVQVAE):
            if body is None:
                raise ValueError("decoding a pose tokenizer's ids into meshes needs the body model")
            # canonical meshes: a tokenized global orientation (include_global_orient) is dropped
            _, rotmats = tokenizer.split_pose(tokenizer.decode(chunk, as_matrix=True))
            betas = torch.zeros(chunk.shape[0], getattr(body, "num_betas", 10), device=device)
            vertices = canonical_mesh(body, rotmats, betas)[0]
        else:
            raise TypeError(f"no mesh decoding rule for tokenizer {type(tokenizer).__name__}")
        vertices = vertices.float()
        chunks.append((vertices - vertices.mean(1, keepdim=True)).cpu())
    return torch.cat(chunks)


def generate_meshes(
    model: nn.Module,
    tokenizer: Tokenizer,
    num: int,
    sampler: Sampler,
    *,
    generator: torch.Generator | None = None,
    body: nn.Module | None = None,
    batch_size: int = 250,
) -> GeneratedMeshes:
    """Sample ``num`` token sequences with ``sampler`` and decode them into canonical meshes.

    Args:
        model: the pre-trained masked transformer.
        tokenizer: its tokenizer (``model.num_tokens``/``codebook_size`` must match it).
        num: N.
        sampler: a ``SAMPLERS`` instance.
        generator: the only source of randomness.
        body: the body model (needed for the pose tokenizer).
        batch_size: rows per sampler and decoder call.

    Returns:
        :class:`GeneratedMeshes` with ids (N, L) and vertices (N, V, 3).
    """
    if (model.num_tokens, model.codebook_size) != (tokenizer.num_tokens, tokenizer.codebook_size):
        raise ValueError(
            f"model (L={model.num_tokens}, K={model.codebook_size}) does not match the tokenizer "
            f"(L={tokenizer.num_tokens}, K={tokenizer.codebook_size}); load the tokenizer it was trained with"
        )
    ids = generate_ids(model, sampler, num, generator=generator, batch_size=batch_size)
    return GeneratedMeshes(ids=ids, vertices=decode_meshes(tokenizer, ids, body, batch_size=batch_size))


@torch.no_grad()
def motion_meshes(dataset: Dataset, index: Tensor, body: nn.Module, *, batch_size: int = 500) -> Tensor:
    """Canonical meshes of motion frames (the data side of a comparison with generated meshes).

    Args:
        dataset: motion dataset whose items hold ``body_pose`` (23, 3) and ``betas`` (10,).
        index: (N,) int64 frame indices.
        body: the body model.
        batch_size: frames per body-model call.

    Returns:
        (N, V, 3) float32 meshes on the CPU: zero global orientation, centred on the vertex centroid.
    """
    device = body.J_regressor.device
    chunks = []
    for chunk in index.split(batch_size):
        batch = default_collate([dataset[int(i)] for i in chunk])
        rotmats = body_pose_matrices({"body_pose": batch["body_pose"].to(device)})
        betas = batch_betas(
            {"betas": batch["betas"].to(device)}, len(chunk), getattr(body, "num_betas", 10), device
        )
        chunks.append(canonical_mesh(body, rotmats, betas)[0].float().cpu())
    return torch.cat(chunks)


def regress_joints(vertices: Tensor, body: nn.Module) -> Tensor:
    """SMPL's 24 joints regressed from meshes with the body's ``J_regressor``.

    Args:
        vertices: (N, V, 3).
        body: the body model (``J_regressor`` (24, V)).

    Returns:
        (N, 24, 3) on the vertices' device.
    """
    return torch.einsum("jv,nvc->njc", body.J_regressor.to(vertices), vertices)
