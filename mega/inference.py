"""Bodies from images with a trained HMR model: decode with any sampler, refine with 2D keypoints.

One entry point for ``scripts/eval.py``, ``scripts/demo.py`` and ``benchmarks/inference.py``::

    model = load_hmr("outputs/train_hmr/<run>/hmr.pt")                                 # mega.hmr_checkpoint
    rec = recover(model, img, build_sampler(cfg.sampler), num_samples=10)              # any sampler
    rec = recover(model, img, sampler, refiner=build_refiner(cfg.refiner), keypoints=kp)  # + refinement

The backbone and the conditioning run once per image whatever Q (samples) and T (steps) are: the
image's context (projected tokens, cross-attention keys/values, deformable value maps) is prepared once
and repeated for the Q rows of every decoding step. With Q > 1 the deterministic prediction (all
masked, one pass) comes from the same context, for the distance of the mean-of-Q mesh to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mega.body.camera import fit_crop_camera, fit_weak_perspective, solve_rotation
from mega.body.rotations import matrix_to_axis_angle, rot6d_to_matrix
from mega.engine.dist import resolve_precision
from mega.errors import ConfigError, UserError

# hmr.pt is mega.hmr_checkpoint's; its names stay importable from here while other branches move over
from mega.hmr_checkpoint import HMR_FORMAT, CheckpointError, build_hmr_model, load_hmr  # noqa: F401
from mega.model import HMRModel
from mega.refiners import PoseGuidedRefiner
from mega.samplers import SAMPLERS, DeterministicSampler


def build_sampler(cfg: str | dict[str, Any] | None) -> Any:
    """A sampler from its config (``name`` + kwargs, e.g. ``configs/sampler/<preset>.yaml`` as composed by a
    script) or a bare registry name (the constructor's defaults); None = deterministic."""
    if cfg is None:
        return DeterministicSampler()
    return SAMPLERS.build(**({"name": cfg} if isinstance(cfg, str) else dict(cfg)))


def decoding_label(sampler_cfg: Any, refiner_cfg: Any = None) -> str:
    """A decoding setting's name for tables and pictures: the sampler preset's name (Hydra's choice of
    ``configs/sampler/`` when a Hydra app runs; else the registry name, or the name given), with
    ``+ <refiner>`` when a refiner runs."""
    from hydra.core.hydra_config import HydraConfig

    if isinstance(sampler_cfg, str):
        label = sampler_cfg
    else:
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        label = choices.get("sampler") or sampler_cfg.get("name", "sampler")
    refiner = (refiner_cfg or {}).get("name", "none")
    return label if refiner == "none" else f"{label} + {refiner}"


@dataclass
class Recovery:
    """Bodies recovered from a batch of crops; Q hypotheses per image.

    Attributes:
        vertices: (B, Q, V, 3) rotated, untranslated (body frame; add the camera translation to place).
        joints: (B, Q, 24, 3) SMPL joints, same frame.
        global_rot: (B, 3, 3); cam: (B, 3) crop camera ``(s, tx, ty)``; betas: (B, 10) or None.
        ids: (B, Q, L) token ids of the sampler (before any refinement).
        body_pose: (B, Q, 23, 3) axis-angle for the pose tokenizer, else None.
        deterministic_vertices: (B, V, 3) the deterministic mode's mesh when Q > 1 (else None).
        initial_vertices: (B, Q, V, 3) before refinement (None without a refiner).
        reprojection: {"before", "after"}: (B, Q) confidence-weighted mean 2D keypoint error in normalised
            crop units (x S / 2 for crop pixels), with a refiner; else None.
    """

    vertices: Tensor
    joints: Tensor
    global_rot: Tensor
    cam: Tensor
    betas: Tensor | None
    ids: Tensor
    body_pose: Tensor | None = None
    deterministic_vertices: Tensor | None = None
    initial_vertices: Tensor | None = None
    reprojection: dict[str, Tensor] | None = None


@torch.no_grad()
def recover(
    model: HMRModel,
    img: Tensor,
    sampler: Any = None,
    num_samples: int = 1,
    *,
    refiner: PoseGuidedRefiner | None = None,
    keypoints: Tensor | None = None,
    seed: int = 0,
    with_deterministic: bool = False,
    rotation: str = "head",
    view_rot: Tensor | None = None,
    precision: str = "fp32",
) -> Recovery:
    """Decode bodies from crops: the one decode path (training's validation, eval, the demo, benchmarks).

    image -> backbone + conditioning (once) -> heads; sampler -> token ids; [refiner -> code vectors];
    tokenizer decoder + body model -> vertices and joints.

    Args:
        model: a trained :class:`HMRModel` (eval mode).
        img: (B, 3, S, S) ImageNet-normalised square crops.
        sampler: a sampler (:func:`build_sampler`); None = deterministic.
        num_samples: Q hypotheses per image (samples run as one batch).
        refiner: a refiner (:func:`mega.refiners.build_refiner`, e.g. GenHMR's pose-guided refinement) run on
            the sampled tokens' code vectors with ``keypoints``; None = none.
        keypoints: (B, 17, 3) COCO-17 ``x, y, confidence`` in normalised crop coordinates.
        seed: randomness of stochastic samplers.
        with_deterministic: also decode the deterministic mesh (from the same image context).
        rotation: ``head`` (the model's rotation and camera heads) or ``keypoints``: the global rotation
            and crop camera that put the decoded body's COCO-17 points (the mean of the Q hypotheses'
            bodies) on ``keypoints`` (:func:`rotation_from_keypoints`), before any pose-guided refinement.
            Not for tokenizers that carry the orientation in their tokens.
        view_rot: (B, 3, 3) the crops' viewing-ray rotations (``model.view_rotation(batch)``), read by a
            ``crop_relative`` model: decoding, refinement and the keypoint solve work in the crop's frame,
            and the results (vertices, joints, ``global_rot``) are turned into the camera frame at the end.
        precision: ``fp32`` (the default), ``bf16`` or ``auto`` (bf16 where the device runs it natively:
            CUDA GPUs with bf16, CPUs with AMX / AVX512-BF16): autocast of the backbone, heads and
            transformer passes; the tokenizer's decoder, the body model and refinement stay float32.
    """
    _check_decoding(model, refiner, keypoints, rotation)
    B, Q = img.shape[0], num_samples
    dtype = resolve_precision(precision, img.device)
    amp = lambda: torch.autocast(img.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731
    with amp():
        features, context = model.encode_image(img)  # once per image
        rot, cam, betas = model.heads(features)
        sampler = DeterministicSampler() if sampler is None else sampler
        ids = _sample(model, context, sampler, (B, Q), seed, img.device)  # (B, Q, L)
    betas = None if betas is None else betas.float()
    rec = _decode(model, ids, rot.float(), cam.float(), betas, refiner, keypoints, rotation)
    if with_deterministic and Q > 1:
        with amp():
            det_ids = _sample(model, context, DeterministicSampler(), (B, 1), seed, img.device)[:, 0]
        rec.deterministic_vertices = model.decode_body(rec.global_rot, ids=det_ids, betas=betas).vertices
    return _to_camera_frame(rec, view_rot) if view_rot is not None and model.crop_relative else rec


def _check_decoding(model: HMRModel, refiner: Any, keypoints: Tensor | None, rotation: str) -> None:
    """:func:`recover`'s arguments that do not go together: one clear error each."""
    if refiner is not None and keypoints is None:
        raise ValueError(
            "the pose_guided refiner needs 2D keypoints (B, 17, 3) in normalised crop coordinates"
        )
    if rotation not in ("head", "keypoints"):
        raise ConfigError(f"rotation must be 'head' or 'keypoints', got {rotation!r}")
    if rotation == "keypoints" and keypoints is None:
        raise ConfigError("rotation=keypoints needs 2D keypoints (B, 17, 3) in normalised crop coordinates")
    if rotation == "keypoints" and getattr(model.tokenizer, "include_global_orient", False):
        raise ConfigError("rotation=keypoints: this tokenizer decodes the global orientation from its tokens")


def _sample(
    model: HMRModel, context: Any, sampler: Any, shape: tuple[int, int], seed: int, dev: torch.device
) -> Tensor:
    """(B, Q, L) token ids, ``shape`` = (B, Q): ``sampler`` on the transformer's logits for an image ``context``."""
    (batch, num_samples), tr = shape, model.transformer
    gen = torch.Generator(device=dev).manual_seed(seed)
    res = sampler(
        model.logits_fn(context, num_samples),
        batch_size=batch,
        num_tokens=tr.num_tokens,
        codebook_size=tr.codebook_size,
        num_samples=num_samples,
        generator=gen,
        device=dev,
    )
    return res.ids


def _decode(
    model: HMRModel,
    ids: Tensor,
    rot: Tensor,
    cam: Tensor,
    betas: Tensor | None,
    refiner: PoseGuidedRefiner | None,
    keypoints: Tensor | None,
    rotation: str,
) -> Recovery:
    """Token ids (B, Q, L) -> [``rotation=keypoints`` solve] -> [refiner] -> bodies, in the crop's frame.

    ``rot`` (B, 3, 3), ``cam`` (B, 3), ``betas`` (B, 10) or None: the heads' outputs (float32).
    """
    B, Q = ids.shape[:2]
    rep = lambda t: None if t is None else t.repeat_interleave(Q, dim=0)  # noqa: E731  (B, ...) -> (B*Q, ...)
    codes = model.tokenizer.quantizer.lookup(ids.reshape(B * Q, -1))  # (B*Q, L, D)
    kp = None if keypoints is None else keypoints.to(codes.device).float()
    if rotation == "keypoints":
        rot, cam = rotation_from_keypoints(model, codes, betas, kp, Q, rot)
    initial, reprojection = None, None
    if refiner is not None:
        start = model.decode_body(rep(rot), codes=codes, betas=rep(betas))
        initial = start.vertices.reshape(B, Q, *start.vertices.shape[1:])
        codes, trace = refiner(model, codes, rep(rot), rep(cam), rep(betas), rep(kp))
        reprojection = {
            "before": trace.reprojection[0].view(B, Q),
            "after": trace.reprojection[-1].view(B, Q),
        }
    out = model.decode_body(rep(rot), codes=codes, betas=rep(betas))
    return Recovery(
        vertices=out.vertices.reshape(B, Q, *out.vertices.shape[1:]),
        joints=out.joints.reshape(B, Q, *out.joints.shape[1:]),
        global_rot=rot,
        cam=cam,
        betas=betas,
        ids=ids,
        body_pose=_body_pose(model, codes, B, Q),
        initial_vertices=initial,
        reprojection=reprojection,
    )


def _body_pose(model: HMRModel, codes: Tensor, batch: int, num_samples: int) -> Tensor | None:
    """(B, Q, 23, 3) axis-angle body pose decoded from (B*Q, L, D) code vectors of a pose tokenizer; else None."""
    if model.kind != "pose":
        return None
    pose = model.tokenizer.decode_embeddings(codes)  # (B*Q, J, 6)
    mats = rot6d_to_matrix(pose)[:, -23:]  # the 23 body joints (a global orientation token comes first)
    return matrix_to_axis_angle(mats).reshape(batch, num_samples, 23, 3)


def _to_camera_frame(rec: Recovery, view_rot: Tensor) -> Recovery:
    """A crop-relative model's bodies (crop frame) turned by the crops' viewing-ray rotations (B, 3, 3)."""
    B, Q = rec.vertices.shape[:2]
    to_cam = view_rot.to(rec.global_rot)
    per_row = to_cam.repeat_interleave(Q, dim=0).transpose(1, 2)  # (B*Q, 3, 3)
    turn = lambda t: None if t is None else (t.flatten(0, 1) @ per_row).view(t.shape)  # noqa: E731
    rec.global_rot = to_cam @ rec.global_rot
    rec.vertices, rec.joints, rec.initial_vertices = (
        turn(rec.vertices),
        turn(rec.joints),
        turn(rec.initial_vertices),
    )
    if rec.deterministic_vertices is not None:
        rec.deterministic_vertices = rec.deterministic_vertices @ to_cam.transpose(1, 2)
    return rec


#: COCO-17 keypoints of the trunk: nose, eyes, ears, shoulders, hips (the rotation is solved on these).
TRUNK_COCO = (0, 1, 2, 3, 4, 5, 6, 11, 12)
#: Weight of the other (limb) keypoints in the rotation solve, relative to the trunk's 1.
LIMB_WEIGHT = 0.3


def rotation_from_keypoints(
    model: HMRModel,
    codes: Tensor,
    betas: Tensor | None,
    keypoints: Tensor,
    num_samples: int,
    head_rot: Tensor,
) -> tuple[Tensor, Tensor]:
    """Global rotation (B, 3, 3) and crop camera (B, 3) that put the decoded bodies onto 2D keypoints.

    The rotation is mostly a property of the trunk: the head, shoulders and hips (:data:`TRUNK_COCO`) weigh 1,
    the limbs :data:`LIMB_WEIGHT`, so that limbs the tokens got wrong do not tilt the body (chosen among 0,
    0.3 and 1 on the synthetic validation split; the figures are in issue 9's report). Candidates: the
    closed-form scaled-orthographic fit and the rotation head's; the better one is refined
    (:func:`solve_rotation`).
    The camera is then fitted to all keypoints of the body as :meth:`HMRModel.decode_body` poses it.

    Args:
        codes: (B*Q, L, D) code vectors of the Q hypotheses per image (row b * Q + q).
        betas: (B, 10) or None; keypoints: (B, 17, 3) COCO-17 ``x, y, confidence``, normalised crop coords.
        head_rot: (B, 3, 3) the rotation head's output (one candidate).
    """
    B, Q = keypoints.shape[0], num_samples
    eye = torch.eye(3, device=codes.device).expand(B * Q, 3, 3)
    rep = None if betas is None else betas.repeat_interleave(Q, dim=0)
    canonical = model.decode_body(eye, codes=codes, betas=rep)
    reg = model.body.keypoint_regressor("coco17").to(canonical.vertices)
    coco = torch.einsum("kv,bvc->bkc", reg, canonical.vertices).reshape(B, Q, -1, 3).mean(1)
    weight = torch.full((coco.shape[1],), LIMB_WEIGHT, device=coco.device)
    weight[list(TRUNK_COCO)] = 1.0
    kp, conf = keypoints[..., :2], keypoints[..., 2] * weight
    rot, _ = solve_rotation(coco, kp, conf, [fit_weak_perspective(coco, kp, conf)[0], head_rot])
    # the camera of the body as decode_body poses it (the pose tokenizer turns about the pelvis)
    posed = model.decode_body(rot.repeat_interleave(Q, dim=0), codes=codes, betas=rep)
    coco = torch.einsum("kv,bvc->bkc", reg, posed.vertices).reshape(B, Q, -1, 3).mean(1)
    return rot, fit_crop_camera(coco, keypoints[..., :2], keypoints[..., 2])


# ---------------------------------------------------------------------- the evaluator's predictor
@dataclass
class KeypointSource:
    """Where the refiner's (and ``rotation=keypoints``') 2D keypoints come from during evaluation.

    Attributes:
        source: ``dataset`` (the sample's ``kp2d_coco``: GT on synthetic data, annotations on real data)
            or ``none``.
        noise_px: std of Gaussian noise added to each keypoint, full-image pixels (imitates a detector).
        drop: probability that a keypoint is dropped (confidence 0), per keypoint.
        seed: noise and drops depend on (seed, sample index) only.
    """

    source: str = "dataset"
    noise_px: float = 0.0
    drop: float = 0.0
    seed: int = 0

    def __call__(self, batch: dict[str, Any]) -> Tensor | None:
        """(B, 17, 3) keypoints in normalised crop coordinates, or None."""
        if self.source == "none":
            return None
        if self.source != "dataset":
            raise ValueError(f"keypoints.source must be 'dataset' or 'none', got {self.source!r}")
        if "kp2d_coco" not in batch:
            raise UserError(
                "this dataset has no 2D keypoints (kp2d_coco); use an image dataset or keypoints.source=none"
            )
        kp = batch["kp2d_coco"].float().clone()
        size = _field(batch, "bbox_size", "bbox_size").float().reshape(-1)
        for i, index in enumerate(batch["index"].tolist()):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
            noise = torch.randn(kp.shape[1], 2, generator=g) * self.noise_px * 2.0 / float(size[i])
            dropped = torch.rand(kp.shape[1], generator=g) < self.drop
            kp[i, :, :2] += noise
            kp[i, dropped, 2] = 0.0
        return kp


def _field(batch: dict[str, Any], *names: str) -> Tensor:
    """The first of ``names`` present in ``batch`` (image datasets and benchmark indexes name some fields differently)."""
    for name in names:
        if name in batch:
            return batch[name]
    raise KeyError(f"batch has none of {names}")


def model_predictor(
    model: HMRModel,
    sampler: Any = None,
    num_samples: int = 1,
    keypoints: KeypointSource | None = None,
    seed: int = 0,
    rotation: str = "head",
    *,
    refiner: PoseGuidedRefiner | None = None,
    precision: str = "fp32",
):
    """The evaluator's ``batch -> PredictorOutput`` for a trained model, any sampler and refiner.

    ``rotation``: ``head`` or ``keypoints`` (solved from the 2D keypoints of ``keypoints``; see :func:`recover`).
    ``precision``: ``fp32``, ``bf16`` or ``auto`` (see :func:`recover`).

    Meshes are placed in the full-image camera frame with the crop camera's translation. With Q > 1 the
    output carries the deterministic mesh too (MEGA supp. Table 4: distance of the mean-of-Q to it).
    Randomness depends on (seed, batch position) only, so results repeat for a fixed batch size.
    """
    from mega.metrics.predictors import PredictorOutput

    device = next(model.parameters()).device
    needs_kp = refiner is not None or rotation == "keypoints"
    source = keypoints or KeypointSource()
    calls = [0]

    def predict(batch: dict[str, Any]) -> PredictorOutput:
        kp = source(batch) if needs_kp else None
        geo = {
            "bbox_center": _field(batch, "bbox_center").to(device),
            "bbox_size": _field(batch, "bbox_size").to(device),
            "cam_int": _field(batch, "cam_int", "cam_intrinsics").to(device),
            "img_size": _field(batch, "img_size", "image_size").to(device),
        }
        rec = recover(
            model,
            batch["img"].to(device),
            sampler,
            num_samples,
            refiner=refiner,
            keypoints=kp,
            seed=seed + calls[0],
            with_deterministic=num_samples > 1,
            rotation=rotation,
            view_rot=model.view_rotation(geo),
            precision=precision,
        )
        calls[0] += 1
        transl = model.full_image_translation(rec.cam, geo)  # (B, 3)
        verts = rec.vertices + transl[:, None, None]
        det = None if rec.deterministic_vertices is None else rec.deterministic_vertices + transl[:, None]
        own_rot = not getattr(model.tokenizer, "include_global_orient", False)
        return PredictorOutput(
            vertices=verts[:, 0] if num_samples == 1 else verts,
            deterministic_vertices=det,
            global_rot=rec.global_rot if own_rot else None,
        )

    return predict
