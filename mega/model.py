"""The image-conditioned masked generative HMR model: the one place the forward pass is written.

MEGA (section 3.3, supplementary B) and GenHMR ("Image Conditioned Masked Transformer")::

    img (B, 3, S, S) -> backbone -> features (tokens (B, N, C), pooled (B, C), pyramid)
        features -> conditioning.prepare -> context
        ids (B, L) + mask (B, L) + context -> masked token transformer -> logits (B, L, K)
        pooled -> heads: 6D global rotation (B, 6), crop camera (s, tx, ty) (B, 3), betas (B, 10) (pose tokenizer)

then, outside the trainable graph's parameters, the frozen tokenizer decodes ids (or soft code mixtures
(B, L, K)) to a canonical mesh (mesh tokenizer: zero global rotation, centred at its vertex centroid) or a
body pose (pose tokenizer), the body model poses it with the predicted rotation (and betas), and the crop
camera projects its joints to normalised crop coordinates ``s * (X[:2] + (tx, ty))`` (HMR2/CLIFF; see
:mod:`mega.body.camera`), or gives the full-image translation ``weak_perspective_to_translation``.

Frozen parts (tokenizer, body model) are held outside the module tree: DDP, the optimiser and
``state_dict`` see only what trains; the checkpoint records the tokenizer's path and hash instead.
Shapes: B batch, L tokens, K codes, V vertices, J = 24 SMPL joints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mega.body.camera import viewing_ray_rotation, weak_perspective_to_translation
from mega.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from mega.conditioning import Conditioning
from mega.tokenizers.target_cache import TargetIdCache
from mega.types import BodyOutput

log = logging.getLogger(__name__)

#: Upright body facing the camera in the OpenCV frame (y down, z forward): a half-turn about x.
UPRIGHT = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))


@dataclass
class HMROutput:
    """What :meth:`HMRModel.forward` returns.

    Attributes:
        logits: (B, L, K) scores of every token position.
        global_rot: (B, 3, 3) global (root) rotation in the camera frame, from the 6D head.
        cam: (B, 3) crop camera ``(s, tx, ty)``, s > 0.
        betas: (B, 10) shape for the pose tokenizer; None for the mesh tokenizer (shape is in its tokens).
        view_rot: (B, 3, 3) the crop's viewing-ray rotation when the heads predict the rotation relative
            to the crop (``crop_relative``): ``global_rot = view_rot @ R_crop``; project with it. Else None.
    """

    logits: Tensor
    global_rot: Tensor
    cam: Tensor
    betas: Tensor | None
    view_rot: Tensor | None = None


class Heads(nn.Module):
    """Image features -> 6D rotation (B, 6), camera (B, 3) [, betas (B, num_betas)].

    The heads read the pooled feature (B, C) and, with ``spatial_dim`` > 0, every token reduced to
    ``spatial_dim`` channels and flattened (B, N * spatial_dim): where a body part is in the crop is
    what tells its orientation, and pooling averages that away (measured in the issue 18 report).
    A shared hidden layer, then one linear map per output whose weights start small and whose bias
    starts at a sensible value: the upright rotation, scale ``init_scale`` and no shift, mean shape.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_betas: int | None,
        init_scale: float = 0.9,
        num_tokens: int = 0,
        spatial_dim: int = 0,
    ) -> None:
        super().__init__()
        self.reduce = None
        in_dim = dim
        if spatial_dim > 0:
            self.reduce = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, spatial_dim))
            in_dim += int(num_tokens) * int(spatial_dim)
        self.trunk = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU())
        self.rot = nn.Linear(hidden, 6)
        self.cam = nn.Linear(hidden, 3)
        self.betas = nn.Linear(hidden, num_betas) if num_betas else None
        with torch.no_grad():
            for lin in (self.rot, self.cam, self.betas):
                if lin is not None:
                    nn.init.normal_(lin.weight, std=1e-3)
                    nn.init.zeros_(lin.bias)
            self.rot.bias.copy_(matrix_to_rot6d(torch.tensor(UPRIGHT)))
            self.cam.bias[0] = float(torch.log(torch.tensor(init_scale)))

    def forward(self, features: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """BackboneOutput (tokens (B, N, C), pooled (B, C)) -> rotation (B, 3, 3), cam (B, 3) with
        s = exp(raw) > 0, betas (B, nb) or None."""
        x = features.pooled.float()
        if self.reduce is not None:
            x = torch.cat([x, self.reduce(features.tokens.float()).flatten(1)], dim=-1)
        h = self.trunk(x)
        cam = self.cam(h)
        cam = torch.cat([cam[:, :1].clamp(-6.0, 6.0).exp(), cam[:, 1:]], dim=-1)
        return rot6d_to_matrix(self.rot(h)), cam, self.betas(h) if self.betas is not None else None


class HMRModel(nn.Module):
    """backbone -> conditioning -> masked token transformer -> logits, plus rotation/camera/betas heads.

    Args:
        backbone: a :class:`mega.backbones.Backbone` (trainable, or partly frozen by its own config).
        transformer: a :class:`mega.transformer.MaskedTokenTransformer` with L, K of the tokenizer.
        conditioning: a :class:`mega.conditioning.Conditioning` built for this backbone and transformer.
        tokenizer: the frozen tokenizer (mesh or pose); kept outside the module tree.
        body: the body model (SMPL-format); kept outside the module tree.
        head_hidden: width of the heads' hidden layer.
        init_scale: initial crop-camera scale s.
        spatial_dim: > 0: the heads also read every image token reduced to this many channels (see Heads).
        crop_relative: the rotation head predicts the body's rotation relative to the crop's viewing ray
            (CLIFF): the camera-frame rotation is ``viewing_ray_rotation(box centre, K) @ R_crop`` and the
            crop camera projects in the ray's frame (:meth:`view_rotation`, :meth:`project`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        transformer: nn.Module,
        conditioning: Conditioning,
        tokenizer: nn.Module,
        body: nn.Module,
        head_hidden: int = 512,
        init_scale: float = 0.9,
        spatial_dim: int = 0,
        crop_relative: bool = False,
    ) -> None:
        super().__init__()
        if (transformer.num_tokens, transformer.codebook_size) != (
            tokenizer.num_tokens,
            tokenizer.codebook_size,
        ):
            raise ValueError(
                f"transformer (L={transformer.num_tokens}, K={transformer.codebook_size}) does not match the "
                f"tokenizer (L={tokenizer.num_tokens}, K={tokenizer.codebook_size})"
            )
        self.backbone = backbone
        self.conditioning = conditioning
        self.transformer = transformer
        self.kind = "pose" if getattr(tokenizer, "registry_name", "").startswith("pose") else "mesh"
        num_betas = int(getattr(body, "num_betas", 10)) if self.kind == "pose" else None
        self.crop_relative = bool(crop_relative)
        self.heads = Heads(
            int(backbone.dim),
            head_hidden,
            num_betas,
            init_scale,
            num_tokens=int(backbone.num_tokens),
            spatial_dim=int(spatial_dim),
        )
        for p in tokenizer.parameters():
            p.requires_grad_(False)
        for p in body.parameters():
            p.requires_grad_(False)
        self._frozen = {"tokenizer": tokenizer.eval(), "body": body.eval()}  # not submodules (see module doc)
        self.training_config: dict[str, Any] | None = None  # set by mega.hmr_checkpoint.load_hmr
        neck = getattr(backbone, "neck", None)
        if not conditioning.uses_pyramid and neck is not None and any(True for _ in neck.parameters()):
            # The pyramid feeds nothing: freeze it so that no trainable parameter is left without a
            # gradient (DDP waits for all of them).
            for p in neck.parameters():
                p.requires_grad_(False)
            log.info(
                "conditioning '%s' does not read the feature pyramid: the backbone neck is frozen",
                type(conditioning).__name__,
            )

    # ------------------------------------------------------------------ frozen parts
    @property
    def tokenizer(self) -> nn.Module:
        return self._frozen["tokenizer"]

    @property
    def body(self) -> nn.Module:
        return self._frozen["body"]

    @property
    def mask_id(self) -> int:
        return self.transformer.mask_id

    def to(self, *args: Any, **kwargs: Any) -> HMRModel:  # the frozen parts follow the model
        super().to(*args, **kwargs)
        for key, module in self._frozen.items():
            self._frozen[key] = module.to(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ the network
    def encode_image(
        self, img: Tensor, frozen: dict[str, Tensor] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """img (B, 3, S, S) -> (backbone features, conditioning context).

        ``frozen``: the frozen trunk's outputs for these crops, computed beforehand
        (:class:`mega.backbones.feature_cache.FrozenFeatureDataset`); then ``img`` is not read.
        """
        features = self.backbone(img) if frozen is None else self.backbone.from_frozen(frozen)
        return features, self.conditioning.prepare(features)

    def forward(
        self,
        img: Tensor,
        ids: Tensor,
        mask: Tensor,
        view_rot: Tensor | None = None,
        frozen: dict[str, Tensor] | None = None,
    ) -> HMROutput:
        """Logits of every position given the visible ids and the image, and the head outputs.

        Args:
            img: (B, 3, S, S) ImageNet-normalised crops.
            ids: (B, L) int64; read where ``mask`` is False (masked positions may hold ``mask_id``).
            mask: (B, L) bool, True = masked.
            view_rot: (B, 3, 3) the crops' viewing-ray rotations (:meth:`view_rotation`); used only when
                the model is ``crop_relative`` (None there means centred crops).
            frozen: precomputed frozen-trunk outputs of the crops (see :meth:`encode_image`).
        """
        features, context = self.encode_image(img, frozen)
        logits = self.transformer(ids, mask, context, conditioning=self.conditioning)
        rot, cam, betas = self.heads(features)
        view_rot = view_rot if self.crop_relative else None
        if view_rot is not None:
            rot = view_rot.to(rot) @ rot
        return HMROutput(logits=logits, global_rot=rot, cam=cam, betas=betas, view_rot=view_rot)

    def view_rotation(self, batch: dict[str, Tensor]) -> Tensor | None:
        """(B, 3, 3) viewing-ray rotations of a batch's crops (``bbox_center``, ``cam_int``), or None
        when the model predicts camera-frame rotations directly (not ``crop_relative``)."""
        if not self.crop_relative:
            return None
        return viewing_ray_rotation(batch["bbox_center"].float(), batch["cam_int"].float())

    def logits_fn(self, context: dict[str, Any], num_samples: int = 1):
        """A sampler's ``logits_fn`` (ids (R, L), mask (R, L)) -> float32 logits (R, L, K), R = B * Q.

        The context of each image is repeated Q times (row b * Q + q), the samplers' row layout. A call whose
        Q rows per image are identical (ids and mask; e.g. the first step of stochastic decoding, when
        every token is masked) runs the network on one row per image and repeats its logits: the same
        result, Q times less work.
        """
        if num_samples == 1:
            return self.transformer.logits_fn(context, self.conditioning)
        per_image = self.transformer.logits_fn(context, self.conditioning)  # B rows
        per_row = self.transformer.logits_fn(
            Conditioning.repeat_context(context, num_samples), self.conditioning
        )

        def logits_fn(ids: Tensor, mask: Tensor) -> Tensor:
            q = num_samples
            grouped_ids, grouped_mask = ids.reshape(-1, q, ids.shape[1]), mask.reshape(-1, q, mask.shape[1])
            same = bool((grouped_mask == grouped_mask[:, :1]).all()) and bool(
                ((grouped_ids == grouped_ids[:, :1]) | grouped_mask).all()
            )
            if not same:
                return per_row(ids, mask)
            return per_image(ids[::q], mask[::q]).repeat_interleave(q, dim=0)

        return logits_fn

    # ------------------------------------------------------------------ tokens -> body
    #: Samples whose target ids are remembered (:class:`mega.tokenizers.target_cache.TargetIdCache`); 0: none
    #: (the default: an encode's float rounding depends on the batch, so cached ids may differ from a fresh
    #: encode in a near-tie, and runs that do not ask for the cache keep their exact results).
    target_cache_items: int = 0

    @torch.no_grad()
    def target_ids(self, body_pose: Tensor, betas: Tensor, global_orient: Tensor | None = None) -> Tensor:
        """Ground-truth ids (B, L) of body poses (B, 23, 3) axis-angle (or matrices) and betas (B, 10).

        Computed by the frozen tokenizer on the model's device, from the (augmented) ground truth;
        ``global_orient`` (B, 3) is read by pose tokenizers that tokenize it (``include_global_orient``).
        With ``target_cache_items > 0`` (``target_id_cache=N`` in train_hmr), samples seen before (same
        ground truth, bit for bit: a flipped sample is another one) are served from a cache keyed by
        content, with no tokenizer or body-model work.
        """
        tok = self.tokenizer
        with_orient = global_orient is not None and getattr(tok, "include_global_orient", False)
        batch = {"body_pose": body_pose.float(), "betas": betas.float()}
        if global_orient is not None:
            batch["global_orient"] = global_orient.float().reshape(-1, 3)

        def encode(index: Tensor) -> Tensor:
            sub = {k: v[index.to(v.device)] for k, v in batch.items()}
            with torch.autocast(body_pose.device.type, enabled=False):
                return tok.encode(tok.inputs(sub, self.body))

        if not self.target_cache_items:
            return encode(torch.arange(body_pose.shape[0]))
        cache = self.__dict__.get("_target_cache")
        if cache is None or cache[0] is not tok:  # one cache per tokenizer
            cache = self.__dict__["_target_cache"] = (tok, TargetIdCache(self.target_cache_items))
        fields = [batch["body_pose"], batch["betas"]] + ([batch["global_orient"]] if with_orient else [])
        return cache[1].lookup(TargetIdCache.keys(*fields), encode, body_pose.device)

    def decode_body(
        self,
        global_rot: Tensor,
        *,
        ids: Tensor | None = None,
        probs: Tensor | None = None,
        codes: Tensor | None = None,
        betas: Tensor | None = None,
    ) -> BodyOutput:
        """Body (rotated, not translated) from token ids or soft code mixtures and the global rotation.

        Args:
            global_rot: (B, 3, 3) root rotation in the camera frame.
            ids: (B, L) int64 ids, or
            probs: (B, L, K) code probabilities (e.g. straight-through Gumbel-softmax; differentiable), or
            codes: (B, L, D) code vectors (e.g. refined by pose-guided refinement; differentiable).
            betas: (B, 10) shape for the pose tokenizer (zeros if None); unused by the mesh tokenizer.

        Returns:
            BodyOutput: vertices (B, V, 3), joints (B, 24, 3) in metres, camera-frame orientation, no
            translation. Mesh tokenizer: centred at the canonical mesh's vertex centroid, joints from the
            body's J_regressor; pose tokenizer: the body model's own origin and joints.
        """
        if sum(x is not None for x in (ids, probs, codes)) != 1:
            raise ValueError(
                "decode_body takes exactly one of ids (B, L), probs (B, L, K) or codes (B, L, D)"
            )
        tok, body = self.tokenizer, self.body
        global_rot = global_rot.float()
        with torch.autocast(global_rot.device.type, enabled=False):
            if self.kind == "mesh":
                if ids is not None:
                    canon = tok.decode(ids)
                elif probs is not None:
                    canon = tok.decode_soft(probs.float())
                else:
                    canon = tok.decode_embeddings(codes.float())  # (B, V, 3)
                vertices = canon.float() @ global_rot.transpose(1, 2)
                joints = torch.einsum("jv,bvc->bjc", body.J_regressor.to(vertices), vertices)
                return BodyOutput(vertices=vertices, joints=joints)
            if ids is not None:
                pose = tok.decode(ids, as_matrix=True)
            elif probs is not None:
                pose = tok.decode_soft(probs.float(), as_matrix=True)
            else:
                pose = rot6d_to_matrix(tok.decode_embeddings(codes.float()))
            # A tokenizer that tokenizes the global orientation too (GenHMR) gives it; it replaces the head's.
            orient, pose = tok.split_pose(pose) if hasattr(tok, "split_pose") else (None, pose)
            if betas is None:
                betas = global_rot.new_zeros(global_rot.shape[0], int(getattr(body, "num_betas", 10)))
            root = global_rot if orient is None else orient.float()
            return body(global_orient=root, body_pose=pose.float(), betas=betas.float(), transl=None)

    @staticmethod
    def project(points: Tensor, cam: Tensor, view_rot: Tensor | None = None) -> Tensor:
        """Crop-camera projection: points (B, J, 3) body frame, cam (B, 3) -> (B, J, 2) in [-1, 1] crop coords.

        With ``view_rot`` (B, 3, 3) the points are camera-frame directions seen along the crop's viewing
        ray: they are turned into the ray's frame (``view_rot^T X``) before the orthographic projection.
        """
        if view_rot is not None:
            points = points @ view_rot.to(points)
        return cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])

    @staticmethod
    def full_image_translation(cam: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """(B, 3) camera-frame translation of the body from the crop camera and the sample's box/intrinsics."""
        return weak_perspective_to_translation(
            cam.float(),
            batch["bbox_center"].float(),
            batch["bbox_size"].float().reshape(-1),
            batch["cam_int"][:, 0, 0].float(),
            batch["img_size"].float(),
        )


def load_pretrained_transformer(
    transformer: nn.Module, path: str, tokenizer_sha256: str | None = None
) -> None:
    """Initialise ``transformer`` from a ``scripts/pretrain.py`` checkpoint (``pretrained.pt``).

    The built-in context projection, if any, may be missing from the file; every other key must match.
    With ``tokenizer_sha256`` the checkpoint's tokenizer must be the same one (ids mean the same codes).
    """
    from pathlib import Path

    from mega.engine import load_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"transformer.init={path} does not exist; make one with `python scripts/pretrain.py` "
            "(its run directory holds pretrained.pt) or set transformer.init=null to train from scratch"
        )
    record = load_checkpoint(path)
    if "model" not in record or "transformer" not in record:
        raise ValueError(f"{path} is not a scripts/pretrain.py checkpoint (no 'model'/'transformer' keys)")
    want = record.get("tokenizer", {}).get("sha256")
    if tokenizer_sha256 is not None and want is not None and want != tokenizer_sha256:
        raise ValueError(
            f"{path} was pre-trained with tokenizer {want[:12]}, but this run uses {tokenizer_sha256[:12]}: "
            "token ids would mean different codes; pre-train with this tokenizer (scripts/pretrain.py "
            "tokenizer.checkpoint=...) or set transformer.init=null"
        )
    missing, unexpected = transformer.load_state_dict(record["model"], strict=False)
    missing = [k for k in missing if not k.startswith("context_proj.")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this transformer (missing {missing[:5]}, unexpected {unexpected[:5]}): build the "
            f"transformer with the checkpoint's settings {record['transformer']}"
        )
