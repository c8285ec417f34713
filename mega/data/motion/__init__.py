"""Motion data: AMASS-format files -> per-frame SMPL parameters (tokenizer training, pre-training).

``MOTION_DATASETS`` is the one registry of this room: a config's ``name`` picks the entry, the rest are
its keyword arguments (:func:`build_motion_dataset`). Every entry is :class:`MotionDataset` with other
defaults: ``synthetic_motion`` (the embedded default, generated on first use by :mod:`.synth`),
``amass``, ``moyo``, ``bedlam``. Readers of the files: :mod:`.amass`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mega.data.motion import dataset as _datasets  # (not `from ... import amass`: that name is the submodule)
from mega.data.motion.dataset import MotionDataset
from mega.data.motion.synth import ensure_synthetic_motion
from mega.registry import Registry

MOTION_DATASETS = Registry("motion data")
for _name in ("synthetic_motion", "amass", "moyo", "bedlam"):
    MOTION_DATASETS.register(_name)(getattr(_datasets, _name))


def build_motion_dataset(cfg: Mapping[str, Any], split: str) -> MotionDataset:
    """Build from a motion data config (its ``name`` picks the registered dataset; the rest are kwargs).

    Example:
        >>> train = build_motion_dataset(cfg.motion, "train")  # cfg.motion.name == "synthetic_motion"
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return MOTION_DATASETS.build(kwargs.pop("name"), split=split, **kwargs)


__all__ = ["MOTION_DATASETS", "MotionDataset", "build_motion_dataset", "ensure_synthetic_motion"]
