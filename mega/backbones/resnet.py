"""ResNet (MEGA's ``resnet50``) through timm: (B, 3, S, S) -> the stride-32 map of layer4.

The trunk is timm's ``ResNet`` with bottleneck blocks, built from ``layers`` and ``channels`` (ResNet-50:
3, 4, 6, 3 blocks of 64, 128, 256, 512 planes, x 4 expansion -> 2048 channels; the 7x7 stem is 64
wide), never with downloaded
weights. Its modules are adopted under the names torchvision and timm both use (``conv1, bn1,
layer1..4`` with ``conv1..3, bn1..3, downsample.0/1`` inside the blocks), so either checkpoint loads as
it is: ``weights: PATH`` takes torchvision's ``resnet50-*.pth`` or timm's ``resnet50`` state dict; the
ImageNet classifier ``fc.*`` is dropped, a ``backbone.`` / ``encoder.`` prefix is stripped, and old
torchvision files without ``num_batches_tracked`` buffers are accepted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from mega.backbones.base import Backbone
from mega.backbones.weights import take_prefix


class ResNet(Backbone):
    """Bottleneck ResNet: (B, 3, S, S) -> tokens (B, (S/32)^2, 4 * channels[-1]); 49 x 2048 for R50 at 224.

    Args:
        input_size: S (MEGA: 224).
        layers: bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3).
        channels: planes per stage (64, 128, 256, 512; outputs are 4x these).
        drop_path_rate: stochastic depth (0 in MEGA).
        pyramid_scales / pyramid_dim: the simple feature pyramid (mega/backbones/pyramid.py).
        weights, freeze, trainable_blocks: see mega/backbones/base.py (blocks = layer1..4).
    """

    registry_name = "resnet50"
    channels_last = True
    compilable = True

    def __init__(
        self,
        input_size: int = 224,
        layers: Sequence[int] = (3, 4, 6, 3),
        channels: Sequence[int] = (64, 128, 256, 512),
        drop_path_rate: float = 0.0,
        pyramid_scales: Sequence[float] = (4, 2, 1, 0.5),
        pyramid_dim: int = 256,
        weights: str | os.PathLike | None = None,
        freeze: bool = False,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(
                f"resnet: layers {list(layers)} and channels {list(channels)} need 4 entries each"
            )
        from timm.models.resnet import Bottleneck
        from timm.models.resnet import ResNet as TimmResNet

        net = TimmResNet(
            block=Bottleneck,
            layers=tuple(int(n) for n in layers),
            channels=tuple(int(c) for c in channels),
            drop_path_rate=float(drop_path_rate),
            num_classes=0,
            global_pool="",
        )
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        side = int(input_size)
        for _ in range(5):
            side = (side + 1) // 2
        self._finish(
            dim=4 * int(channels[-1]),
            input_size=input_size,
            token_grid=(side, side),
            pyramid_scales=pyramid_scales,
            pyramid_dim=pyramid_dim,
            weights=weights,
            freeze=freeze,
            trainable_blocks=trainable_blocks,
        )

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 4 * channels[-1], S / 32, S / 32)."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(img))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def trunk_blocks(self) -> list[nn.Module]:
        """layer1..layer4 (the stem trains only with everything)."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision / timm ResNet (optionally under ``backbone.`` or ``encoder.``) -> our keys."""
        for prefix in ("backbone.", "encoder."):
            state, _ = take_prefix(state, prefix)
        return {k: v for k, v in state.items() if not k.startswith("fc.")}
