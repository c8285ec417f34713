"""Augmentation: flips and rotations are exact camera transforms; randomness is seeded per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_images import BACKGROUND, write_npz_dataset

from mega.body.camera import project_points
from mega.body.joints import SMPL_FLIP
from mega.body.rotations import axis_angle_to_matrix
from mega.data.crop import denormalise_image
from mega.data.images.augment import (
    MIRROR,
    Augmenter,
    AugmentParams,
    Geometry,
    augment_geometry,
    augment_pixels,
    flip_pose,
    matrix_to_rotvec,
    rotvec_to_matrix,
    sample_rng,
)
from mega.data.images.dataset import ImageNpzDataset

CROP = 64
STRONG = dict(scale_factor=0.3, trans_factor=0.1, rot_factor=40.0, rot_prob=1.0, flip_prob=0.5,
              colour_factor=0.3, occlusion_prob=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    write_npz_dataset(root, 3, 7, "ours")
    return root


def geometry(seed: int = 0) -> Geometry:
    rng = np.random.default_rng(seed)
    joints = np.concatenate([rng.normal(size=(24, 3)) + [0, 0, 5], np.ones((24, 1))], 1)
    return Geometry(
        kp_coco=np.concatenate([rng.uniform(0, 200, (17, 2)), np.ones((17, 1))], 1),
        kp_smpl=np.concatenate([rng.uniform(0, 200, (24, 2)), np.ones((24, 1))], 1),
        pose=rng.normal(size=(24, 3)) * 0.5,
        joints_3d=joints,
        transl=rng.normal(size=3),
        pelvis=joints[0, :3].copy(),
        bbox_center=np.array([90.0, 70.0]),
        bbox_size=80.0,
        cam_int=np.array([[210.0, 0, 100], [0, 230.0, 80], [0, 0, 1]]),  # fx != fy on purpose
    )


def test_flip_twice_is_identity():
    pose = np.random.default_rng(0).normal(size=(24, 3))
    np.testing.assert_allclose(flip_pose(flip_pose(pose)), pose)
    geo = geometry()
    once, g1 = augment_geometry(geo, AugmentParams(flip=True))
    twice, g2 = augment_geometry(once, AugmentParams(flip=True))
    np.testing.assert_allclose(g2 @ g1, np.eye(3), atol=1e-12)
    for field in ("kp_coco", "kp_smpl", "pose", "joints_3d", "transl", "pelvis", "bbox_center"):
        np.testing.assert_allclose(getattr(twice, field), getattr(geo, field), atol=1e-9, err_msg=field)
    assert not np.allclose(once.kp_smpl, geo.kp_smpl)


def test_rotation_then_inverse_is_identity():
    geo = geometry(1)
    there, _ = augment_geometry(geo, AugmentParams(rotation=37.0))
    back, _ = augment_geometry(there, AugmentParams(rotation=-37.0))
    for field in ("kp_smpl", "pose", "joints_3d", "transl", "bbox_center"):
        np.testing.assert_allclose(getattr(back, field), getattr(geo, field), atol=1e-9, err_msg=field)


def test_flipped_pose_joints_are_mirrored_joints_swapped(free_body):
    """Body joints of the flipped parameters = mirror image of the joints with left and right swapped."""
    g = torch.Generator().manual_seed(3)
    for i in range(4):
        pose = (torch.randn(24, 3, generator=g) * 0.4).double().numpy()
        # The free body's shape space is not exactly symmetric (rest joints of betas ~ N(0, 1) mirror to
        # ~0.2 mm); its mean shape is (4e-5 m), so the tight check uses betas = 0 half of the time.
        betas = torch.randn(10, generator=g) * (i % 2)
        tol = 1e-4 if i % 2 == 0 else 1e-3
        transl = np.array([0.3, -0.2, 4.0]) + i * 0.1
        out = free_body(global_orient=torch.as_tensor(pose[:1]).float(), body_pose=torch.as_tensor(pose[1:])[None].float(),
                        betas=betas[None], transl=torch.as_tensor(transl)[None].float())  # fmt: skip
        joints = out.joints[0].double().numpy()
        geo = Geometry(np.zeros((17, 3)), np.zeros((24, 3)), pose, np.concatenate([joints, np.ones((24, 1))], 1),
                       transl, joints[0].copy(), np.zeros(2), 1.0, np.eye(3))  # fmt: skip
        flipped, _ = augment_geometry(geo, AugmentParams(flip=True))
        out_f = free_body(global_orient=torch.as_tensor(flipped.pose[:1]).float(),
                          body_pose=torch.as_tensor(flipped.pose[1:])[None].float(), betas=betas[None],
                          transl=torch.as_tensor(flipped.transl)[None].float())  # fmt: skip
        mirrored = (joints @ MIRROR.T)[SMPL_FLIP]
        np.testing.assert_allclose(out_f.joints[0].double().numpy(), mirrored, atol=tol)
        np.testing.assert_allclose(flipped.joints_3d[:, :3], mirrored, atol=1e-12)


def crop_px(sample: dict, points: torch.Tensor) -> torch.Tensor:
    uv = project_points(points[None].double(), sample["cam_int"][None].double())[0]
    return (uv - sample["bbox_center"].double()) / sample["bbox_size"].double() * CROP + CROP / 2


def test_projected_3d_stays_on_2d_after_any_augmentation(folder, free_body):
    ds = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP, augment=STRONG, seed=5)
    worst_joints = worst_body = 0.0
    flips = rotations = 0
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            params = Augmenter(**STRONG).sample(sample_rng(5, 0, epoch, i))
            flips, rotations = flips + params.flip, rotations + (params.rotation != 0)
            kp = (s["kp2d_smpl"][:, :2].double() + 1) * CROP / 2
            worst_joints = max(
                worst_joints, float((crop_px(s, s["joints_3d"][:, :3]) - kp).norm(dim=-1).max())
            )
            out = free_body(global_orient=s["global_orient"][None], body_pose=s["body_pose"][None],
                            betas=s["betas"][None], transl=s["transl"][None])  # fmt: skip
            worst_body = max(worst_body, float((crop_px(s, out.joints[0]) - kp).norm(dim=-1).max()))
            # The picture's dots lie under the augmented keypoints that are inside the crop.
            img = denormalise_image(s["img"]).astype(int).max(-1)
            inside = (s["kp2d_smpl"][:, 2] > 0) & (kp.min(-1).values > 1) & (kp.max(-1).values < CROP - 1)
            px = kp[inside].long()
            assert (img[px[:, 1], px[:, 0]] > BACKGROUND * 1.3 + 40).all(), (epoch, i)
    assert flips > 0 and rotations > 0
    assert worst_joints < 1.0 and worst_body < 1.0, (worst_joints, worst_body)


def test_randomness_is_a_function_of_seed_rank_epoch_index(folder):
    ds = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP, augment=STRONG, seed=1)
    a = ds[1]
    b = ds[1]
    torch.testing.assert_close(a["img"], b["img"])
    ds.set_epoch(1)
    c = ds[1]
    assert not torch.equal(a["kp2d_smpl"], c["kp2d_smpl"])
    other_rank = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP, augment=STRONG, seed=1, rank=1)
    assert not torch.equal(a["kp2d_smpl"], other_rank[1]["kp2d_smpl"])
    p1 = Augmenter().sample(sample_rng(0, 0, 0, 3))
    p2 = Augmenter().sample(sample_rng(0, 0, 0, 3))
    assert p1 == p2


def test_rotvec_round_trip_including_near_pi():
    rng = np.random.default_rng(0)
    for angle in [0.0, 1e-8, 0.3, 2.0, np.pi - 1e-4, np.pi]:
        axis = rng.normal(size=3)
        aa = axis / np.linalg.norm(axis) * angle
        rot = rotvec_to_matrix(aa)
        np.testing.assert_allclose(rotvec_to_matrix(matrix_to_rotvec(rot)), rot, atol=1e-7)
        ref = axis_angle_to_matrix(torch.as_tensor(aa)[None]).numpy()[0]
        np.testing.assert_allclose(rot, ref, atol=1e-7)


def test_colour_and_occlusion_touch_pixels_only():
    crop = np.full((32, 32, 3), 100, np.uint8)
    params = AugmentParams(colour=(1.2, 1.0, 0.5), occluders=[(0.25, 0.25, 0.5, 0.75, 255.0, 0.0, 0.0)])
    out = augment_pixels(crop, params)
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert tuple(out[0, 0]) == (120, 100, 50)
    assert tuple(out[16, 10]) == (255, 0, 0)  # occluder (red gain 1.2 clipped)
    geo = geometry()
    with_pixels, _ = augment_geometry(geo, params)
    np.testing.assert_allclose(with_pixels.kp_smpl, geo.kp_smpl)


def test_persistent_workers_see_set_epoch(folder):
    ds = ImageNpzDataset(folder / "ours.npz", folder, crop_size=CROP, augment=STRONG, seed=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, persistent_workers=True)
    epochs = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        epochs.append(next(iter(loader))["kp2d_smpl"])
    for epoch in range(2):
        torch.testing.assert_close(epochs[epoch][1], ds.get(1, epoch)["kp2d_smpl"])
    assert not torch.equal(epochs[0], epochs[1])


def test_engine_batches_advance_the_augmentation_epoch(folder):
    from mega.engine.batches import ResumableBatches
    from mega.engine.dist import DistInfo

    ds = ImageNpzDataset(folder / "ours.npz", folder, crop_size=16, augment=STRONG)
    batches = iter(ResumableBatches(ds, 3, DistInfo(), seed=0))
    first = next(batches)
    assert ds.epoch == 0
    second = next(batches)
    assert ds.epoch == 1
    i0, i1 = first["index"].tolist(), second["index"].tolist()
    k = i1.index(i0[0])
    assert not torch.equal(first["kp2d_smpl"][0], second["kp2d_smpl"][k])  # re-augmented
