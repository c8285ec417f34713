"""Image-dataset readers: the sample contract, every npz key variant, errors, decoding, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_images import BACKGROUND, CAM_INT, HEIGHT, WIDTH, write_npz_dataset

from mega.body.camera import project_points
from mega.data.crop import ImageDataError, MissingImageError, crop_intrinsics, denormalise_image
from mega.data.images.dataset import ImageNpzDataset

CROP = 64
CONTRACT = {
    "img": (3, CROP, CROP),
    "kp2d_coco": (17, 3),
    "kp2d_smpl": (24, 3),
    "global_orient": (3,),
    "body_pose": (23, 3),
    "betas": (10,),
    "has_smpl": (),
    "joints_3d": (24, 4),
    "transl": (3,),
    "has_transl": (),
    "cam_int": (3, 3),
    "bbox_center": (2,),
    "bbox_size": (),
    "img_size": (2,),
    "index": (),
}


def crop_px_error(sample: dict, points: torch.Tensor, kp: torch.Tensor) -> float:
    """Max distance in crop pixels between projected camera-frame points (J, 3) and keypoints (J, 3)."""
    uv = project_points(points[None].double(), sample["cam_int"][None].double())[0]
    norm = (uv - sample["bbox_center"].double()) * 2 / sample["bbox_size"].double()
    return float((norm - kp[:, :2].double()).abs().max()) * sample["img"].shape[-1] / 2


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    people = {
        v: write_npz_dataset(root, 4, i, v) for i, v in enumerate(["ours", "spin", "bedlam", "mega", "hmr2"])
    }
    return root, people


def test_sample_contract_and_exact_ground_truth(root):
    folder, people = root
    ds = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP)
    assert len(ds) == 4
    s = ds[2]
    assert set(s) == set(CONTRACT) | {"imgname", "gender"}
    for key, shape in CONTRACT.items():
        assert tuple(s[key].shape) == shape, key
        assert s[key].dtype == (torch.int64 if key == "index" else torch.float32), key
    assert s["imgname"] == "images/ours_002.png" and s["gender"] == "neutral" and int(s["index"]) == 2
    p = people["ours"]
    torch.testing.assert_close(
        s["global_orient"].double(), torch.as_tensor(p["pose"][2, :3]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(s["transl"].double(), torch.as_tensor(p["transl"][2]), atol=1e-6, rtol=0)
    assert s["has_smpl"] == 1 and s["has_transl"] == 1
    torch.testing.assert_close(s["img_size"], torch.tensor([WIDTH, HEIGHT], dtype=torch.float32))
    torch.testing.assert_close(s["cam_int"].double(), torch.as_tensor(CAM_INT))
    assert crop_px_error(s, s["joints_3d"][:, :3], s["kp2d_smpl"]) < 1e-3
    # Keypoints in [-1, 1] and every dot of the picture under its keypoint (pixels and labels agree).
    img = denormalise_image(s["img"])
    assert (s["kp2d_smpl"][:, 2] == 1).all() and s["kp2d_smpl"][:, :2].abs().max() <= 1
    px = ((s["kp2d_smpl"][:, :2] + 1) * CROP / 2).long().clamp(0, CROP - 1)
    assert (img[px[:, 1], px[:, 0]].astype(int).mean(-1) > BACKGROUND + 60).all()
    # The crop as a pinhole camera: projecting with K_crop gives crop pixels directly.
    k_crop = crop_intrinsics(
        s["cam_int"][None].double(), s["bbox_center"][None].double(), s["bbox_size"][None].double(), CROP
    )
    uv = project_points(s["joints_3d"][None, :, :3].double(), k_crop)[0]
    torch.testing.assert_close(uv, (s["kp2d_smpl"][:, :2].double() + 1) * CROP / 2, atol=1e-3, rtol=0)


def test_spin_variant_maps_part_to_coco_and_has_smpl_zero(root):
    folder, people = root
    ds = ImageNpzDataset(folder / "spin.npz", folder, crop_size=CROP, joints_3d_order="spin")
    with_smpl, without = ds[0], ds[1]
    assert with_smpl["has_smpl"] == 1 and without["has_smpl"] == 0
    assert without["global_orient"].abs().sum() == 0 and without["kp2d_coco"][:, 2].sum() == 17
    assert with_smpl["joints_3d"][:, 3].sum() == 0  # SPIN-24 3D joints are not SMPL joints
    assert with_smpl["kp2d_smpl"][:, 2].sum() == 0
    # No cam_int in the file: CLIFF's default camera (which the fixture used to project).
    f = float(np.hypot(WIDTH, HEIGHT))
    torch.testing.assert_close(
        with_smpl["cam_int"].double(),
        torch.tensor([[f, 0, WIDTH / 2], [0, f, HEIGHT / 2], [0, 0, 1.0]], dtype=torch.float64),
        atol=1e-3,
        rtol=0,
    )
    p = people["spin"]
    uv = torch.as_tensor(p["j2d_coco"][1, :, :2])
    norm = (uv - without["bbox_center"].double()) * 2 / without["bbox_size"]
    torch.testing.assert_close(norm.float(), without["kp2d_coco"][:, :2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["bedlam", "mega", "hmr2"])
def test_key_variants(root, variant):
    folder, people = root
    ds = ImageNpzDataset(folder / f"{variant}.npz", folder, crop_size=CROP, scale_in_pixels=variant == "hmr2")
    s = ds[1]
    p = people[variant]
    want = p["pose"][1].copy()
    if variant == "mega":
        want[66:] = 0  # MEGA stores 21 body joints; the hands are zero
    got = torch.cat([s["global_orient"], s["body_pose"].reshape(-1)]).double()
    torch.testing.assert_close(got, torch.as_tensor(want), atol=1e-6, rtol=0)
    torch.testing.assert_close(s["betas"].double(), torch.as_tensor(p["betas"][1]), atol=1e-6, rtol=0)
    assert s["has_smpl"] == 1
    assert s["gender"] == {"bedlam": "female", "mega": "female", "hmr2": "neutral"}[variant]
    assert s["has_transl"] == (1 if variant == "bedlam" else 0)
    kp = s["kp2d_smpl"] if variant == "mega" else s["kp2d_coco"]
    ref = p["j2d_smpl"] if variant == "mega" else p["j2d_coco"]
    norm = (torch.as_tensor(ref[1, :, :2]) - s["bbox_center"].double()) * 2 / s["bbox_size"]
    torch.testing.assert_close(norm.float(), kp[:, :2], atol=1e-5, rtol=0)


def test_errors_name_file_and_key(root, tmp_path):
    folder, _ = root
    data = dict(np.load(folder / "ours.npz"))
    np.savez(tmp_path / "bad_shape.npz", **{**data, "j2d_smpl": data["j2d_smpl"][:, :20]})
    with pytest.raises(ImageDataError, match=r"bad_shape\.npz.*'j2d_smpl'"):
        ImageNpzDataset(tmp_path / "bad_shape.npz", folder)
    np.savez(tmp_path / "short_pose.npz", **{**data, "pose": data["pose"][:, :60]})
    with pytest.raises(ImageDataError, match=r"short_pose\.npz.*'pose'"):
        ImageNpzDataset(tmp_path / "short_pose.npz", folder)
    smplx = np.concatenate([data["pose"][:, :66], np.ones((len(data["pose"]), 99))], 1)  # SMPL-X 165
    np.savez(tmp_path / "smplx.npz", **{**data, "pose": smplx})
    s = ImageNpzDataset(tmp_path / "smplx.npz", folder)[0]
    torch.testing.assert_close(
        s["body_pose"][:21].reshape(-1).double(), torch.as_tensor(data["pose"][0, 3:66]), atol=1e-6, rtol=0
    )
    assert s["body_pose"][21:].abs().sum() == 0
    raw = (folder / "ours.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageDataError, match=r"cut\.npz"):
        ImageNpzDataset(tmp_path / "cut.npz", folder)
    with pytest.raises(MissingImageError, match="nothere.npz"):
        ImageNpzDataset(tmp_path / "nothere.npz", folder)
    ds = ImageNpzDataset(folder / "ours.npz", tmp_path)  # wrong image root
    with pytest.raises(MissingImageError, match="ours_000.png"):
        ds[0]
    assert issubclass(MissingImageError, FileNotFoundError)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    (img_dir / "ours_000.png").write_bytes((folder / "images/ours_000.png").read_bytes()[:100])
    with pytest.raises(ImageDataError, match="ours_000.png"):
        ds[0]


# ------------------------------------------------------------------------------ shards, mix, configs


def test_webdataset_shards_stream_people(tmp_path):
    from fixtures_images import write_shards

    from mega.data.images.shards import ImageShardDataset

    paths, p = write_shards(tmp_path / "tars", n=5, per_shard=3)
    pattern = str(tmp_path / "tars" / "{000000..000001}.tar")
    ds = ImageShardDataset(pattern, crop_size=CROP, shuffle_buffer=0, shuffle_shards=False)
    samples = list(ds)
    assert [s["imgname"] for s in samples] == [f"sample{i:04d}" for i in range(5)]
    for i, s in enumerate(samples):
        assert set(s) == set(CONTRACT) | {"imgname", "gender"}
        assert s["has_smpl"] == 1 and s["has_transl"] == 0 and s["joints_3d"][:, 3].sum() == 0
        torch.testing.assert_close(
            s["global_orient"].double(), torch.as_tensor(p["pose"][i, :3]), atol=1e-6, rtol=0
        )
        norm = (torch.as_tensor(p["j2d_coco"][i, :, :2]) - s["bbox_center"].double()) * 2 / s["bbox_size"]
        torch.testing.assert_close(norm.float(), s["kp2d_coco"][:, :2], atol=1e-5, rtol=0)
    # Shuffled + augmented: a pure function of (seed, epoch); each person once per epoch, also over workers.
    aug = ImageShardDataset(pattern, crop_size=CROP, augment={}, shuffle_buffer=4, seed=3)
    first, again = list(aug), list(aug)
    assert [s["imgname"] for s in first] == [s["imgname"] for s in again]
    torch.testing.assert_close(first[0]["img"], again[0]["img"])
    assert sorted(s["imgname"] for s in first) == [f"sample{i:04d}" for i in range(5)]
    loader = torch.utils.data.DataLoader(aug, batch_size=2, num_workers=2)
    names = [n for batch in loader for n in batch["imgname"]]
    assert sorted(names) == [f"sample{i:04d}" for i in range(5)]
    # A sample without its labels: one error naming the shard and the key.
    import io
    import tarfile

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        data = paths[0].read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as src:
            member = src.getmember("sample0000.jpg")
            tar.addfile(member, src.extractfile(member))
    with pytest.raises(ImageDataError, match=r"bad\.tar.*sample0000"):
        list(ImageShardDataset(str(bad), crop_size=CROP))


def test_mixture_follows_named_ratios(root):
    from mega.data.images.mixed import MixedImageDataset

    folder, _ = root
    a = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP, augment={})
    b = ImageNpzDataset(folder / "spin.npz", folder, crop_size=CROP, augment={})
    mix = MixedImageDataset({"a": a, "b": b}, {"a": 3.0, "b": 1.0}, length=400, seed=0)
    counts = mix.counts()
    assert sum(counts.values()) == 400 and abs(counts["a"] - 300) < 40
    part, index, passes = mix.plan(0)
    first_a = index[part == 0][:4]
    assert sorted(first_a.tolist()) == [0, 1, 2, 3]  # no repeat before a part is used up
    s = mix[int(np.flatnonzero(part == 1)[0])]
    assert s["imgname"].startswith("images/spin_")
    again = mix[int(np.flatnonzero(part == 1)[0])]
    torch.testing.assert_close(s["img"], again["img"])
    mix.set_epoch(1)
    assert not np.array_equal(mix.plan(1)[0], part)
    with pytest.raises(KeyError, match="ratios"):
        MixedImageDataset({"a": a}, {"a": 1.0, "c": 1.0})


def _config(name: str):
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).parent.parent / "configs" / "images" / f"{name}.yaml")
    cfg.pop("defaults", None)
    return cfg


IMAGE_CONFIGS = ["coco", "mpii", "h36m", "mpi_inf_3dhp", "bedlam_images", "synthetic_images", "mix", "shards"]


@pytest.mark.parametrize("name", IMAGE_CONFIGS)
def test_every_image_config_builds(root, tmp_path, name):
    """Each configs/images entry: registered under its name, keys = constructor kwargs, builds."""
    import shutil

    from fixtures_images import write_shards

    from mega.data.images import IMAGE_DATASETS, build_image_dataset

    folder, _ = root
    cfg = _config(name)
    assert cfg.name == name
    if name == "mix":
        cfg.parts = {part: _config(part) for part in ("coco", "h36m", "mpi_inf_3dhp", "mpii")}
        for part in cfg.parts:
            cfg.parts[part].splits = {"train": str(folder / "spin.npz")}
            cfg.parts[part].img_root = str(folder)
        cfg.length = 8
    elif name == "synthetic_images":
        shutil.copy(folder / "ours.npz", tmp_path / "train.npz")
        shutil.copytree(folder / "images", tmp_path / "images")
        cfg.root = str(tmp_path)
    elif name == "shards":
        write_shards(tmp_path, n=2, per_shard=2)
        cfg.splits = {"train": str(tmp_path / "000000.tar")}
    else:
        cfg.splits = {
            "train": [str(folder / "bedlam.npz")] * 2 if name == "bedlam_images" else str(folder / "ours.npz")
        }
        cfg.img_root = str(folder)
        if name == "bedlam_images":
            cfg.pelvis_model = "free"  # SMPL files are not available in tests
    ds = build_image_dataset(cfg, "train", crop_size=CROP)
    assert name in IMAGE_DATASETS
    s = next(iter(ds)) if name == "shards" else ds[len(ds) - 1]
    assert set(s) == set(CONTRACT) | {"imgname", "gender"} and s["img"].shape == (3, CROP, CROP)
    if name == "bedlam_images":
        assert len(ds) == 8 and int(s["index"]) == 7
    if name not in ("shards", "synthetic_images"):  # synthetic_images generates a missing split
        with pytest.raises(KeyError, match="no 'test' split"):
            build_image_dataset(cfg if name != "mix" else cfg.parts.coco, "test")


def test_builder_refuses_motion_data_and_skips_eval_augmentation(root):
    from mega.data.images import build_image_dataset

    folder, _ = root
    with pytest.raises(KeyError, match="motion dataset"):
        build_image_dataset({"name": "synthetic_motion"}, "train")
    cfg = {
        "name": "coco",
        "splits": {"val": str(folder / "ours.npz")},
        "img_root": str(folder),
        "augment": {},
    }
    assert build_image_dataset(cfg, "val").augmenter is None
    cfg["splits"]["train"] = cfg["splits"]["val"]
    assert build_image_dataset(cfg, "train").augmenter is not None


def test_reduced_jpeg_decode_gives_the_same_crop(tmp_path):
    import io

    from PIL import Image

    from mega.data.crop import crop_matrix, decode_image, reduction_for, warp_crop

    yy, xx = np.mgrid[0:640, 0:800].astype(np.float32)
    img = np.stack(
        [128 + 90 * np.sin(xx / 37), 128 + 90 * np.cos(yy / 23), 128 + 60 * np.sin((xx + yy) / 50)], -1
    )
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    full, size_full, k1 = decode_image(data, reduce=1)
    small, size_small, k4 = decode_image(data, reduce=4)
    assert (
        (size_full, k1) == ((800, 640), 1)
        and (size_small, k4) == ((800, 640), 4)
        and small.shape == (160, 200, 3)
    )
    assert reduction_for(300.0, 64) == 4 and reduction_for(100.0, 64) == 1
    m = crop_matrix(np.array([420.0, 300.0]), 300.0, 64)
    a, b = warp_crop(full, m, 64, 1).astype(float), warp_crop(small, m, 64, 4).astype(float)
    assert np.abs(a - b).mean() < 4.0  # same content, same place (a misplaced crop differs by tens)
    shifted = warp_crop(full, crop_matrix(np.array([430.0, 300.0]), 300.0, 64), 64, 1).astype(float)
    assert np.abs(a - shifted).mean() > 3 * np.abs(a - b).mean()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageDataError, match=r"cut\.jpg.*truncated"):
        decode_image(path)


def test_box_conventions_and_44_joint_coco_fallback():
    from mega.data.crop import box_size
    from mega.data.images.shards import coco_from_44

    np.testing.assert_allclose(box_size(np.array([1.0, 0.5])), [200.0, 100.0])  # SPIN: side / 200
    np.testing.assert_allclose(box_size(np.array([[1.0, 2.0]])), [400.0])  # (w, h): the larger side
    np.testing.assert_allclose(box_size(np.array([[150.0, 300.0]]), scale_in_pixels=True), [300.0])
    # HMR 2.0 for a 256x192 ViT: expand to w/h = 0.75 first (a square box grows to 4/3 of its side).
    np.testing.assert_allclose(box_size(np.array([1.0]), aspect=0.75), [200.0 / 0.75])
    np.testing.assert_allclose(box_size(np.array([[0.3, 1.0]]), aspect=0.75), [200.0])
    kp = np.zeros((44, 3))
    kp[2] = [10, 20, 1]  # OpenPose right shoulder -> COCO 6
    kp[25 + 8] = [11, 21, 1]  # SPIN right shoulder (ignored: OpenPose has it)
    kp[25 + 0] = [30, 40, 1]  # SPIN right ankle -> COCO 16 (OpenPose slot 11 empty)
    coco = coco_from_44(kp)
    np.testing.assert_allclose(coco[6], [10, 20, 1])
    np.testing.assert_allclose(coco[16], [30, 40, 1])
    assert coco[:, 2].sum() == 2
