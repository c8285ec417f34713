"""Backbones: the contract for every config at a small size, trainability, pyramid, weight layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import mega  # noqa: F401
from mega.backbones import BACKBONES, BackboneOutput, build_backbone
from mega.backbones.pyramid import SimpleFeaturePyramid

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "backbone"

# Per family: overrides that make a config small enough to run in a test (width/depth/input size).
_VIT_SMALL = dict(input_size=64, crop_width=48, width=32, depth=2, num_heads=2, pyramid_dim=8)
SMALL: dict[str, dict] = {
    "tiny_cnn": dict(input_size=64, widths=[8, 16, 24, 32], depths=[1, 1, 1], pyramid_dim=16),
    "resnet50": dict(input_size=64, layers=[1, 1, 1, 1], channels=[4, 8, 8, 16], stem_width=8, pyramid_dim=8),
    "hrnet_w48": dict(input_size=64, width=4, num_blocks=1, num_modules=[1, 1, 1, 2], pyramid_dim=8),
    "vit_h16": _VIT_SMALL,
    "vit_b16": _VIT_SMALL,
    "vit_s16": _VIT_SMALL,
    "vit_tiny": _VIT_SMALL,
}


def _configs() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


def _small_kwargs(path: Path) -> tuple[str, dict]:
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    name = cfg.pop("name")
    assert name in SMALL, f"{path.name}: add a small-size override for '{name}' to SMALL in this test"
    cfg.update(SMALL[name])
    return name, cfg


def _img(b: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def test_every_registered_backbone_has_a_config():
    names = {OmegaConf.load(p).name for p in _configs()}
    assert set(BACKBONES.names()) <= names, f"no config for {set(BACKBONES.names()) - names}"


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.stem)
def test_contract_every_config(path, one_thread):
    """Every config builds at a small size and honours the contract (shapes, pyramid, attributes)."""
    name, kw = _small_kwargs(path)
    m = build_backbone(name, **kw)
    s = m.input_size
    assert s == kw["input_size"]
    out = m(_img(2, s))
    assert isinstance(out, BackboneOutput)
    h, w = m.token_grid
    assert out.tokens.shape == (2, h * w, m.dim) and m.num_tokens == h * w
    assert out.pooled.shape == (2, m.dim)
    torch.testing.assert_close(out.pooled, out.tokens.mean(1))
    assert len(out.pyramid) == len(m.pyramid_dims) == len(m.pyramid_scales) == len(kw["pyramid_scales"])
    for fmap, d, sc in zip(out.pyramid, m.pyramid_dims, m.pyramid_scales):
        exp_h = int(h * sc) if sc >= 1 else -(-h // round(1 / sc))
        exp_w = int(w * sc) if sc >= 1 else -(-w // round(1 / sc))
        assert fmap.shape == (2, d, exp_h, exp_w), (name, sc, fmap.shape)
    sizes = [f.shape[-2] * f.shape[-1] for f in out.pyramid]
    assert sizes == sorted(sizes, reverse=True), "pyramid must be ordered fine to coarse"
    # every parameter gets a gradient (everything trains by default)
    loss = out.tokens.square().mean() + sum(f.mean() for f in out.pyramid)
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:5]}"
    # wrong input size: one clear error
    with pytest.raises(ValueError, match="input_size"):
        m(_img(1, s + 16))


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.stem)
def test_trainable_blocks_and_freeze(path, one_thread):
    """Grads reach only the last N blocks (+ tail + neck); freeze: only the neck; BN stats stay put."""
    name, kw = _small_kwargs(path)
    m = build_backbone(name, **{**kw, "trainable_blocks": 1})
    allowed = {id(p) for mod in [m.trunk_blocks()[-1], *m.trunk_tail(), m.neck] for p in mod.parameters()}
    out = m(_img(2, m.input_size))
    (out.tokens.square().mean() + sum(f.mean() for f in out.pyramid)).backward()
    for n, p in m.named_parameters():
        if id(p) in allowed:
            assert p.requires_grad and p.grad is not None, n
        else:
            assert not p.requires_grad and p.grad is None, n

    m = build_backbone(name, **{**kw, "freeze": True}).train()
    bn_stats = {k: v.clone() for k, v in m.state_dict().items() if "running_mean" in k}
    out = m(_img(2, m.input_size, seed=1))
    assert not out.tokens.requires_grad
    sum(f.mean() for f in out.pyramid).backward()
    trains = {n for n, p in m.named_parameters() if p.grad is not None}
    assert trains == {n for n, _ in m.named_parameters() if n.startswith("neck.")}
    for k, v in bn_stats.items():
        torch.testing.assert_close(m.state_dict()[k], v, msg=f"frozen BatchNorm {k} changed")

    with pytest.raises(ValueError, match="contradicts"):
        build_backbone(name, **{**kw, "freeze": True, "trainable_blocks": 1})
    with pytest.raises(ValueError, match="outside"):
        build_backbone(name, **{**kw, "trainable_blocks": 10_000})


def test_pyramid_scales_and_errors():
    fp = SimpleFeaturePyramid(8, [1, 8, 0.25, 4], 6)
    assert fp.scales == [8.0, 4.0, 1.0, 0.25]
    outs = fp(torch.randn(1, 8, 5, 3))
    assert [tuple(o.shape[-2:]) for o in outs] == [(40, 24), (20, 12), (5, 3), (2, 1)]
    assert SimpleFeaturePyramid(8, [], 6)(torch.randn(1, 8, 4, 4)) == []
    with pytest.raises(ValueError, match="power of two"):
        SimpleFeaturePyramid(8, [3], 6)
    with pytest.raises(ValueError, match="duplicates"):
        SimpleFeaturePyramid(8, [2, 2.0], 6)


def test_own_state_dict_round_trip(tmp_path):
    """A backbone's own state dict (trunk + neck) saved to a file loads into a fresh one exactly."""
    kw = SMALL["tiny_cnn"]
    a = build_backbone("tiny_cnn", **kw)
    torch.save({"state_dict": a.state_dict()}, tmp_path / "w.pt")
    b = build_backbone("tiny_cnn", **kw, weights=str(tmp_path / "w.pt"))
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v)
    a.eval(), b.eval()
    x = _img(1, kw["input_size"])
    torch.testing.assert_close(a(x).tokens, b(x).tokens)


def test_weights_errors(tmp_path):
    kw = SMALL["tiny_cnn"]
    with pytest.raises(FileNotFoundError, match="backbone weights not found"):
        build_backbone("tiny_cnn", **kw, weights=str(tmp_path / "nope.pt"))
    state = build_backbone("tiny_cnn", **kw).state_dict()
    trunk = {k: v for k, v in state.items() if not k.startswith("neck.")}
    bad = dict(trunk)
    bad.pop("stem.0.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["stages.0.0.1.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as e:
        build_backbone("tiny_cnn", **kw, weights=str(tmp_path / "bad.pt"))
    msg = str(e.value)
    assert "missing (1): stem.0.weight" in msg and "unexpected (1): extra.weight" in msg
    assert "wrong shape (1): stages.0.0.1.weight (3,)" in msg
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        build_backbone("tiny_cnn", **kw, weights=str(tmp_path / "junk.pt"))
