"""The HMR model: shapes, frozen parts, heads, decoding ids vs soft codes, cameras, pre-trained init."""

from __future__ import annotations

import math

import pytest
import torch

from mega.backbones import build_backbone
from mega.body.camera import translation_to_weak_perspective
from mega.body.rotations import axis_angle_to_matrix
from mega.conditioning import build_conditioning
from mega.engine import save_checkpoint
from mega.model import UPRIGHT, HMRModel, load_pretrained_transformer
from mega.tokenizers import build_tokenizer
from mega.transformer import MaskedTokenTransformer

pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(body, kind: str = "mesh", conditioning: str = "prefix", **tok_kwargs) -> HMRModel:
    """A tiny model with the real tiny CNN (48 px) and a tiny untrained tokenizer."""
    torch.manual_seed(0)
    if kind == "mesh":
        tok = build_tokenizer("mesh_mlp", num_vertices=body.num_vertices, num_tokens=6, codebook_size=8, code_dim=2,
                              hidden_dim=16, num_blocks=1)  # fmt: skip
    else:
        tok = build_tokenizer(
            "pose_vqvae", num_tokens=8, codebook_size=16, code_dim=4, width=16, **tok_kwargs
        )
    with torch.no_grad():  # spread the codes so that different ids decode to different bodies
        tok.quantizer.load_codebook(torch.randn(tok.codebook_size, tok.code_dim) * 0.5)
    bb = build_backbone("tiny_cnn", input_size=48, widths=[8, 16, 32], depths=[1, 1], pyramid_scales=[2, 1],
                        pyramid_dim=16)  # fmt: skip
    tr = MaskedTokenTransformer.from_tokenizer(tok, dim=32, encoder_depth=1, decoder_depth=2, num_heads=2)
    cond = build_conditioning(conditioning, decoder_dim=32, decoder_depth=2, image_dim=bb.dim,
                              num_image_tokens=bb.num_tokens, pyramid_dims=bb.pyramid_dims,
                              num_body_tokens=tok.num_tokens, num_heads=2)  # fmt: skip
    return HMRModel(bb, tr, cond, tok, body, head_hidden=32)


@pytest.mark.parametrize(
    "kind,conditioning", [("mesh", "prefix"), ("pose", "deformable"), ("mesh", "cross_attention")]
)
def test_forward_and_predict_shapes(free_body, kind, conditioning):
    model = make_model(free_body, kind, conditioning)
    L, K = model.transformer.num_tokens, model.transformer.codebook_size
    img = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, L, dtype=torch.bool)
    out = model(img, torch.full((3, L), model.mask_id), mask)
    assert out.logits.shape == (3, L, K) and out.global_rot.shape == (3, 3, 3) and out.cam.shape == (3, 3)
    assert (out.betas is None) == (kind == "mesh")
    from mega.inference import recover

    pred = recover(model.eval(), img)
    assert pred.ids.shape == (3, 1, L) and pred.vertices.shape == (3, 1, free_body.num_vertices, 3)
    # deterministic mode = argmax of the all-masked forward pass
    with torch.no_grad():
        logits = model(img, torch.full((3, L), model.mask_id), mask).logits
    assert torch.equal(pred.ids[:, 0], logits.argmax(-1))


def test_logits_fn_runs_identical_sample_rows_once(free_body):
    """Q identical rows per image (ids where visible, and mask) run as one row each, the same logits as Q
    rows; rows that differ take the per-row pass."""
    model = make_model(free_body, "mesh", "prefix").eval()
    L, K, Q = model.transformer.num_tokens, model.transformer.codebook_size, 4
    img = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    seen = []
    model.transformer.decoder_blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    with torch.no_grad():
        _, context = model.encode_image(img)
        fn = model.logits_fn(context, Q)
        mask = torch.rand(2, L, generator=torch.Generator().manual_seed(1)) < 0.5
        mask[:, 0] = True
        ids = torch.randint(0, K, (2, L), generator=torch.Generator().manual_seed(2))
        rows_ids, rows_mask = ids.repeat_interleave(Q, 0), mask.repeat_interleave(Q, 0)
        rows_ids[1, 0] = (rows_ids[1, 0] + 1) % K  # differs only where masked: still the same row
        once = fn(rows_ids, rows_mask)
        reference = model.transformer(rows_ids, rows_mask, model.conditioning.repeat_context(context, Q),
                                      conditioning=model.conditioning)  # fmt: skip
        assert seen == [2, 2 * Q]
        # samplers read masked positions only (visible ones are zeros: masked_only)
        torch.testing.assert_close(once[rows_mask], reference[rows_mask], atol=1e-5, rtol=1e-5)
        assert not once[~rows_mask].any()
        rows_mask[1, 0] = False  # now row 1 differs from row 0
        mixed = fn(rows_ids, rows_mask)
        assert seen[-1] == 2 * Q
        reference = model.transformer(rows_ids, rows_mask, model.conditioning.repeat_context(context, Q),
                                      conditioning=model.conditioning)  # fmt: skip
        torch.testing.assert_close(mixed[rows_mask], reference[rows_mask], atol=1e-5, rtol=1e-5)
        assert not mixed[~rows_mask].any()
        assert not torch.allclose(mixed[1], once[1], atol=1e-4)  # row 1 now sees its visible token


def test_frozen_parts_stay_out_of_parameters_and_state(free_body):
    model = make_model(free_body, "pose", "prefix")
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("tokenizer", "body", "_frozen")) for n in names)
    assert not any(k.startswith(("tokenizer", "body")) for k in model.state_dict())
    assert all(not p.requires_grad for p in model.tokenizer.parameters())
    # prefix conditioning reads no pyramid: the backbone's neck is frozen (DDP would wait for its gradients)
    assert all(not p.requires_grad for p in model.backbone.neck.parameters())
    assert any(
        p.requires_grad for p in make_model(free_body, "pose", "deformable").backbone.neck.parameters()
    )


def test_heads_start_upright_with_the_initial_scale(free_body):
    model = make_model(free_body)
    features = model.backbone(torch.zeros(2, 3, model.backbone.input_size, model.backbone.input_size))
    features.pooled = torch.zeros(2, model.backbone.dim)
    rot, cam, betas = model.heads(features)
    torch.testing.assert_close(rot, torch.tensor(UPRIGHT).expand(2, 3, 3), atol=5e-3, rtol=0)  # small weights
    torch.testing.assert_close(cam[:, 0], torch.full((2,), 0.9), atol=5e-3, rtol=0)
    assert betas is None and float(torch.det(rot[0].detach())) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_one_hot_soft_codes_decode_like_ids(free_body, kind):
    model = make_model(free_body, kind)
    L, K = model.transformer.num_tokens, model.transformer.codebook_size
    ids = torch.randint(0, K, (2, L), generator=torch.Generator().manual_seed(1))
    rot = axis_angle_to_matrix(torch.tensor([[0.3, -1.0, 0.2], [2.0, 0.1, 0.0]]))
    betas = torch.randn(2, 10) if kind == "pose" else None
    hard = model.decode_body(rot, ids=ids, betas=betas)
    soft = model.decode_body(rot, probs=torch.nn.functional.one_hot(ids, K).float(), betas=betas)
    torch.testing.assert_close(soft.vertices, hard.vertices, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(soft.joints, hard.joints, atol=1e-5, rtol=1e-5)
    # the global rotation rotates the whole body rigidly (about the root joint for SMPL's pose path)
    canon = model.decode_body(torch.eye(3).expand(2, 3, 3), ids=ids, betas=betas)
    rooted = (canon.vertices - canon.joints[:, :1]) @ rot.transpose(1, 2)
    torch.testing.assert_close(hard.vertices - hard.joints[:, :1], rooted, atol=1e-5, rtol=1e-5)


def test_a_tokenizer_with_orientation_supplies_the_root(free_body):
    model = make_model(free_body, "pose", include_global_orient=True)
    ids = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(2))
    a = model.decode_body(torch.eye(3).expand(2, 3, 3), ids=ids)
    b = model.decode_body(axis_angle_to_matrix(torch.tensor([[0.0, 3.0, 0.0]] * 2)), ids=ids)
    torch.testing.assert_close(a.vertices, b.vertices)  # the head's rotation is not used
    gt = torch.randn(2, 23, 3) * 0.2
    orient = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, 0.0]])
    x = model.tokenizer.inputs({"body_pose": gt, "global_orient": orient, "betas": torch.zeros(2, 10)})
    assert x.shape == (2, 24, 6)  # the orientation is tokenized too
    assert torch.equal(model.target_ids(gt, torch.zeros(2, 10), orient), model.tokenizer.encode(x))


def test_projection_and_full_image_translation_known_answers(free_body):
    points = torch.tensor([[[0.1, -0.2, 3.0]]])
    cam = torch.tensor([[2.0, 0.05, 0.1]])
    torch.testing.assert_close(HMRModel.project(points, cam), torch.tensor([[[0.3, -0.2]]]))
    geo = {"bbox_center": torch.tensor([[300.0, 200.0]]), "bbox_size": torch.tensor([150.0]),
           "cam_int": torch.tensor([[[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]]]),
           "img_size": torch.tensor([[640.0, 480.0]])}  # fmt: skip
    t = HMRModel.full_image_translation(cam, geo)
    assert float(t[0, 2]) == pytest.approx(2 * 1000 / (2.0 * 150))  # tz = 2 f / (s b)
    back = translation_to_weak_perspective(t, geo["bbox_center"], geo["bbox_size"], geo["cam_int"][:, 0, 0],
                                           geo["img_size"])  # fmt: skip
    torch.testing.assert_close(back, cam)


def test_pretrained_transformer_loads_and_checks_its_tokenizer(free_body, tmp_path):
    model = make_model(free_body)
    source = MaskedTokenTransformer.from_tokenizer(model.tokenizer, dim=32, encoder_depth=1, decoder_depth=2,
                                                   num_heads=2)  # fmt: skip
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = tmp_path / "pretrained.pt"
    save_checkpoint(path, {"format": "mega-pretrained/1", "model": source.state_dict(), "transformer": {},
                           "tokenizer": {"sha256": "abc"}})  # fmt: skip
    load_pretrained_transformer(model.transformer, str(path), "abc")
    for (name, p), q in zip(model.transformer.named_parameters(), source.parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ValueError, match="tokenizer"):
        load_pretrained_transformer(model.transformer, str(path), "def")
    with pytest.raises(FileNotFoundError, match="scripts/pretrain.py"):
        load_pretrained_transformer(model.transformer, str(tmp_path / "nope.pt"))
    wider = MaskedTokenTransformer.from_tokenizer(
        model.tokenizer, dim=16, encoder_depth=1, decoder_depth=2, num_heads=2
    )
    with pytest.raises((ValueError, RuntimeError)):
        load_pretrained_transformer(wider, str(path))


def test_mismatched_transformer_is_refused(free_body):
    model = make_model(free_body)
    tr = MaskedTokenTransformer(
        num_tokens=7, codebook_size=8, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2
    )
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        HMRModel(model.backbone, tr, model.conditioning, model.tokenizer, free_body)
    assert math.isfinite(float(model.heads.cam.bias.detach()[0]))


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_target_ids_are_cached_by_content_with_flips(free_body, kind):
    """Cached ids equal fresh ones; a repeated sample costs no encode; a flipped one is encoded anew."""
    import numpy as np

    from mega.data.images.augment import flip_pose

    model = make_model(free_body, kind, **({"include_global_orient": True} if kind == "pose" else {}))
    assert model.target_cache_items == 0  # off unless asked for
    model.target_cache_items = 500_000
    encoded = []
    encode = model.tokenizer.encode
    model.tokenizer.encode = lambda x: (encoded.append(x.shape[0]), encode(x))[1]
    g = torch.Generator().manual_seed(0)
    pose, betas, orient = (
        torch.randn(4, 23, 3, generator=g) * 0.3,
        torch.randn(4, 10, generator=g),
        torch.randn(4, 3),
    )

    def fresh(p, b, o):
        model.target_cache_items = 0
        try:
            return model.target_ids(p, b, o)
        finally:
            model.target_cache_items = 500_000

    first = model.target_ids(pose, betas, orient)
    torch.testing.assert_close(first, fresh(pose, betas, orient), rtol=0, atol=0)
    encoded.clear()
    assert torch.equal(model.target_ids(pose[[2, 0]], betas[[2, 0]], orient[[2, 0]]), first[[2, 0]])
    assert encoded == []  # all seen: no tokenizer (nor body-model) work
    full = torch.cat([orient[:, None], pose], 1).numpy()
    flipped = torch.from_numpy(np.stack([flip_pose(p) for p in full])).float()
    mixed_pose = torch.cat([pose[:1], flipped[1:2, 1:]])  # sample 0 as seen, sample 1 flipped
    mixed_orient = torch.cat([orient[:1], flipped[1:2, 0]])
    got = model.target_ids(mixed_pose, betas[:2], mixed_orient)
    assert encoded == [1]  # only the flipped sample is new
    torch.testing.assert_close(got, fresh(mixed_pose, betas[:2], mixed_orient), rtol=0, atol=0)
    encoded.clear()
    model.target_ids(pose[:1], betas[:1], orient[:1] + 1.0)  # another global orientation
    assert encoded == ([1] if kind == "pose" else [])  # read only by a tokenizer that tokenizes it


def test_target_id_cache_is_bounded():
    from mega.tokenizers.target_cache import TargetIdCache

    cache = TargetIdCache(max_items=3)
    keys = TargetIdCache.keys(torch.arange(5.0)[:, None])
    assert len(set(keys)) == 5
    ids = lambda index: index[:, None].repeat(1, 2) * 10  # noqa: E731
    cache.lookup(keys[:3], lambda i: ids(i), torch.device("cpu"))
    cache.lookup(keys[:1], lambda i: pytest.fail("a hit"), torch.device("cpu"))  # key 0 is now the newest
    out = cache.lookup(keys[3:4], lambda i: ids(i + 3), torch.device("cpu"))
    assert out.tolist() == [[30, 30]] and len(cache) == 3
    assert cache.lookup([keys[0]], lambda i: pytest.fail("evicted"), torch.device("cpu")).tolist() == [[0, 0]]
    cache.lookup([keys[1]], lambda i: ids(i + 100), torch.device("cpu"))  # key 1 was the oldest: evicted
    assert (cache.hits, cache.misses) == (2, 5)
