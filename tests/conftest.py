"""Shared fixtures: the synthetic SMPL files and the two body models. CPU, no licensed file."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mega  # noqa: E402,F401  (installs the torchvision shim before any test imports torchvision)
from mega.body import load_body_model  # noqa: E402
from mega.body.synthetic import write_synthetic_smpl  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_smpl_dir(tmp_path_factory):
    """A folder with synthetic ``SMPL_{NEUTRAL,MALE,FEMALE}.{pkl,npz}`` (SMPL's real sizes)."""
    folder = tmp_path_factory.mktemp("smpl")
    write_synthetic_smpl(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def smpl_body(synthetic_smpl_dir):
    """The neutral synthetic SMPL model loaded through the real ``smpl`` path."""
    return load_body_model("smpl", path=synthetic_smpl_dir, gender="neutral")


@pytest.fixture(scope="session")
def free_body():
    """The free default body shipped in the package."""
    return load_body_model("free")


@pytest.fixture
def one_thread():
    """Run a test with torch on one thread (small models: less overhead on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
