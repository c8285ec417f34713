"""Mesh and pose tokenizers: shapes on both topologies, soft decoding, training, checkpoints, configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mega.body.rotations import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_matrix
from mega.tokenizers import (
    TOKENIZERS,
    MeshVQVAE,
    PoseVQVAE,
    build_tokenizer,
    load_tokenizer,
    save_tokenizer,
    tokenizer_hash,
)
from mega.tokenizers.base import body_pose_matrices
from mega.tokenizers.mesh_vqvae import canonical_mesh

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


def _poses(n: int, seed: int = 0, sigma: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"body_pose": torch.randn(n, 23, 3, generator=g) * sigma, "betas": torch.randn(n, 10, generator=g)}


def _meshes(body, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return canonical_mesh(body, axis_angle_to_matrix(batch["body_pose"]), batch["betas"])[0]


def _tiny(kind: str, num_vertices: int = 0):
    torch.manual_seed(0)
    if kind == "mesh":
        tok = MeshVQVAE(num_vertices, num_tokens=8, codebook_size=32, code_dim=4, hidden_dim=64, num_blocks=1)
        torch.nn.init.normal_(
            tok.decoder[-1].weight, std=0.01
        )  # zero-initialised: make outputs depend on ids
        return tok
    return PoseVQVAE(num_tokens=8, codebook_size=32, code_dim=8, width=32, num_blocks=1)


@pytest.fixture(params=["free_body", "smpl_body"])
def body(request):
    return request.getfixturevalue(request.param)


def test_mesh_tokenizer_shapes_on_both_topologies(body):
    tok = _tiny("mesh", body.num_vertices)
    batch = _poses(4)
    x = _meshes(body, batch)
    assert x.shape == (4, body.num_vertices, 3)
    torch.testing.assert_close(tok.inputs(batch, body), x)
    torch.testing.assert_close(x.mean(1), torch.zeros(4, 3), atol=1e-5, rtol=0)  # centred
    x_hat, ids, aux = tok.train()(x)
    assert x_hat.shape == x.shape and ids.shape == (4, tok.num_tokens) and ids.dtype == torch.int64
    assert set(aux) == {"commit_loss", "perplexity", "batch_usage", "usage"}
    tok.eval()
    ids = tok.encode(x)
    assert ids.shape == (4, 8) and int(ids.max()) < tok.codebook_size == 32
    assert tok.decode(ids).shape == (4, body.num_vertices, 3)
    errs = tok.errors(batch, body)
    assert errs["pve"].shape == (4,) and errs["mpjpe"].shape == (4,) and torch.isfinite(errs["pve"]).all()
    assert torch.equal(errs["ids"], tok.encode(x))
    with pytest.raises(ValueError, match=str(body.num_vertices)):
        tok.encode(torch.zeros(2, body.num_vertices + 1, 3))


def test_pose_tokenizer_shapes_and_loss_on_both_bodies(body):
    tok = _tiny("pose").train()
    batch = _poses(4)
    loss, logs = tok.loss(batch, body)
    loss.backward()
    assert torch.isfinite(loss) and {"pose", "vertices", "joints", "commit", "mve_mm", "usage"} <= set(logs)
    assert all(p.grad is not None for p in tok.encoder.parameters())
    tok.eval()
    ids = tok.encode(tok.inputs(batch, body))
    assert ids.shape == (4, 8)
    torch.testing.assert_close(tok.inputs(batch, body), matrix_to_rot6d(body_pose_matrices(batch)))
    assert tok.decode(ids).shape == (4, 23, 6)
    rot = tok.decode(ids, as_matrix=True)
    assert rot.shape == (4, 23, 3, 3)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, torch.eye(3).expand_as(rot), atol=1e-5, rtol=0)
    errs = tok.errors(batch, body)
    assert errs["pve"].shape == (4,) and errs["mpjpe"].shape == (4,) and torch.equal(errs["ids"], ids)


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_decode_soft_of_one_hot_equals_decode_and_is_differentiable(kind):
    tok = _tiny(kind, 50).eval()
    ids = torch.randint(0, tok.codebook_size, (3, tok.num_tokens), generator=torch.Generator().manual_seed(0))
    one_hot = torch.nn.functional.one_hot(ids, tok.codebook_size).float()
    torch.testing.assert_close(tok.decode_soft(one_hot), tok.decode(ids), rtol=0, atol=1e-6)
    logits = torch.randn(3, tok.num_tokens, tok.codebook_size, requires_grad=True)
    tok.decode_soft(logits.softmax(-1)).square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="probs"):
        tok.decode_soft(one_hot[:, :-1])


def test_body_pose_formats_give_the_same_rotations():
    batch = _poses(3)
    rot = axis_angle_to_matrix(batch["body_pose"])
    for pose in (batch["body_pose"].reshape(3, 69), rot, matrix_to_rot6d(rot)):
        torch.testing.assert_close(body_pose_matrices({"body_pose": pose}), rot, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="body_pose"):
        body_pose_matrices({"body_pose": torch.zeros(3, 22, 3)})
    with pytest.raises(ValueError, match="NaN"):
        body_pose_matrices({"body_pose": torch.full((3, 23, 3), float("nan"))})
    with pytest.raises(KeyError, match="body_pose"):
        body_pose_matrices({"poses": rot})


def _train(tok, step_fn, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.Adam(tok.parameters(), lr=lr)
    tok.train()
    for _ in range(steps):
        loss = step_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.eval()


def test_trained_mesh_tokenizer_beats_the_mean_mesh(free_body):
    torch.set_num_threads(1)
    batch = _poses(32, seed=1)
    x = _meshes(free_body, batch)
    tok = _tiny("mesh", free_body.num_vertices)

    def step():
        x_hat, _, aux = tok(x)
        return (x_hat - x).abs().mean() + 0.25 * aux["commit_loss"]

    _train(tok, step, 300)
    pve = tok.errors(batch, free_body)["pve"].mean()
    mean_pve = (x - x.mean(0)).norm(dim=-1).mean() * 1000
    assert pve < 0.35 * mean_pve, (pve, mean_pve)


def test_trained_pose_tokenizer_beats_the_mean_pose(free_body):
    torch.set_num_threads(1)
    batch = _poses(16, seed=2)
    tok = _tiny("pose")
    _train(tok, lambda: tok.loss(batch, free_body)[0], 150)
    mve = tok.errors(batch, free_body)["pve"].mean()
    rot = axis_angle_to_matrix(batch["body_pose"])
    mean_rot = rot6d_to_matrix(matrix_to_rot6d(rot).mean(0, keepdim=True)).expand_as(rot)
    with torch.no_grad():
        ref = free_body(global_orient=torch.zeros(16, 3), body_pose=rot, betas=batch["betas"]).vertices
        avg = free_body(global_orient=torch.zeros(16, 3), body_pose=mean_rot, betas=batch["betas"]).vertices
    mean_mve = (avg - ref).norm(dim=-1).mean() * 1000
    assert mve < 0.5 * mean_mve, (mve, mean_mve)


# ---------------------------------------------------------------------- checkpoints
def _trained_a_little(kind: str):
    tok = _tiny(kind, 40).train()
    x = (
        torch.randn(16, 40, 3)
        if kind == "mesh"
        else matrix_to_rot6d(axis_angle_to_matrix(torch.randn(16, 23, 3)))
    )
    for _ in range(3):
        tok(x)
    return tok.eval(), x


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_checkpoint_round_trip_rebuilds_the_same_tokenizer(kind, tmp_path):
    tok, x = _trained_a_little(kind)
    path = tmp_path / "sub" / "tok.pt"
    digest = save_tokenizer(path, tok)
    assert [p.name for p in path.parent.iterdir()] == ["tok.pt"]  # no temp file left behind
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and not loaded.training
    assert loaded.config == tok.config and tokenizer_hash(loaded) == digest
    assert (loaded.num_tokens, loaded.codebook_size) == (tok.num_tokens, tok.codebook_size)
    for key, value in tok.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ids = tok.encode(x)
    assert torch.equal(loaded.encode(x), ids)
    torch.testing.assert_close(loaded.decode(ids), tok.decode(ids), rtol=0, atol=0)


def test_corrupt_or_missing_checkpoints_give_clear_errors(tmp_path):
    tok, _ = _trained_a_little("mesh")
    good = tmp_path / "good.pt"
    save_tokenizer(good, tok)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.pt.*corrupt"):
        load_tokenizer(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="garbage.pt"):
        load_tokenizer(garbage)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match="not a mega tokenizer"):
        load_tokenizer(other)
    payload = torch.load(good, weights_only=True)
    payload["state_dict"]["quantizer.codebook"] += 1.0
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(ValueError, match="hash") as caught:
        load_tokenizer(tampered)
    from mega.errors import is_user_error

    assert is_user_error(caught.value)  # the scripts print one line, not a traceback
    with pytest.raises(FileNotFoundError) as caught:
        load_tokenizer(tmp_path / "missing.pt")
    assert is_user_error(caught.value)


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_tokenizer_config_builds(path):
    cfg = OmegaConf.load(path)
    assert cfg.name in TOKENIZERS.names()
    params = set(inspect.signature(TOKENIZERS.get(cfg.name).__init__).parameters) - {"self"}
    assert set(cfg) - {"name"} <= params, set(cfg) - {"name"} - params
    if "num_vertices" in params:
        assert OmegaConf.is_missing(cfg, "num_vertices")  # filled from the body model, never typed
        cfg.num_vertices = 6890 if cfg.get("level_sizes") else 100  # level sizes given: SMPL's vertex count
    tok = build_tokenizer(**OmegaConf.to_container(cfg))
    assert tok.num_tokens == cfg.num_tokens and tok.codebook_size == cfg.codebook_size


def test_paper_presets_match_the_papers():
    mesh = OmegaConf.load(CONFIG_DIR / "mesh_vqvae.yaml")
    assert (mesh.num_tokens, mesh.codebook_size, mesh.code_dim) == (54, 512, 9)
    pose = OmegaConf.load(CONFIG_DIR / "pose_vqvae.yaml")
    assert (pose.num_tokens, pose.codebook_size, pose.code_dim) == (96, 2048, 256)
    assert (pose.pose_weight, pose.vertex_weight, pose.joint_weight, pose.commitment_weight) == (
        1.0,
        0.5,
        0.3,
        0.02,
    )
