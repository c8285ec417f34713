"""The token-id cache: correct ids, reuse, rebuild when the tokenizer or the data change, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_models import tiny_mesh_tokenizer

from mega.body.rotations import axis_angle_to_matrix, matrix_to_rot6d
from mega.data.motion.dataset import synthetic_motion
from mega.data.motion.token_cache import (
    TokenDataset,
    data_identity,
    encode_motion,
    load_or_build_token_ids,
)
from mega.tokenizers import build_tokenizer

SMALL = {"train": 3, "val": 2, "test": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("motion") / "synthetic"


def _motion(root: Path, split: str = "val"):
    return synthetic_motion(split=split, root=root, seed=0, sequences=SMALL)


def _mesh_tokenizer(body, seed: int = 0):
    torch.manual_seed(seed)
    return tiny_mesh_tokenizer(body, 16, 3, 32, name="mesh_vqvae", seed=seed).eval()


def test_ids_are_the_tokenizer_codes_of_canonical_meshes(free_body, motion_root, tmp_path):
    data = _motion(motion_root)
    tok = _mesh_tokenizer(free_body)
    got = load_or_build_token_ids(
        tok, data, free_body, cache_dir=tmp_path, data_name="synthetic_motion", split="val", batch_size=64
    )
    assert got.built and got.ids.shape == (len(data), 6) and got.ids.dtype == torch.long
    # Independent computation: zero global orientation, centred on the vertex centroid, then encode.
    index = torch.arange(0, len(data), 37)
    pose = torch.stack([data[int(i)]["body_pose"] for i in index])
    betas = torch.stack([data[int(i)]["betas"] for i in index])
    with torch.no_grad():
        out = free_body(
            global_orient=torch.zeros(len(index), 3), body_pose=axis_angle_to_matrix(pose), betas=betas
        )
        verts = out.vertices - out.vertices.mean(1, keepdim=True)
        assert torch.equal(got.ids[index], tok.encode(verts))
    assert sorted(p.name for p in tmp_path.iterdir()) == [got.path.name]  # no temporary file left
    assert got.path.name.startswith("tokens_synthetic_motion_val_")
    dataset = TokenDataset(got.ids)
    assert len(dataset) == len(data) and torch.equal(dataset[3], got.ids[3])


def test_cache_is_reused_and_rebuilt_when_the_tokenizer_changes(free_body, motion_root, tmp_path):
    data = _motion(motion_root)
    tok = _mesh_tokenizer(free_body)
    kw = dict(cache_dir=tmp_path, data_name="synthetic_motion", split="val", batch_size=128)
    first = load_or_build_token_ids(tok, data, free_body, **kw)
    again = load_or_build_token_ids(tok, data, free_body, **kw)
    assert first.built and not again.built and again.path == first.path and torch.equal(again.ids, first.ids)

    with torch.no_grad():  # "retrained" tokenizer: another codebook
        tok.quantizer.codebook.mul_(-1.0)
    changed = load_or_build_token_ids(tok, data, free_body, **kw)
    assert changed.built and changed.path != first.path and first.path.is_file()
    assert changed.meta["tokenizer_sha256"] != first.meta["tokenizer_sha256"]
    assert torch.equal(changed.ids, encode_motion(tok, data, free_body, batch_size=100))

    other = load_or_build_token_ids(tok, _motion(motion_root, "test"), free_body, **{**kw, "split": "test"})
    assert other.path.name.startswith("tokens_synthetic_motion_test_") and other.path != changed.path


def test_data_identity_follows_the_files(free_body, tmp_path):
    root = tmp_path / "motion"
    data = _motion(root, "test")
    identity = data_identity(data, "synthetic_motion", "test")
    assert identity["frames"] == len(data) and identity["source"] == data.cache_file.name
    victim = sorted((root / "test").rglob("*.npz"))[0]
    victim.touch()  # a changed file (mtime) gives the motion set another content key
    assert data_identity(_motion(root, "test"), "synthetic_motion", "test")["source"] != identity["source"]
    with pytest.raises(ValueError, match="cache_file"):
        data_identity(TokenDataset(torch.zeros(2, 3, dtype=torch.long)), "x", "train")


@pytest.mark.parametrize("damage", ["garbage", "wrong_shape", "out_of_range"])
def test_bad_cache_file_is_rebuilt(free_body, motion_root, tmp_path, caplog, damage):
    data = _motion(motion_root)
    tok = _mesh_tokenizer(free_body)
    kw = dict(cache_dir=tmp_path, data_name="synthetic_motion", split="val")
    good = load_or_build_token_ids(tok, data, free_body, **kw)
    if damage == "garbage":
        good.path.write_bytes(b"not an npz" * 10)
    else:
        with np.load(good.path) as f:
            ids, meta = f["ids"], f["meta"]
        ids = ids[:-1] if damage == "wrong_shape" else np.full_like(ids, 99)
        np.savez(good.path, ids=ids, meta=meta)
    with caplog.at_level(logging.WARNING):
        rebuilt = load_or_build_token_ids(tok, data, free_body, **kw)
    assert rebuilt.built and torch.equal(rebuilt.ids, good.ids) and str(good.path) in caplog.text


def test_pose_tokenizer_inputs(free_body, motion_root, tmp_path):
    data = _motion(motion_root)
    tok = build_tokenizer(
        "pose_vqvae", num_tokens=4, codebook_size=8, code_dim=4, width=8, num_blocks=1
    ).eval()
    got = load_or_build_token_ids(
        tok, data, free_body, cache_dir=tmp_path, data_name="synthetic_motion", split="val"
    )
    pose6d = matrix_to_rot6d(axis_angle_to_matrix(torch.stack([data[i]["body_pose"] for i in range(5)])))
    with torch.no_grad():
        assert torch.equal(got.ids[:5], tok.encode(pose6d))
