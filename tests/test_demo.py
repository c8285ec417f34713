"""scripts/demo.py and its library mega.demo on a tiny randomly initialised model saved as hmr.pt (no training): files are written,
meshes load back with the right vertex count, pictures have the expected panels, bad inputs give one
clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from fixtures_models import save_tiny_hmr
from omegaconf import OmegaConf

import mega.demo as demo
from mega.atomic import write_json
from mega.detection import whole_image
from mega.hmr_checkpoint import load_hmr
from mega.inference import recover
from mega.refiners import coco17_keypoints

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, free_body):
    """hmr.pt, two images (one in a folder), a short video and a COCO results file with one person."""
    root = tmp_path_factory.mktemp("demo")
    ckpt = save_tiny_hmr(root, free_body)
    g = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for name in ("a", "b"):
        img = (g.random((90, 120, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(images / f"{name}.png"), img)
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for _ in range(7):
        writer.write((g.random((64, 96, 3)) * 255).astype(np.uint8))
    writer.release()
    kp = np.array([[60 + 8 * np.sin(j), 20 + 3.5 * j, 0.9] for j in range(17)])
    x0, y0 = kp[:, :2].min(0) - 5
    x1, y1 = kp[:, :2].max(0) + 5
    dets = [
        {
            "image_id": "a.png",
            "keypoints": kp.reshape(-1).tolist(),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": 0.9,
        }
    ]
    write_json(root / "dets.json", dets)
    return {"root": root, "ckpt": ckpt, "images": images, "video": video, "dets": root / "dets.json"}


def _cfg(out: Path, **over):
    cfg = OmegaConf.load(ROOT / "configs" / "demo.yaml")
    cfg.pop("hydra")
    cfg.pop("defaults")
    cfg.sampler = {"name": "deterministic"}
    cfg.refiner = {"name": "none"}
    cfg.out_dir = str(out)
    cfg.progress = False
    for k, v in over.items():
        OmegaConf.update(cfg, k, v, force_add=True)
    return cfg


def test_checkpoint_round_trip(assets, free_body):
    model = load_hmr(assets["ckpt"])
    assert model.kind == "mesh" and not model.training and model.backbone.input_size == 48


def test_process_writes_pictures_and_meshes(assets, tmp_path):
    model = load_hmr(assets["ckpt"])
    stochastic = {"name": "maskgit", "steps": 2, "temperature": 3.0, "confidence_noise": 1.0}
    refiner = {"name": "pose_guided", "iterations": 3}  # refined stochastic samples
    cfg = _cfg(
        tmp_path,
        detections=str(assets["dets"]),
        sampler=stochastic,
        refiner=refiner,
        compare="deterministic",
        num_samples=3,
        panel_height=96,
    )
    image = cv2.cvtColor(cv2.imread(str(assets["images"] / "a.png")), cv2.COLOR_BGR2RGB)
    people = demo.People(cfg)("a", image)
    assert len(people) == 1 and people[0].source == "coco_json"
    rows = demo.process("a", image, people, model, cfg, torch.device("cpu"), tmp_path)
    row = rows[0]
    assert row["num_samples"] == 3 and row["mean_vertex_sd_mm"] > 0
    assert row["reprojection_px"] is not None and row["reprojection_px_before_refinement"] is not None
    assert row["compare"]["reprojection_px"] is not None
    pic = cv2.imread(str(tmp_path / "a.png"))
    assert pic.shape[0] == 96 and pic.shape[1] > 4 * 96  # keypoints, 2 overlays, side view, SD map + bar
    mesh = trimesh.load(tmp_path / "people" / "a_p0.obj", process=False)
    assert mesh.vertices.shape == (free_body_vertices(), 3)
    ply = trimesh.load(tmp_path / "people" / "a_p0.ply", process=False)
    assert len(ply.vertices) == free_body_vertices() and ply.visual.vertex_colors.shape[0] == len(
        ply.vertices
    )
    data = np.load(tmp_path / "people" / "a_p0.npz")
    assert data["vertices"].shape == (3, free_body_vertices(), 3) and data["vertex_sd_mm"].shape == (
        free_body_vertices(),
    )
    np.testing.assert_allclose(mesh.vertices, data["vertices"].mean(0), atol=1e-5)  # the mean of Q, placed
    assert data["vertices"][..., 2].min() > 0  # in front of the camera
    meta = json.loads((tmp_path / "people" / "a_p0.json").read_text())
    assert meta["num_vertices"] == free_body_vertices() and meta["files"]["obj"] == "a_p0.obj"


def test_rotation_from_keypoints_puts_the_body_on_its_keypoints(assets, tmp_path):
    """Keypoints of the model's own body under another rotation and camera: rotation=keypoints finds them."""
    from mega.body.rotations import axis_angle_to_matrix

    model = load_hmr(assets["ckpt"])
    image = np.zeros((90, 120, 3), np.uint8)
    person = whole_image(120, 90)
    batch = demo.crops(image, [person], 48, 1.2)
    rec = recover(model, batch["img"], None)
    body = model.decode_body(axis_angle_to_matrix(torch.tensor([[0.4, 2.2, 0.1]])), ids=rec.ids[:, 0])
    kp, _ = coco17_keypoints(model.body, body.vertices, body.joints)
    cam = torch.tensor([[0.7, 0.05, -0.1]])
    px = batch["bbox_center"][:, None] + model.project(kp, cam) * batch["bbox_size"][:, None, None] / 2
    person.keypoints = np.concatenate([px[0].numpy(), np.ones((17, 1))], 1)
    errors = {}
    for rotation in ("head", "keypoints"):
        cfg = _cfg(tmp_path / rotation, rotation=rotation, panel_height=64, side_view=False, export=[])
        errors[rotation] = demo.process("x", image, [person], model, cfg, torch.device("cpu"), tmp_path)[0]
    assert errors["keypoints"]["reprojection_px"] < 0.05, errors["keypoints"]["reprojection_px"]
    assert errors["head"]["reprojection_px"] > 2.0
    cfg = _cfg(tmp_path, rotation="keypoints")  # the whole image, no keypoints
    with pytest.raises(demo.DemoInputError, match="rotation=keypoints needs 2D keypoints"):
        demo.process("x", image, [whole_image(120, 90)], model, cfg, torch.device("cpu"), tmp_path)


def free_body_vertices() -> int:
    from mega.body import load_body_model

    return load_body_model("free").num_vertices


def test_reprojection_error_is_zero_on_the_models_own_keypoints(assets):
    """The 2D error reported on the pictures: keypoints placed where the model projects them score 0 px."""
    model = load_hmr(assets["ckpt"])
    image = np.zeros((90, 120, 3), np.uint8)
    person = whole_image(120, 90)
    batch = demo.crops(image, [person], 48, 1.2)
    rec = recover(model, batch["img"], None)
    kp, _ = coco17_keypoints(model.body, rec.vertices[:, 0], rec.joints[:, 0])
    px = batch["bbox_center"][:, None] + model.project(kp, rec.cam) * batch["bbox_size"][:, None, None] / 2
    person.keypoints = np.concatenate([px[0].numpy(), np.ones((17, 1))], 1)
    err = demo.reprojection_px(model, rec.vertices[:, 0], rec.joints[:, 0], rec.cam, batch, [person])
    assert err[0] == pytest.approx(0.0, abs=1e-3)
    person.keypoints[:, 0] += 3.0  # every keypoint 3 px to the right
    err = demo.reprojection_px(model, rec.vertices[:, 0], rec.joints[:, 0], rec.cam, batch, [person])
    assert err[0] == pytest.approx(3.0, abs=1e-3)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), *args, "progress=false", "threads=1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_cli_folder_and_video(assets, tmp_path):
    out = _run(
        [
            f"checkpoint={assets['ckpt']}",
            f"inputs=[{assets['images']},{assets['video']}]",
            "every_n=3",
            "max_frames=2",
            "panel_height=64",
            f"hydra.run.dir={tmp_path}",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "whole image" in out.stderr + out.stdout  # no detections: the warning
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = sorted(Path(p).name for p in summary["pictures"])
    assert names == ["a.png", "b.png", "clip_f000000.png", "clip_f000003.png", "sheet.png"]
    assert cv2.imread(summary["pictures"][0]).shape[0] == 4 * 64 + 3 * 4  # four rows of 64 px, 4 px gaps
    assert len(summary["people"]) == 4 and all(r["source"] == "whole_image" for r in summary["people"])
    for r in summary["people"]:
        assert trimesh.load(r["files"]["obj"], process=False).vertices.shape[0] == free_body_vertices()


def test_bad_inputs_name_the_path_and_the_fix(assets, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(demo.DemoInputError, match="missing.jpg does not exist"):
        demo.list_inputs([str(tmp_path / "missing.jpg")])
    with pytest.raises(demo.DemoInputError, match="neither an image"):
        demo.list_inputs([str(tmp_path / "notes.txt")])
    with pytest.raises(demo.DemoInputError, match="holds no image"):
        demo.list_inputs([str(tmp_path)])
    with pytest.raises(demo.DemoInputError, match="no inputs"):
        demo.list_inputs([])
    with pytest.raises(demo.DemoInputError, match="cannot open video"):
        (tmp_path / "broken.mp4").write_bytes(b"not a video")
        list(demo.video_frames(tmp_path / "broken.mp4", 1, None))
    with pytest.raises(demo.DemoInputError, match="detector='yolo'"):
        demo.People(_cfg(tmp_path, detector="yolo"))
    with pytest.raises(Exception, match="detections file not found"):
        demo.People(_cfg(tmp_path, detections=str(tmp_path / "nope.json")))
    with pytest.raises(Exception, match="model checkpoint not found"):
        load_hmr(tmp_path / "nope.pt")
    model = load_hmr(assets["ckpt"])
    image = np.zeros((40, 40, 3), np.uint8)
    cfg = _cfg(tmp_path, refiner={"name": "pose_guided"})
    with pytest.raises(demo.DemoInputError, match="needs 2D keypoints"):
        demo.process("x", image, [whole_image(40, 40)], model, cfg, torch.device("cpu"), tmp_path)


def test_cli_user_error_is_one_line(assets, tmp_path):
    out = _run(
        [f"checkpoint={assets['ckpt']}", "inputs=[missing.jpg]", f"hydra.run.dir={tmp_path}"], tmp_path
    )
    assert out.returncode == 1 and "inputs: missing.jpg does not exist" in out.stderr
    assert "Traceback" not in out.stderr
