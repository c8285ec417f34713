"""BlazePose GHUM's landmark network as a pose-pretrained backbone, read from MediaPipe's wheel.

The papers never train HMR from a random backbone (MEGA: HRNet-W48 pre-trained on 2D pose; GenHMR:
ViTPose). On a CPU, with nothing downloadable from a model hub, the one pose-pretrained network that
a package registry ships is MediaPipe's ``pose_landmark_full.tflite`` (Apache-2.0; 3.17 M parameters;
byte-identical in mediapipe 0.10.9 - 0.10.21). ``make weights`` takes it out of the pinned wheel
(:mod:`mega.backbones.blazepose_file`); this module turns it into PyTorch with the project's own
converter (:mod:`mega.backbones.tflite_graph`, :mod:`mega.backbones.tflite_net`): no TensorFlow, LiteRT
or mediapipe at run time.

The network (input 256 x 256 RGB in [0, 1]) is a MobileNetV2-style encoder down to an 8 x 8 map, a
heat-map / segmentation decoder, and a regression branch that reads the 8 x 8 map and outputs 39
landmarks (x, y, z in input pixels, visibility and presence logits), 39 world landmarks (metres,
hip-centred) and a person-presence flag. This backbone keeps the encoder and the regression branch
(the 64 x 64 / 256 x 256 decoder is never run):

- ``tokens``: the 8 x 8 x 144 encoder map (row-major, N = 64), followed, with ``landmark_tokens``, by
  39 landmark tokens: each landmark's (x, y, z, visibility, presence, world xyz) embedded to 144 by a
  trainable linear map plus a learned per-landmark vector (N = 103);
- ``pooled``: the mean of the 64 map tokens; ``pyramid``: the neck on the 8 x 8 map;
- ``landmarks`` (B, 39, 5) and ``world`` (B, 39, 3) as attributes of the output, for whoever wants them.

Crops arrive ImageNet-normalised (the data pipeline's contract); the network's [0, 1] scaling is undone
inside. Trainability: ``freeze`` (the default) keeps all 3.17 M weights fixed; ``trainable_blocks=N``
trains the last N convolutions (the kept operators' order: the encoder, then the regression branch).
The landmark embedding always trains; the presence-flag convolution never does (no token reads it, so
it would get no gradient, which DDP refuses). A partly trainable network is split at :attr:`BlazePose.cut`,
the last tensor before its first trainable convolution through which everything flows
(:meth:`mega.backbones.tflite_net.TFLiteNet.cut_before`): ``frozen_outputs`` stops there (what the
feature cache keeps), ``from_frozen`` runs the rest. Useful values:

==========  =========================================  ====================
N           trains                                     cut (cached)
==========  =========================================  ====================
29          the regression branch (landmark outputs)   8 x 8 x 144 map
41          + the 8 x 8 stage (4 inverted bottlenecks)  16 x 16 x 88
60          + the last 16 x 16 stages                  32 x 32 x 32
74          everything                                 the input crop
==========  =========================================  ====================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mega.backbones.base import Backbone, BackboneOutput
from mega.backbones.blazepose_file import DEFAULT_PATH, require_model_file
from mega.backbones.tflite_graph import read_tflite
from mega.backbones.tflite_net import TFLiteNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The encoder's last 144-channel map (8 x 8 at 256 px) and the regression outputs, by tensor name.
MAP_TENSOR = "model_1/model/add_8/add"
LANDMARKS, PRESENCE, WORLD = "Identity", "Identity_1", "Identity_4"
NUM_LANDMARKS = 39


@dataclass
class BlazePoseOutput(BackboneOutput):
    """:class:`BackboneOutput` plus the network's own landmark outputs.

    Attributes:
        landmarks: (B, 39, 5) x, y, z in crop pixels of the 256 px input, visibility and presence logits.
        world: (B, 39, 3) world landmarks in metres, hip-centred, in the crop's axes.
        presence: (B,) person-presence probability.
    """

    landmarks: torch.Tensor | None = None
    world: torch.Tensor | None = None
    presence: torch.Tensor | None = None


class LandmarkEmbedding(nn.Module):
    """(B, 39, 5) landmarks + (B, 39, 3) world landmarks -> (B, 39, dim) tokens.

    Inputs are rescaled to about unit range first: x, y, z / input_size - (0.5, 0.5, 0), sigmoid of the
    two logits, world landmarks in metres.
    """

    def __init__(self, dim: int, input_size: int) -> None:
        super().__init__()
        self.input_size = float(input_size)
        self.proj = nn.Linear(8, dim)
        self.identity = nn.Parameter(torch.zeros(NUM_LANDMARKS, dim))
        nn.init.normal_(self.identity, std=0.02)

    def features(self, landmarks: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
        """(B, 39, 5), (B, 39, 3) -> (B, 39, 8) the normalised inputs of the embedding."""
        xyz = landmarks[..., :3] / self.input_size - landmarks.new_tensor([0.5, 0.5, 0.0])
        return torch.cat([xyz, torch.sigmoid(landmarks[..., 3:5]), world], dim=-1)

    def forward(self, landmarks: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
        """(B, 39, 5), (B, 39, 3) -> (B, 39, dim)."""
        return self.proj(self.features(landmarks, world)) + self.identity


class BlazePose(Backbone):
    """BlazePose GHUM landmark network (MediaPipe ``pose_landmark_full``) as a frozen or tunable backbone.

    Args:
        input_size: S, the square crop size; the network was trained at 256 (other sizes change the
            map to S/32 x S/32 and are the user's experiment).
        source: the ``pose_landmark_full.tflite`` file (``make weights`` puts it at the default path).
        landmark_tokens: append the 39 embedded landmark tokens to the 64 map tokens.
        pyramid_scales / pyramid_dim: the simple feature pyramid on the 8 x 8 map (mega/backbones/pyramid.py).
        weights: a local state dict of this backbone in mega's layout (e.g. fine-tuned), or None.
        freeze / trainable_blocks: see mega/backbones/base.py (blocks = the convolutions, in file order).
    """

    registry_name = "blazepose"

    def __init__(
        self,
        input_size: int = 256,
        source: str | os.PathLike = DEFAULT_PATH,
        landmark_tokens: bool = True,
        pyramid_scales: Sequence[float] = (),
        pyramid_dim: int = 64,
        weights: str | os.PathLike | None = None,
        freeze: bool = True,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        graph = read_tflite(require_model_file(source))
        names = {v: k for k, v in graph.names.items()}
        if MAP_TENSOR not in names:
            raise ValueError(
                f"{source}: no tensor '{MAP_TENSOR}'; is this BlazePose's pose_landmark_full.tflite?"
            )
        # without landmark tokens the regression branch is not run (its weights would get no gradient)
        heads = (LANDMARKS, PRESENCE, WORLD) if landmark_tokens else ()
        self._ids = [names[MAP_TENSOR]] + [graph.output_id(n) for n in heads]
        self.net = TFLiteNet(graph, self._ids)
        dim = graph.shapes[self._ids[0]][-1]
        self._presence_conv = self._conv_behind(self._ids[2]) if landmark_tokens else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.landmark_tokens = bool(landmark_tokens)
        grid = max(1, int(input_size) // 32)
        self._finish(dim=dim, input_size=input_size, token_grid=(grid, grid), pyramid_scales=pyramid_scales,
                     pyramid_dim=pyramid_dim, weights=None, freeze=freeze, trainable_blocks=trainable_blocks)  # fmt: skip
        # The landmark embedding is new and always trains (see set_trainable); it is not part of the
        # pyramid neck, which a model whose conditioning reads no pyramid freezes.
        self.landmark_embed = LandmarkEmbedding(dim, input_size) if self.landmark_tokens else None
        if weights:
            from mega.backbones.weights import load_backbone_weights

            load_backbone_weights(self, weights)
        self.set_trainable(freeze=freeze, trainable_blocks=trainable_blocks)

    @property
    def num_tokens(self) -> int:
        """N = 64 map tokens (at 256 px), + 39 landmark tokens when ``landmark_tokens``."""
        grid = self.token_grid[0] * self.token_grid[1]
        return grid + (NUM_LANDMARKS if self.landmark_tokens else 0)

    def trunk_blocks(self) -> list[nn.Module]:
        return list(self.net.convs.values())

    def set_trainable(self, freeze: bool = False, trainable_blocks: int | None = None) -> None:
        """As the base class for the network; the landmark embedding always trains."""
        super().set_trainable(freeze=freeze, trainable_blocks=trainable_blocks)
        embed = getattr(self, "landmark_embed", None)
        if embed is not None:
            embed.requires_grad_(True)
        if self._presence_conv is not None:  # the presence flag reaches no token: no gradient would reach it
            self.net.convs[self._presence_conv].requires_grad_(False)  # (and DDP refuses unused parameters)
        self.trunk_frozen = not any(p.requires_grad for p in self.net.parameters())
        # a partly trainable network splits at the last tensor before its first trainable convolution:
        # the frozen side is what a feature cache keeps (always possible: at worst the input itself)
        first = next((k for k, c in self.net.convs.items() if c.weight.requires_grad), None)
        self.cut = None if first is None else self.net.cut_before(first)
        self.cacheable = True

    def _conv_behind(self, tensor: int) -> str:
        """The key of the convolution that computes ``tensor`` through non-convolution operators only."""
        producer = {op.outputs[0]: (op, key) for _, op, key in self.net.program}
        op, key = producer[tensor]
        while not key:
            op, key = producer[next(t for t in op.inputs if t in producer)]
        return key

    def frozen_outputs(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """ImageNet-normalised (B, 3, S, S) -> what the frozen part computes (what a cache keeps): fmap
        (B, 144, S/32, S/32), landmarks (B, 39, 5), world (B, 39, 3), presence (B,) for a frozen network;
        ``{"cut": (B, C, h, w)}``, the tensor at :attr:`cut`, when some convolutions train."""
        # undo the ImageNet normalisation straight into the channels-last layout the network runs in
        raw01 = torch.addcmul(self.mean.view(-1), img.permute(0, 2, 3, 1), self.std.view(-1)).permute(
            0, 3, 1, 2
        )
        if self.cut is not None:
            return {"cut": self.net(raw01, part=(None, self.cut))[self.cut]}
        return self._named(self.net(raw01))

    def _named(self, out: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's outputs by tensor id -> fmap, landmarks, world, presence."""
        raw = {"fmap": out[self._ids[0]].contiguous()}
        if len(self._ids) > 1:
            lms, presence, world = (out[t] for t in self._ids[1:])
            raw.update(landmarks=lms.reshape(-1, NUM_LANDMARKS, 5), world=world.reshape(-1, NUM_LANDMARKS, 3),
                       presence=presence.reshape(-1))  # fmt: skip
        return raw

    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> the 8 x 8 map (B, 144, S/32, S/32)."""
        return self._complete(self.frozen_outputs(img))["fmap"]

    def _complete(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`frozen_outputs` -> the network's outputs (runs the trainable side of a cut)."""
        if "cut" not in raw:
            return raw
        return self._named(self.net(raw["cut"].float(), part=(self.cut, None)))

    def from_frozen(self, raw: dict[str, torch.Tensor]) -> BlazePoseOutput:
        """:meth:`frozen_outputs` -> tokens (B, N, 144), pooled (B, 144), pyramid, and the landmarks (the
        trainable convolutions run here when there is a :attr:`cut`)."""
        raw = self._complete(raw)
        fmap = raw["fmap"].float()
        tokens = fmap.flatten(2).transpose(1, 2)
        out = BlazePoseOutput(tokens=tokens, pooled=tokens.mean(dim=1), pyramid=self.neck(fmap))
        if self.landmark_tokens:
            out.landmarks, out.world, out.presence = (
                raw[k].float() for k in ("landmarks", "world", "presence")
            )
            out.tokens = torch.cat([tokens, self.landmark_embed(out.landmarks, out.world)], dim=1)
        return out
