"""Samplers: turn a ``logits_fn`` (the network as a callable) into token ids (B, Q, L).

``SAMPLERS`` maps a name to a sampler class (one name per class); ``configs/sampler/<preset>.yaml`` holds
``name`` plus the constructor's keyword arguments, so ``SAMPLERS.build(**cfg.sampler)`` builds it (several
presets may share a class: ``stochastic`` and ``maskgit_generation`` are both ``maskgit``). An instance is called as
``sampler(logits_fn, batch_size=B, num_tokens=L, codebook_size=K, num_samples=Q, generator=g,
init_ids=None, init_mask=None)`` and returns a ``SamplerResult``. Refinement with 2D keypoints is the next stage (:mod:`mega.refiners`).
"""

from __future__ import annotations

from mega.registry import Registry
from mega.samplers.deterministic import DeterministicSampler, LogitsFn, SamplerResult, sample_deterministic
from mega.samplers.maskgit import MaskGITSampler, sample_maskgit
from mega.samplers.schedules import TEMPERATURE_SCHEDULES, fixed_counts, temperature_at
from mega.samplers.uncertainty_guided import UncertaintyGuidedSampler

SAMPLERS = Registry("sampler")
SAMPLERS.register("deterministic")(DeterministicSampler)
# MaskGIT decoding: MEGA's random generation (configs/sampler/maskgit_generation.yaml) and its stochastic
# HMR mode, HRNet (stochastic.yaml: T = 5, A = 1) and ResNet-50 (stochastic_resnet.yaml: T = 2, A = 10).
SAMPLERS.register("maskgit")(MaskGITSampler)
SAMPLERS.register("uncertainty_guided")(UncertaintyGuidedSampler)

__all__ = [
    "SAMPLERS",
    "TEMPERATURE_SCHEDULES",
    "DeterministicSampler",
    "LogitsFn",
    "MaskGITSampler",
    "SamplerResult",
    "UncertaintyGuidedSampler",
    "fixed_counts",
    "sample_deterministic",
    "sample_maskgit",
    "temperature_at",
]
