"""GenHMR's uncertainty-guided sampling and top-k draws: counts from the paper's formula, confidence
order, top-k support, and the deterministic / stochastic agreement at temperature 0."""

from __future__ import annotations

import math

import pytest
import torch

from mega.samplers import SAMPLERS, UncertaintyGuidedSampler, sample_deterministic, sample_maskgit

L, K = 12, 16
pytestmark = pytest.mark.usefixtures("one_thread")

GAMMA = {  # GenHMR supplementary, "Mask Scheduling Function", written out independently
    "raised_cosine": lambda r: (1 + math.cos(math.pi * r)) / 2,  # their "cosine"
    "linear": lambda r: 1 - r,
    "cubic": lambda r: 1 - r**3,
    "sqrt": lambda r: math.sqrt(max(0.0, 1 - r**2)),
}


def _fixed_logits(seed: int, batch: int):
    """A logits_fn whose logits do not depend on the input: confidence order is known in advance."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(batch, L, K, generator=g) * 3

    def fn(ids, mask):
        return table.repeat_interleave(ids.shape[0] // batch, dim=0)

    return fn, table


@pytest.mark.parametrize("schedule", list(GAMMA))
@pytest.mark.parametrize("steps", [1, 3, 5, 10])
def test_ugs_counts_follow_the_paper(schedule: str, steps: int) -> None:
    fn, _ = _fixed_logits(0, 2)
    res = UncertaintyGuidedSampler(steps=steps, mask_schedule=schedule)(
        fn, batch_size=2, num_tokens=L, codebook_size=K, return_history=True
    )
    fixed = (res.history >= 0).sum(-1)[0, 0]  # (T,) fixed after each step
    for t in range(1, steps + 1):
        remasked = math.ceil(GAMMA[schedule](t / steps) * L - 1e-9)
        assert int(fixed[t - 1]) == max(L - remasked, min(t, L)), (t, fixed.tolist())
    assert int(fixed[-1]) == L


def test_ugs_keeps_the_most_confident_tokens_first() -> None:
    fn, table = _fixed_logits(1, 1)
    res = UncertaintyGuidedSampler(steps=4)(
        fn, batch_size=1, num_tokens=L, codebook_size=K, return_history=True
    )
    logp = torch.log_softmax(table[0], -1)
    best, best_id = logp.max(-1)  # (L,)
    assert torch.equal(res.ids[0, 0], best_id)  # top-1: every token is its argmax
    order = best.argsort(descending=True)
    first = (res.history[0, 0, 0] >= 0).nonzero().flatten()
    assert set(first.tolist()) == set(order[: len(first)].tolist())
    torch.testing.assert_close(res.confidence[0, 0], best)


def test_top_k_draws_stay_in_the_top_k_and_top1_is_greedy() -> None:
    fn, table = _fixed_logits(2, 2)
    top3 = table.topk(3, dim=-1).indices  # (2, L, 3)
    res = sample_maskgit(
        fn,
        batch_size=2,
        num_tokens=L,
        codebook_size=K,
        steps=3,
        temperature=5.0,
        temperature_schedule="constant",
        top_k=3,
        num_samples=8,
        generator=torch.Generator().manual_seed(0),
    )
    inside = (res.ids.unsqueeze(-1) == top3.unsqueeze(1)).any(-1)
    assert bool(inside.all())
    assert len(torch.unique(res.ids.flatten(0, 1), dim=0)) > 1  # it does sample
    greedy = sample_maskgit(
        fn,
        batch_size=2,
        num_tokens=L,
        codebook_size=K,
        steps=3,
        temperature=50.0,
        temperature_schedule="constant",
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(greedy.ids[:, 0], table.argmax(-1))


def test_deterministic_equals_stochastic_at_zero_temperature_one_step() -> None:
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Embedding(K + 1, 32), torch.nn.Linear(32, K))

    def fn(ids, mask):  # depends on the input, as the real model does
        return net(ids) + net(ids).mean(1, keepdim=True)

    det = sample_deterministic(fn, batch_size=4, num_tokens=L, codebook_size=K)
    sto = SAMPLERS.build(
        "maskgit", steps=1, temperature=0.0, temperature_schedule="linear", confidence_noise=1.0
    )(fn, batch_size=4, num_tokens=L, codebook_size=K, generator=torch.Generator().manual_seed(0))
    assert torch.equal(det.ids, sto.ids)


def test_ugs_rejects_unknown_schedule() -> None:
    with pytest.raises(KeyError, match="raised_cosine"):  # the error lists the known names
        UncertaintyGuidedSampler(mask_schedule="cos")
