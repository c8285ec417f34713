"""``Backbone.compile_for_inference`` (torch.compile with frozen weights): the same outputs as the eager
backbone at every batch size, inference only, a clear error and eager fallback when compiling fails,
and ``load_hmr(compile=...)``'s guard."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mega.backbones import build_backbone
from mega.hmr_checkpoint import load_hmr

TINY = dict(input_size=64, widths=[8, 16, 24, 32], depths=[1, 1, 1], pyramid_dim=16)


def _tiny_cnn_with_statistics() -> nn.Module:
    """A small tiny_cnn in eval mode whose BatchNorms are far from the identity (folding must matter)."""
    torch.manual_seed(0)
    m = build_backbone("tiny_cnn", **TINY).eval()
    g = torch.Generator().manual_seed(1)
    for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    return m


def test_compiled_backbone_equals_eager_at_each_batch_size(one_thread):
    m = _tiny_cnn_with_statistics()
    imgs = [torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(b)) for b in (1, 3)]
    with torch.no_grad():
        eager = [m(x) for x in imgs]  # unfused, eager: the reference
    assert m.compile_for_inference() is True
    assert m._compiled_call_impl is not None  # nn.Module.__call__ now goes through the compiled graph
    assert not any(
        isinstance(mod, nn.BatchNorm2d) for n, mod in m.named_modules() if not n.startswith("neck.")
    )
    with torch.no_grad():
        for x, ref in zip(imgs, eager):  # batch 3 recompiles (static shapes)
            out = m(x)
            scale = float(ref.tokens.abs().max())
            torch.testing.assert_close(out.tokens, ref.tokens, atol=1e-5 * scale, rtol=1e-4)
            torch.testing.assert_close(out.pooled, ref.pooled, atol=1e-5 * scale, rtol=1e-4)
            for a, b in zip(out.pyramid, ref.pyramid):
                torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-4)
    assert not any(k.startswith("_orig_mod") for k in m.state_dict())
    with pytest.raises(RuntimeError, match="fused for inference"):
        m.train()


def test_backbones_that_are_not_compilable_stay_eager(one_thread):
    torch.manual_seed(0)
    m = build_backbone("vit_tiny").eval()
    x = torch.randn(1, 3, m.input_size, m.input_size)
    with torch.no_grad():
        ref = m(x).tokens
        assert m.compile_for_inference() is False
        assert m._compiled_call_impl is None
        torch.testing.assert_close(m(x).tokens, ref, rtol=0, atol=0)


def test_a_failed_compile_names_the_way_out_and_leaves_the_backbone_eager(monkeypatch, one_thread):
    m = _tiny_cnn_with_statistics()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))

    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise OSError("no C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(RuntimeError, match="run without compile=true") as err:
        m.compile_for_inference()
    assert "no C++ compiler found" in str(err.value) and "tiny_cnn" in str(err.value)
    assert m._compiled_call_impl is None
    with torch.no_grad():
        out = m(x).tokens  # still runs, eagerly
    assert out.shape == (2, m.num_tokens, m.dim) and torch.isfinite(out).all()


def test_load_hmr_compile_decodes_the_same_bodies(tmp_path, free_body, one_thread):
    """eval.py / demo.py ``compile=true``: the compiled model's deterministic bodies equal the eager
    model's; compiling a model meant to train is refused."""
    from fixtures_models import save_tiny_hmr

    from mega.inference import recover

    ckpt = save_tiny_hmr(tmp_path, free_body)
    eager = load_hmr(ckpt)
    compiled = load_hmr(ckpt, compile=True)
    assert compiled.backbone._compiled_call_impl is not None and eager.backbone._compiled_call_impl is None
    s = eager.backbone.input_size
    img = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(3))
    a, b = recover(eager, img), recover(compiled, img)
    assert torch.equal(a.ids, b.ids)
    torch.testing.assert_close(b.vertices, a.vertices, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b.global_rot, a.global_rot, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="compile=True needs inference=True"):
        load_hmr(ckpt, compile=True, inference=False)
