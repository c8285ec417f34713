"""GenHMR's uncertainty-guided sampling (UGS), as a configuration of the confident-first decoding loop.

GenHMR ("Uncertainty-Guided Sampling"; supplementary "Mask Scheduling Function", "Token sampling
strategies"): start from a fully masked sequence; at iteration t of T every masked token is predicted
by top-k sampling from its distribution (k = 1, greedy, by default), and the ceil(gamma(t / T) L) least
confident tokens are re-masked for the next iteration; tokens kept once stay. That is the loop of
:func:`mega.samplers.maskgit.sample_maskgit` with no token noise beyond top-k, confidence = the model's
probability of the chosen code, and fixed counts L - ceil(gamma L) (= floor(L (1 - gamma))): only the
names and defaults differ, so this module binds them instead of repeating the loop. Like MaskGIT we
fix at least one token per iteration, so no iteration repeats its input (with T = 20 and GenHMR's
cosine, ceil(gamma(1/20) L) = L for L <= 54 would otherwise re-mask everything at t = 1).

GenHMR's four gamma functions (their Table 11) come from the one schedule table,
:data:`mega.transformer.masking.MASK_RATIO_SCHEDULES`, under the same ``mask_schedule`` key as MaskGIT's:
``linear`` 1 - r, ``cubic`` 1 - r^3, ``sqrt`` sqrt(1 - r^2) by the paper's names, and its "cosine"
(1 + cos(pi r)) / 2 as ``raised_cosine``, because ``cosine`` is already MaskGIT's and MEGA's cos(pi r / 2)
(which GenHMR also calls cosine, for training).
"""

from __future__ import annotations

from mega.samplers.maskgit import MaskGITSampler


class UncertaintyGuidedSampler(MaskGITSampler):
    """Registry entry ``uncertainty_guided`` (GenHMR's UGS; defaults: T = 5, their cosine, top-1).

    Args:
        steps: T iterations.
        mask_schedule: gamma, a key of ``MASK_RATIO_SCHEDULES``; GenHMR's are ``raised_cosine`` (their
            "cosine"), ``linear``, ``cubic``, ``sqrt``.
        top_k: sample each masked token from its k most likely codes (1 = greedy, GenHMR's default;
            their Table 12 shows larger k is worse).
        temperature: sampling temperature within the top k (unused when k = 1).
    """

    def __init__(
        self, steps: int = 5, mask_schedule: str = "raised_cosine", top_k: int = 1, temperature: float = 1.0
    ) -> None:
        super().__init__(
            steps=steps,
            mask_schedule=mask_schedule,
            temperature_schedule="constant",
            temperature=temperature,
            confidence_noise=0.0,
            top_k=top_k,
        )
