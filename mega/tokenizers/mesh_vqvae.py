"""Mesh tokenizers (MEGA's Mesh-VQ-VAE, Fiche et al.): canonical mesh (B, V, 3) <-> N ids over S codes.

Two variants share the canonical-mesh plumbing of :class:`MeshTokenizer` (normalisation by a mean
mesh and a global scale measured on the first training batch, mean Euclidean vertex loss as
Mesh-VQ-VAE, errors through ids):

- ``mesh_conv`` (:class:`MeshConvVQVAE`): fully convolutional like Mesh-VQ-VAE (Zhou et al. 2020's
  mesh convolutions, :mod:`mega.tokenizers.mesh_conv`) over a region hierarchy computed from the
  body's template (:mod:`mega.tokenizers.mesh_hierarchy`), pooled down to N latent vertices = N
  tokens; each token stands for one surface region of the body. Works for any SMPL-format topology:
  the hierarchy is built on first contact with a body and saved in the state dict. The paper preset.
- ``mesh_mlp`` (:class:`MeshMLP`): the whole mesh flattened through residual MLPs (every token
  depends on every vertex). Far cheaper per mesh on CPUs.

``mesh_vqvae``, the registry's default mesh tokenizer, names one of them (see
:mod:`mega.tokenizers`): today ``mesh_mlp``, which reaches a usable error within the CPU presets'
budget where ``mesh_conv`` does not yet.

Canonical mesh = body with zero global orientation, centred at its vertex centroid
(:func:`canonical_mesh`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mega.tokenizers.base import Tokenizer, batch_betas, body_pose_matrices, canonical_body, init_kwargs
from mega.tokenizers.mesh_conv import LevelOps, MeshDecoder, MeshEncoder, level_channels
from mega.tokenizers.mesh_hierarchy import (
    HierarchyStore,
    MeshHierarchy,
    build_hierarchy,
    level_sizes,
    topology_fingerprint,
)
from mega.tokenizers.quantizer import VectorQuantizer

RECON_LOSSES = ("euclidean", "l1")


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


class MeshTokenizer(Tokenizer):
    """Canonical meshes (B, V, 3) <-> ids (B, N): what both mesh tokenizers share.

    Subclasses map normalised meshes ``(x - mean_mesh) / scale`` to latents (``_encode``) and back
    (``_decode``).

    Args:
        config, quantizer, num_tokens: see :class:`Tokenizer`.
        num_vertices: V. commitment_weight: weight of the commitment loss.
        recon_loss: ``euclidean`` (mean per-vertex Euclidean error, Mesh-VQ-VAE's) or ``l1``.
    """

    def __init__(self, config, quantizer, num_tokens, num_vertices, commitment_weight, recon_loss) -> None:
        super().__init__(config, quantizer, num_tokens)
        if recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
        self.num_vertices = num_vertices
        self.commitment_weight = commitment_weight
        self.recon_loss = recon_loss
        self.register_buffer("mean_mesh", torch.zeros(num_vertices, 3))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))

    def _check(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"expected canonical meshes (B, {self.num_vertices}, 3), got {tuple(x.shape)}")

    def _encode(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    def _decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def attach(self, body: nn.Module) -> None:
        """Get ready for meshes of ``body`` (default: check the vertex count)."""
        if body.num_vertices != self.num_vertices:
            raise ValueError(
                f"{self.registry_name} tokenizer has num_vertices={self.num_vertices} but the body model "
                f"'{getattr(body, 'name', '?')}' has {body.num_vertices}: use a tokenizer built for this body"
            )

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
        return self._encode((x.float() - self.mean_mesh) / self.scale)

    def decode_latent(self, z: Tensor) -> Tensor:
        """Code vectors (B, N, D) -> canonical meshes (B, V, 3), float32."""
        return self._decode(z).float() * self.scale + self.mean_mesh

    def targets(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, Tensor]:
        """Canonical meshes and joints of a batch of poses.

        Args:
            batch: dict with ``body_pose`` and optional ``betas`` (see :mod:`mega.tokenizers.base`).
            body: the body model.
        Returns:
            ``(vertices (B, V, 3), joints (B, 24, 3))``, metres.
        """
        self.attach(body)
        rotmats = body_pose_matrices(batch)
        betas = batch_betas(batch, rotmats.shape[0], getattr(body, "num_betas", 10), rotmats.device)
        with torch.no_grad():
            return canonical_mesh(body, rotmats, betas)

    def inputs(self, batch: dict[str, Tensor], body: nn.Module) -> Tensor:
        """Canonical meshes (B, V, 3) of a batch of body parameters (what :meth:`encode` takes)."""
        return self.targets(batch, body)[0]

    def loss(self, batch: dict[str, Tensor], body: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """Vertex reconstruction (``recon_loss``, metres) + weighted commitment.

        Args:
            batch: dict with ``body_pose`` and optional ``betas``.
            body: the body model (meshes are computed here, in the step).
        Returns:
            ``(loss, logs)``; logs hold ``recon``, ``commit``, ``pve_mm`` (through the quantiser,
            teacher-forced), ``perplexity``, ``batch_usage``, ``usage`` as floats.
        """
        verts, _ = self.targets(batch, body)
        x_hat, _, aux = self(verts)
        diff = x_hat - verts
        if self.recon_loss == "euclidean":
            recon = (diff.square().sum(-1) + 1e-12).sqrt().mean()
        else:
            recon = diff.abs().mean()
        loss = recon + self.commitment_weight * aux["commit_loss"]
        pve = diff.detach().norm(dim=-1).mean() * 1000
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


class MeshMLP(MeshTokenizer):
    """``mesh_mlp`` (also ``mesh_vqvae``): the flattened mesh through residual MLPs; every token depends on every vertex.

    A learned linear projection of the whole mesh (V*3 -> hidden), residual MLP blocks and a linear
    map to N tokens of dimension D; the decoder mirrors it. No token stands for a body part (see
    ``mesh_conv``); on SMPL its first and last layers alone hold ~42 M parameters at hidden 1024.

    Args:
        num_vertices: V, vertices of the body model's mesh (read from the body model).
        num_tokens: N, tokens per mesh (MEGA: 54).
        codebook_size: S, codes (MEGA: 512).
        code_dim: D, code dimension (Mesh-VQ-VAE: 9).
        hidden_dim: width of the encoder/decoder MLPs.
        num_blocks: residual MLP blocks in the encoder and in the decoder.
        commitment_weight: weight of the commitment loss (Mesh-VQ-VAE: 0.25).
        recon_loss: ``euclidean`` (Mesh-VQ-VAE's mean vertex error) or ``l1``.
        decay: EMA decay of the codebook.
        dead_after: training steps after which an unused code is reset (0: never; ours, see quantizer).
        usage_window: window, in steps, of the reported codebook usage.
        seed: seed of the quantiser's initial/reset draws.
    """

    registry_name = "mesh_mlp"

    def __init__(
        self,
        num_vertices: int,
        num_tokens: int = 54,
        codebook_size: int = 512,
        code_dim: int = 9,
        hidden_dim: int = 1024,
        num_blocks: int = 2,
        commitment_weight: float = 0.25,
        recon_loss: str = "euclidean",
        decay: float = 0.99,
        dead_after: int = 200,
        usage_window: int = 200,
        seed: int = 0,
    ) -> None:
        quantizer = VectorQuantizer(
            codebook_size, code_dim, decay=decay, dead_after=dead_after, usage_window=usage_window, seed=seed
        )
        config = init_kwargs(MeshMLP, locals())
        super().__init__(config, quantizer, num_tokens, num_vertices, commitment_weight, recon_loss)
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

    def _encode(self, h: Tensor) -> Tensor:
        """Normalised meshes (B, V, 3) -> (B, N, D)."""
        return self.encoder(h.flatten(1)).reshape(h.shape[0], self.num_tokens, self.code_dim)

    def _decode(self, z: Tensor) -> Tensor:
        """(B, N, D) -> normalised meshes (B, V, 3)."""
        return self.decoder(z.flatten(1)).reshape(z.shape[0], self.num_vertices, 3)


# The MLP's class name before the variants had names of their own (kept for old imports).
MeshVQVAE = MeshMLP


def _sizes(num_vertices: int, num_tokens: int, pool_factor: float, between: list[int] | None) -> list[int]:
    """Vertices per level [V, ..., N]: the given intermediate sizes, or geometric steps of ``pool_factor``."""
    if between is None:
        return level_sizes(num_vertices, num_tokens, pool_factor)
    sizes = [num_vertices, *between, num_tokens]
    if any(a <= b for a, b in zip(sizes, sizes[1:])):
        raise ValueError(
            f"level_sizes must decrease strictly from num_vertices={num_vertices} to num_tokens={num_tokens}, "
            f"got {sizes} (level_sizes of another body? set tokenizer.level_sizes=null for geometric steps)"
        )
    return sizes


class MeshConvVQVAE(MeshTokenizer):
    """``mesh_conv``: fully convolutional mesh VQ-VAE over a template's region hierarchy (Mesh-VQ-VAE's design).

    Encoder: mesh convolutions at every level of :mod:`mega.tokenizers.mesh_hierarchy`, pooled down
    to N latent vertices, each mapped alone to a D-dimensional latent = one token per body region.
    Decoder: the mirror image (see :mod:`mega.tokenizers.mesh_conv`). Parameter shapes depend on V
    and the kwargs only; the hierarchy itself is built from the body's template the first time a
    body is seen (:meth:`attach`), kept in the state dict (so checkpoints carry it) and rebuilt only
    when a body of another topology is attached to a tokenizer that has not been trained yet.

    Args:
        num_vertices: V (read from the body model).
        num_tokens: N latent vertices = tokens (MEGA: 54).
        codebook_size: S (MEGA: 512). code_dim: D (Mesh-VQ-VAE: 9).
        base_channels: channels at the full-resolution level, doubling per level ...
        hidden_dim: ... up to this many (the coarse levels' width).
        pool_factor: largest vertex reduction of one pooling step, when ``level_sizes`` is not given.
        level_sizes: vertices of the levels between the mesh and the N latent vertices, e.g.
            Mesh-VQ-VAE's on SMPL [1925, 400] (6890 -> 1925 -> 400 -> 54); None: geometric steps of at
            most ``pool_factor``.
        num_neighbours: K, vertices one convolution gathers (self included): one value, or one per level.
        layout: ``residual`` (ours: linear lift, residual blocks, per-token linear map) or ``plain``
            (Mesh-VQ-VAE's: one convolution + ELU per level; the block counts below are not read).
        pool_widths, unpool_widths: None (fixed pooling: area-weighted region means, inverse-distance
            mixes) or learned pooling as Mesh-VQ-VAE's, one width per pooling step (fine -> coarse):
            vertices each coarse vertex mixes when pooling / coarse vertices each vertex mixes when
            un-pooling (:mod:`mega.tokenizers.mesh_conv`).
        conv: ``spiral`` (shared weights over angularly ordered neighbours; fast) or ``vc`` (Zhou et
            al.'s per-vertex mixing of shared kernels, Mesh-VQ-VAE's; slow on CPUs).
        num_basis: M, kernels shared by all vertices of a ``vc`` convolution (Mesh-VQ-VAE: 9).
        blocks_per_level: residual conv blocks (2 convolutions each) per coarser level, in each direction.
        full_res_blocks: the same at the mesh's own level (0: per-vertex layers only there; cheaper).
        latent_blocks: conv blocks at the latent level of the decoder (0 keeps tokens unmixed there).
        level_embed: learned per-vertex embeddings after every up-sampling of the decoder (not only the
            last), so that a coarse region's vertices can differ away from its borders.
        up_neighbours: regions an up-sampled vertex mixes (1: its own region only).
        commitment_weight: weight of the commitment loss (Mesh-VQ-VAE: 0.25).
        recon_loss: ``euclidean`` (Mesh-VQ-VAE's mean vertex error) or ``l1``.
        decay, dead_after, usage_window, seed: the quantiser's (dead-code reset is ours, not Mesh-VQ-VAE's).
    """

    registry_name = "mesh_conv"

    def __init__(
        self,
        num_vertices: int,
        num_tokens: int = 54,
        codebook_size: int = 512,
        code_dim: int = 9,
        base_channels: int = 32,
        hidden_dim: int = 128,
        pool_factor: float = 3.0,
        num_neighbours: int | list[int] = 9,
        conv: str = "spiral",
        num_basis: int = 9,
        blocks_per_level: int = 1,
        full_res_blocks: int = 1,
        latent_blocks: int = 0,
        level_embed: bool = False,
        up_neighbours: int = 1,
        commitment_weight: float = 0.25,
        recon_loss: str = "euclidean",
        decay: float = 0.99,
        dead_after: int = 200,
        usage_window: int = 200,
        seed: int = 0,
        level_sizes: list[int] | None = None,
        layout: str = "residual",
        pool_widths: list[int] | None = None,
        unpool_widths: list[int] | None = None,
    ) -> None:
        quantizer = VectorQuantizer(
            codebook_size, code_dim, decay=decay, dead_after=dead_after, usage_window=usage_window, seed=seed
        )
        if not isinstance(num_neighbours, int):
            num_neighbours = [int(k) for k in num_neighbours]
        level_sizes, pool_widths, unpool_widths = (
            None if v is None else [int(n) for n in v] for v in (level_sizes, pool_widths, unpool_widths)
        )
        config = init_kwargs(MeshConvVQVAE, locals())
        # arguments added later are recorded only when set, so older checkpoints keep their content hash
        later = (
            ("level_sizes", None),
            ("layout", "residual"),
            ("pool_widths", None),
            ("unpool_widths", None),
        )
        for key, default in later:
            if config[key] == default:
                del config[key]
        super().__init__(config, quantizer, num_tokens, num_vertices, commitment_weight, recon_loss)
        self.sizes = _sizes(num_vertices, num_tokens, pool_factor, level_sizes)
        self.num_neighbours, self.up_neighbours = num_neighbours, up_neighbours
        channels = level_channels(len(self.sizes) - 1, base_channels, hidden_dim)
        self.encoder = MeshEncoder(
            self.sizes, num_neighbours, channels, code_dim, blocks_per_level, num_basis, conv, full_res_blocks,
            layout, pool_widths,
        )  # fmt: skip
        self.decoder = MeshDecoder(
            self.sizes, num_neighbours, channels, code_dim, blocks_per_level, num_basis, latent_blocks, conv,
            full_res_blocks, level_embed, layout, unpool_widths,
        )  # fmt: skip
        self.hierarchy_store = HierarchyStore()
        self._checked: tuple | None = None
        self._ops_cache: tuple[MeshHierarchy, list[LevelOps]] | None = None

    # ------------------------------------------------------------------ topology
    def attach(self, body: nn.Module) -> None:
        """Build (or check) the hierarchy for ``body``'s template; cheap when it is already there."""
        super().attach(body)
        key = (id(body.faces), body.faces.data_ptr(), tuple(body.faces.shape))
        h = self.hierarchy_store.get()
        if h is not None and self._checked == (key, id(h)):
            return
        self.set_template(body.v_template, body.faces)
        self._checked = (key, id(self.hierarchy_store.get()))

    def set_template(self, vertices: Tensor, faces: Tensor) -> None:
        """Use the hierarchy of this template (V, 3), (F, 3); built only if the topology differs from the stored one.

        Raises:
            ValueError: the template has another vertex count, or another topology than the one
                this (trained) tokenizer was built on.
        """
        if vertices.shape[0] != self.num_vertices:
            raise ValueError(f"template has {vertices.shape[0]} vertices, the tokenizer {self.num_vertices}")
        faces_np = faces.detach().cpu().numpy()
        fp = topology_fingerprint(self.num_vertices, faces_np)
        h = self.hierarchy_store.get()
        if h is not None and h.fingerprint == fp and h.sizes == self.sizes:
            return
        if h is not None and bool(self.stats_ready):
            raise ValueError(
                "this mesh tokenizer was trained on another mesh topology (hierarchy fingerprint "
                f"{h.fingerprint[:12]}, this body's {fp[:12]}): train a tokenizer for this body model"
            )
        built = build_hierarchy(vertices.detach().cpu().double().numpy(), faces_np, self.sizes,
                                self.num_neighbours, self.up_neighbours)  # fmt: skip
        self.hierarchy_store.set(built, device=self.mean_mesh.device)

    @property
    def hierarchy(self) -> MeshHierarchy:
        """The template's region hierarchy (raises until a body was attached or a checkpoint loaded)."""
        h = self.hierarchy_store.get()
        if h is None:
            raise RuntimeError(
                "mesh_conv has no mesh hierarchy yet: call tokenizer.attach(body) (training, errors() and "
                "inputs() do it) or load a trained checkpoint with mega.tokenizers.load_tokenizer"
            )
        if h.assign and h.assign[0].device != self.mean_mesh.device:
            self.hierarchy_store.to(self.mean_mesh.device)
            h = self.hierarchy_store.get()
        return h

    def regions(self) -> Tensor:
        """(V,) int64: the token whose region holds each vertex."""
        return self.hierarchy.regions()

    def _ops(self) -> list[LevelOps]:
        """The hierarchy's sparse operators, built once per hierarchy (and device) and then reused."""
        h = self.hierarchy
        if self._ops_cache is not None and self._ops_cache[0] is h:
            return self._ops_cache[1]
        ops = [LevelOps(h.neighbours[lv], h.assign[lv], h.area[lv], h.up_index[lv], h.up_weight[lv], h.sizes[lv + 1],
                        h.positions[lv], h.positions[lv + 1], h.neighbours[lv + 1])
               for lv in range(h.num_levels)]  # fmt: skip
        ops.append(LevelOps(h.neighbours[-1]))
        self._ops_cache = (h, ops)
        return ops

    def _encode(self, h: Tensor) -> Tensor:
        """Normalised meshes (B, V, 3) -> (B, N, D), token n = latent vertex n of the hierarchy."""
        return self.encoder(h, self._ops())

    def _decode(self, z: Tensor) -> Tensor:
        """(B, N, D) -> normalised meshes (B, V, 3)."""
        return self.decoder(z, self._ops())
