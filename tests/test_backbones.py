"""Backbones: the contract for every config at a small size, trainability, pyramid, weight layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import mega  # noqa: F401
from mega.backbones import BACKBONES, BackboneOutput, build_backbone
from mega.backbones.pyramid import SimpleFeaturePyramid

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "backbone"

# Per family: overrides that make a config small enough to run in a test (width/depth/input size).
_VIT_SMALL = dict(input_size=64, crop_width=48, width=32, depth=2, num_heads=2, pyramid_dim=8)
SMALL: dict[str, dict] = {
    "tiny_cnn": dict(input_size=64, widths=[8, 16, 24, 32], depths=[1, 1, 1], pyramid_dim=16),
    "resnet50": dict(input_size=64, layers=[1, 1, 1, 1], channels=[4, 8, 8, 16], pyramid_dim=8),
    "hrnet_w48": dict(input_size=64, width=4, num_blocks=1, num_modules=[1, 1, 1, 2], pyramid_dim=8),
    "vit_h16": _VIT_SMALL,
    "vit_b16": _VIT_SMALL,
    "vit_s16": _VIT_SMALL,
    "vit_tiny": _VIT_SMALL,
    # the real network (its size is the file's); unfrozen and without landmark tokens so that the
    # generic contract (N = h * w, every parameter trains) applies
    "blazepose": dict(
        freeze=False,
        landmark_tokens=False,
        pyramid_scales=[2, 1],
        pyramid_dim=8,
        source=str(Path(__file__).resolve().parents[1] / "data/weights/pose_landmark_full.tflite"),
    ),
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


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet50", "hrnet_w48"])
def test_fuse_for_inference_folds_every_batch_norm_and_keeps_the_outputs(name, one_thread):
    """BatchNorm folded into the convolutions (non-trivial running statistics): every BN of the trunk
    goes, outputs equal the unfused model's; the fused backbone refuses to train."""
    torch.manual_seed(0)
    m = build_backbone(name, **SMALL[name]).eval()
    g = torch.Generator().manual_seed(1)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    for bn in bns:  # statistics and affine parameters far from the identity
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    img = _img(2, SMALL[name]["input_size"])
    with torch.no_grad():
        before = m(img)
        trunk_bns = [
            n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d) and not n.startswith("neck.")
        ]
        assert m.fuse_for_inference() == len(trunk_bns) > 0
        after = m(img)
    assert not any(
        isinstance(mod, nn.BatchNorm2d) for n, mod in m.named_modules() if not n.startswith("neck.")
    )
    scale = float(before.tokens.abs().max())
    torch.testing.assert_close(after.tokens, before.tokens, atol=1e-5 * scale, rtol=1e-4)
    with pytest.raises(RuntimeError, match="fused for inference"):
        m.train()


def test_channels_last_backbones_keep_nchw_results(one_thread):
    """HRNet and ResNet run channels-last inside; tokens equal a contiguous (NCHW) run of the same weights."""
    for name in ("resnet50", "hrnet_w48"):
        torch.manual_seed(0)
        m = build_backbone(name, **SMALL[name]).eval()
        conv = next(mod for mod in m.modules() if isinstance(mod, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        img = _img(2, SMALL[name]["input_size"])
        with torch.no_grad():
            fast = m(img).tokens
            m.to(memory_format=torch.contiguous_format)
            reference = m.from_frozen({"fmap": m.forward_features(img)}).tokens
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-4)


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


# ---- public checkpoint layouts: random state dicts written with the public key names --------------


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _bn(sd: dict, g: torch.Generator, prefix: str, c: int, counter: bool = True) -> None:
    sd[prefix + "weight"], sd[prefix + "bias"] = _rand(g, c), _rand(g, c)
    sd[prefix + "running_mean"], sd[prefix + "running_var"] = _rand(g, c), _rand(g, c).abs() + 0.5
    if counter:
        sd[prefix + "num_batches_tracked"] = torch.tensor(7)


def _hmr2_vit_state(g: torch.Generator, width: int, depth: int, grid: tuple[int, int]) -> dict:
    """HMR2's checkpoint keys (4D-Humans hmr2/models/backbones/vit.py under ``backbone.``) + its heads."""
    c, sd = width, {}
    sd["backbone.patch_embed.proj.weight"] = _rand(g, c, 3, 16, 16) * 0.05
    sd["backbone.patch_embed.proj.bias"] = _rand(g, c) * 0.1
    sd["backbone.pos_embed"] = _rand(g, 1, 1 + grid[0] * grid[1], c) * 0.1
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[p + n + ".weight"], sd[p + n + ".bias"] = 1 + 0.1 * _rand(g, c), 0.1 * _rand(g, c)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = _rand(g, 3 * c, c) * 0.2, _rand(g, 3 * c) * 0.1
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = _rand(g, c, c) * 0.2, _rand(g, c) * 0.1
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = _rand(g, 4 * c, c) * 0.2, _rand(g, 4 * c) * 0.1
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = _rand(g, c, 4 * c) * 0.1, _rand(g, c) * 0.1
    sd["backbone.last_norm.weight"], sd["backbone.last_norm.bias"] = 1 + 0.1 * _rand(g, c), 0.1 * _rand(g, c)
    sd["smpl_head.decpose.weight"], sd["smpl_head.decpose.bias"] = _rand(g, 144, 1024), _rand(g, 144)
    sd["discriminator.D_conv1.weight"] = _rand(g, 32, 9, 1, 1)
    return sd


def _reference_vit(sd: dict, img: torch.Tensor, crop_width: int, depth: int, heads: int) -> torch.Tensor:
    """A slow, independent ViTPose forward from the raw HMR2 state dict: (B, 3, S, S) -> (B, N, C)."""
    F = torch.nn.functional
    left = (img.shape[-1] - crop_width) // 2
    x = F.conv2d(
        img[..., left : left + crop_width],
        sd["backbone.patch_embed.proj.weight"],
        sd["backbone.patch_embed.proj.bias"],
        stride=16,
        padding=2,
    )
    b, c = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)
    x = x + sd["backbone.pos_embed"][:, 1:] + sd["backbone.pos_embed"][:, :1]
    n, d = x.shape[1], c // heads
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        y = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        qkv = (y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, c)
        x = x + y @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return F.layer_norm(x, (c,), sd["backbone.last_norm.weight"], sd["backbone.last_norm.bias"], 1e-6)


def test_vit_loads_hmr2_layout_and_matches_a_reference_forward(tmp_path, one_thread):
    """HMR2 geometry (256 crop, middle 192 columns, pos_embed with 1 + 16 * 12 slots) at width 32."""
    g = torch.Generator().manual_seed(0)
    kw = dict(input_size=256, crop_width=192, width=32, depth=2, num_heads=2, pyramid_dim=8)
    sd = _hmr2_vit_state(g, 32, 2, (16, 12))
    assert sd["backbone.pos_embed"].shape == (1, 193, 32)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "hmr2.ckpt")
    m = build_backbone("vit_h16", **kw, weights=str(tmp_path / "hmr2.ckpt")).eval()
    own = m.state_dict()
    for k, v in sd.items():
        if k.startswith("backbone."):
            torch.testing.assert_close(own[k[len("backbone.") :]], v, rtol=0, atol=0)
    img = _img(2, 256)
    with torch.no_grad():
        out = m(img)
        ref = _reference_vit(sd, img, 192, depth=2, heads=2)
    assert m.token_grid == (16, 12) and out.tokens.shape == (2, 192, 32)
    torch.testing.assert_close(out.tokens, ref, rtol=1e-4, atol=1e-4)

    # a stray backbone key is named in the error; so is a missing one
    bad = dict(sd)
    bad["backbone.cls_token"] = torch.zeros(1, 1, 32)
    del bad["backbone.blocks.1.mlp.fc2.bias"]
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(
        ValueError, match=r"missing \(1\): blocks.1.mlp.fc2.bias.*unexpected \(1\): cls_token"
    ):
        build_backbone("vit_h16", **kw, weights=str(tmp_path / "bad.pt"))


def _official_pose_hrnet_state(g: torch.Generator, w: int, nb: int, modules: list[int]) -> dict:
    """Keys and shapes of HRNet-Human-Pose-Estimation's PoseHighResolutionNet (pose_hrnet_w48_*.pth)."""
    sd: dict = {}
    sd["conv1.weight"] = _rand(g, 64, 3, 3, 3)
    _bn(sd, g, "bn1.", 64)
    sd["conv2.weight"] = _rand(g, 64, 64, 3, 3)
    _bn(sd, g, "bn2.", 64)
    for b in range(nb):  # layer1: bottlenecks, 64 planes, expansion 4
        p, cin = f"layer1.{b}.", 64 if b == 0 else 256
        sd[p + "conv1.weight"] = _rand(g, 64, cin, 1, 1)
        _bn(sd, g, p + "bn1.", 64)
        sd[p + "conv2.weight"] = _rand(g, 64, 64, 3, 3)
        _bn(sd, g, p + "bn2.", 64)
        sd[p + "conv3.weight"] = _rand(g, 256, 64, 1, 1)
        _bn(sd, g, p + "bn3.", 256)
        if b == 0:
            sd[p + "downsample.0.weight"] = _rand(g, 256, 64, 1, 1)
            _bn(sd, g, p + "downsample.1.", 256)
    ch = [w, 2 * w, 4 * w, 8 * w]
    sd["transition1.0.0.weight"] = _rand(g, w, 256, 3, 3)
    _bn(sd, g, "transition1.0.1.", w)
    sd["transition1.1.0.0.weight"] = _rand(g, 2 * w, 256, 3, 3)
    _bn(sd, g, "transition1.1.0.1.", 2 * w)
    for s, nbr in ((2, 2), (3, 3), (4, 4)):
        if s > 2:  # transition into the new, lowest-resolution branch only
            p = f"transition{s - 1}.{nbr - 1}.0."
            sd[p + "0.weight"] = _rand(g, ch[nbr - 1], ch[nbr - 2], 3, 3)
            _bn(sd, g, p + "1.", ch[nbr - 1])
        n_mod = modules[s - 1]
        for m in range(n_mod):
            p = f"stage{s}.{m}."
            for br in range(nbr):
                for b in range(nb):
                    q = f"{p}branches.{br}.{b}."
                    sd[q + "conv1.weight"] = _rand(g, ch[br], ch[br], 3, 3)
                    _bn(sd, g, q + "bn1.", ch[br])
                    sd[q + "conv2.weight"] = _rand(g, ch[br], ch[br], 3, 3)
                    _bn(sd, g, q + "bn2.", ch[br])
            last_of_stage4 = s == 4 and m == n_mod - 1  # official: multi_scale_output=False there
            for i in range(1 if last_of_stage4 else nbr):
                for j in range(nbr):
                    q = f"{p}fuse_layers.{i}.{j}."
                    if j > i:
                        sd[q + "0.weight"] = _rand(g, ch[i], ch[j], 1, 1)
                        _bn(sd, g, q + "1.", ch[i])
                    for k in range(i - j):
                        cout = ch[i] if k == i - j - 1 else ch[j]
                        sd[f"{q}{k}.0.weight"] = _rand(g, cout, ch[j], 3, 3)
                        _bn(sd, g, f"{q}{k}.1.", cout)
    sd["final_layer.weight"], sd["final_layer.bias"] = _rand(g, 17, w, 1, 1), _rand(g, 17)
    return sd


def test_hrnet_loads_official_pose_hrnet_layout(tmp_path, one_thread):
    kw = SMALL["hrnet_w48"]
    g = torch.Generator().manual_seed(1)
    sd = _official_pose_hrnet_state(g, kw["width"], kw["num_blocks"], kw["num_modules"])
    torch.save(sd, tmp_path / "pose_hrnet.pth")
    torch.manual_seed(0)
    fresh = build_backbone("hrnet_w48", **kw).state_dict()
    torch.manual_seed(0)
    m = build_backbone("hrnet_w48", **kw, weights=str(tmp_path / "pose_hrnet.pth"))
    own = m.state_dict()
    for k, v in sd.items():
        if not k.startswith("final_layer."):
            torch.testing.assert_close(own[k], v.to(own[k].dtype), rtol=0, atol=0, msg=k)
    kept = sorted(k for k in own if k not in sd and not k.startswith("neck."))
    last = f"stage4.{kw['num_modules'][3] - 1}.fuse_layers."
    assert kept and all(
        k.startswith("downsample_stage_") or k.startswith((last + "1", last + "2", last + "3")) for k in kept
    )
    for k in kept:
        torch.testing.assert_close(own[k], fresh[k], rtol=0, atol=0)
    assert m(_img(1, kw["input_size"])).tokens.shape == (1, 4, 15 * kw["width"])

    # a MEGA-style file that has only part of the new layers is an error, not a silent half-load
    full = {f"backbone.{k}": v for k, v in own.items() if not k.startswith("neck.")}
    del full["backbone.downsample_stage_2.0.weight"]
    torch.save(full, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \(1\): downsample_stage_2.0.weight"):
        build_backbone("hrnet_w48", **kw, weights=str(tmp_path / "partial.pth"))


def _torchvision_resnet_state(g, stem: int, channels: list[int], layers: list[int], counters: bool) -> dict:
    """Keys and shapes of torchvision's resnet50-*.pth (bottlenecks, stride on the 3x3, fc head)."""
    sd: dict = {"conv1.weight": _rand(g, stem, 3, 7, 7)}
    _bn(sd, g, "bn1.", stem, counters)
    cin = stem
    for s, (p_, n) in enumerate(zip(channels, layers), start=1):
        for b in range(n):
            p = f"layer{s}.{b}."
            sd[p + "conv1.weight"] = _rand(g, p_, cin, 1, 1)
            _bn(sd, g, p + "bn1.", p_, counters)
            sd[p + "conv2.weight"] = _rand(g, p_, p_, 3, 3)
            _bn(sd, g, p + "bn2.", p_, counters)
            sd[p + "conv3.weight"] = _rand(g, 4 * p_, p_, 1, 1)
            _bn(sd, g, p + "bn3.", 4 * p_, counters)
            if b == 0:
                sd[p + "downsample.0.weight"] = _rand(g, 4 * p_, cin, 1, 1)
                _bn(sd, g, p + "downsample.1.", 4 * p_, counters)
            cin = 4 * p_
    sd["fc.weight"], sd["fc.bias"] = _rand(g, 1000, cin), _rand(g, 1000)
    return sd


@pytest.mark.parametrize("counters", [True, False], ids=["current", "pre-0.4 file"])
def test_resnet_loads_torchvision_layout(tmp_path, counters, one_thread):
    kw = SMALL["resnet50"]
    g = torch.Generator().manual_seed(2)
    sd = _torchvision_resnet_state(g, 64, kw["channels"], kw["layers"], counters)
    torch.save(sd, tmp_path / "resnet50.pth")
    m = build_backbone("resnet50", **kw, weights=str(tmp_path / "resnet50.pth"))
    own = m.state_dict()
    for k, v in sd.items():
        if not k.startswith("fc."):
            torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)
    assert set(m.trunk_state_keys()) - set(sd) == (
        set() if counters else {k for k in m.trunk_state_keys() if k.endswith("num_batches_tracked")}
    )
    # a file of the wrong width names the mismatched tensors
    sd["conv1.weight"] = torch.zeros(3, 3, 7, 7)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"wrong shape \(1\): conv1.weight \(3, 3, 7, 7\)"):
        build_backbone("resnet50", **kw, weights=str(tmp_path / "bad.pth"))


def test_mega_vit_schedule_last_10_of_32_blocks(one_thread):
    """MEGA's ViT-H schedule at a tiny width: trainable_blocks=10 leaves 22 of 32 blocks frozen."""
    m = build_backbone("vit_h16", **{**_VIT_SMALL, "depth": 32, "width": 16}, trainable_blocks=10)
    trains = [any(p.requires_grad for p in b.parameters()) for b in m.trunk_blocks()]
    assert trains == [False] * 22 + [True] * 10
    assert not m.pos_embed.requires_grad and not m.patch_embed.proj.weight.requires_grad
    assert m.last_norm.weight.requires_grad


def test_timm_layouts_load(tmp_path, one_thread):
    """timm's own ResNet-50 and HRNet classification state dicts (heads dropped) load into ours."""
    from timm.models.hrnet import HighResolutionNet

    from mega.backbones.hrnet import _stage_cfg

    kw = SMALL["hrnet_w48"]
    cfg = _stage_cfg(kw["width"], kw["num_blocks"], kw["num_modules"])
    timm_sd = HighResolutionNet(cfg, num_classes=10).state_dict()  # incre/downsamp/final_layer/classifier
    assert any(k.startswith("incre_modules.") for k in timm_sd)
    torch.save(timm_sd, tmp_path / "hrnet_timm.pth")
    m = build_backbone("hrnet_w48", **kw, weights=str(tmp_path / "hrnet_timm.pth"))
    for k, v in m.state_dict().items():
        if k in timm_sd and not k.startswith(("final_layer.", "neck.")):
            torch.testing.assert_close(v, timm_sd[k], rtol=0, atol=0)

    import timm

    full = timm.create_model("resnet50", pretrained=False).state_dict()
    ours = build_backbone("resnet50", pyramid_scales=[]).trunk_state_keys()
    assert sorted(ours) == sorted(k for k in full if not k.startswith("fc."))


class _Hparams:  # stands for the config objects a Lightning checkpoint pickles
    pass


def test_pickled_checkpoint_is_refused_with_the_fix(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hyper_parameters": _Hparams()}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="extract its weights once"):
        build_backbone("vit_tiny", weights=str(tmp_path / "x.ckpt"))


def test_vit_grad_checkpointing_gives_the_same_gradients(one_thread):
    torch.manual_seed(0)
    a = build_backbone("vit_tiny").train()
    torch.manual_seed(0)
    b = build_backbone("vit_tiny", grad_checkpointing=True).train()
    x = _img(2, 64)
    for m in (a, b):
        m(x).tokens.square().mean().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)
