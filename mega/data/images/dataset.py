"""Image datasets in the SPIN / BEDLAM-CLIFF npz format (real data and ``synthetic_images``).

One ``<split>.npz`` plus an image root; the npz key variants accepted are listed in
:mod:`mega.data.images.npz`.

Each item is the sample dict of the contract (see :func:`make_sample`); samples without SMPL ground
truth carry ``has_smpl = 0`` and zero parameters but still their 2D keypoints. With ``augment`` set,
items are augmented (:mod:`mega.data.images.augment`) with randomness seeded by ``(seed, rank, epoch, index)``;
call :meth:`ImageNpzDataset.set_epoch` before each epoch's iterator is created (the epoch lives in
shared memory, so persistent DataLoader workers see it too).

Registered in :data:`mega.data.images.IMAGE_DATASETS`; build with :func:`mega.data.images.build_image_dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mega.data.crop import (
    ImageDataError,
    box_size,
    crop_matrix,
    decode_image,
    default_intrinsics,
    keypoints_to_crop,
    normalise_image,
    reduction_for,
    warp_crop,
)
from mega.data.images.augment import (
    Augmenter,
    AugmentParams,
    Geometry,
    SharedEpoch,
    augment_geometry,
    augment_pixels,
    sample_rng,
)
from mega.data.images.npz import (  # noqa: F401  (re-exported: one import place for callers)
    JOINTS_3D_ORDERS,
    OPENPOSE25_TO_COCO17,
    SPIN24_TO_COCO17,
    read_image_npz,
)

# ------------------------------------------------------------------------------------------ samples


class PelvisModel:
    """Rest-pose pelvis ``J0(betas) = a + B betas`` of a body model (camera-frame translation bookkeeping).

    Args:
        name: a registered body model (``free``, ``smpl``); kwargs go to :func:`mega.body.load_body_model`.
    """

    def __init__(self, name: str = "free", **kwargs: Any) -> None:
        from mega.body import load_body_model

        body = load_body_model(name, **kwargs)
        reg = body.J_regressor[0].double()  # (V,)
        self.a = (reg @ body.v_template.double()).numpy()  # (3,)
        self.b = torch.einsum("v,vcb->cb", reg, body.smpl.shapedirs[..., :10].double()).numpy()  # (3, 10)

    def __call__(self, betas: np.ndarray) -> np.ndarray:
        """(10,) -> (3,)."""
        return self.a + self.b @ betas.astype(np.float64)


def make_sample(
    rec: Mapping[str, Any],
    img: np.ndarray,
    factor: int,
    full_size: tuple[int, int],
    params: AugmentParams,
    crop_size: int,
    rng: np.random.Generator | None = None,
    pelvis_model: PelvisModel | None = None,
) -> dict[str, Any]:
    """One record + its decoded image -> the contract's sample dict.

    Args:
        rec: one sample's arrays: ``center`` (2,), ``bbox_size`` px, ``kp_coco`` (17, 3), ``kp_smpl``
            (24, 3), ``pose`` (24, 3), ``betas`` (10,), ``has_smpl``, ``joints_3d`` (24, 4), ``transl`` (3,),
            ``has_transl``, ``cam_int`` (3, 3) or None, ``gender``, ``imgname``, ``index``.
        img: (h, w, 3) uint8 decoded at ``1 / factor``; full_size: full image ``(width, height)``.
        params: augmentation (identity for evaluation); rng: the sample's generator (occluder texture).
        crop_size: S.
    Returns:
        ``img`` (3, S, S), ``kp2d_coco`` (17, 3), ``kp2d_smpl`` (24, 3), ``global_orient`` (3,),
        ``body_pose`` (23, 3), ``betas`` (10,), ``has_smpl`` (), ``joints_3d`` (24, 4), ``transl`` (3,),
        ``has_transl`` (), ``cam_int`` (3, 3), ``bbox_center`` (2,), ``bbox_size`` (), ``img_size`` (2,),
        ``index`` () int64, ``imgname`` str, ``gender`` str (float32 tensors unless said).
    """
    cam_int = rec["cam_int"] if rec["cam_int"] is not None else default_intrinsics(np.asarray(full_size))
    joints = np.asarray(rec["joints_3d"], np.float64)
    has_transl = float(rec["has_transl"])
    pelvis = None
    if has_transl:
        if joints[0, 3] > 0:
            pelvis = joints[0, :3].copy()
        elif pelvis_model is not None and rec["has_smpl"] > 0:
            pelvis = pelvis_model(rec["betas"]) + rec["transl"]
    geo = Geometry(
        kp_coco=np.asarray(rec["kp_coco"], np.float64),
        kp_smpl=np.asarray(rec["kp_smpl"], np.float64),
        pose=np.asarray(rec["pose"], np.float64),
        joints_3d=joints,
        transl=np.asarray(rec["transl"], np.float64),
        pelvis=pelvis,
        bbox_center=np.asarray(rec["center"], np.float64),
        bbox_size=float(rec["bbox_size"]),
        cam_int=np.asarray(cam_int, np.float64),
    )
    geo, g = augment_geometry(geo, params)
    if has_transl and geo.pelvis is None and (params.flip or params.rotation != 0.0):
        has_transl = 0.0  # the view changed and the pelvis is unknown: the translation cannot follow
    crop = warp_crop(img, crop_matrix(geo.bbox_center, geo.bbox_size, crop_size) @ g, crop_size, factor)
    crop = augment_pixels(crop, params, rng)
    joints_3d = geo.joints_3d.astype(np.float32)
    joints_3d[joints_3d[:, 3] <= 0, :3] = 0.0

    def t(x: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    return {
        "img": normalise_image(crop),
        "kp2d_coco": torch.from_numpy(keypoints_to_crop(geo.kp_coco, geo.bbox_center, geo.bbox_size)),
        "kp2d_smpl": torch.from_numpy(keypoints_to_crop(geo.kp_smpl, geo.bbox_center, geo.bbox_size)),
        "global_orient": t(geo.pose[0]),
        "body_pose": t(geo.pose[1:]),
        "betas": t(rec["betas"]),
        "has_smpl": t(rec["has_smpl"]),
        "joints_3d": torch.from_numpy(joints_3d),
        "transl": t(geo.transl if has_transl else np.zeros(3)),
        "has_transl": t(has_transl),
        "cam_int": t(geo.cam_int),
        "bbox_center": t(geo.bbox_center),
        "bbox_size": t(geo.bbox_size),
        "img_size": t(full_size),
        "index": torch.tensor(int(rec["index"]), dtype=torch.int64),
        "imgname": str(rec["imgname"]),
        "gender": str(rec["gender"]),
    }


class ImageNpzDataset(Dataset):
    """A SPIN / BEDLAM-CLIFF npz split with its image root, cropped (and augmented) per item.

    Args:
        npz: the split file.
        img_root: folder the ``imgname`` paths are relative to.
        crop_size: square crop side S (224 ResNet / HRNet, 256 ViT, smaller for the CPU preset).
        bbox_aspect: backbone input width / height used to expand boxes (0.75 for a 256x192 ViT: HMR2).
        scale_in_pixels: ``scale`` stores pixels (4D-Humans eval npz), not /200 units.
        joints_3d_order: ``smpl`` (``S`` holds SMPL-24 joints), ``spin`` or ``none`` (not used: conf 0).
        augment: :class:`Augmenter` kwargs (a dict), or None for no augmentation (evaluation).
        seed, rank: seed the per-item generators (with the epoch and index).
        pelvis_model: a body-model name whose rest pelvis moves ``transl`` under flips / rotations when
            the file has no 3D pelvis; None: such samples lose ``has_transl`` when flipped / rotated.
        max_reduce: largest JPEG decode reduction (1 disables reduced decoding).
        name: label for messages.
    """

    def __init__(
        self,
        npz: str | Path,
        img_root: str | Path,
        crop_size: int = 224,
        bbox_aspect: float = 1.0,
        scale_in_pixels: bool = False,
        joints_3d_order: str = "smpl",
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
        rank: int = 0,
        pelvis_model: str | None = None,
        max_reduce: int = 8,
        name: str = "images",
    ) -> None:
        self.npz, self.img_root, self.name = Path(npz), Path(img_root), name
        self.crop_size, self.seed, self.rank, self.max_reduce = int(crop_size), seed, rank, max_reduce
        self._epoch = SharedEpoch()
        self.arrays = read_image_npz(
            self.npz, joints_3d_order=joints_3d_order, scale_in_pixels=scale_in_pixels
        )
        self.bbox_size = box_size(self.arrays["scale"], aspect=bbox_aspect)
        if (self.bbox_size <= 0).any():
            raise ImageDataError(
                f"{self.npz}: key 'scale' has non-positive values (row {int(np.argmin(self.bbox_size))})"
            )
        self.augmenter = Augmenter(**dict(augment)) if augment is not None else None
        self.pelvis_model = PelvisModel(pelvis_model) if pelvis_model else None

    def __len__(self) -> int:
        return len(self.arrays["imgname"])

    @property
    def epoch(self) -> int:
        """The epoch of the augmentation seeds (shared with DataLoader workers)."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; call before creating the epoch's iterator (persistent workers see it)."""
        self._epoch.set(epoch)

    def record(self, index: int) -> dict[str, Any]:
        """The per-sample arrays of row ``index`` (see :func:`make_sample`)."""
        a = self.arrays
        rec = {k: a[k][index] for k in ("center", "kp_coco", "kp_smpl", "pose", "betas", "has_smpl",
                                         "joints_3d", "transl", "has_transl", "gender", "imgname")}  # fmt: skip
        rec["cam_int"] = a["cam_int"][index] if a["cam_int"] is not None else None
        rec["bbox_size"], rec["index"] = self.bbox_size[index], index
        return rec

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, self.epoch)

    def get(self, index: int, epoch: int) -> dict[str, Any]:
        """Item ``index`` augmented as in ``epoch`` (a mixture passes its own epoch / pass number)."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range [0, {len(self)})")
        rec = self.record(index)
        rng, params = None, AugmentParams()
        if self.augmenter is not None:
            rng = sample_rng(self.seed, self.rank, epoch, index)
            params = self.augmenter.sample(rng)
        reduce = reduction_for(rec["bbox_size"] * params.scale, self.crop_size, self.max_reduce)
        img, full, factor = decode_image(self.img_root / rec["imgname"], reduce=reduce)
        if self.arrays["img_size"] is not None and tuple(self.arrays["img_size"][index]) != tuple(
            map(float, full)
        ):
            raise ImageDataError(
                f"{self.npz}: key 'img_size' row {index} is {tuple(self.arrays['img_size'][index])} but image "
                f"{self.img_root / rec['imgname']} is {full}"
            )
        return make_sample(rec, img, factor, full, params, self.crop_size, rng, self.pelvis_model)


# ------------------------------------------------------------------------------------ registry, build


def _split_file(name: str, splits: Mapping[str, Any], split: str) -> Any:
    path = splits.get(split) if splits else None
    if not path:
        have = ", ".join(k for k, v in (splits or {}).items() if v) or "none"
        raise KeyError(
            f"image data '{name}' has no '{split}' split (configured splits: {have}); set images.splits.{split}=PATH"
        )
    return list(path) if isinstance(path, (list, tuple)) else Path(path)


class ConcatImageDataset(Dataset):
    """Several npz files of one split (BEDLAM: one per scene) as one dataset (same item API)."""

    def __init__(self, parts: list[ImageNpzDataset]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self._epoch = SharedEpoch()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def epoch(self) -> int:
        """The epoch of the augmentation seeds (shared with DataLoader workers)."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; call before creating the epoch's iterator (persistent workers see it)."""
        self._epoch.set(epoch)

    def get(self, index: int, epoch: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        sample = self.parts[part].get(index - int(self.offsets[part]), epoch)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index, self.epoch)


def npz_dataset(
    name: str, split: str, splits: Mapping[str, Any], img_root: str, **kwargs: Any
) -> ImageNpzDataset | ConcatImageDataset:
    """An npz dataset from its config (``splits`` maps split names to an npz file or a list of them)."""
    files = _split_file(name, splits, split)
    if isinstance(files, (list, tuple)):
        return ConcatImageDataset(
            [ImageNpzDataset(f, img_root, name=f"{name}/{split}[{i}]", **kwargs) for i, f in enumerate(files)]
        )
    return ImageNpzDataset(files, img_root, name=f"{name}/{split}", **kwargs)


def synthetic_images(
    split: str, root: str = "data/synthetic_images", generate: Mapping[str, Any] | None = None, **kwargs: Any
) -> ImageNpzDataset:
    """The embedded image benchmark: ``<root>/<split>.npz`` with images under ``root``; written on first
    use by :mod:`mega.data.images.synthetic` (``generate`` = its kwargs)."""
    path = Path(root) / f"{split}.npz"
    if not path.is_file():
        from mega.data.images.synthetic import ensure_synthetic_images  # noqa: PLC0415 (rendering: heavy)

        ensure_synthetic_images(root, **dict(generate or {}))
    return ImageNpzDataset(path, root, name=f"synthetic_images/{split}", **kwargs)
