"""VectorQuantizer invariants: nearest codes, EMA, dead-code reset, straight-through, stats, DDP sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mega.tokenizers.quantizer import VectorQuantizer, codebook_stats


def _quantizer(k: int = 16, d: int = 4, **kw) -> VectorQuantizer:
    q = VectorQuantizer(k, d, **kw)
    q.load_codebook(torch.randn(k, d, generator=torch.Generator().manual_seed(1)))
    return q


def test_ids_are_nearest_codes_by_brute_force():
    q = _quantizer(64, 8)
    z = torch.randn(5, 37, 8, generator=torch.Generator().manual_seed(2))
    ids = q.nearest(z)
    assert ids.shape == (5, 37) and ids.dtype == torch.int64
    d = torch.cdist(z.reshape(-1, 8).double(), q.codebook.double())  # (N, K) independent computation
    chosen = d.gather(1, ids.reshape(-1, 1)).squeeze(1)
    torch.testing.assert_close(chosen, d.min(1).values, rtol=0, atol=1e-5)
    assert (ids.reshape(-1) == d.argmin(1)).float().mean() > 0.99  # ties aside, the same ids


def test_nearest_is_float32_under_bf16_autocast():
    q = _quantizer(256, 8)
    z = torch.randn(400, 8, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids_autocast = q.nearest(z)
        out = q(z)
    assert torch.equal(ids_autocast, q.nearest(z))
    assert out.z_q.dtype == torch.float32 and torch.equal(out.ids, ids_autocast)


def test_forward_outputs_codes_and_commitment():
    q = _quantizer().eval()
    z = torch.randn(10, 4)
    out = q(z)
    torch.testing.assert_close(out.z_q, q.codebook[out.ids])
    torch.testing.assert_close(out.commit_loss, ((z - q.codebook[out.ids]) ** 2).mean())


def test_straight_through_gradient_reaches_the_encoder():
    q = _quantizer().train()
    enc = torch.nn.Linear(3, 4)
    x = torch.randn(20, 3)
    z = enc(x)
    z.retain_grad()
    q(z).z_q.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity gradient through the quantiser
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_ema_moves_assigned_code_toward_its_vectors():
    decay = 0.9
    q = VectorQuantizer(4, 2, decay=decay, eps=1e-8, dead_after=0)
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    q.load_codebook(codes.clone())
    target = torch.tensor([1.0, 1.0])
    z = target + 0.01 * torch.randn(32, 2)
    q.train()(z)
    # Code 0 got all 32 vectors: count 0.9 + 0.1 * 32, sum 0.9 * c0 + 0.1 * sum(z).
    expected = (decay * codes[0] + (1 - decay) * z.sum(0)) / (decay + (1 - decay) * 32)
    torch.testing.assert_close(q.codebook[0], expected, rtol=1e-4, atol=1e-4)
    for _ in range(100):
        q(z)
    assert (q.codebook[0] - target).norm() < 0.02  # converged to the mean of its vectors
    torch.testing.assert_close(q.codebook[1:], codes[1:], rtol=1e-3, atol=1e-3)  # unused codes stay


def test_eval_mode_does_not_update_the_codebook():
    q = _quantizer().eval()
    before = q.codebook.clone()
    q(torch.randn(50, 4))
    assert torch.equal(before, q.codebook) and int(q.step) == 0


def test_first_training_batch_initialises_codebook_from_data():
    q = VectorQuantizer(8, 3, dead_after=0).train()
    z = torch.randn(100, 3) + 50.0
    q(z)
    assert bool(q.initialised)
    d = torch.cdist(q.codebook, z)  # every code is (near) an encoder output, not the random init
    assert d.min(1).values.max() < 1.0


def test_dead_codes_are_reset_from_encoder_outputs():
    q = VectorQuantizer(8, 2, dead_after=3, usage_window=2)
    codes = torch.randn(8, 2) * 0.1
    codes[5] = torch.tensor([100.0, 100.0])  # far away: never chosen
    q.load_codebook(codes)
    q.train()
    z = torch.randn(64, 2) * 0.1
    for _ in range(3):
        q(z)
    assert int(q.last_reset[5]) == 0  # idle for 3 steps (0, 1, 2) is not yet dead
    q(z)
    assert int(q.last_reset[5]) == 3  # reset at the fourth step (step index 3)
    assert torch.cdist(q.codebook[5:6], z).min() < 1e-6  # it is now one of the encoder outputs
    assert (q.codebook.norm(dim=1) < 10).all()


def test_codebook_stats_on_a_crafted_assignment():
    usage, ppl = codebook_stats(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 8)
    assert usage.item() == pytest.approx(0.5) and ppl.item() == pytest.approx(4.0)
    usage, ppl = codebook_stats(torch.tensor([[0, 0, 0, 1]]), 4)
    p = torch.tensor([0.75, 0.25])
    assert usage.item() == pytest.approx(0.5)
    assert ppl.item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    assert codebook_stats(torch.zeros(10, dtype=torch.long), 4)[1].item() == pytest.approx(1.0)


def test_windowed_usage_counts_recent_codes_only():
    q = VectorQuantizer(4, 1, decay=0.5, dead_after=0, usage_window=2)
    q.load_codebook(torch.tensor([[0.0], [10.0], [20.0], [30.0]]))
    q.train()
    q(torch.tensor([[0.0], [10.0]]))  # step 0: codes 0, 1
    assert q.usage().item() == pytest.approx(0.5)
    q(torch.tensor([[20.0]]))  # step 1: code 2
    assert q.usage().item() == pytest.approx(0.75)
    out = q(torch.tensor([[20.0]]))  # step 2: code 2 -> codes 0, 1 fall out of the window
    assert out.usage.item() == pytest.approx(0.25)
    assert out.batch_usage.item() == pytest.approx(0.25) and out.perplexity.item() == pytest.approx(1.0)


def test_bad_inputs_raise_clear_errors():
    q = _quantizer()
    with pytest.raises(ValueError, match="vectors"):
        q(torch.randn(3, 5))
    with pytest.raises(ValueError, match="token ids"):
        q.lookup(torch.tensor([16]))
    with pytest.raises(ValueError, match="codebook size"):
        q.soft_lookup(torch.rand(2, 15))


# ---------------------------------------------------------------------- DDP: two gloo processes
def _ddp_worker(rank: int, world: int, init_file: str, data: torch.Tensor, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(rank)  # different default RNG per rank must not matter
    q = VectorQuantizer(16, 3, decay=0.9, dead_after=2, seed=7).train()
    ema_only = VectorQuantizer(16, 3, decay=0.9, dead_after=0).train()
    ema_only.load_codebook(torch.linspace(-2, 5, 48).reshape(16, 3))
    for step in range(5):
        q(data[rank, step])
        ema_only(data[rank, step])
    results[rank] = {k: v.clone() for k, v in q.state_dict().items()}
    results[f"ema{rank}"] = ema_only.codebook.clone()
    dist.destroy_process_group()


def test_ddp_ranks_keep_identical_codebooks(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 5, 40, 3, generator=g)
    data[1] += 3.0  # ranks see different data: without syncing their codebooks would differ
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), data, results), nprocs=2, join=True)
    a, b = results[0], results[1]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(a["last_reset"].max()) > 0  # resets happened and were broadcast
    # Without resets, two ranks = one process on the concatenated batches.
    single = VectorQuantizer(16, 3, decay=0.9, dead_after=0).train()
    single.load_codebook(torch.linspace(-2, 5, 48).reshape(16, 3))
    for step in range(5):
        single(torch.cat([data[0, step], data[1, step]]))
    torch.testing.assert_close(results["ema0"], single.codebook)
    torch.testing.assert_close(results["ema1"], single.codebook)
