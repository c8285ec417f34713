"""Samplers: turn a ``logits_fn`` (the network as a callable) into token ids (B, Q, L).

``SAMPLERS`` maps a name to a sampler class; ``configs/sampler/<name>.yaml`` holds ``name`` plus the
constructor's keyword arguments, so ``SAMPLERS.build(**cfg.sampler)`` builds it. An instance is called as
``sampler(logits_fn, batch_size=B, num_tokens=L, codebook_size=K, num_samples=Q, generator=g,
init_ids=None, init_mask=None)`` and returns a ``SamplerResult``.
"""

from __future__ import annotations

from mega.refiners.pose_guided import PoseGuidedRefiner, PoseGuidedSampler
from mega.registry import Registry
from mega.samplers.deterministic import DeterministicSampler, LogitsFn, SamplerResult, sample_deterministic
from mega.samplers.maskgit import MaskGITSampler, sample_maskgit
from mega.samplers.schedules import TEMPERATURE_SCHEDULES, fixed_counts, temperature_at
from mega.samplers.uncertainty_guided import UncertaintyGuidedSampler

SAMPLERS = Registry("sampler")
SAMPLERS.register("deterministic")(DeterministicSampler)
SAMPLERS.register("maskgit_generation")(MaskGITSampler)
# MEGA's stochastic HMR mode: HRNet (T = 5, A = 1) and ResNet-50 (T = 2, A = 10) presets of MaskGIT.
SAMPLERS.register("stochastic")(MaskGITSampler)
SAMPLERS.register("stochastic_resnet")(MaskGITSampler)
SAMPLERS.register("uncertainty_guided")(UncertaintyGuidedSampler)
SAMPLERS.register("pose_guided")(PoseGuidedSampler)

__all__ = [
    "SAMPLERS",
    "TEMPERATURE_SCHEDULES",
    "DeterministicSampler",
    "LogitsFn",
    "MaskGITSampler",
    "PoseGuidedRefiner",
    "PoseGuidedSampler",
    "SamplerResult",
    "UncertaintyGuidedSampler",
    "fixed_counts",
    "sample_deterministic",
    "sample_maskgit",
    "temperature_at",
]
