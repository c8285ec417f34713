"""Image data: people in images with SMPL and keypoint labels -> augmented crops (HMR training).

``IMAGE_DATASETS`` is the one registry of this room: a config's ``name`` picks the entry, the rest are its
keyword arguments (:func:`build_image_dataset`). Entries: the SPIN / BEDLAM-CLIFF npz sets (``coco``,
``mpii``, ``h36m``, ``mpi_inf_3dhp``, ``bedlam_images``, ``npz``; :mod:`.dataset`, :mod:`.npz`), the
generated ``synthetic_images`` (:mod:`.synthetic`), webdataset ``shards`` (:mod:`.shards`) and the
``mix`` of several (:mod:`.mixed`). Augmentation: :mod:`.augment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from mega.data.images.dataset import ImageNpzDataset, npz_dataset, synthetic_images
from mega.data.images.mixed import mix
from mega.data.images.shards import shard_dataset
from mega.registry import Registry

#: npz image sets (SPIN / BEDLAM-CLIFF format): ``splits`` + ``img_root`` in their configs.
NPZ_DATASETS = ("coco", "mpii", "h36m", "mpi_inf_3dhp", "bedlam_images", "npz")


def build_image_dataset(cfg: Mapping[str, Any], split: str, **overrides: Any) -> Dataset:
    """Build an image dataset from its config (``name`` picks the entry; the rest are kwargs).

    Augmentation is used for ``split == 'train'`` only, unless ``augment`` is passed in ``overrides``.

    Example:
        >>> train = build_image_dataset(cfg.images, "train", crop_size=128, seed=0, rank=rank)
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name = kwargs.pop("name")
    kwargs.pop("max_bad_fraction", None)  # read by the training loop (mega/engine/bad_samples.py)
    if name not in IMAGE_DATASETS:
        from mega.data.motion import MOTION_DATASETS  # noqa: PLC0415 (only for the message)

        if name in MOTION_DATASETS:
            raise KeyError(
                f"data '{name}' is a motion dataset (mega.data.motion); image datasets: "
                f"{', '.join(IMAGE_DATASETS.names())}"
            )
    if split != "train" and "augment" not in overrides:
        kwargs["augment"] = None
    kwargs.update(overrides)
    return IMAGE_DATASETS.build(name, split=split, **kwargs)


IMAGE_DATASETS = Registry("image data")
for _name in NPZ_DATASETS:
    IMAGE_DATASETS.register(_name)(partial(npz_dataset, _name))
IMAGE_DATASETS.register("synthetic_images")(synthetic_images)
IMAGE_DATASETS.register("shards")(shard_dataset)
IMAGE_DATASETS.register("mix")(partial(mix, build=build_image_dataset))

__all__ = ["IMAGE_DATASETS", "NPZ_DATASETS", "ImageNpzDataset", "build_image_dataset"]
