"""Conditioning: deformable attention against a slow loop, layer placement, each module inside the decoder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mega.conditioning import CONDITIONING, build_conditioning
from mega.conditioning.base import spread_layers
from mega.conditioning.deformable import (
    MultiScaleDeformableAttention,
    deformable_attention,
    deformable_attention_reference,
)
from mega.transformer import MaskedTokenTransformer, sample_training_mask

pytestmark = pytest.mark.usefixtures("one_thread")

L, K, D = 6, 10, 16
SIZES = dict(
    decoder_dim=D, decoder_depth=2, image_dim=12, num_image_tokens=9, pyramid_dims=[8, 8], num_body_tokens=L
)


def _features(batch: int, seed: int = 0, scale: float = 1.0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, 9, 12, generator=g) * scale
    pyramid = [
        torch.randn(batch, 8, 6, 6, generator=g) * scale,
        torch.randn(batch, 8, 3, 3, generator=g) * scale,
    ]
    return SimpleNamespace(tokens=tokens, pooled=tokens.mean(1), pyramid=pyramid)


def _transformer() -> MaskedTokenTransformer:
    torch.manual_seed(0)
    return MaskedTokenTransformer(L, K, dim=D, encoder_depth=1, decoder_depth=2, num_heads=2, mlp_ratio=2.0)


def test_deformable_attention_matches_the_loop_reference():
    g = torch.Generator().manual_seed(0)
    B, Lq, H, NL, P, dh = 2, 3, 2, 2, 3, 4
    values = [torch.randn(B, H * dh, 5, 7, generator=g), torch.randn(B, H * dh, 3, 2, generator=g)]
    reference = torch.rand(B, Lq, 2, generator=g)
    offsets = torch.randn(B, Lq, H, NL, P, 2, generator=g) * 3  # many samples fall outside the maps
    weights = torch.rand(B, Lq, H, NL, P, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    fast = deformable_attention(values, reference, offsets, weights)
    slow = deformable_attention_reference(values, reference, offsets, weights)
    assert fast.shape == (B, Lq, H * dh)
    torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=1e-5)


def test_deformable_attention_reads_one_cell_exactly():
    """A sample on a cell centre with weight 1 returns that cell's value (x along width, y along height)."""
    value = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)  # H=1 head, Dh=2, 3 x 4 map
    reference = torch.tensor([[[(2 + 0.5) / 4, (1 + 0.5) / 3]]])  # cell (row 1, column 2)
    offsets = torch.zeros(1, 1, 1, 1, 1, 2)
    out = deformable_attention([value], reference, offsets, torch.ones(1, 1, 1, 1, 1))
    torch.testing.assert_close(out[0, 0], value[0, :, 1, 2])


def test_initial_offsets_form_a_ring_and_attention_is_uniform():
    attn = MultiScaleDeformableAttention(dim=16, num_levels=2, num_heads=4, num_points=2)
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    torch.testing.assert_close(bias[0, 0, 1], torch.tensor([2.0, 0.0]))  # head 0: +x, point k at k + 1 cells
    torch.testing.assert_close(bias[1, 1, 0], torch.tensor([0.0, 1.0]))  # head 1: +y (90 degrees)
    assert float(attn.attention_weights.weight.detach().abs().max()) == 0.0


def test_spread_layers_places_every_layer_once():
    for n in range(0, 7):
        for depth in range(1, 5):
            slots = spread_layers(n, depth)
            assert len(slots) == depth and sorted(j for s in slots for j in s) == list(range(n))
            if n:
                assert slots[-1] and slots[-1][-1] == n - 1  # the last layer follows the last block
    assert spread_layers(4, 4) == [[0], [1], [2], [3]]


@pytest.mark.parametrize("name", CONDITIONING.names())
def test_each_conditioning_sees_the_image_and_every_parameter_trains(name):
    tr = _transformer()
    cond = build_conditioning(
        name, **SIZES, num_heads=2, **({"num_points": 2} if name == "deformable" else {})
    )
    ids = torch.randint(0, K, (3, L), generator=torch.Generator().manual_seed(1))
    mask = sample_training_mask(3, L, generator=torch.Generator().manual_seed(2))
    mask[0] = True
    a = tr(ids, mask, cond.prepare(_features(3)), conditioning=cond)
    b = tr(ids, mask, cond.prepare(_features(3, scale=3.0)), conditioning=cond)
    assert a.shape == (3, L, K) and not torch.allclose(a, b)
    (a.square().mean()).backward()
    params = [*tr.named_parameters(), *cond.named_parameters()]
    assert [n for n, p in params if p.grad is None] == []
    # A fully masked batch under no_grad (deterministic mode) gives the same logits as with gradients.
    full = torch.ones(3, L, dtype=torch.bool)
    with torch.no_grad():
        fast = tr(ids, full, cond.prepare(_features(3)), conditioning=cond)
    torch.testing.assert_close(
        fast, tr(ids, full, cond.prepare(_features(3)), conditioning=cond), atol=1e-5, rtol=1e-5
    )


def test_prefix_module_equals_the_transformers_built_in_prefix():
    """Moving the prefix projection out of the transformer changes nothing (zero position embedding)."""
    tr = MaskedTokenTransformer(L, K, dim=D, encoder_depth=1, decoder_depth=2, num_heads=2, context_dim=12)
    cond = build_conditioning("prefix", **SIZES)
    with torch.no_grad():
        cond.proj.load_state_dict(tr.context_proj.state_dict())
        cond.pos.zero_()
    feats = _features(2)
    ids, mask = torch.zeros(2, L, dtype=torch.long), torch.ones(2, L, dtype=torch.bool)
    legacy = tr(ids, mask, torch.cat([feats.pooled[:, None], feats.tokens], 1))
    torch.testing.assert_close(tr(ids, mask, cond.prepare(feats), conditioning=cond), legacy)


def test_repeat_context_follows_the_sampler_row_layout():
    cond = build_conditioning("deformable", **SIZES, num_heads=2)
    ctx = cond.prepare(_features(2))
    rep = cond.repeat_context(ctx, 3)
    assert rep["maps"][0].shape[0] == 6 and torch.equal(rep["maps"][1][4], ctx["maps"][1][1])


def test_bad_sizes_get_clear_errors():
    with pytest.raises(ValueError, match="pyramid_scales"):
        build_conditioning("deformable", **{**SIZES, "pyramid_dims": []})
    cond = build_conditioning("prefix", **SIZES)
    feats = _features(1)
    feats.tokens = feats.tokens[:, :4]
    with pytest.raises(ValueError, match="image tokens"):
        cond.prepare(feats)
    with pytest.raises(KeyError, match="prefix"):
        build_conditioning("nope", **SIZES)
