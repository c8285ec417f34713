"""Image backbones: a square crop (B, 3, S, S) -> BackboneOutput(tokens (B, N, C), pooled (B, C), pyramid).

``BACKBONES`` maps a name (== the ``name`` key of a ``configs/backbone/<name>.yaml``) to a class whose
constructor defaults are that network at its paper size; ``build_backbone(**cfg.backbone)`` builds one.
The contract (attributes, trainability, weights) is in :mod:`mega.backbones.base`; the checkpoint
layouts each family reads are documented in its module.

| name       | family                        | input            | tokens (N x C) at paper size |
|------------|-------------------------------|------------------|------------------------------|
| tiny_cnn   | CPU preset CNN                | 128              | 8 x 8 x 192                  |
| resnet50   | timm ResNet-50 (MEGA)         | 224              | 7 x 7 x 2048                 |
| hrnet_w48  | timm HRNet-W48 + MEGA fusion  | 224              | 7 x 7 x 720                  |
| vit_h16    | ViTPose-H / HMR2 (GenHMR)     | 256 (middle 192) | 16 x 12 x 1280               |
| vit_b16    | ViTPose-B                     | 256 (middle 192) | 16 x 12 x 768                |
| vit_s16    | ViTPose-S                     | 256 (middle 192) | 16 x 12 x 384                |
| vit_tiny   | tests                         | 64 (middle 48)   | 4 x 3 x 64                   |
| blazepose  | BlazePose GHUM landmark net   | 256              | 8 x 8 x 144 (+ 39 landmarks) |
"""

from __future__ import annotations

from typing import Any

from mega.backbones.base import Backbone, BackboneOutput
from mega.backbones.blazepose import BlazePose
from mega.backbones.hrnet import HRNet
from mega.backbones.resnet import ResNet
from mega.backbones.tiny_cnn import TinyCNN
from mega.backbones.vit import ViT, ViTB16, ViTS16, ViTTiny
from mega.registry import Registry

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneOutput",
    "BlazePose",
    "HRNet",
    "ResNet",
    "TinyCNN",
    "ViT",
    "build_backbone",
]

BACKBONES = Registry("backbone")
for _cls in (TinyCNN, ResNet, HRNet, ViT, ViTB16, ViTS16, ViTTiny, BlazePose):
    BACKBONES.register(_cls.registry_name)(_cls)


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` with its constructor ``kwargs``.

    Example: ``build_backbone(**cfg.backbone)`` where the config holds ``name`` plus the kwargs.
    """
    return BACKBONES.build(name, **kwargs)
