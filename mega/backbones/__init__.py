"""Image backbones: a square crop (B, 3, S, S) -> BackboneOutput(tokens (B, N, C), pooled (B, C), pyramid).

``BACKBONES`` maps a name (== the Hydra ``backbone`` config's ``name`` key) to a class;
``build_backbone(**cfg.backbone)`` builds one. The contract (attributes, trainability, weights) is in
:mod:`mega.backbones.base`; the checkpoint layouts each family reads are in its module.
"""

from __future__ import annotations

from typing import Any

from mega.backbones.base import Backbone, BackboneOutput
from mega.backbones.tiny_cnn import TinyCNN
from mega.registry import Registry

__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "TinyCNN", "build_backbone"]

BACKBONES = Registry("backbone")
BACKBONES.register(TinyCNN.registry_name)(TinyCNN)


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with its constructor ``kwargs``.

    Example: ``build_backbone(**cfg.backbone)`` where the config holds ``name`` plus the kwargs.
    """
    return BACKBONES.build(name, **kwargs)
