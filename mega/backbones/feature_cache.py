"""Training on a frozen backbone's outputs computed once: the frozen trunk runs once per crop, not once per step.

MEGA and the CPU presets keep a pose-pretrained trunk frozen; then every epoch recomputes the same
numbers. :class:`FrozenFeatureDataset` runs the trunk (``backbone.frozen_outputs``) over a dataset once,
in batches, and keeps the outputs (float32, in memory) with each sample's labels; its items carry them
under ``"frozen"`` and an empty ``img`` (0,), and :meth:`mega.model.HMRModel.forward` builds the
features from them with the backbone's trainable rest (``backbone.from_frozen``: neck, landmark
embedding). The results equal an uncached forward on the same crops (tests/test_feature_cache.py).

Without augmentation (``images.augment=null``) every crop is cached once. With augmentation an augmented
crop differs every epoch, so the cache holds ``views`` augmented versions of each sample (the dataset's
epochs 0 .. views - 1) and training cycles over them: fewer distinct crops than on-line augmentation,
far more than none. ``feature_cache: true`` (+ ``feature_cache_views``) in scripts/train_hmr.py's config
turns it on (the CPU presets).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm


class FrozenFeatureDataset(Dataset):
    """A dataset's samples with their frozen-trunk outputs precomputed.

    Args:
        dataset: yields sample dicts with ``img`` (3, S, S) (the image-data contract), no augmentation.
        backbone: a :class:`mega.backbones.Backbone` whose ``frozen_outputs`` read no trainable
            parameter (``cacheable``: a frozen trunk; BlazePose also with trainable convolutions).
        batch_size: crops per trunk forward while filling the cache.
        views: augmented versions of each sample (the dataset's epochs 0 .. views - 1 via ``set_epoch``);
            sample ``i`` of view ``v`` is item ``v * len(dataset) + i``.
        progress: show a progress bar.
    """

    def __init__(
        self, dataset: Dataset, backbone: Any, batch_size: int = 32, views: int = 1, progress: bool = True
    ) -> None:
        if not getattr(backbone, "cacheable", False):
            raise ValueError(
                "feature_cache needs a frozen backbone trunk (backbone.freeze=true), or a backbone whose "
                "frozen part computes its outputs alone (blazepose with trainable_blocks)"
            )
        if views < 1 or (views > 1 and not hasattr(dataset, "set_epoch")):
            raise ValueError(f"feature_cache_views={views}: needs >= 1 (and > 1 a dataset with set_epoch)")
        self.samples: list[dict[str, Any]] = []
        self.frozen: dict[str, torch.Tensor] = {}
        parts: dict[str, list[torch.Tensor]] = {}
        device = next(backbone.parameters()).device
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=list)
        with torch.no_grad():
            for view in range(views):
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(view)
                for items in tqdm(loader, desc=f"frozen features {view + 1}/{views}", disable=not progress):
                    img = torch.stack([it["img"] for it in items]).to(device)
                    for key, value in backbone.frozen_outputs(img).items():
                        parts.setdefault(key, []).append(value.float().cpu())
                    for it in items:
                        self.samples.append({**it, "img": torch.zeros(0)})
        self.frozen = {k: torch.cat(v) for k, v in parts.items()}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.samples[i], "frozen": {k: v[i] for k, v in self.frozen.items()}}
