"""HRNet (MEGA's ``hrnet_w48``): timm's HRNet trunk + MEGA's strided-conv fusion to one stride-32 map.

Trunk: timm's ``HighResolutionNet`` built from an explicit stage config (``width`` = the first branch's
channels, 48 for W48; ``num_blocks`` and ``num_modules`` per stage), never with downloaded weights. Its
module names are those of the official HRNet code (``conv1, bn1, conv2, bn2, layer1, transition1..3,
stage2..4`` with ``branches`` and ``fuse_layers``), so checkpoints in that layout load as they are.

Head (MEGA / VQ-HPS ``downsample=True, use_conv=True``, same module names): after stage 4, branches
0, 1, 2 go through 3, 2, 1 stride-2 3x3 conv + BN + ReLU layers (``downsample_stage_1..3``) and are
concatenated with branch 3: a (B, 15 * width, S / 32, S / 32) map, 720 channels at 7 x 7 for W48 at
224 px. Those are the tokens.

Checkpoint layouts read by ``weights: PATH`` (a ``backbone.`` prefix is stripped):

- the official pose model ``pose_hrnet_w48_*.pth`` (HRNet-Human-Pose-Estimation): its keypoint head
  ``final_layer.*`` is dropped. It ends stage 4 with a single-resolution output, so it lacks the
  last stage-4 module's ``fuse_layers.1-3`` and MEGA's ``downsample_stage_*``: those keep their
  initialisation (the file must lack *all* of a group for that; a partial group is an error);
- MEGA / VQ-HPS HRNet backbones (everything above, plus an unused ``final_layer``, dropped);
- timm / HRNet-Image-Classification ``hrnet_w48`` ImageNet weights: ``incre_modules``,
  ``downsamp_modules``, ``final_layer`` and ``classifier`` are the classification head and are dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

from mega.backbones.base import Backbone
from mega.backbones.weights import take_prefix

logger = logging.getLogger(__name__)

_HEADS = ("final_layer.", "incre_modules.", "downsamp_modules.", "classifier.")


def _stage_cfg(width: int, num_blocks: int, num_modules: Sequence[int]) -> dict:
    """timm's HRNet arch dict for widths (w, 2w, 4w, 8w), ``num_blocks`` per branch."""

    def stage(i: int, block: str, chans: tuple[int, ...]) -> dict:
        return dict(
            num_modules=int(num_modules[i]),
            num_branches=len(chans),
            block_type=block,
            num_blocks=(int(num_blocks),) * len(chans),
            num_channels=chans,
            fuse_method="SUM",
        )

    w = int(width)
    return dict(
        stem_width=64,
        stage1=stage(0, "BOTTLENECK", (64,)),
        stage2=stage(1, "BASIC", (w, 2 * w)),
        stage3=stage(2, "BASIC", (w, 2 * w, 4 * w)),
        stage4=stage(3, "BASIC", (w, 2 * w, 4 * w, 8 * w)),
    )


def _downsample(n: int, ch: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(ch, ch, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
    return nn.Sequential(*layers)


class HRNet(Backbone):
    """HRNet-W``width``: (B, 3, S, S) -> tokens (B, (S/32)^2, 15 * width); 720-dim for W48.

    Args:
        input_size: S (MEGA: 224).
        width: channels of the highest-resolution branch (48 for W48; branches are w, 2w, 4w, 8w).
        num_blocks: residual blocks per branch in every module (4 in all published HRNets).
        num_modules: HRNet modules in stages 1-4 (W48: 1, 1, 4, 3).
        pyramid_scales / pyramid_dim: the simple feature pyramid (mega/backbones/pyramid.py).
        weights, freeze, trainable_blocks: see mega/backbones/base.py (blocks = layer1 and stages 2-4).
    """

    registry_name = "hrnet_w48"
    channels_last = True
    compilable = True

    def __init__(
        self,
        input_size: int = 224,
        width: int = 48,
        num_blocks: int = 4,
        num_modules: Sequence[int] = (1, 1, 4, 3),
        pyramid_scales: Sequence[float] = (4, 2, 1, 0.5),
        pyramid_dim: int = 256,
        weights: str | os.PathLike | None = None,
        freeze: bool = False,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if len(num_modules) != 4:
            raise ValueError(f"hrnet: num_modules {list(num_modules)} needs 4 entries (stages 1-4)")
        from timm.models.hrnet import HighResolutionNet

        net = HighResolutionNet(_stage_cfg(width, num_blocks, num_modules), num_classes=0, head="")
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "layer1"):
            setattr(self, name, getattr(net, name))
        for i in (1, 2, 3):
            setattr(self, f"transition{i}", getattr(net, f"transition{i}"))
            setattr(self, f"stage{i + 1}", getattr(net, f"stage{i + 1}"))
        w = int(width)
        self.downsample_stage_1 = _downsample(3, w)
        self.downsample_stage_2 = _downsample(2, 2 * w)
        self.downsample_stage_3 = _downsample(1, 4 * w)
        side = int(input_size)
        for _ in range(5):
            side = (side + 1) // 2
        self._finish(
            dim=15 * w,
            input_size=input_size,
            token_grid=(side, side),
            pyramid_scales=pyramid_scales,
            pyramid_dim=pyramid_dim,
            weights=weights,
            freeze=freeze,
            trainable_blocks=trainable_blocks,
        )

    def branches(self, img: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) -> stage-4 outputs [(B, w * 2^i, S / 2^(i+2), ...) for i in 0..3]."""
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(img))))))
        x = self.layer1(x)
        ys = self.stage2([t(x) for t in self.transition1])
        xs = [ys[i] if isinstance(t, nn.Identity) else t(ys[-1]) for i, t in enumerate(self.transition2)]
        ys = self.stage3(xs)
        xs = [ys[i] if isinstance(t, nn.Identity) else t(ys[-1]) for i, t in enumerate(self.transition3)]
        return self.stage4(xs)

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 15 * width, S / 32, S / 32)."""
        y = self.branches(img)
        parts = [self.downsample_stage_1(y[0]), self.downsample_stage_2(y[1]), self.downsample_stage_3(y[2])]
        return torch.cat([*parts, y[3]], dim=1)

    def trunk_blocks(self) -> list[nn.Module]:
        """layer1, then each stage with the transition into it (the stem trains only with everything)."""
        return [
            self.layer1,
            nn.ModuleList([self.transition1, self.stage2]),
            nn.ModuleList([self.transition2, self.stage3]),
            nn.ModuleList([self.transition3, self.stage4]),
        ]

    def trunk_tail(self) -> list[nn.Module]:
        """MEGA's fusion convs after stage 4."""
        return [self.downsample_stage_1, self.downsample_stage_2, self.downsample_stage_3]

    def _new_layer_groups(self) -> dict[str, list[str]]:
        """Trunk keys a public layout may lack, by group: they then keep their initialisation."""
        own = self.trunk_state_keys()
        last = f"stage4.{len(self.stage4) - 1}.fuse_layers."
        return {
            "MEGA's downsample_stage_*": [k for k in own if k.startswith("downsample_stage_")],
            f"{last}1-3 (pose HRNet ends stage 4 single-scale)": [
                k for k in own if k.startswith(last) and not k.startswith(last + "0.")
            ],
        }

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official pose HRNet / MEGA / timm classification layouts -> our keys (see module doc)."""
        state, _ = take_prefix(state, "backbone.")
        dropped = [k for k in state if k.startswith(_HEADS)]
        out = {k: v for k, v in state.items() if not k.startswith(_HEADS)}
        own = self.state_dict()
        for group, keys in self._new_layer_groups().items():
            if keys and not any(k in out for k in keys):
                out.update({k: own[k].clone() for k in keys})
                logger.info("hrnet weights: %s not in the file; %d tensors keep their init", group, len(keys))
        if dropped:
            logger.info("hrnet weights: dropped %d head tensors (%s ...)", len(dropped), dropped[0])
        return out
