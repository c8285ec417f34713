"""Masking schedules, per-sample random masks and the masked-token loss."""

from __future__ import annotations

import math

import pytest
import torch

from mega.transformer import (
    MASK_RATIO_SCHEDULES,
    counts_for_ratio,
    mask_ratio,
    masked_cross_entropy,
    masked_token_stats,
    random_mask,
    sample_mask_counts,
    sample_training_mask,
)

# Written from the papers' formulas (MEGA / MaskGIT cosine; GenHMR supplementary), not from the module.
REFERENCE = {
    "cosine": lambda r: math.cos(math.pi * r / 2),
    "raised_cosine": lambda r: (1 + math.cos(math.pi * r)) / 2,
    "linear": lambda r: 1 - r,
    "cubic": lambda r: 1 - r**3,
    "sqrt": lambda r: math.sqrt(1 - r**2),
    "full": lambda r: 1.0,
}


def test_every_schedule_has_a_reference():
    assert set(MASK_RATIO_SCHEDULES) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_ratio_functions_match_formulas_and_decrease(name):
    r = torch.linspace(0, 1, 41, dtype=torch.float64)
    got = mask_ratio(name, r)
    want = torch.tensor([REFERENCE[name](float(x)) for x in r], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    assert got[0] == 1.0
    assert bool((got[1:] <= got[:-1]).all())


def test_unknown_schedule_is_named():
    with pytest.raises(KeyError, match="cosine"):
        mask_ratio("cosinus", torch.zeros(1))


@pytest.mark.parametrize("name", ["cosine", "linear", "cubic", "sqrt"])
def test_counts_follow_the_schedule_per_sample(name):
    """M_b = ceil(N gamma(tau_b)) (MEGA's / GenHMR's code) with tau_b drawn per sample, clipped to [1, N]."""
    B, N = 257, 54
    counts = sample_mask_counts(B, N, schedule=name, generator=torch.Generator().manual_seed(3))
    tau = torch.rand(B, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    want = [min(max(math.ceil(N * REFERENCE[name](float(t)) - 1e-9), 1), N) for t in tau]
    assert counts.tolist() == want
    assert len(set(want)) > 10  # one ratio per sample, not per batch


def test_cosine_counts_have_the_expected_mean():
    """E[cos(pi tau / 2)] = 2 / pi; the ceil adds about 1/2 token on average."""
    B, N = 40000, 54
    counts = sample_mask_counts(B, N, generator=torch.Generator().manual_seed(0))
    expected = (2 / math.pi * N + 0.5) / N
    assert abs(counts.double().mean().item() / N - expected) < 0.01


def test_cosine_counts_reach_the_fully_masked_input():
    """P(M = N) = P(cos(pi tau / 2) > (N - 1) / N) = 2 acos((N - 1) / N) / pi (~12 % at N = 54)."""
    B, N = 40000, 54
    counts = sample_mask_counts(B, N, generator=torch.Generator().manual_seed(0))
    expected = 2 * math.acos((N - 1) / N) / math.pi
    assert abs((counts == N).double().mean().item() - expected) < 0.01
    assert int(counts.min()) >= 1


def test_random_mask_has_exact_counts_and_uniform_positions():
    B, N = 6000, 20
    counts = torch.randint(0, N + 1, (B,), generator=torch.Generator().manual_seed(1))
    mask = random_mask(counts, N, generator=torch.Generator().manual_seed(2))
    assert mask.dtype == torch.bool and mask.shape == (B, N)
    assert mask.sum(1).tolist() == counts.tolist()
    # Each position is masked with probability E[count] / N; 6000 rows give ~1% standard error.
    freq = mask.double().mean(0)
    assert float((freq - counts.double().mean() / N).abs().max()) < 0.04


def test_training_mask_is_seeded_and_never_empty():
    a = sample_training_mask(64, 54, generator=torch.Generator().manual_seed(5))
    b = sample_training_mask(64, 54, generator=torch.Generator().manual_seed(5))
    c = sample_training_mask(64, 54, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a.sum(1) >= 1).all())


def test_counts_for_ratio_and_bad_counts():
    assert counts_for_ratio(0.5, 3, 54).tolist() == [27, 27, 27]
    assert counts_for_ratio(1.0, 2, 54).tolist() == [54, 54]
    assert counts_for_ratio(0.001, 1, 54).tolist() == [1]
    with pytest.raises(ValueError):
        counts_for_ratio(0.0, 1, 54)
    with pytest.raises(ValueError, match="counts"):
        random_mask(torch.tensor([3, 21]), 20)


def _batch(seed=0, B=4, L=7, K=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, K, generator=g)
    targets = torch.randint(0, K, (B, L), generator=g)
    mask = torch.rand(B, L, generator=g) < 0.5
    mask[0, 0] = True
    return logits, targets, mask


def test_loss_is_the_mean_over_masked_tokens_of_the_batch():
    logits, targets, mask = _batch()
    nll = -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, L)
    want = (nll * mask).sum() / mask.sum()
    torch.testing.assert_close(masked_cross_entropy(logits, targets, mask), want)


def test_loss_ignores_visible_positions():
    logits, targets, mask = _batch(1)
    changed = logits.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), logits.shape[-1]) * 100
    torch.testing.assert_close(
        masked_cross_entropy(changed, targets, mask), masked_cross_entropy(logits, targets, mask)
    )
    logits.requires_grad_(True)
    masked_cross_entropy(logits, targets, mask).backward()
    assert float(logits.grad[~mask].abs().max()) == 0.0
    assert float(logits.grad[mask].abs().max()) > 0.0


def test_loss_with_nothing_masked_is_zero_and_stats_agree():
    logits, targets, mask = _batch(2)
    none = torch.zeros_like(mask)
    assert float(masked_cross_entropy(logits, targets, none)) == 0.0
    nll_sum, correct, count = masked_token_stats(logits, targets, mask)
    assert int(count) == int(mask.sum())
    torch.testing.assert_close(nll_sum.float() / count.float(), masked_cross_entropy(logits, targets, mask))
    want_correct = ((logits.argmax(-1) == targets) & mask).sum()
    assert int(correct) == int(want_correct)


def test_loss_rejects_bad_shapes():
    logits, targets, mask = _batch()
    with pytest.raises(ValueError, match="logits"):
        masked_cross_entropy(logits, targets[:, :3], mask)
    with pytest.raises(TypeError, match="bool"):
        masked_cross_entropy(logits, targets, mask.long())
