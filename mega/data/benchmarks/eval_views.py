"""Benchmarks as the evaluator reads them when a model needs image crops.

A benchmark that is also an image dataset (the synthetic one) is read through it (crops and 2D keypoints
included, the same samples train_hmr tests on), wrapped in :class:`ImageBenchmarkView`; 3DPW / EMDB
through their prepared index, with each person's box cropped to the model's input size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mega.data.benchmarks.index import BenchmarkDataset
from mega.data.crop import crop_matrix, normalise_image, warp_crop
from mega.data.images import IMAGE_DATASETS, build_image_dataset


def crop_transform(size: int):
    """BenchmarkDataset's ``(PIL image, item) -> (3, S, S)``: the square crop of the person's box."""

    def transform(img: Any, item: dict[str, Any]) -> torch.Tensor:
        m = crop_matrix(item["bbox_center"].numpy(), float(item["bbox_size"]), size)
        return normalise_image(warp_crop(np.asarray(img), m, size))

    return transform


def build_eval_dataset(
    dataset: DictConfig | dict, crop_size: int | None, root: str | None = None, limit: int | None = None
) -> torch.utils.data.Dataset:
    """The benchmark's samples (a ``dataset`` config: 3dpw | emdb | synthetic_images).

    Args:
        dataset: the ``benchmark`` config (group ``configs/benchmark/``).
        crop_size: the model's input size; None (built-in predictors) reads no image where it can.
        root: overrides ``benchmark.root``.
        limit: only the first ``limit`` samples.
    """
    data = OmegaConf.to_container(dataset, resolve=True) if isinstance(dataset, DictConfig) else dict(dataset)
    if data["name"] in IMAGE_DATASETS:  # a benchmark that is also an image dataset: crops + 2D keypoints
        cfg = {"name": data["name"], "root": root or data["root"], "generate": data.get("generate", {})}
        return ImageBenchmarkView(build_image_dataset(cfg, data["split"], crop_size=crop_size or 32), limit)
    transform = crop_transform(crop_size) if crop_size else None
    ds = BenchmarkDataset(data["index"], root=root or data["root"], image_transform=transform)
    return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds


class ImageBenchmarkView(torch.utils.data.Dataset):
    """An image dataset's items with the extra keys :class:`mega.metrics.evaluator.Evaluator` reads.

    Adds ``image`` (= ``imgname``), ``sequence`` / ``frame`` (from the npz when it has them, else "" / -1),
    ``person`` (0) and ``transl`` (zeros where unknown; protocols root-align), keeping the sample's crop.

    Args:
        dataset: an image dataset yielding the contract's sample dicts (no augmentation).
        limit: keep only the first ``limit`` samples (None = all).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, limit: int | None = None) -> None:
        self.dataset = dataset
        self.size = len(dataset) if limit is None else min(int(limit), len(dataset))
        self.sequence, self.frame = None, None
        npz = getattr(dataset, "npz", None)
        if npz is not None:
            import numpy as np

            with np.load(npz, allow_pickle=False) as f:
                if "sequence" in f.files:
                    self.sequence = [str(s) for s in f["sequence"]]
                if "frame" in f.files:
                    self.frame = [int(x) for x in f["frame"]]
        # What the evaluator's summary reads off a benchmark index: dataset, split, subset, sequences.
        from types import SimpleNamespace

        name = str(getattr(dataset, "name", type(dataset).__name__))
        dataset_name, _, split = name.partition("/")
        self.index = SimpleNamespace(
            benchmark=dataset_name,
            split=split or None,
            subset="all",
            arrays={"sequence": (self.sequence or [])[: self.size]},
        )

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        item["image"] = item.get("imgname", str(i))
        item["sequence"] = self.sequence[i] if self.sequence is not None else ""
        item["frame"] = self.frame[i] if self.frame is not None else -1
        item["person"] = 0
        item["body_pose"] = item["body_pose"].reshape(-1)
        return item
