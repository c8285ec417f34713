"""Benchmarks as the evaluator reads them when a model needs image crops.

The synthetic benchmark is read through its image dataset (crops and 2D keypoints included, the same
samples train_hmr tests on); 3DPW / EMDB through their prepared index, with each person's box cropped
to the model's input size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

IMAGE_BENCHMARKS = ("synthetic_images",)  # read through mega.data.images.dataset (crops + 2D keypoints)


def crop_transform(size: int):
    """BenchmarkDataset's ``(PIL image, item) -> (3, S, S)``: the square crop of the person's box."""
    from mega.data.crop import crop_matrix, normalise_image, warp_crop

    def transform(img: Any, item: dict[str, Any]) -> torch.Tensor:
        m = crop_matrix(item["bbox_center"].numpy(), float(item["bbox_size"]), size)
        return normalise_image(warp_crop(np.asarray(img), m, size))

    return transform


def build_eval_dataset(
    dataset: DictConfig | dict, crop_size: int | None, root: str | None = None, limit: int | None = None
) -> torch.utils.data.Dataset:
    """The benchmark's samples (a ``dataset`` config: 3dpw | emdb | synthetic_images).

    Args:
        dataset: the config group ``dataset``.
        crop_size: the model's input size; None (built-in predictors) reads no image where it can.
        root: overrides ``dataset.root``.
        limit: only the first ``limit`` samples.
    """
    from mega.data.benchmarks.index import BenchmarkDataset

    data = OmegaConf.to_container(dataset, resolve=True) if isinstance(dataset, DictConfig) else dict(dataset)
    if data["name"] in IMAGE_BENCHMARKS:
        from mega.data.images.dataset import build_image_dataset
        from mega.model import ImageBenchmarkView

        cfg = {"name": data["name"], "root": root or data["root"], "generate": data.get("generate", {})}
        return ImageBenchmarkView(build_image_dataset(cfg, data["split"], crop_size=crop_size or 32), limit)
    transform = crop_transform(crop_size) if crop_size else None
    ds = BenchmarkDataset(data["index"], root=root or data["root"], image_transform=transform)
    return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds
