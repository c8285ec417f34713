"""MOYO's AMASS-format SMPL-X release through the motion reader, on a tiny synthetic fixture."""

from __future__ import annotations

import numpy as np
import pytest

from mega.data.motion import build_motion_dataset
from mega.data.motion.amass import MotionFileError, check_moyo_folder, load_motion_npz, z_up_to_y_up

RNG = np.random.default_rng(7)


def _moyo_smplx(path, n=40, fps=60.0, gender="neutral", layout="split"):
    """A MOYO-like SMPL-X file: split keys (root_orient, pose_body, pose_jaw, pose_eye, pose_hand, 16
    SMPL-X betas, surface_model_type 'smplx') or the flat (N, 165) ``poses`` layout."""
    arrays = {
        "root_orient": RNG.normal(0, 0.5, (n, 3)),
        "pose_body": RNG.normal(0, 0.4, (n, 63)),
        "pose_jaw": RNG.normal(0, 0.1, (n, 3)),
        "pose_eye": RNG.normal(0, 0.1, (n, 6)),
        "pose_hand": RNG.normal(0, 0.3, (n, 90)),
        "trans": RNG.normal(0, 1, (n, 3)),
        "betas": RNG.normal(0, 1, 16),
        "gender": np.array(gender),
        "mocap_frame_rate": np.array(fps),
        "surface_model_type": np.array("smplx"),
        "num_betas": np.array(16),
    }
    if layout == "flat":
        flat = np.concatenate(
            [arrays[k] for k in ("root_orient", "pose_body", "pose_jaw", "pose_eye", "pose_hand")], 1
        )
        arrays = {k: v for k, v in arrays.items() if not k.startswith(("root_orient", "pose_"))} | {
            "poses": flat
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("layout", ["split", "flat"])
def test_smplx_file_reads_what_applies_to_smpl(tmp_path, layout):
    arrays = _moyo_smplx(tmp_path / "pose.npz", layout=layout)
    seq = load_motion_npz(tmp_path / "pose.npz", target_fps=None, z_up=False)
    body = arrays["pose_body"] if layout == "split" else arrays["poses"][:, 3:66]
    root = arrays["root_orient"] if layout == "split" else arrays["poses"][:, :3]
    np.testing.assert_allclose(seq.body_pose[:, :21].reshape(-1, 63), body, atol=1e-6)  # 21 body joints
    np.testing.assert_allclose(seq.global_orient, root, atol=1e-6)
    assert (seq.body_pose[:, 21:] == 0).all()  # no SMPL hand joints from the fingers by default
    np.testing.assert_allclose(seq.betas[0], arrays["betas"][:10], atol=1e-6)  # first 10 kept
    assert seq.gender == "neutral" and seq.fps == 60.0 and len(seq) == 40
    # Z-up -> y-up and 60 -> 30 fps as for AMASS.
    up = load_motion_npz(tmp_path / "pose.npz", target_fps=30.0, z_up=True)
    go, tr = z_up_to_y_up(root[::2], arrays["trans"][::2])
    np.testing.assert_allclose(up.global_orient, go, atol=1e-5)
    np.testing.assert_allclose(up.transl, tr, atol=1e-5)


def test_unknown_surface_model_is_refused(tmp_path):
    arrays = _moyo_smplx(tmp_path / "m.npz")
    np.savez(tmp_path / "m.npz", **(arrays | {"surface_model_type": np.array("mano")}))
    with pytest.raises(MotionFileError, match="surface_model_type.*mano"):
        load_motion_npz(tmp_path / "m.npz")


def test_moyo_dataset_folders_and_pickle_only_error(tmp_path):
    root = tmp_path / "moyo"
    _moyo_smplx(root / "train" / "YOGI_2_latest_smplx" / "a_stageii.npz", n=60, gender="female")
    _moyo_smplx(root / "val" / "YOGI_2_latest_smplx" / "b_stageii.npz", n=30)
    cfg = {"name": "moyo", "root": str(root), "cache_dir": str(tmp_path / "cache"), "trim": 0.1}
    train = build_motion_dataset(cfg, "train")
    assert len(train) == 24 and train[0]["gender"] == "female"  # 60 frames, 10 % off each end, 60->30 fps
    assert len(build_motion_dataset(cfg, "val")) == 12
    only_pkl = tmp_path / "moyo_pkl" / "mosh_smpl" / "train"
    only_pkl.mkdir(parents=True)
    (only_pkl / "seq.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(FileNotFoundError, match=r"only \.pkl files.*AMASS-format release"):
        check_moyo_folder(tmp_path / "moyo_pkl")
    with pytest.raises(FileNotFoundError, match="MOYO not found"):
        build_motion_dataset({"name": "moyo", "root": str(tmp_path / "nowhere")}, "train")
