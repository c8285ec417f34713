"""Pose tokenizer with the global orientation (GenHMR's 24 rotations) and rotation augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mega.body.rotations import axis_angle_to_matrix, geodesic_angle, matrix_to_rot6d
from mega.tokenizers import PoseVQVAE, build_tokenizer, load_tokenizer, save_tokenizer
from mega.tokenizers.pose_vqvae import random_rotations

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


def _batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "global_orient": torch.randn(n, 3, generator=g),
        "body_pose": torch.randn(n, 23, 3, generator=g) * 0.3,
        "betas": torch.randn(n, 10, generator=g),
    }


def _tiny(**kwargs) -> PoseVQVAE:
    torch.manual_seed(0)
    return PoseVQVAE(num_tokens=8, codebook_size=32, code_dim=8, width=32, num_blocks=1, **kwargs)


def test_orientation_is_tokenized_first_and_split_back(free_body):
    tok = _tiny(include_global_orient=True).eval()
    batch = _batch(4)
    x = tok.inputs(batch)
    assert x.shape == (4, 24, 6) and tok.num_joints == 24
    torch.testing.assert_close(x[:, 0], matrix_to_rot6d(axis_angle_to_matrix(batch["global_orient"])))
    ids = tok.encode(x)
    pose = tok.decode(ids, as_matrix=True)
    assert pose.shape == (4, 24, 3, 3)
    orient, body_pose = tok.split_pose(pose)
    assert orient.shape == (4, 3, 3) and body_pose.shape == (4, 23, 3, 3)
    errs = tok.errors(batch, free_body)
    assert errs["pve"].shape == (4,) and torch.isfinite(errs["mpjpe"]).all()
    with pytest.raises(KeyError, match="global_orient"):
        tok.inputs({"body_pose": batch["body_pose"]})
    with pytest.raises(ValueError, match="24"):
        tok.encode(torch.zeros(2, 23, 6))
    # Without the option: 23 joints, the orientation is ignored, split_pose gives no orientation.
    plain = _tiny()
    assert plain.inputs(batch).shape == (4, 23, 6)
    assert plain.split_pose(torch.zeros(2, 23, 6))[0] is None


def test_orientation_changes_the_loss_targets(free_body):
    """With the orientation, the vertex/joint targets are the oriented body (not the canonical one)."""
    tok = _tiny(include_global_orient=True).eval()
    batch = _batch(3)
    turned = dict(batch, global_orient=torch.tensor([[0.0, 3.0, 0.0]]).expand(3, 3))
    assert (tok.errors(batch, free_body)["pve"] - tok.errors(turned, free_body)["pve"]).abs().max() > 1.0


def test_rotation_augmentation_is_seeded_and_only_in_training():
    rots = random_rotations(2000, 180.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        rots @ rots.transpose(1, 2), torch.eye(3).expand(2000, 3, 3), atol=1e-5, rtol=0
    )
    angles = torch.rad2deg(geodesic_angle(rots, torch.eye(3).expand(2000, 3, 3)))
    assert angles.max() > 170 and angles.mean() > 60  # any orientation reachable
    small = random_rotations(500, 20.0, torch.Generator().manual_seed(0))
    assert torch.rad2deg(geodesic_angle(small, torch.eye(3).expand(500, 3, 3))).max() <= 20.01
    batch = _batch(6)
    a, b = (
        _tiny(include_global_orient=True, rotation_augment_deg=180.0),
        _tiny(include_global_orient=True, rotation_augment_deg=180.0),
    )
    rot = a.pose_matrices(batch)
    aug_a, aug_b = a.train()._augment(rot), b.train()._augment(rot)
    torch.testing.assert_close(aug_a, aug_b)  # same seed, same draws
    assert (aug_a[:, 0] - rot[:, 0]).abs().max() > 0.1  # the orientation moved ...
    torch.testing.assert_close(aug_a[:, 1:], rot[:, 1:])  # ... the body pose did not
    torch.testing.assert_close(a.eval()._augment(rot), rot)  # never at evaluation
    with pytest.raises(ValueError, match="rotation_augment_deg"):
        _tiny(include_global_orient=True, rotation_augment_deg=270.0)


def test_oriented_tokenizer_learns_and_round_trips(free_body, tmp_path, one_thread):
    """A few steps on a fixed batch beat the untrained model; the checkpoint keeps the option."""
    tok = _tiny(include_global_orient=True, rotation_augment_deg=30.0)
    batch = _batch(32, seed=1)
    before = tok.eval().errors(batch, free_body)["pve"].mean()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    tok.train()
    for _ in range(60):
        loss, _ = tok.loss(batch, free_body)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = tok.eval().errors(batch, free_body)["pve"].mean()
    assert after < 0.7 * before, (before, after)
    path = tmp_path / "tok.pt"
    save_tokenizer(path, tok)
    again = load_tokenizer(path)
    assert again.include_global_orient and again.rotation_augment_deg == 30.0
    torch.testing.assert_close(again.encode(tok.inputs(batch)), tok.encode(tok.inputs(batch)))


def test_genhmr_preset_tokenizes_the_orientation():
    paper = OmegaConf.load(CONFIG_DIR / "pose_vqvae.yaml")
    assert paper.include_global_orient is True and paper.rotation_augment_deg > 0
    tok = build_tokenizer(**OmegaConf.to_container(paper))
    assert tok.num_joints == 24
    cpu = OmegaConf.load(CONFIG_DIR / "pose_vqvae_cpu.yaml")
    assert cpu.include_global_orient is False


def test_generation_decodes_oriented_tokens_to_canonical_meshes(free_body):
    from mega.generation import decode_meshes

    ids = torch.randint(0, 32, (3, 8), generator=torch.Generator().manual_seed(0))
    plain, oriented = _tiny(), _tiny(include_global_orient=True)
    assert (
        decode_meshes(plain, ids, free_body).shape
        == decode_meshes(oriented, ids, free_body).shape
        == (3, 1229, 3)
    )
