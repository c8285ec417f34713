"""The masked token transformer: shapes, encoder skip, padding, context hook, configs, a training step."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from mega.transformer import MaskedTokenTransformer, masked_cross_entropy, sample_training_mask

L, K = 12, 16
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "transformer"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _model(seed: int = 0, **kwargs) -> MaskedTokenTransformer:
    torch.manual_seed(seed)
    kw = dict(dim=32, encoder_depth=2, decoder_depth=2, num_heads=2, mlp_ratio=2.0)
    kw.update(kwargs)
    return MaskedTokenTransformer(L, K, **kw).eval()


def _ids(B: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (B, L), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_from_tokenizer():
    model = MaskedTokenTransformer.from_tokenizer(
        SimpleNamespace(num_tokens=L, codebook_size=K), dim=32, encoder_depth=1, decoder_depth=1, num_heads=2
    )
    assert (model.num_tokens, model.codebook_size, model.mask_id) == (L, K, K)
    mask = sample_training_mask(5, L, generator=torch.Generator().manual_seed(0))
    logits = model(_ids(5), mask)
    assert logits.shape == (5, L, K) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())


def test_all_masked_skips_the_encoder_only_without_grad():
    model = _model()
    calls = []
    model.encoder_blocks[0].register_forward_hook(lambda *args: calls.append(1))
    mask = torch.ones(3, L, dtype=torch.bool)
    ids = torch.full((3, L), model.mask_id)  # masked positions may hold the mask id
    with torch.no_grad():
        skipped = model(ids, mask)
    assert calls == []
    # With gradients the encoder runs (one discarded padding slot), so every parameter gets a gradient:
    # DDP's reduction waits for all of them ("Expected to have finished reduction" otherwise).
    trained = model(ids, mask)
    assert calls == [1]
    torch.testing.assert_close(trained, skipped, atol=1e-5, rtol=1e-5)
    trained.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(float(p.grad.abs().max()) == 0.0 for p in model.encoder_blocks.parameters())
    assert float(model.mask_embed.grad.abs().max()) > 0.0


def test_deterministic_path_equals_the_general_path():
    """A fully masked row in a mixed batch (general encoder path) equals the encoder-skip output."""
    model = _model()
    ids = _ids(4)
    mask = sample_training_mask(4, L, generator=torch.Generator().manual_seed(1))
    mask[0] = True
    mask[1, 0] = False  # at least one visible token in the batch
    general = model(ids, mask)[0]
    with torch.no_grad():
        skipped = model(ids[:1], torch.ones(1, L, dtype=torch.bool))[0]
    torch.testing.assert_close(general, skipped, atol=1e-5, rtol=1e-5)


def test_padding_does_not_leak_between_samples():
    """Each row's logits do not depend on the other rows' visible counts (key padding mask)."""
    model = _model()
    ids = _ids(6, seed=2)
    counts = torch.tensor([1, 3, 5, 7, 11, 12])
    mask = torch.zeros(6, L, dtype=torch.bool)
    for b, c in enumerate(counts):
        mask[b, torch.randperm(L, generator=torch.Generator().manual_seed(b))[:c]] = True
    batched = model(ids, mask)
    for b in range(6):
        alone = model(ids[b : b + 1], mask[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_packed_encoder_equals_rows_alone_with_gradients():
    """Rows with different visible counts (the per-token layers run on real tokens only): logits and
    parameter gradients equal those of each row run alone, where there is no padding at all."""
    model = _model(dropout=0.0).train()
    ids = _ids(5, seed=3)
    counts = [12, 2, 7, 11, 4]  # masked per row; row 0 has no visible token
    mask = torch.zeros(5, L, dtype=torch.bool)
    for b, c in enumerate(counts):
        mask[b, torch.randperm(L, generator=torch.Generator().manual_seed(10 + b))[:c]] = True
    calls = []
    model.encoder_blocks[0].mlp.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    batched = model(ids, mask)
    assert calls[0] == (sum(L - c for c in counts), 32)  # the MLP saw the 31 real tokens, no padding
    params = [
        model.encoder_blocks[0].attn.qkv.weight,
        model.encoder_blocks[1].mlp[0].weight,
        model.token_embed.weight,
    ]
    grads = torch.autograd.grad(batched.square().sum(), params)
    alone = torch.cat([model(ids[b : b + 1], mask[b : b + 1]) for b in range(5)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, torch.autograd.grad(alone.square().sum(), params)):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_masked_ids_are_ignored_and_visible_ids_matter():
    model = _model()
    ids = _ids(2, seed=3)
    mask = torch.zeros(2, L, dtype=torch.bool)
    mask[:, ::2] = True
    other = ids.clone()
    other[mask] = (other[mask] + 5) % K
    torch.testing.assert_close(model(ids, mask), model(other, mask))
    visible_changed = ids.clone()
    visible_changed[:, 1] = (visible_changed[:, 1] + 1) % K
    assert not torch.allclose(model(ids, mask), model(visible_changed, mask))


def test_context_hook_changes_predictions():
    model = _model(context_dim=8)
    ids, mask = _ids(2), torch.ones(2, L, dtype=torch.bool)
    ctx = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    a, b = model(ids, mask, context=ctx), model(ids, mask, context=ctx * 2)
    assert a.shape == (2, L, K) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="context_dim"):
        _model()(ids, mask, context=ctx)


def _full_sequence_blocks(monkeypatch):
    """Blocks that ignore ``queries`` (and ``projected``: x holds the whole sequence) and select from a
    full-sequence pass: the slow reference."""
    from mega.transformer.masked_transformer import Block, select_queries

    full = Block.forward

    def reference(self, x, attn_mask=None, queries=None, projected=None):
        out = full(self, x, attn_mask)
        return out if queries is None else select_queries(out, queries)

    monkeypatch.setattr(Block, "forward", reference)


@pytest.mark.parametrize("train", [False, True])
def test_last_block_skipping_the_prefix_equals_the_full_pass(monkeypatch, train):
    """The last decoder block computes only the L body positions; logits and gradients as a full pass."""
    model = _model(context_dim=8).train(train)
    ids = _ids(3)
    mask = sample_training_mask(3, L, generator=torch.Generator().manual_seed(2))
    ctx = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(3))
    calls = []
    model.decoder_blocks[-1].mlp.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    fast = model(ids, mask, context=ctx)
    grad_fast = torch.autograd.grad(fast.square().sum(), [model.context_proj.weight, model.decoder_pos])
    assert calls == [L]  # the last MLP saw the body positions only (not the 5 prefix tokens)
    _full_sequence_blocks(monkeypatch)
    slow = model(ids, mask, context=ctx)
    grad_slow = torch.autograd.grad(slow.square().sum(), [model.context_proj.weight, model.decoder_pos])
    assert calls[-1] == L + 5
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(grad_fast, grad_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("context_dim", [None, 8])
def test_masked_only_logits_equal_the_full_pass_where_masked(monkeypatch, context_dim):
    """What samplers ask for (``masked_only``): the last block and the head run on the masked positions
    only, padded per row to the largest count; their logits equal a full pass's, visible ones are 0."""
    model = _model(context_dim=context_dim).eval()
    ids = _ids(4)
    mask = torch.zeros(4, L, dtype=torch.bool)
    mask[0, [1, 4, 7]] = True  # 3 masked
    mask[1, :] = True  # all masked
    mask[2, [0]] = True  # 1 masked
    mask[3, 5:] = True  # L - 5 masked
    mask[1] = False
    mask[1, 2:] = True
    ctx = None if context_dim is None else torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(3))
    seen = []
    model.decoder_blocks[-1].mlp.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        fast = model(ids, mask, context=ctx, masked_only=True)
        assert seen == [int(mask.sum(1).max())] < [L]  # the last MLP ran on the largest masked count
        full = model(ids, mask, context=ctx)
        _full_sequence_blocks(monkeypatch)
        slow = model(ids, mask, context=ctx)
    torch.testing.assert_close(full, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[mask], slow[mask], atol=1e-5, rtol=1e-5)
    assert not fast[~mask].any()
    # the samplers' logits_fn asks for masked positions only
    with torch.no_grad():
        torch.testing.assert_close(model.logits_fn(ctx)(ids, mask), fast.float(), atol=0, rtol=0)
        all_masked = torch.ones_like(mask)  # nothing to drop: the full pass itself
        torch.testing.assert_close(
            model(ids, all_masked, context=ctx, masked_only=True), model(ids, all_masked, context=ctx)
        )


def test_logits_fn_projects_the_prefix_once_and_equals_the_plain_pass():
    """A sampler's logits_fn computes the (unchanging) prefix's first-block projections on its first
    call and reuses them at every later step; each step's logits equal a pass without the cache."""
    model = _model(context_dim=8).eval()
    ctx = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(3))
    rows = []
    model.decoder_blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[1]))
    fn = model.logits_fn(ctx)
    g = torch.Generator().manual_seed(4)
    ids = _ids(3)
    with torch.no_grad():
        for ratio in (1.0, 0.7, 0.3):
            mask = torch.rand(3, L, generator=g) < ratio
            mask[:, 0] = True
            got = fn(ids, mask)
            ref = model(ids, mask, context=ctx, masked_only=True)
            torch.testing.assert_close(got, ref.float(), atol=1e-5, rtol=1e-5)
            assert got.abs().max() > 0
    # logits_fn: the prefix (5 rows) once, then the L body positions per call; the plain pass: L + 5 each
    assert rows == [5, L, L + 5, L, L + 5, L, L + 5]


def test_bad_inputs_get_clear_errors():
    model = _model()
    ids, mask = _ids(2), torch.zeros(2, L, dtype=torch.bool)
    with pytest.raises(ValueError, match="visible token ids"):
        model(ids.masked_fill(~mask, K), mask)
    with pytest.raises(ValueError, match="shape"):
        model(ids[:, :-1], mask[:, :-1])
    with pytest.raises(TypeError, match="bool"):
        model(ids, mask.long())


def test_bf16_autocast_forward_and_backward():
    model = _model().train()
    ids = _ids(4)
    mask = sample_training_mask(4, L, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, mask)
        loss = masked_cross_entropy(logits, ids, mask)
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    torch.testing.assert_close(logits.float(), model(ids, mask).detach(), atol=0.1, rtol=0.1)


def test_training_steps_lower_the_loss():
    """Each row repeats one code, so any visible token tells the masked ones.

    Fully masked rows (drawn ~26 % of the time at L = 12 with ceil counts) cannot be predicted, so the
    tracked loss is that of the rows with a visible token.
    """
    model = _model().train()
    ids = torch.arange(16).unsqueeze(1).expand(16, L).clone()  # (16, L)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        mask = sample_training_mask(16, L, generator=g)
        logits = model(ids, mask)
        loss = masked_cross_entropy(logits, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen = ~mask.all(1)  # rows with a visible token
        losses.append(float(masked_cross_entropy(logits[seen], ids[seen], mask[seen]).detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_mirrors_the_constructor(path):
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    params = list(inspect.signature(MaskedTokenTransformer.__init__).parameters)[3:]  # after L, K
    assert list(cfg) == params
    with torch.device("meta"):  # no memory for the paper size
        model = MaskedTokenTransformer(54, 512, **cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
