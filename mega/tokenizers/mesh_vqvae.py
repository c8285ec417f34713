"""Mesh tokenizer (MEGA's Mesh-VQ-VAE, Fiche et al.): canonical mesh (B, V, 3) <-> N ids over S codes.

MEGA tokenises SMPL meshes with a fully convolutional mesh autoencoder (Zhou et al. 2020) whose
spiral/down-sampling operators are tied to SMPL's 6890-vertex topology: 54 latent "vertices" of
dimension 9, a 512-code EMA codebook, commitment 0.25. To serve any SMPL-format topology (the
free body and SMPL) this module replaces the mesh convolutions with a learned linear projection of
the whole mesh (V*3 -> hidden), residual MLP blocks, and a linear map to N tokens of dimension D;
the decoder mirrors it. Inputs are normalised by a mean mesh and a global scale measured on the
first training batch and stored in the state dict.

Canonical mesh = body with zero global orientation, centred at its vertex centroid
(:func:`canonical_mesh`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mega.tokenizers.base import Tokenizer, batch_betas, body_pose_matrices, canonical_body, init_kwargs
from mega.tokenizers.quantizer import VectorQuantizer


def canonical_mesh(body: nn.Module, body_pose: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    """Canonical mesh and joints: zero global orientation, centred at the vertex centroid.

    Args:
        body: a :mod:`mega.body` model.
        body_pose: (B, 23, 3, 3) rotation matrices.
        betas: (B, num_betas).
    Returns:
        ``(vertices (B, V, 3), joints (B, 24, 3))`` in metres, both shifted by the same centroid.
    """
    out = canonical_body(body, body_pose, betas)
    centre = out.vertices.mean(dim=1, keepdim=True)
    return out.vertices - centre, out.joints - centre


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP block: x + W2 gelu(W1 norm(x)); (B, H) -> (B, H)."""

    def __init__(self, dim: int, expansion: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, expansion * dim)
        self.fc2 = nn.Linear(expansion * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H) -> (B, H)."""
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class MeshVQVAE(Tokenizer):
    """Canonical mesh (B, V, 3) -> ids (B, N) over S codes -> mesh (B, V, 3).

    Args:
        num_vertices: V, vertices of the body model's mesh (read from the body model).
        num_tokens: N, tokens per mesh (MEGA: 54).
        codebook_size: S, codes (MEGA: 512).
        code_dim: D, code dimension (Mesh-VQ-VAE: 9).
        hidden_dim: width of the encoder/decoder MLPs.
        num_blocks: residual MLP blocks in the encoder and in the decoder.
        commitment_weight: weight of the commitment loss (Mesh-VQ-VAE: 0.25).
        decay: EMA decay of the codebook.
        dead_after: training steps after which an unused code is reset (0: never).
        usage_window: window, in steps, of the reported codebook usage.
        seed: seed of the quantiser's initial/reset draws.
    """

    registry_name = "mesh_vqvae"

    def __init__(
        self,
        num_vertices: int,
        num_tokens: int = 54,
        codebook_size: int = 512,
        code_dim: int = 9,
        hidden_dim: int = 1024,
        num_blocks: int = 2,
        commitment_weight: float = 0.25,
        decay: float = 0.99,
        dead_after: int = 200,
        usage_window: int = 200,
        seed: int = 0,
    ) -> None:
        quantizer = VectorQuantizer(
            codebook_size, code_dim, decay=decay, dead_after=dead_after, usage_window=usage_window, seed=seed
        )
        super().__init__(init_kwargs(MeshVQVAE, locals()), quantizer, num_tokens)
        self.num_vertices = num_vertices
        self.commitment_weight = commitment_weight
        latent = num_tokens * code_dim
        self.encoder = nn.Sequential(
            nn.Linear(3 * num_vertices, hidden_dim),
            *[ResidualMLP(hidden_dim) for _ in range(num_blocks)],
            nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden_dim),
            *[ResidualMLP(hidden_dim) for _ in range(num_blocks)],
            nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, 3 * num_vertices),
        )
        # Zero last layer: an untrained decoder outputs the mean mesh.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.register_buffer("mean_mesh", torch.zeros(num_vertices, 3))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"expected canonical meshes (B, {self.num_vertices}, 3), got {tuple(x.shape)}")

    @torch.no_grad()
    def prepare(self, x: Tensor) -> None:
        """On the first training batch, set the mean mesh and global scale (averaged over ranks).

        Args:
            x: (B, V, 3) canonical meshes.
        """
        if bool(self.stats_ready):
            return
        self._check(x)
        x = x.float()
        stats = torch.cat([x.mean(0).reshape(-1), (x * x).mean(0).reshape(-1)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
            stats /= dist.get_world_size()
        mean, sq = stats.chunk(2)
        self.mean_mesh.copy_(mean.reshape(-1, 3))
        # Floor of 1 cm: a first batch of one mesh has no spread.
        self.scale.copy_((sq - mean * mean).clamp_min(0).mean().sqrt().clamp_min(1e-2))
        self.stats_ready.fill_(True)

    def encode_latent(self, x: Tensor) -> Tensor:
        """Canonical meshes (B, V, 3) -> latents (B, N, D)."""
        self._check(x)
        h = ((x.float() - self.mean_mesh) / self.scale).flatten(1)  # (B, 3V)
        return self.encoder(h).reshape(x.shape[0], self.num_tokens, self.code_dim)

    def decode_latent(self, z: Tensor) -> Tensor:
        """Code vectors (B, N, D) -> canonical meshes (B, V, 3), float32."""
        out = self.decoder(z.flatten(1)).float().reshape(z.shape[0], self.num_vertices, 3)
        return out * self.scale + self.mean_mesh

    def targets(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, Tensor]:
        """Canonical meshes and joints of a batch of poses.

        Args:
            batch: dict with ``body_pose`` and optional ``betas`` (see :mod:`mega.tokenizers.base`).
            body: the body model.
        Returns:
            ``(vertices (B, V, 3), joints (B, 24, 3))``, metres.
        """
        rotmats = body_pose_matrices(batch)
        betas = batch_betas(batch, rotmats.shape[0], getattr(body, "num_betas", 10), rotmats.device)
        with torch.no_grad():
            return canonical_mesh(body, rotmats, betas)

    def inputs(self, batch: dict[str, Tensor], body: nn.Module) -> Tensor:
        """Canonical meshes (B, V, 3) of a batch of body parameters (what :meth:`encode` takes)."""
        return self.targets(batch, body)[0]

    def loss(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """L1 vertex reconstruction + weighted commitment.

        Args:
            batch: dict with ``body_pose`` and optional ``betas``.
            body: the body model (meshes are computed here, in the step).
        Returns:
            ``(loss, logs)``; logs hold ``recon``, ``commit``, ``pve_mm`` (through the quantiser,
            teacher-forced), ``perplexity``, ``batch_usage``, ``usage`` as floats.
        """
        verts, _ = self.targets(batch, body)
        x_hat, _, aux = self(verts)
        recon = (x_hat - verts).abs().mean()
        loss = recon + self.commitment_weight * aux["commit_loss"]
        pve = (x_hat.detach() - verts).norm(dim=-1).mean() * 1000
        logs = {"recon": recon.item(), "commit": aux["commit_loss"].item(), "pve_mm": pve.item()}
        logs.update({k: aux[k].item() for k in ("perplexity", "batch_usage", "usage")})
        return loss, logs

    @torch.no_grad()
    def errors(self, batch: dict[str, Tensor], body: nn.Module) -> dict[str, Tensor]:
        """Per-sample errors of ``decode(encode(mesh))`` in mm.

        Returns:
            ``pve`` (B,) mean vertex error; ``mpjpe`` (B,) error of the joints regressed from the
            meshes with the body's ``J_regressor`` (24 joints); ``ids`` (B, N) the tokens used.
        """
        verts, _ = self.targets(batch, body)
        ids = self.encode(verts)
        x_hat = self.decode(ids)
        reg = body.J_regressor.to(verts)
        j_err = (torch.einsum("jv,bvc->bjc", reg, x_hat) - torch.einsum("jv,bvc->bjc", reg, verts)).norm(
            dim=-1
        )
        return {"pve": (x_hat - verts).norm(dim=-1).mean(1) * 1000, "mpjpe": j_err.mean(1) * 1000, "ids": ids}
