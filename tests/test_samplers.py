"""Sampler invariants (style note P15) and the decoding schedules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mega.samplers import (
    SAMPLERS,
    fixed_counts,
    sample_deterministic,
    sample_maskgit,
    temperature_at,
)
from mega.transformer import MaskedTokenTransformer

L, K = 10, 8
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sampler"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = MaskedTokenTransformer(L, K, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2).eval()
    with torch.no_grad():  # a sharper head than the init's, so argmax decisions are well separated
        net.head.weight.mul_(50.0)
    return net


@pytest.fixture(scope="module")
def soft_model():
    """The init's head: flat logits, so whatever a sampler draws at random shows in its samples."""
    torch.manual_seed(0)
    return MaskedTokenTransformer(L, K, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2).eval()


class Recorder:
    """Wraps a logits_fn and records every call's masks."""

    def __init__(self, fn):
        self.fn, self.masks = fn, []

    def __call__(self, ids, mask):
        self.masks.append(mask.clone())
        return self.fn(ids, mask)


def _run(model, **kw):
    args = dict(
        batch_size=3, num_tokens=L, codebook_size=K, steps=6, generator=torch.Generator().manual_seed(0)
    )
    args.update(kw)
    return sample_maskgit(model, **args)


# ---------------------------------------------------------------- schedules


def test_fixed_counts_known_values():
    # Linear, N = 10, T = 5: 10 (1 - (1 - t/5)) = 2t exactly (the epsilon guards 2t - 1e-16).
    assert fixed_counts(torch.tensor([10]), 5, "linear")[:, 0].tolist() == [2, 4, 6, 8, 10]
    # MEGA generation: N = 54, T = 20, floor(54 (1 - cos(pi t / 40))), raised to >= t, last = 54.
    want = [max(math.floor(54 * (1 - math.cos(math.pi * t / 40))), t) for t in range(1, 21)]
    want[-1] = 54
    assert fixed_counts(torch.tensor([54]), 20, "cosine")[:, 0].tolist() == want
    assert want[0] == 1  # MEGA: "only one token is predicted in the first step"


@pytest.mark.parametrize("schedule", ["cosine", "raised_cosine", "linear", "cubic", "sqrt", "full"])
def test_fixed_counts_are_monotone_and_complete(schedule):
    n = torch.tensor([0, 1, 5, 54, 160])
    for steps in (1, 3, 20):
        counts = fixed_counts(n, steps, schedule)
        assert counts.shape == (steps, 5)
        assert bool((counts[1:] >= counts[:-1]).all())
        assert counts[-1].tolist() == n.tolist()
        assert bool((counts[0] >= torch.clamp(n, max=1)).all())  # at least one token per step


def test_temperature_schedules():
    assert temperature_at("linear_pow6", 1.2, 10, 20) == pytest.approx(0.6**6)
    assert temperature_at("linear_pow6", 1.2, 1, 20) == pytest.approx((1.2 * 0.95) ** 6)
    assert temperature_at("linear", 10.0, 1, 2) == pytest.approx(5.0)
    assert temperature_at("linear", 10.0, 2, 2) == 0.0
    assert temperature_at("constant", 0.7, 3, 3) == 0.7
    with pytest.raises(KeyError, match="linear"):
        temperature_at("quadratic", 1.0, 1, 2)


# ---------------------------------------------------------------- invariants


def test_fixed_count_never_decreases_and_follows_the_schedule(model):
    rec = Recorder(model)
    res = _run(rec, num_samples=2, return_history=True)
    assert res.history.shape == (3, 2, 6, L)
    fixed = (res.history >= 0).sum(-1)  # (B, Q, T)
    assert bool((fixed[..., 1:] >= fixed[..., :-1]).all())
    want = fixed_counts(torch.tensor([L]), 6, "cosine")[:, 0]
    assert bool((fixed == want).all())
    # Masks seen by the network shrink step by step as well.
    seen = torch.stack([m.sum(1) for m in rec.masks])  # (T, R)
    assert seen[0].tolist() == [L] * 6 and bool((seen[1:] <= seen[:-1]).all())


def test_nothing_masked_at_the_end_and_no_mask_id(model):
    res = _run(model, num_samples=4, temperature=5.0, temperature_schedule="constant")
    assert res.ids.shape == (3, 4, L) and res.confidence.shape == (3, 4, L)
    assert bool(((res.ids >= 0) & (res.ids < K)).all())
    assert bool((res.confidence <= 0).all()) and bool(torch.isfinite(res.confidence).all())


def test_fixed_tokens_never_change(model):
    res = _run(model, num_samples=2, temperature=3.0, temperature_schedule="constant", return_history=True)
    hist = res.history  # (B, Q, T, L)
    for t in range(1, hist.shape[2]):
        before, after = hist[:, :, t - 1], hist[:, :, t]
        fixed = before >= 0
        assert torch.equal(after[fixed], before[fixed])
    assert torch.equal(hist[:, :, -1], res.ids)


def test_zero_temperature_one_step_is_argmax_of_one_pass(model):
    res = _run(model, steps=1, temperature=0.0, num_samples=2)
    mask = torch.ones(3, L, dtype=torch.bool)
    want = model(torch.full((3, L), K), mask).argmax(-1)  # (B, L)
    assert torch.equal(res.ids, want.unsqueeze(1).expand(3, 2, L))
    det = sample_deterministic(model, batch_size=3, num_tokens=L, codebook_size=K, num_samples=2)
    assert torch.equal(det.ids, res.ids)
    torch.testing.assert_close(det.confidence, res.confidence)
    # One step at any temperature schedule that ends at zero is also greedy (t counts from 1).
    greedy = _run(model, steps=1, temperature=5.0, temperature_schedule="linear")
    assert torch.equal(greedy.ids[:, 0], want)


def test_seeded_runs_repeat_and_seeds_differ(model):
    kw = dict(num_samples=4, temperature=2.0, temperature_schedule="constant", confidence_noise=1.0)
    a = _run(model, **kw)
    b = _run(model, **kw)
    c = _run(model, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)
    assert not torch.equal(a.ids, c.ids)
    assert not torch.equal(a.ids[:, 0], a.ids[:, 1])  # the Q samples of one element differ


def test_counts_differ_per_sample_with_initial_masks(model):
    """Given tokens are kept unchanged and each row gets the schedule of its own masked count."""
    B = 3
    init_ids = torch.randint(0, K, (B, L), generator=torch.Generator().manual_seed(7))
    init_mask = torch.ones(B, L, dtype=torch.bool)
    init_mask[1, :4] = False  # 6 to generate
    init_mask[2, 1::2] = False  # 5 to generate
    res = _run(
        model,
        init_ids=init_ids,
        init_mask=init_mask,
        num_samples=2,
        temperature=3.0,
        temperature_schedule="constant",
        return_history=True,
    )
    keep = (~init_mask).unsqueeze(1).expand(B, 2, L)
    assert torch.equal(res.ids[keep], init_ids.unsqueeze(1).expand(B, 2, L)[keep])
    assert bool((res.confidence[keep] == 0).all())
    generated = ((res.history >= 0) & ~keep.unsqueeze(2)).sum(-1)  # (B, Q, T) fixed among the masked
    for b, n in enumerate([10, 6, 5]):
        want = fixed_counts(torch.tensor([n]), 6, "cosine")[:, 0]
        assert bool((generated[b] == want).all())
    assert not torch.equal(generated[0, 0], generated[1, 0])


def test_counts_differ_between_schedules(model):
    cos = _run(model, mask_schedule="cosine", return_history=True)
    lin = _run(model, mask_schedule="linear", return_history=True)
    cos_fixed, lin_fixed = ((h.history >= 0).sum(-1)[0, 0] for h in (cos, lin))
    assert cos_fixed.tolist() == fixed_counts(torch.tensor([L]), 6, "cosine")[:, 0].tolist()
    assert lin_fixed.tolist() == fixed_counts(torch.tensor([L]), 6, "linear")[:, 0].tolist()
    assert cos_fixed.tolist() != lin_fixed.tolist()


def test_all_rows_go_through_one_call_per_step(model):
    rec = Recorder(model)
    _run(rec, batch_size=2, num_samples=5, steps=4)
    assert len(rec.masks) == 4 and all(m.shape == (10, L) for m in rec.masks)


def test_gumbel_max_draws_follow_the_softmax():
    """One step at temperature 1 draws each id with probability softmax(logits)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])

    def fixed_logits(ids, mask):
        return logits.expand(*ids.shape, 4)

    res = sample_maskgit(
        fixed_logits,
        batch_size=1,
        num_tokens=1,
        codebook_size=4,
        steps=1,
        num_samples=20000,
        temperature=1.0,
        temperature_schedule="constant",
        generator=torch.Generator().manual_seed(0),
    )
    freq = torch.bincount(res.ids.flatten(), minlength=4).double() / 20000
    assert float((freq - torch.softmax(logits.double(), 0)).abs().max()) < 0.015


def test_nothing_to_generate_and_bad_inputs(model):
    init_ids = torch.randint(0, K, (2, L), generator=torch.Generator().manual_seed(0))
    rec = Recorder(model)
    res = _run(rec, batch_size=2, init_ids=init_ids, init_mask=torch.zeros(2, L, dtype=torch.bool))
    assert rec.masks == [] and torch.equal(res.ids[:, 0], init_ids)
    with pytest.raises(ValueError, match="init_ids"):
        _run(model, batch_size=2, init_mask=torch.zeros(2, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        _run(lambda ids, mask: torch.zeros(*ids.shape, K + 1), batch_size=2)
    with pytest.raises(KeyError, match="cosine"):
        _run(model, mask_schedule="cos")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_sampler_configs_build_and_run(path, soft_model):
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert cfg["name"] in SAMPLERS  # a preset names its class's registry entry
    sampler = SAMPLERS.build(**cfg)
    res = sampler(
        soft_model,
        batch_size=2,
        num_tokens=L,
        codebook_size=K,
        num_samples=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.ids.shape == (2, 3, L)
    assert sampler.draws_at_random == bool((res.ids != res.ids[:, :1]).any())  # samples differ iff it says so


@pytest.mark.parametrize(
    "knobs, differ",
    [
        ({"top_k": 1}, False),
        ({"temperature": 0.0}, False),
        ({"top_k": 1, "confidence_noise": 3.0}, False),
        ({"confidence_noise": 3.0, "top_k": 2}, True),
        ({"top_k": 3}, True),
        ({}, True),
    ],
)
def test_draws_at_random_says_whether_samples_differ(knobs, differ):
    def by_order(ids, mask):  # each position prefers code (positions fixed so far + its index) mod K
        best = ((~mask).sum(1, keepdim=True) + torch.arange(L)) % K
        return torch.nn.functional.one_hot(best, K).float() * 5.0  # the order of fixing shows in the codes

    temperature = knobs.pop("temperature", 2.0)
    sampler = SAMPLERS.build(
        name="maskgit", steps=5, temperature_schedule="constant", temperature=temperature, **knobs
    )
    res = sampler(
        by_order,
        batch_size=4,
        num_tokens=L,
        codebook_size=K,
        num_samples=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert sampler.draws_at_random is differ
    assert bool((res.ids != res.ids[:, :1]).any()) is differ


def test_registry_and_configs_are_in_sync():
    names = {OmegaConf.load(p).name for p in CONFIGS.glob("*.yaml")}
    assert set(SAMPLERS.names()) == names  # every entry has a preset, every preset an entry
    classes = [SAMPLERS.get(n) for n in SAMPLERS.names()]
    assert len(set(classes)) == len(classes)  # one name per class: presets, not aliases, differ in settings


def test_refiner_configs_build():
    from mega.refiners import REFINERS, PoseGuidedRefiner, build_refiner

    refiners = CONFIGS.parent / "refiner"
    assert {p.stem for p in refiners.glob("*.yaml")} == {"none", *REFINERS.names()}
    assert build_refiner(OmegaConf.to_container(OmegaConf.load(refiners / "none.yaml"))) is None
    pgr = build_refiner(OmegaConf.to_container(OmegaConf.load(refiners / "pose_guided.yaml")))
    assert isinstance(pgr, PoseGuidedRefiner) and pgr.iterations == 10
