"""The backbone contract: a square image crop -> tokens, a pooled vector and a feature pyramid.

Every registered backbone is a :class:`Backbone` whose ``forward(img (B, 3, S, S))`` returns a
:class:`BackboneOutput`:

- ``tokens`` (B, N, C): the last feature map, flattened row-major (N = h * w = ``num_tokens``);
- ``pooled`` (B, C): the mean of the tokens (global average pooling);
- ``pyramid``: list of (B, D_l, H_l, W_l), fine to coarse, built from the last map by a ViTDet-style
  simple feature pyramid (``pyramid_scales`` relative to it; empty list when no scales are set).

Attributes: ``dim`` (C), ``pyramid_dims`` (the D_l), ``pyramid_scales``, ``input_size`` (S),
``token_grid`` ((h, w), so N = h * w).

The network is split in two: the *trunk* (everything a public checkpoint holds) and the *neck*
(``self.neck``, the pyramid, always newly initialised and always trainable). Trainability:

- ``freeze: true``: the whole trunk is frozen (its BatchNorm statistics too), and runs under no_grad;
- ``trainable_blocks: N``: only the last N blocks of the trunk (``trunk_blocks()``; ViT blocks, CNN
  stages) and the modules after them (``trunk_tail()``, e.g. the ViT's last norm) train: MEGA's ViT
  schedule fine-tunes the last 10 of ViT-H's 32 blocks;
- neither: everything trains.

Weights come only from a local file (``weights: PATH``), read by :mod:`mega.backbones.weights` and
mapped from the public checkpoint layouts by each family's ``convert_state_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mega.backbones.pyramid import SimpleFeaturePyramid


@dataclass
class BackboneOutput:
    """What every backbone returns.

    Attributes:
        tokens: (B, N, C) the last feature map flattened row-major, N = h * w.
        pooled: (B, C) mean over the N tokens.
        pyramid: list of (B, D_l, H_l, W_l), fine to coarse (largest H_l first).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    pyramid: list[torch.Tensor]


class Backbone(nn.Module):
    """Base class: subclasses build their trunk, then call :meth:`_finish`.

    Subclasses implement ``forward_features(img (B, 3, S, S)) -> (B, C, h, w)``, ``trunk_blocks()``
    (ordered, shallow to deep) and optionally ``trunk_tail()`` and ``convert_state_dict(sd)``.
    """

    registry_name: ClassVar[str] = ""
    #: Keep the trunk's weights and feature maps channels-last (NHWC): oneDNN's faster layout for CNNs on
    #: CPUs (224 px, 2 threads, eval batch 1 / training batch 8: HRNet-W48 212 -> 166 ms / 3.73 -> 3.31 s,
    #: ResNet-50 51 -> 44 ms / 1.21 -> 0.97 s).
    channels_last: ClassVar[bool] = False
    #: Whether :meth:`compile_for_inference` compiles the trunk: True for the CNNs, where inductor's
    #: frozen-weight kernels beat eager oneDNN at batch 1 (HRNet-W48, 224 px, 2 threads: see
    #: ``compile_for_inference``); BlazePose runs its own fused oneDNN plan, the ViTs are GEMM-bound.
    compilable: ClassVar[bool] = False

    dim: int
    input_size: int
    token_grid: tuple[int, int]
    pyramid_dims: list[int]
    pyramid_scales: list[float]

    # ---- to implement -------------------------------------------------------------------------------
    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> last feature map (B, C, h, w)."""
        raise NotImplementedError

    def trunk_blocks(self) -> list[nn.Module]:
        """The trunk's blocks in depth order (what ``trainable_blocks`` counts from the end)."""
        raise NotImplementedError

    def trunk_tail(self) -> list[nn.Module]:
        """Trunk modules after the last block, trained whenever any block is (default: none)."""
        return []

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint's keys to this module's trunk keys (default: our own layout, as is)."""
        return state

    # ---- shared -------------------------------------------------------------------------------------
    def _finish(
        self,
        *,
        dim: int,
        input_size: int,
        token_grid: tuple[int, int],
        pyramid_scales: Sequence[float],
        pyramid_dim: int,
        weights: str | os.PathLike | None,
        freeze: bool,
        trainable_blocks: int | None,
    ) -> None:
        """Add the pyramid neck, load ``weights`` into the trunk, and set what trains."""
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.token_grid = (int(token_grid[0]), int(token_grid[1]))
        self.neck = SimpleFeaturePyramid(self.dim, list(pyramid_scales), int(pyramid_dim))
        self.pyramid_dims = list(self.neck.dims)
        self.pyramid_scales = list(self.neck.scales)
        if weights:
            from mega.backbones.weights import load_backbone_weights

            load_backbone_weights(self, weights)
        self.set_trainable(freeze=freeze, trainable_blocks=trainable_blocks)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def num_tokens(self) -> int:
        """N = h * w tokens per image."""
        return self.token_grid[0] * self.token_grid[1]

    def trunk_state_keys(self) -> list[str]:
        """State-dict keys of the trunk (everything but the neck): what a weights file must provide."""
        return [k for k in self.state_dict() if not k.startswith("neck.")]

    def set_trainable(self, freeze: bool = False, trainable_blocks: int | None = None) -> None:
        """Freeze the trunk, or all of it but the last ``trainable_blocks`` blocks (+ tail).

        ``freeze=True`` together with ``trainable_blocks`` > 0 is a contradiction and an error. The neck
        always trains. Frozen BatchNorm layers stay in eval mode (see :meth:`train`).
        """
        blocks = self.trunk_blocks()
        if trainable_blocks is not None:
            n = int(trainable_blocks)
            if n < 0 or n > len(blocks):
                raise ValueError(
                    f"backbone '{self.registry_name}': trainable_blocks={n} is outside 0..{len(blocks)} "
                    f"(it has {len(blocks)} blocks); use null to train everything"
                )
            if freeze and n > 0:
                raise ValueError(
                    f"backbone '{self.registry_name}': freeze=true contradicts trainable_blocks={n}; "
                    "set freeze=false to fine-tune the last blocks, or trainable_blocks=null"
                )
        for name, p in self.named_parameters():
            p.requires_grad_(name.startswith("neck.") or (not freeze and trainable_blocks is None))
        if not freeze and trainable_blocks:
            for module in [*blocks[len(blocks) - int(trainable_blocks) :], *self.trunk_tail()]:
                for p in module.parameters():
                    p.requires_grad_(True)
        self.trunk_frozen = not any(
            p.requires_grad for n, p in self.named_parameters() if not n.startswith("neck.")
        )
        #: frozen_outputs reads no trainable parameter: it may run without autograd, once per cached crop
        self.cacheable = self.trunk_frozen
        self.train(self.training)

    def fuse_for_inference(self) -> int:
        """Fold the trunk's BatchNorms into their convolutions (``inference_fusion.py``), in place, for
        inference only: the backbone refuses ``train()`` afterwards. Returns how many were folded."""
        from mega.backbones.inference_fusion import fold_batch_norms

        self.eval()
        folded = fold_batch_norms(self)
        self.inference_only = True
        return folded

    def compile_for_inference(self) -> bool:
        """Compile the backbone with ``torch.compile`` for inference, in place (``nn.Module.compile``).

        Inductor's freezing mode treats the weights as constants: convolutions get weights packed once
        for oneDNN and their bias / ReLU / residual sums fused, elementwise passes are merged. The
        first call per batch size compiles (about 30 s for HRNet-W48 on 2 CPU cores); the result
        equals the eager trunk up to float rounding (tests/test_compile.py). Because the weights are
        baked in, the BatchNorms are folded first (:meth:`fuse_for_inference`) and the backbone
        refuses ``train()`` afterwards; load weights before compiling. Measured on HRNet-W48
        (``benchmarks/vs_mega.py --compile``): see the README's speed section.

        Returns:
            True when compiled; False when this backbone is not ``compilable`` (it runs eagerly).

        Raises:
            RuntimeError: torch.compile cannot build kernels here (on a CPU it needs a C++ compiler);
                the message says to run without compiling.
        """
        if not self.compilable:
            return False
        from torch._inductor import config as inductor_config

        if not getattr(self, "inference_only", False):
            self.fuse_for_inference()
        s = self.input_size
        probe = torch.zeros(1, 3, s, s, device=next(self.parameters()).device)
        compiled = torch.compile(self._call_impl, dynamic=False)

        def call(*args: Any, **kwargs: Any) -> Any:
            # inductor's freezing (weights as constants) for this module's graphs only, also when a new
            # batch size recompiles; nn.Module.compile's own options do not reach it
            with inductor_config.patch(freezing=True):
                return compiled(*args, **kwargs)

        self._compiled_call_impl = call  # what nn.Module.compile sets: the same state_dict keys
        try:
            with torch.no_grad():
                self(probe)  # compile now: a missing compiler fails here, not in the middle of a run
        except Exception as err:  # inductor raises many kinds (BackendCompilerFailed, CppCompileError, ...)
            self._compiled_call_impl = None  # back to eager
            first = str(err).strip().splitlines()[:1]
            raise RuntimeError(
                f"backbone '{self.registry_name}': torch.compile failed ({type(err).__name__}: "
                f"{first[0][:200] if first else ''}); run without compile=true (eager is the default)"
            ) from err
        return True

    def train(self, mode: bool = True) -> Backbone:
        """Like nn.Module.train, but BatchNorm layers whose parameters are all frozen stay in eval mode."""
        if mode and getattr(self, "inference_only", False):
            raise RuntimeError(
                f"backbone '{self.registry_name}' was fused for inference (BatchNorm folded into its "
                "convolutions) and cannot train; load the checkpoint with load_hmr(path, inference=False)"
            )
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = list(m.parameters())
                    if params and not any(p.requires_grad for p in params):
                        m.eval()
        return self

    def check_input(self, img: torch.Tensor) -> None:
        """One clear error for a wrongly shaped batch."""
        s = self.input_size
        if img.ndim != 4 or img.shape[1] != 3 or img.shape[2] != s or img.shape[3] != s:
            raise ValueError(
                f"backbone '{self.registry_name}' expects images (B, 3, {s}, {s}) (its input_size); got "
                f"{tuple(img.shape)}: crop to {s} px or set backbone.input_size to the crop size"
            )

    def frozen_outputs(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the trunk computes from a crop: ``{"fmap": (B, C, h, w)}``. With a frozen trunk this is
        what :class:`mega.backbones.feature_cache.FrozenFeatureDataset` computes once and keeps."""
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return {"fmap": self.forward_features(img)}

    def from_frozen(self, raw: dict[str, torch.Tensor]) -> BackboneOutput:
        """The trainable rest (neck) on the trunk's outputs: tokens (B, N, C), pooled (B, C), pyramid."""
        fmap = raw["fmap"].float()
        tokens = fmap.flatten(2).transpose(1, 2)
        return BackboneOutput(tokens=tokens, pooled=tokens.mean(dim=1), pyramid=self.neck(fmap))

    def forward(self, img: torch.Tensor) -> BackboneOutput:
        """img (B, 3, S, S), ImageNet-normalised -> BackboneOutput (tokens (B, N, C), pooled (B, C), pyramid)."""
        self.check_input(img)
        if getattr(self, "cacheable", False) and torch.is_grad_enabled():
            with torch.no_grad():
                raw = self.frozen_outputs(img)
        else:
            raw = self.frozen_outputs(img)
        return self.from_frozen(raw)

    def extra_repr(self) -> str:
        info: dict[str, Any] = {
            "dim": getattr(self, "dim", None),
            "input_size": getattr(self, "input_size", None),
            "token_grid": getattr(self, "token_grid", None),
        }
        return ", ".join(f"{k}={v}" for k, v in info.items())
