"""3DPW and EMDB readers on fixtures in the datasets' exact formats; the index and its Dataset."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mega.body.rotations import axis_angle_to_matrix
from mega.data.benchmarks import build_index
from mega.data.benchmarks import threedpw as threedpw_reader
from mega.data.benchmarks.emdb import build_emdb_index
from mega.data.benchmarks.index import BenchmarkDataset, BenchmarkError, BenchmarkIndex, MissingFileError
from mega.data.benchmarks.threedpw import build_3dpw_index

# Fixtures threedpw, emdb, smpl_bodies, free_bodies. Imported by pytest (not above) so it is imported once.
pytest_plugins = ["fixtures_benchmarks"]


@pytest.fixture(scope="module")
def pw3d_index(threedpw, synthetic_smpl_dir) -> BenchmarkIndex:
    return build_3dpw_index(
        threedpw["root"], split="test", body_model="smpl", body_model_path=str(synthetic_smpl_dir)
    )


def _rows(index: BenchmarkIndex) -> list[tuple]:
    a = index.arrays
    return [(str(s), int(f), int(p)) for s, f, p in zip(a["sequence"], a["frame"], a["person"])]


def _posed(bodies, gender: str, orient, pose, betas, transl) -> np.ndarray:
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)[None]  # noqa: E731
    with torch.no_grad():
        out = bodies(gender)(
            global_orient=axis_angle_to_matrix(f(orient)),
            body_pose=f(pose).reshape(1, 23, 3),
            betas=f(betas),
            transl=f(transl),
        )
    return out.vertices[0].double().numpy()


def test_3dpw_files_are_python2_pickles(threedpw) -> None:
    path = threedpw["root"] / "sequenceFiles" / "test" / "courtyard_hug_00.pkl"
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())  # like the real files: needs encoding='latin1'
    assert pickle.loads(path.read_bytes(), encoding="latin1")["genders"] == ["f", "m"]


def test_3dpw_rows_frames_and_images(pw3d_index: BenchmarkIndex, threedpw) -> None:
    assert _rows(pw3d_index) == threedpw["expected"]["test"]
    assert (
        len(pw3d_index) == 10
    )  # 4 (one person, one invalid frame) + 6 (two people, the second from frame 2)
    a = pw3d_index.arrays
    for seq, frame, image in zip(a["sequence"], a["frame"], a["image"]):
        assert image == f"imageFiles/{seq}/image_{frame:05d}.jpg"
    assert (pw3d_index.dataset, pw3d_index.split, pw3d_index.subset) == ("3dpw", "test", "all")
    assert a["image_size"].tolist() == [[48, 64]] * 10
    hug = a["sequence"] == "courtyard_hug_00"
    assert a["gender"][hug & (a["person"] == 0)].tolist() == ["female"] * 4
    assert a["gender"][hug & (a["person"] == 1)].tolist() == ["male"] * 2
    # The late second person's rows carry his own pose of those very frames.
    truth = threedpw["truth"][("courtyard_hug_00", 1)]
    rows = hug & (a["person"] == 1)
    np.testing.assert_allclose(a["body_pose"][rows], truth["pose"][[2, 3]], atol=1e-6)
    np.testing.assert_allclose(a["betas"][rows], np.tile(truth["betas"][:10], (2, 1)), atol=1e-6)  # 16 -> 10


def test_3dpw_ground_truth_in_camera_frame(pw3d_index: BenchmarkIndex, threedpw, smpl_bodies) -> None:
    a = pw3d_index.arrays
    for i in range(len(pw3d_index)):
        truth = threedpw["truth"][(str(a["sequence"][i]), int(a["person"][i]))]
        t = int(a["frame"][i])
        world = _posed(
            smpl_bodies,
            truth["gender"],
            truth["orient"][t],
            truth["pose"][t],
            truth["betas"][:10],
            truth["trans"][t],
        )
        ext = truth["ext"][t]
        expected = world @ ext[:3, :3].T + ext[:3, 3]
        got = _posed(
            smpl_bodies,
            str(a["gender"][i]),
            a["global_orient"][i],
            a["body_pose"][i],
            a["betas"][i],
            a["transl"][i],
        )
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_3dpw_bbox_from_visible_keypoints(pw3d_index: BenchmarkIndex, threedpw) -> None:
    from fixtures_benchmarks import HIDDEN_KEYPOINT, NO_DETECTION

    a = pw3d_index.arrays
    for i in range(len(pw3d_index)):
        seq, frame, person = str(a["sequence"][i]), int(a["frame"][i]), int(a["person"][i])
        truth = threedpw["truth"][(seq, person)]
        if (seq, person, frame) == NO_DETECTION:
            xy = truth["joints_2d"][frame]  # fallback: projected jointPositions
        else:
            kp = truth["kp2d"][frame]
            visible = kp[2] > 0
            assert not visible[HIDDEN_KEYPOINT]
            xy = kp[:2, visible].T
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        np.testing.assert_allclose(a["bbox_center"][i], (lo + hi) / 2, rtol=1e-5)
        assert a["bbox_size"][i] == pytest.approx(1.2 * (hi - lo).max(), rel=1e-5)


def test_3dpw_subsets(threedpw, synthetic_smpl_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = {"body_model": "smpl", "body_model_path": str(synthetic_smpl_dir)}
    occ = build_3dpw_index(threedpw["root"], split="test", subset="occ", **kw)
    assert _rows(occ) == threedpw["expected"]["validation"]  # courtyard_backpack is OCC; found in any split
    assert occ.subset == "occ" and occ.split == "all"
    monkeypatch.setitem(threedpw_reader.PC_FRAME_RANGES, "courtyard_hug_00", (1, 2))
    pc = build_3dpw_index(threedpw["root"], subset="pc", **kw)
    assert _rows(pc) == [("courtyard_hug_00", 1, 0), ("courtyard_hug_00", 2, 0), ("courtyard_hug_00", 2, 1)]


def test_occ_and_pc_lists_as_published() -> None:
    assert len(threedpw_reader.OCC_SEQUENCES) == 17 and "downtown_stairs" in threedpw_reader.OCC_SEQUENCES
    assert threedpw_reader.PC_FRAME_RANGES["downtown_bus_00"] == (1620, 1900)
    assert len(threedpw_reader.PC_FRAME_RANGES) == 6


def test_index_roundtrip_and_dataset(pw3d_index: BenchmarkIndex, threedpw, tmp_path: Path) -> None:
    path = pw3d_index.save(tmp_path / "idx" / "3dpw_test.npz")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = BenchmarkIndex.load(path)
    assert (loaded.dataset, loaded.split, loaded.subset) == ("3dpw", "test", "all")
    for key, value in pw3d_index.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    seen = []
    crop = lambda img, item: torch.zeros(3, 8, 8) + img.size[0]  # noqa: E731
    ds = BenchmarkDataset(path, root=threedpw["root"], image_transform=crop)
    for batch in DataLoader(ds, batch_size=3):
        assert batch["global_orient"].shape[1:] == (3,) and batch["body_pose"].shape[1:] == (69,)
        assert batch["cam_intrinsics"].shape[1:] == (3, 3) and batch["img"].shape[1:] == (3, 8, 8)
        assert (batch["img"] == 48).all()
        seen += list(zip(batch["sequence"], batch["frame"].tolist(), batch["person"].tolist()))
    assert seen == threedpw["expected"]["test"]


def test_build_index_by_registry_name(pw3d_index: BenchmarkIndex, threedpw, synthetic_smpl_dir) -> None:
    again = build_index(
        "3dpw", root=threedpw["root"], body_model="smpl", body_model_path=str(synthetic_smpl_dir)
    )
    np.testing.assert_array_equal(again.arrays["transl"], pw3d_index.arrays["transl"])


def test_3dpw_bad_input(threedpw, synthetic_smpl_dir, tmp_path: Path) -> None:
    from fixtures_benchmarks import write_py2_pickle

    kw = {"body_model": "smpl", "body_model_path": str(synthetic_smpl_dir)}
    with pytest.raises(MissingFileError, match="3DPW root not found"):
        build_3dpw_index(tmp_path / "nowhere", **kw)
    root = tmp_path / "copy"
    shutil.copytree(threedpw["root"], root)
    seq_file = root / "sequenceFiles" / "test" / "downtown_walking_00.pkl"
    (root / "imageFiles" / "downtown_walking_00" / "image_00004.jpg").unlink()
    with pytest.raises(MissingFileError, match="image_00004.jpg"):
        build_3dpw_index(root, **kw)
    raw = seq_file.read_bytes()
    seq_file.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BenchmarkError, match=r"downtown_walking_00.pkl: truncated or corrupt pickle"):
        build_3dpw_index(root, **kw)
    data = pickle.loads(raw, encoding="latin1")
    del data["cam_poses"]
    write_py2_pickle(data, seq_file)
    with pytest.raises(BenchmarkError, match=r"downtown_walking_00.pkl: missing field 'cam_poses'"):
        build_3dpw_index(root, **kw)


def test_index_bad_files(pw3d_index: BenchmarkIndex, tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="prepare_data"):
        BenchmarkIndex.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BenchmarkError, match="bad.npz: unreadable index"):
        BenchmarkIndex.load(bad)
    arrays = dict(pw3d_index.arrays)
    del arrays["transl"]
    partial = BenchmarkIndex("3dpw", "test", "all", arrays)
    with pytest.raises(BenchmarkError, match="misses field 'transl'"):
        partial.save(tmp_path / "partial.npz")
    assert not (tmp_path / "partial.npz").exists()
    arrays = dict(pw3d_index.arrays, betas=np.full((len(pw3d_index), 10), np.nan, dtype=np.float32))
    with pytest.raises(BenchmarkError, match="'betas' contains NaN"):
        BenchmarkIndex("3dpw", "test", "all", arrays).validate()


@pytest.fixture(scope="module")
def emdb_index(emdb) -> BenchmarkIndex:
    return build_emdb_index(emdb["root"], body_model="free")


def test_emdb_rows_and_ground_truth(emdb_index: BenchmarkIndex, emdb, free_bodies) -> None:
    a = emdb_index.arrays
    assert [(str(s), int(f)) for s, f in zip(a["sequence"], a["frame"])] == emdb["expected"]
    assert a["person"].tolist() == [0] * len(emdb_index)
    for i in range(len(emdb_index)):
        name, t = str(a["sequence"][i]), int(a["frame"][i])
        truth = emdb["truth"][name]
        assert a["image"][i] == f"{name.split('_', 1)[0]}/{name.split('_', 1)[1]}/images/{t:05d}.jpg"
        assert a["gender"][i] == truth["gender"]
        world = _posed(
            free_bodies,
            truth["gender"],
            truth["orient"][t],
            truth["pose"][t],
            truth["betas"],
            truth["trans"][t],
        )
        ext = truth["ext"][t]
        got = _posed(
            free_bodies,
            truth["gender"],
            a["global_orient"][i],
            a["body_pose"][i],
            a["betas"][i],
            a["transl"][i],
        )
        np.testing.assert_allclose(got, world @ ext[:3, :3].T + ext[:3, 3], atol=2e-5)
        box = truth["boxes"][t]
        np.testing.assert_allclose(a["bbox_center"][i], (box[:2] + box[2:]) / 2, rtol=1e-5)
        assert a["bbox_size"][i] == pytest.approx(1.2 * (box[2:] - box[:2]).max(), rel=1e-5)


def test_emdb_splits_and_bad_input(emdb, tmp_path: Path) -> None:
    every = build_emdb_index(emdb["root"], split="all", body_model="free")
    assert "neutral" in set(every.arrays["gender"].tolist()) and len(every) == len(emdb["expected"]) + 2
    root = tmp_path / "emdb"
    shutil.copytree(emdb["root"], root)
    path = root / "P1" / "14_dance" / "P1_14_dance_data.pkl"
    data = pickle.loads(path.read_bytes())
    del data["camera"]["extrinsics"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(BenchmarkError, match=r"P1_14_dance_data.pkl: missing field 'camera.extrinsics'"):
        build_emdb_index(root, body_model="free")
    with pytest.raises(MissingFileError, match="no EMDB sequences"):
        build_emdb_index(tmp_path, body_model="free")
