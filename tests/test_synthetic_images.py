"""The embedded image benchmark (mega.data.images.synthetic) at a tiny size, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mega.body import load_body_model
from mega.body.parts import HAIR, REGIONS, SHOES, SKIN, TOP, TROUSERS, garment_labels, region_labels
from mega.data.benchmarks import BenchmarkDataset, build_index
from mega.data.images.synthetic import (
    SceneOptions,
    SceneRenderer,
    camera_rotation,
    ensure_synthetic_images,
)
from mega.viz import project_vertices

MOTION = {"root": None, "seed": 0, "sequences": {"train": 4, "val": 2, "test": 2}}
SIZES = {"train": 20, "val": 6, "test": 6}


@pytest.fixture(scope="module")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("synthetic_images")
    options = {
        "sizes": SIZES,
        "motion": {**MOTION, "root": str(tmp / "motion")},
        "progress": False,
        "width": 96,
        "height": 80,
        "box_px": [30.0, 70.0],
        "occluded": 0.5,
        "truncated": 0.3,
    }
    torch.set_num_threads(1)
    root = ensure_synthetic_images(tmp / "images_set", **options)
    return root, options


def load(root: Path, split: str) -> dict[str, np.ndarray]:
    with np.load(root / f"{split}.npz") as f:
        return {k: f[k] for k in f.files}


def test_files_keys_and_shapes(image_set) -> None:
    root, _ = image_set
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["sizes"] == SIZES and manifest["scene"]["width"] == 96
    for split, n in SIZES.items():
        a = load(root, split)
        shapes = {
            "pose": (n, 72),
            "shape": (n, 10),
            "trans": (n, 3),
            "cam_int": (n, 3, 3),
            "S": (n, 24, 4),
            "j2d_smpl": (n, 24, 3),
            "j2d_coco": (n, 17, 3),
            "center": (n, 2),
            "scale": (n,),
            "has_smpl": (n,),
            "gender": (n,),
            "img_size": (n, 2),
            "imgname": (n,),
            "sequence": (n,),
            "frame": (n,),
            "truncation": (n,),
            "occlusion": (n,),
        }
        assert {k: a[k].shape for k in shapes} == shapes
        assert (a["img_size"] == [96, 80]).all()
        for name in a["imgname"]:
            assert (root / name).is_file() and name.startswith(f"images/{split}/")
        # every visible keypoint is inside the frame; every box has a positive size
        vis = a["j2d_coco"][..., 2] > 0
        xy = a["j2d_coco"][..., :2][vis]
        assert ((xy >= 0) & (xy < [96, 80])).all()
        assert (a["scale"] > 0).all()
    # test poses come from held-out motion sequences
    assert not set(load(root, "test")["sequence"]) & set(load(root, "train")["sequence"])
    train = load(root, "train")
    assert (train["occlusion"] > 0).any() and (train["truncation"] > 0).any()


def test_labels_reproject_onto_keypoints(image_set) -> None:
    """Posing the labelled body in the camera frame reproduces the stored 2D and 3D keypoints."""
    root, _ = image_set
    a = load(root, "train")
    body = load_body_model("free")
    pose = torch.as_tensor(a["pose"])
    with torch.no_grad():
        out = body(pose[:, :3], pose[:, 3:], torch.as_tensor(a["shape"]), torch.as_tensor(a["trans"]))
    K = torch.as_tensor(a["cam_int"])  # noqa: N806
    err = (project_vertices(out.joints, K) - torch.as_tensor(a["j2d_smpl"][..., :2])).norm(dim=-1)
    assert float(err.max()) < 1e-2
    coco = torch.einsum("kv,bvc->bkc", body.keypoint_regressor("coco17"), out.vertices)
    err = (project_vertices(coco, K) - torch.as_tensor(a["j2d_coco"][..., :2])).norm(dim=-1)
    assert float(err.max()) < 1e-2
    torch.testing.assert_close(out.joints, torch.as_tensor(a["S"][..., :3]), atol=1e-4, rtol=0)
    assert (out.joints[..., 2] > 0.3).all()  # in front of the camera


def test_deterministic_and_images_show_the_body(image_set, tmp_path: Path) -> None:
    root, options = image_set
    again = ensure_synthetic_images(tmp_path / "again", **{**options, "sizes": {"test": SIZES["test"]}})
    a, b = load(root, "test"), load(again, "test")
    for key in ("pose", "shape", "trans", "j2d_coco", "center"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (root / a["imgname"][0]).read_bytes() == (again / b["imgname"][0]).read_bytes()
    # calling again with the same options returns at once; other options are refused
    assert ensure_synthetic_images(root, **options) == root
    with pytest.raises(ValueError, match="holds synthetic images made with"):
        ensure_synthetic_images(root, **{**options, "seed": 1})


def test_benchmark_index_scores_zero_for_the_truth(image_set) -> None:
    root, options = image_set
    index = build_index("synthetic_images", root=root, split="test", generate=options)
    assert len(index) == SIZES["test"] and index.dataset == "synthetic_images"
    item = BenchmarkDataset(index)[0]
    assert item["image"].startswith("images/test/") and item["gender"] == "neutral"
    np.testing.assert_allclose(index.arrays["bbox_size"], load(root, "test")["scale"] * 200, rtol=1e-6)


def test_reader_crops_put_keypoints_on_projected_joints(image_set) -> None:
    """The image reader of the same format: crop keypoints = cropped projections (< 1 px)."""
    image_dataset = pytest.importorskip("mega.data.images.dataset")
    root, _ = image_set
    ds = image_dataset.ImageNpzDataset(root / "train.npz", root, crop_size=64, name="synthetic")
    a = load(root, "train")
    for i in range(3):
        s = ds[i]
        assert s["img"].shape == (3, 64, 64)
        px_full = torch.as_tensor(a["j2d_smpl"][i, :, :2], dtype=torch.float32)
        c, side = torch.as_tensor(a["center"][i]), float(ds.bbox_size[i])
        expected = 2 * (px_full - c) / side
        got = torch.as_tensor(s["kp2d_smpl"][:, :2])
        assert float((got - expected).abs().max() * 64 / 2) < 1.0


def test_camera_rotation_conventions() -> None:
    zero = torch.zeros(1)
    up = torch.tensor([0.0, 1.0, 0.0])
    front = torch.tensor([0.0, 0.0, 1.0])  # the body faces +z
    r = camera_rotation(zero, zero, zero)[0]
    torch.testing.assert_close(r @ up, torch.tensor([0.0, -1.0, 0.0]))  # world up = image up
    torch.testing.assert_close(r @ front, torch.tensor([0.0, 0.0, -1.0]))  # facing the camera
    r = camera_rotation(zero, torch.tensor([0.5]), zero)[0]
    assert (r @ up)[2] < 0  # camera above: the head is nearer than the feet


def test_clothing_regions_are_symmetric_and_complete() -> None:
    body = load_body_model("free")
    rest_joints = body.J_regressor @ body.v_template
    labels = garment_labels(body.smpl.lbs_weights, body.v_template, rest_joints)
    assert labels.shape == (6, body.num_vertices)
    # the mirror image of a vertex (x -> -x) has the same region
    v = body.v_template
    mirror = torch.cdist(v * torch.tensor([-1.0, 1, 1]), v).argmin(1)
    close = torch.cdist(v * torch.tensor([-1.0, 1, 1]), v).amin(1) < 2e-3
    assert close.float().mean() > 0.9
    assert (labels[:, close] == labels[:, mirror[close]]).float().mean() > 0.99
    full = region_labels(body.smpl.lbs_weights, v, rest_joints, sleeves="long", legs="long")
    assert set(full.unique().tolist()) == set(range(len(REGIONS)))
    bare = region_labels(body.smpl.lbs_weights, v, rest_joints, sleeves="none", legs="shorts")
    assert (bare == SKIN).sum() > (full == SKIN).sum()
    assert (full == TOP).sum() > (bare == TOP).sum() and (full == TROUSERS).sum() > (bare == TROUSERS).sum()
    assert (full == HAIR).sum() > 10 and (full == SHOES).sum() > 10


def test_renderer_batch_is_valid_without_motion_files() -> None:
    opts = SceneOptions(width=64, height=48, box_px=(20.0, 40.0), occluded=1.0, truncated=0.0)
    renderer = SceneRenderer(opts)
    g = torch.Generator().manual_seed(0)
    out = renderer.render(g, torch.zeros(4, 3), torch.zeros(4, 23, 3))
    assert out["images"].shape == (4, 48, 64, 3) and out["images"].dtype == np.uint8
    assert (out["truncation"] == 0).all()  # not truncated: every vertex inside the frame
    assert (out["occlusion"] > 0).any()
    side = out["scale"] * 200 / opts.bbox_margin
    assert ((side > 15) & (side < 50)).all()  # the person's size follows box_px (weak perspective)


def test_procedural_shapes_match_full_evaluation_and_backgrounds_are_valid() -> None:
    """Shape masks evaluated on bounding squares equal the formula evaluated on every pixel."""
    import math

    from mega.data.images.procedural import backgrounds, pixel_grid, shape_masks

    g = torch.Generator().manual_seed(0)
    centers = torch.rand(40, 2, generator=g) * 90 - 10
    sizes = torch.rand(40, 2, generator=g) * 60
    fast = shape_masks(torch.Generator().manual_seed(1), centers, sizes, 50, 70)
    ref_gen = torch.Generator().manual_seed(1)
    angle = torch.rand(40, generator=ref_gen) * math.pi
    ellipse = torch.rand(40, generator=ref_gen) < 0.5
    x, y = pixel_grid(50, 70)
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    dx, dy = x - centers[:, 0, None, None], y - centers[:, 1, None, None]
    u = (c * dx + s * dy) / (sizes[:, 0, None, None] / 2).clamp_min(0.5)
    v = (-s * dx + c * dy) / (sizes[:, 1, None, None] / 2).clamp_min(0.5)
    ref = torch.where(ellipse[:, None, None], u * u + v * v <= 1, (u.abs() <= 1) & (v.abs() <= 1))
    assert torch.equal(fast, ref) and ref.any()
    bg = backgrounds(torch.Generator().manual_seed(2), 5, 40, 30)
    assert bg.shape == (5, 40, 30, 3) and bg.min() >= 0 and bg.max() <= 1
    assert bg.flatten(1).std(1).min() > 0.01  # not flat


def test_ensure_accepts_a_config(image_set) -> None:
    from omegaconf import OmegaConf

    root, options = image_set
    cfg = OmegaConf.create(
        {"name": "synthetic_images", "root": str(root), "crop_size": 64, "generate": options}
    )
    assert ensure_synthetic_images(cfg) == root


def test_facing_limits_the_camera_yaw_about_the_person() -> None:
    """facing_deg = a: the body's front (left x up, in the camera frame) points within a of the camera."""
    from mega.body.rotations import axis_angle_to_matrix
    from mega.data.images.synthetic import heading

    g = torch.Generator().manual_seed(1)
    n = 64
    world = torch.zeros(n, 3)
    world[:, 1] = torch.rand(n, generator=g) * 6.28 - 3.14  # any heading in the world
    world[n // 2 :, 0] = 1.4  # half of them lying / bent forward: heading from the left-right axis still
    torch.testing.assert_close(heading(world[: n // 2]), world[: n // 2, 1], atol=1e-5, rtol=0)
    opts = SceneOptions(
        width=64,
        height=48,
        box_px=(20.0, 40.0),
        occluded=0.0,
        facing_deg=30.0,
        roll_deg=0.0,
        elevation_deg=(0.0, 0.0),
    )
    out = SceneRenderer(opts).render(torch.Generator().manual_seed(0), world, torch.zeros(n, 23, 3))
    left = axis_angle_to_matrix(torch.as_tensor(out["pose"][:, :3]).float())[:, :, 0]
    front = torch.cross(left, torch.tensor([0.0, -1.0, 0.0]).expand(n, 3), dim=-1)  # camera up = -y
    to_camera = torch.rad2deg(torch.atan2(front[:, 0], -front[:, 2]))  # 0 = facing the camera (-z)
    assert to_camera.abs().max() <= 30.0 + 1e-3
    assert to_camera.abs().max() > 20.0  # the range is used, not collapsed to frontal
    everywhere = SceneRenderer(SceneOptions(width=64, height=48, box_px=(20.0, 40.0), occluded=0.0))
    out = everywhere.render(torch.Generator().manual_seed(0), world, torch.zeros(n, 23, 3))
    left = axis_angle_to_matrix(torch.as_tensor(out["pose"][:, :3]).float())[:, :, 0]
    front = torch.cross(left, torch.tensor([0.0, -1.0, 0.0]).expand(n, 3), dim=-1)
    assert torch.rad2deg(torch.atan2(front[:, 0], -front[:, 2])).abs().max() > 150.0  # default: all-round


def test_sets_written_before_an_option_existed_still_match(image_set) -> None:
    root, options = image_set
    manifest = json.loads((root / "MANIFEST.json").read_text())
    manifest["scene"].pop("facing_deg")  # as written by an older generator
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    assert ensure_synthetic_images(root, **options) == root
    with pytest.raises(ValueError, match="made with") as caught:
        ensure_synthetic_images(root, **{**options, "facing_deg": 45.0})
    from mega.errors import is_user_error

    assert is_user_error(caught.value)  # one readable line from the scripts
