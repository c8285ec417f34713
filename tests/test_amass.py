"""AMASS-format reader, splits and the cached motion Dataset, on hand-made fixtures (no AMASS file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mega.body.rotations import axis_angle_to_matrix
from mega.data.motion import amass as amass_mod
from mega.data.motion import build_motion_dataset
from mega.data.motion.amass import (
    Z_UP_TO_Y_UP,
    MotionFileError,
    humor_framerate,
    list_motion_files,
    load_motion_npz,
    subsample_stride,
    z_up_to_y_up,
)
from mega.data.motion.dataset import (
    MotionDataset,
    canonical_subset,
    split_files,
    subset_split,
)

RNG = np.random.default_rng(0)


def _classic(path, n=120, fps=120.0, gender="female", poses=None):
    """The classic SMPL+H release layout: poses (N, 156), str gender, ``mocap_framerate``."""
    poses = RNG.normal(0, 0.3, (n, 156)) if poses is None else poses
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        poses=poses,
        trans=RNG.normal(0, 1, (n, 3)),
        betas=RNG.normal(0, 1, 16),
        gender=np.array(gender),
        mocap_framerate=np.array(fps),
        dmpls=np.zeros((n, 8)),
    )
    return poses


def _split_keys(path, n=60, fps=60.0, gender=b"male"):
    """The newer "G" layout: root_orient / pose_body / pose_hand, bytes gender, ``mocap_frame_rate``."""
    arrays = {
        "root_orient": RNG.normal(0, 0.3, (n, 3)),
        "pose_body": RNG.normal(0, 0.3, (n, 63)),
        "pose_hand": RNG.normal(0, 0.3, (n, 90)),
        "trans": RNG.normal(0, 1, (n, 3)),
        "betas": RNG.normal(0, 1, 16),
        "gender": np.array(gender),
        "mocap_frame_rate": np.array(fps),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_classic_layout_smplh_to_smpl(tmp_path):
    poses = _classic(tmp_path / "a_poses.npz")
    seq = load_motion_npz(tmp_path / "a_poses.npz", target_fps=None, z_up=False)
    assert seq.gender == "female" and seq.fps == 120.0 and len(seq) == 120
    assert (
        seq.body_pose.shape == (120, 23, 3)
        and seq.betas.shape == (120, 10)
        and seq.body_pose.dtype == np.float32
    )
    np.testing.assert_allclose(seq.global_orient, poses[:, :3], atol=1e-6)
    np.testing.assert_allclose(seq.body_pose[:, :21].reshape(120, 63), poses[:, 3:66], atol=1e-6)
    assert (seq.body_pose[:, 21:] == 0).all()  # default: SMPL hand joints zero
    idx = load_motion_npz(tmp_path / "a_poses.npz", target_fps=None, z_up=False, hand_joints="index1")
    np.testing.assert_allclose(idx.body_pose[:, 21], poses[:, 66:69], atol=1e-6)  # SMPL-H left_index1
    np.testing.assert_allclose(idx.body_pose[:, 22], poses[:, 111:114], atol=1e-6)  # right_index1


def test_smplx_width_165_index1_columns(tmp_path):
    poses = RNG.normal(0, 0.3, (6, 165))  # root, 21 body, jaw, 2 eyes, 15 + 15 hand joints
    np.savez(
        tmp_path / "x.npz",
        poses=poses,
        trans=np.zeros((6, 3)),
        betas=np.zeros(16),
        mocap_frame_rate=np.array(30.0),
        surface_model_type=np.array("smplx"),
    )
    seq = load_motion_npz(tmp_path / "x.npz", target_fps=None, z_up=False, hand_joints="index1")
    np.testing.assert_allclose(seq.body_pose[:, 21], poses[:, 75:78], atol=1e-6)  # SMPL-X joint 25
    np.testing.assert_allclose(seq.body_pose[:, 22], poses[:, 120:123], atol=1e-6)  # SMPL-X joint 40
    assert seq.gender == "neutral"  # no gender key


def test_split_key_layout_bytes_gender_and_new_framerate_key(tmp_path):
    arrays = _split_keys(tmp_path / "b_stageii.npz")
    seq = load_motion_npz(tmp_path / "b_stageii.npz", target_fps=None, z_up=False, hand_joints="index1")
    assert seq.gender == "male" and seq.fps == 60.0
    np.testing.assert_allclose(seq.body_pose[:, :21].reshape(60, 63), arrays["pose_body"], atol=1e-6)
    np.testing.assert_allclose(seq.body_pose[:, 21], arrays["pose_hand"][:, 0:3], atol=1e-6)
    np.testing.assert_allclose(seq.body_pose[:, 22], arrays["pose_hand"][:, 45:48], atol=1e-6)
    np.testing.assert_allclose(seq.betas[0], arrays["betas"][:10], atol=1e-6)


def test_bedlam_smpl_layout_keeps_hands_and_needs_a_frame_rate(tmp_path):
    poses = RNG.normal(0, 0.3, (40, 72))
    np.savez(
        tmp_path / "motion_seq.npz",
        poses=poses,
        trans=np.zeros((40, 3)),
        betas=np.ones(11),
        gender=np.array("neutral"),
    )
    with pytest.raises(MotionFileError, match="mocap_framerate"):
        load_motion_npz(tmp_path / "motion_seq.npz")
    seq = load_motion_npz(tmp_path / "motion_seq.npz", target_fps=None, z_up=False, default_fps=30)
    np.testing.assert_allclose(seq.body_pose.reshape(40, 69), poses[:, 3:], atol=1e-6)
    assert seq.fps == 30.0 and (seq.betas == 1).all() and seq.gender == "neutral"


def test_shape_and_stagei_files_are_skipped(tmp_path):
    _classic(tmp_path / "CMU" / "01" / "01_01_poses.npz", n=5)
    _split_keys(tmp_path / "CMU" / "02" / "run_stageii.npz", n=5)
    np.savez(tmp_path / "CMU" / "01" / "shape.npz", betas=np.zeros(16), gender=np.array("male"))
    np.savez(tmp_path / "CMU" / "02" / "subject_stagei.npz", betas=np.zeros(16))
    names = [p.name for p in list_motion_files(tmp_path)]
    assert names == ["01_01_poses.npz", "run_stageii.npz"]


def test_z_up_known_answer_and_inverse():
    # A person standing in AMASS's Z-up world has root orientation Rx(+90 deg); in y-up it is identity.
    orient, transl = z_up_to_y_up(np.array([[np.pi / 2, 0, 0]]), np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(orient, 0.0, atol=1e-9)
    np.testing.assert_allclose(transl, [[1.0, 3.0, -2.0]])  # z (up) -> y, y -> -z
    np.testing.assert_allclose(Z_UP_TO_Y_UP @ [0, 0, 1], [0, 1, 0])
    go = RNG.normal(0, 1, (8, 3))
    back = z_up_to_y_up(*z_up_to_y_up(go, np.ones((8, 3))), inverse=True)
    np.testing.assert_allclose(
        axis_angle_to_matrix(torch.from_numpy(back[0])), axis_angle_to_matrix(torch.from_numpy(go)), atol=1e-9
    )
    np.testing.assert_allclose(back[1], 1.0)


def test_z_up_with_root_joint_moves_every_point_rigidly():
    """x = R (v - J0) + J0 + t in Z-up must map to T x with the converted parameters."""
    go, t, j0 = RNG.normal(0, 1, (1, 3)), RNG.normal(0, 1, (1, 3)), np.array([0.0, -0.2, 0.03])
    v = RNG.normal(0, 0.5, (10, 3))
    rot = axis_angle_to_matrix(torch.from_numpy(go)).numpy()[0]
    x_zup = (v - j0) @ rot.T + j0 + t
    go2, t2 = z_up_to_y_up(go, t, root_joint=j0)
    rot2 = axis_angle_to_matrix(torch.from_numpy(go2)).numpy()[0]
    np.testing.assert_allclose((v - j0) @ rot2.T + j0 + t2, x_zup @ Z_UP_TO_Y_UP.T, atol=1e-9)


def test_subsample_and_trim_keep_the_right_frames(tmp_path):
    assert (
        subsample_stride(120.0, 30) == 4
        and subsample_stride(59.94, 30) == 2
        and subsample_stride(25, 30) == 1
    )
    assert subsample_stride(120.00004577636719, 30) == 4 and subsample_stride(50, None) == 1
    assert humor_framerate("AMASS/BMLhandball/S01/x_poses.npz", 120.0) == 240.0
    assert (
        humor_framerate("a/20160930_50032_poses.npz", 60.0) == 59.0
        and humor_framerate("CMU/a.npz", 60.0) == 60.0
    )
    poses = np.zeros((100, 156))
    poses[:, 3] = np.arange(100) / 100  # frame id in the left hip's x angle
    _classic(tmp_path / "s_poses.npz", n=100, fps=120.0, poses=poses)
    seq = load_motion_npz(tmp_path / "s_poses.npz", target_fps=30, trim=0.1)
    np.testing.assert_allclose(seq.body_pose[:, 0, 0] * 100, np.arange(10, 90, 4), atol=1e-4)
    assert len(seq) == 20 and seq.fps == 30.0
    assert len(load_motion_npz(tmp_path / "s_poses.npz", target_fps=30)) == 25


def test_split_aliases_across_releases():
    assert canonical_subset("MPI_HDM05") == "HDM05" and canonical_subset("BioMotionLab_NTroje") == "BMLrub"
    assert canonical_subset("mpi_limits") == "MPI-Limits" and canonical_subset("CMU") == "CMU"
    for protocol in ("amass", "humor", "tokenhmr"):
        assert subset_split("HDM05", protocol) == subset_split("MPI_HDM05", protocol) == "val"
        assert subset_split("CMU", protocol) == "train"
    assert subset_split("BMLrub", "humor") == "train"  # listed as BioMotionLab_NTroje
    assert subset_split("Transitions", "amass") == "test" and subset_split("SSM_synced", "tokenhmr") == "test"
    assert (
        subset_split("TCD_handMocap", "tokenhmr") == "train" and subset_split("MPI_mosh", "tokenhmr") == "val"
    )
    assert subset_split("HumanEva", "humor") == "test" and subset_split("HumanEva", "tokenhmr") == "val"
    assert subset_split("Unknown", "amass") is None


def test_split_files_by_sub_dataset(tmp_path):
    for sub in ("CMU", "MPI_HDM05", "Transitions", "BMLrub", "Weird"):
        _classic(tmp_path / sub / "s1" / "x_poses.npz", n=4)
    tops = {
        s: {p.relative_to(tmp_path).parts[0] for p in split_files(tmp_path, s, "tokenhmr")}
        for s in ("train", "val", "test")
    }
    assert tops == {"train": {"CMU", "BMLrub"}, "val": {"MPI_HDM05"}, "test": {"Transitions"}}
    assert len(split_files(tmp_path, "all", "tokenhmr")) == 5
    hashed = [set(split_files(tmp_path, s, "hash", 0.3, 0.3)) for s in ("train", "val", "test")]
    assert sum(map(len, hashed)) == 5 and not (hashed[0] & hashed[1] or hashed[1] & hashed[2])


@pytest.mark.parametrize(
    ("field", "arrays"),
    [
        ("poses", {"poses": np.full((5, 156), np.nan), "trans": np.zeros((5, 3)), "betas": np.zeros(16)}),
        ("poses", {"poses": np.zeros((5, 100)), "trans": np.zeros((5, 3)), "betas": np.zeros(16)}),
        ("trans", {"poses": np.zeros((5, 156)), "trans": np.zeros((4, 3)), "betas": np.zeros(16)}),
        ("betas", {"poses": np.zeros((5, 156)), "trans": np.zeros((5, 3))}),
        (
            "gender",
            {
                "poses": np.zeros((5, 156)),
                "trans": np.zeros((5, 3)),
                "betas": np.zeros(16),
                "gender": np.array("robot"),
            },
        ),
    ],
)
def test_bad_fields_name_file_and_field(tmp_path, field, arrays):
    np.savez(tmp_path / "bad.npz", mocap_framerate=np.array(30.0), **arrays)
    with pytest.raises(MotionFileError, match=rf"bad\.npz: field '{field}'"):
        load_motion_npz(tmp_path / "bad.npz")


def test_corrupt_file_gives_one_clear_error(tmp_path):
    _classic(tmp_path / "ok_poses.npz", n=10)
    data = (tmp_path / "ok_poses.npz").read_bytes()
    (tmp_path / "cut_poses.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text_poses.npz").write_text("not an archive")
    for name in ("cut_poses.npz", "text_poses.npz"):
        with pytest.raises(MotionFileError, match=name):
            load_motion_npz(tmp_path / name)


def test_dataset_items_batches_and_cache(tmp_path, monkeypatch):
    _classic(tmp_path / "CMU" / "01" / "a_poses.npz", n=120, fps=120.0)  # -> 30 frames
    _split_keys(tmp_path / "KIT" / "02" / "b_stageii.npz", n=60, fps=60.0, gender=b"female")  # -> 30 frames
    _classic(tmp_path / "SFU" / "03" / "c_poses.npz", n=30, fps=30.0)
    cfg = {
        "name": "amass",
        "root": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
        "split_protocol": "amass",
    }
    train = build_motion_dataset(cfg, "train")
    assert len(train) == 60 and len(train.seq_names) == 2 and train.cache_file.is_file()
    item = train[45]
    assert item["body_pose"].shape == (23, 3) and item["global_orient"].shape == (3,)
    assert item["betas"].shape == (10,) and item["transl"].shape == (3,) and item["gender"] == "female"
    batch = next(iter(DataLoader(train, batch_size=8)))
    assert batch["body_pose"].shape == (8, 23, 3) and batch["betas"].dtype == torch.float32
    assert batch["gender"] == ["female"] * 8 and batch["seq_id"].tolist() == [0] * 8
    fast = train[[45, 0, 59]]  # batched indexing (DataLoader with a BatchSampler and batch_size=None)
    assert fast["body_pose"].shape == (3, 23, 3) and fast["gender"] == ["female", "female", "female"]
    assert torch.equal(fast["body_pose"][0], item["body_pose"]) and fast["seq_id"].tolist() == [1, 0, 1]
    assert len(build_motion_dataset(cfg, "val")) == 30
    # A second construction reads the cache only.
    monkeypatch.setattr(
        "mega.data.motion.dataset.load_motion_npz", lambda *a, **k: pytest.fail("cache not used")
    )
    again = MotionDataset(tmp_path, "train", "amass", cache_dir=tmp_path / "cache")
    assert torch.equal(again.tensors["body_pose"], train.tensors["body_pose"])


def test_dataset_bad_file_raises_or_is_skipped(tmp_path):
    _classic(tmp_path / "CMU" / "01" / "a_poses.npz", n=8, fps=30.0)
    (tmp_path / "CMU" / "01" / "b_poses.npz").write_bytes(b"garbage")
    with pytest.raises(MotionFileError, match="b_poses.npz"):
        MotionDataset(tmp_path, "train", "amass")
    assert len(MotionDataset(tmp_path, "train", "amass", skip_bad_files=True)) == 8


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="AMASS not found"):
        build_motion_dataset({"name": "amass", "root": str(tmp_path / "nope")}, "train")
    assert amass_mod.GENDERS == ("neutral", "male", "female")
