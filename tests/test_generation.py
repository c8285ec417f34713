"""Unconditional generation helpers: ids from the sampler, decoding to canonical meshes, data meshes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_mesh_tokenizer

from mega.data.motion.dataset import synthetic_motion
from mega.generation import (
    decode_meshes,
    generate_ids,
    generate_meshes,
    motion_meshes,
    random_token_ids,
    regress_joints,
)
from mega.samplers import MaskGITSampler
from mega.tokenizers import build_tokenizer
from mega.transformer import MaskedTokenTransformer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


@pytest.fixture(scope="module")
def mesh_tokenizer(free_body):
    torch.manual_seed(0)
    tok = tiny_mesh_tokenizer(free_body, 16, 3, 32, name="mesh_vqvae")
    with torch.no_grad():  # a non-trivial decoder (the untrained one outputs the mean mesh)
        tok.decoder[-1].weight.normal_(std=0.01)
    return tok.eval()


def _model(tok, seed: int = 0) -> MaskedTokenTransformer:
    torch.manual_seed(seed)
    return MaskedTokenTransformer.from_tokenizer(
        tok, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2
    ).eval()


def test_generate_ids_shapes_seeding_and_chunks(mesh_tokenizer):
    model = _model(mesh_tokenizer)
    sampler = MaskGITSampler(steps=4)
    a = generate_ids(model, sampler, 7, generator=torch.Generator().manual_seed(1), batch_size=3)
    b = generate_ids(model, sampler, 7, generator=torch.Generator().manual_seed(1), batch_size=3)
    c = generate_ids(model, sampler, 7, generator=torch.Generator().manual_seed(2), batch_size=3)
    assert a.shape == (7, 6) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < 16
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = generate_ids(model, MaskGITSampler(steps=1, temperature=0.0), 4, batch_size=4)
    all_masked = torch.ones(4, 6, dtype=torch.bool)
    with torch.no_grad():  # one greedy step = argmax of one fully masked pass
        expected = model.logits_fn()(torch.full((4, 6), 16), all_masked).argmax(-1)
    assert torch.equal(greedy, expected)


def test_decode_meshes_mesh_tokenizer(mesh_tokenizer):
    ids = random_token_ids(5, 6, 16, torch.Generator().manual_seed(0))
    assert ids.shape == (5, 6) and int(ids.max()) < 16
    meshes = decode_meshes(mesh_tokenizer, ids, batch_size=2)
    with torch.no_grad():
        direct = mesh_tokenizer.decode(ids)
    assert torch.allclose(meshes, direct - direct.mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(meshes.mean(1), torch.zeros(5, 3), atol=1e-6)


def test_decode_meshes_pose_tokenizer(free_body):
    tok = build_tokenizer(
        "pose_vqvae", num_tokens=4, codebook_size=8, code_dim=4, width=8, num_blocks=1
    ).eval()
    ids = random_token_ids(4, 4, 8, torch.Generator().manual_seed(0))
    meshes = decode_meshes(tok, ids, free_body)
    with torch.no_grad():
        out = free_body(
            global_orient=torch.zeros(4, 3),
            body_pose=tok.decode(ids, as_matrix=True),
            betas=torch.zeros(4, free_body.num_betas),
        )
    assert torch.allclose(meshes, out.vertices - out.vertices.mean(1, keepdim=True), atol=1e-5)
    with pytest.raises(ValueError, match="body model"):
        decode_meshes(tok, ids)


def test_generate_meshes_checks_the_tokenizer(mesh_tokenizer, free_body):
    model = _model(mesh_tokenizer)
    out = generate_meshes(
        model, mesh_tokenizer, 5, MaskGITSampler(steps=3), generator=torch.Generator(), batch_size=2
    )
    assert out.ids.shape == (5, 6) and out.vertices.shape == (5, free_body.num_vertices, 3)
    assert torch.allclose(out.vertices, decode_meshes(mesh_tokenizer, out.ids), atol=1e-6)
    other = MaskedTokenTransformer(
        num_tokens=6, codebook_size=32, dim=16, encoder_depth=1, decoder_depth=1, num_heads=2
    )
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        generate_meshes(other, mesh_tokenizer, 2, MaskGITSampler(steps=2))


def test_motion_meshes_match_the_tokenizer_inputs(free_body, mesh_tokenizer, tmp_path: Path):
    data = synthetic_motion(split="test", root=tmp_path / "m", sequences={"train": 1, "val": 1, "test": 1})
    index = torch.tensor([0, 5, 11, 17])
    meshes = motion_meshes(data, index, free_body, batch_size=3)  # a chunk of 3 (not (3, 3) axis-angles)
    batch = {
        "body_pose": torch.stack([data[int(i)]["body_pose"] for i in index]),
        "betas": torch.stack([data[int(i)]["betas"] for i in index]),
    }
    assert torch.allclose(meshes, mesh_tokenizer.inputs(batch, free_body), atol=1e-6)
    with torch.no_grad():  # independently: the body with a zero root, minus each mesh's centroid
        direct = free_body(torch.zeros(4, 3), batch["body_pose"], batch["betas"]).vertices
    assert torch.allclose(meshes, direct - direct.mean(1, keepdim=True), atol=1e-6)
    joints = regress_joints(meshes, free_body)
    assert joints.shape == (4, 24, 3)
    assert torch.allclose(joints[1], free_body.J_regressor @ meshes[1], atol=1e-6)
