"""The web page's request path without a browser (mega.demo.web, mega.demo.examples, mega.export.write_glb) on a
tiny random model: files and the GLB scene come back right, held-out examples bring their keypoints, and every
bad input of the issue gives one readable message (a PageError)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from fixtures_models import heldout_set, save_tiny_hmr

from mega.demo.examples import build_examples, image_key
from mega.demo.web import VIEWER_FOV, Limits, PageError, Session, check_upload, person_table, view_distance
from mega.export import write_glb

pytestmark = pytest.mark.usefixtures("one_thread")
STOCHASTIC = {"name": "maskgit", "steps": 2, "temperature": 3.0, "confidence_noise": 1.0}
DECODINGS = {
    "deterministic": {"sampler": {"name": "deterministic"}},
    "stochastic": {"sampler": STOCHASTIC},
    "uncertainty_guided": {"sampler": {"name": "uncertainty_guided", "steps": 2}},
    "pose_guided": {"sampler": STOCHASTIC, "refiner": {"name": "pose_guided", "iterations": 2}},
}
PICTURES = {
    "panel_height": 64,
    "zoom": True,
    "side_view": True,
    "sd_max_mm": None,
    "bbox_margin": 1.2,
    "max_people": 4,
    "export": ["obj", "ply", "npz", "json"],
}


@pytest.fixture(scope="module")
def app_assets(tmp_path_factory, free_body):
    root = tmp_path_factory.mktemp("app")
    ckpt = save_tiny_hmr(root, free_body)
    images = heldout_set(root)
    examples, table = build_examples(images, 2, None, 0, root / "examples")
    return {"root": root, "ckpt": ckpt, "examples": examples, "table": table}


def session(assets, tmp_path, **kw) -> Session:
    return Session(assets["ckpt"], tmp_path / "work", DECODINGS, None, assets["table"], dict(PICTURES), **kw)


def test_examples_are_heldout_images_with_their_labels(app_assets):
    files, table = app_assets["examples"], app_assets["table"]
    assert [p.name for p in files] == ["heldout_000000.jpg", "heldout_000002.jpg"]
    assert len(table) == 2
    for path in files:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        people = table[image_key(image)]
        assert len(people) == 1 and people[0].keypoints.shape == (17, 3) and people[0].source == "coco_json"
    assert image_key(np.zeros((4, 4, 3), np.uint8)) != image_key(np.zeros((4, 5, 3), np.uint8))


def test_example_frame_of_a_video(tmp_path):
    clip = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(5):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    files, table = build_examples(tmp_path / "no_images", 3, clip, 3, tmp_path / "ex")
    assert [p.name for p in files] == ["walk_f000003.png"] and table == {}
    assert abs(float(cv2.imread(str(files[0])).mean()) - 120) < 8  # the fourth frame (MJPG is lossy)
    files, _ = build_examples(None, 3, clip, 99, tmp_path / "ex2")  # past the end: the last frame
    assert files[0].name == "walk_f000004.png"
    assert abs(float(cv2.imread(str(files[0])).mean()) - 160) < 8


def test_run_writes_pictures_glb_and_files(app_assets, tmp_path, free_body):
    s = session(app_assets, tmp_path)
    results, notices = s.run(app_assets["examples"][0], "stochastic", 3, "keypoints")
    assert any("held-out example" in n for n in notices)
    (frame,) = results
    assert set(frame.panels) == {"input", "overlay", "side", "sd"}
    overlay = cv2.imread(str(frame.panels["overlay"]))
    assert overlay.shape[0] == 64 and overlay.std() > 5
    assert all(p.is_relative_to(tmp_path / "work") for p in [*frame.files, *frame.panels.values()])
    assert sorted(p.suffix for p in frame.files) == [".glb", ".json", ".npz", ".obj", ".ply"]
    row = frame.rows[0]
    assert row["reprojection_px"] is not None and row["num_samples"] == 3 and row["mean_vertex_sd_mm"] > 0
    assert person_table(results)[0][:3] == [frame.stem, 0, "coco_json"]
    scene = trimesh.load(frame.glb)  # one node per person, glTF camera frame = OpenCV's turned about x
    assert list(scene.geometry) == ["person_0"]
    glb = scene.geometry["person_0"]
    obj = trimesh.load(frame.glb.with_name(f"{frame.stem}_p0.obj"), process=False)
    assert len(glb.vertices) == free_body.num_vertices
    np.testing.assert_allclose(glb.vertices, obj.vertices * [1, -1, -1], atol=1e-5)
    meta = json.loads(frame.glb.with_name(f"{frame.stem}_p0.json").read_text())
    assert meta["sampler"] == "maskgit Q=3"
    assert frame.view_distance == pytest.approx(view_distance([glb.vertices]))


def _widest_angle(points: np.ndarray, camera: np.ndarray, target: np.ndarray) -> float:
    """The largest angle (rad) between a camera's axis (camera -> target) and its rays to ``points``."""
    axis = (target - camera) / np.linalg.norm(target - camera)
    rays = points - camera
    return float(np.arccos(np.clip(rays @ axis / np.linalg.norm(rays, axis=1), -1, 1)).max())


def test_the_3d_view_sees_every_person_whole():
    """From any direction, a camera at view_distance from the centre of the people's bounding box sees every
    vertex within half the viewer's vertical field of view; the viewer's own framing (1.1 box diagonals)
    cuts the head off a standing body seen from the front."""
    g = np.random.default_rng(0)
    corners = np.array([[x, y, z] for x in (-0.25, 0.25) for y in (-0.85, 0.85) for z in (-0.15, 0.15)])
    body = np.concatenate([corners, g.uniform(corners.min(0), corners.max(0), (500, 3))]) + [0.2, 0.1, 3.0]
    for meshes in ([body], [body, body + [1.4, 0.2, 0.8]], [body * 0.01]):
        points = np.concatenate(meshes)
        centre = (points.max(0) + points.min(0)) / 2
        r = view_distance(meshes)
        dirs = g.normal(size=(300, 3))
        for d in dirs / np.linalg.norm(dirs, axis=1, keepdims=True):
            assert _widest_angle(points, centre + r * d, centre) < VIEWER_FOV / 2
    centre = (body.max(0) + body.min(0)) / 2
    babylon = 1.1 * np.linalg.norm(body.max(0) - body.min(0))
    assert _widest_angle(body, centre + [0, 0, -babylon], centre) > VIEWER_FOV / 2


def test_greedy_samplers_decode_once(app_assets, tmp_path):
    """Q samples of a sampler that draws nothing at random (GenHMR's top-1 UGS) would be Q copies: one
    decoding, no SD map of zeros, and the page says why."""
    s = session(app_assets, tmp_path)
    results, notices = s.run(app_assets["examples"][0], "uncertainty_guided", 5, "head")
    assert results[0].rows[0]["num_samples"] == 1 and "sd" not in results[0].panels
    assert any("uncertainty_guided decodes without drawing at random" in n for n in notices)
    for name, q in [("uncertainty_guided", 1), ("deterministic", 5)]:  # nothing to say
        results, notices = s.run(app_assets["examples"][0], name, q, "head")
        assert results[0].rows[0]["num_samples"] == 1 and not any("drawing at random" in n for n in notices)


def test_whole_image_without_detector_and_clip(app_assets, tmp_path):
    s = session(app_assets, tmp_path, limits=Limits(max_frames=2, every_n=2, max_side=64))
    g = np.random.default_rng(0)
    photo = tmp_path / "my photo.png"
    cv2.imwrite(str(photo), (g.random((90, 150, 3)) * 255).astype(np.uint8))
    results, notices = s.run(photo, "deterministic", 5, "head")
    assert results[0].stem == "my_photo" and results[0].rows[0]["source"] == "whole_image"
    assert any("whole image" in n for n in notices) and any("scaled down from 150 x 90" in n for n in notices)
    assert results[0].rows[0]["num_samples"] == 1  # Q only for the stochastic samplers
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for _ in range(7):
        writer.write((g.random((64, 96, 3)) * 255).astype(np.uint8))
    writer.release()
    results, notices = s.run(clip, "deterministic", 1, "head")
    assert [r.stem for r in results] == ["clip_f000000", "clip_f000002"]
    assert any("2 frames" in n for n in notices)


def test_bad_inputs_give_one_message(app_assets, tmp_path):
    s = session(app_assets, tmp_path, limits=Limits(max_upload_mb=0.01, max_pixels=200 * 200))
    cases = {
        "notes.png": b"hello, not an image",
        "empty.jpg": b"",
        "clip.mp4": b"not a video either",
        "table.csv": b"a,b\n1,2\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "big.png").write_bytes(b"0" * 20000)
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((10, 5000, 3), np.uint8))
    expected = {
        "notes.png": "notes.png is not an image that can be read",
        "empty.jpg": "empty file",
        "clip.mp4": "OpenCV cannot read this video",
        "table.csv": "neither an image",
        "big.png": "too large: 0.0 MB, the limit is 0.01 MB",
        "wide.png": "5000 x 10 pixels",
    }
    for name, text in expected.items():
        with pytest.raises(PageError, match=text):
            s.run(tmp_path / name, "deterministic", 1, "head")
    with pytest.raises(PageError, match="no input"):
        check_upload(None, Limits())
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), np.full((40, 60, 3), 90, np.uint8))
    with pytest.raises(PageError, match="pose_guided refiner needs 2D keypoints: it works on the held-out"):
        s.run(ok, "pose_guided", 1, "head")
    with pytest.raises(PageError, match="rotation=keypoints needs 2D keypoints"):
        s.run(ok, "deterministic", 1, "keypoints")
    with pytest.raises(PageError, match="sampler 'magic'"):
        s.run(ok, "magic", 1, "head")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    bad = Session(broken, tmp_path / "work2", DECODINGS, None, {}, dict(PICTURES))
    with pytest.raises(PageError, match="the model checkpoint .*broken.pt does not load"):
        bad.run(ok, "deterministic", 1, "head")


def test_no_person_found_with_a_detector(app_assets, tmp_path):
    s = session(app_assets, tmp_path)
    s.detector = "blazepose"
    s._people = lambda stem, image: []  # a detector that finds nobody
    ok = tmp_path / "empty_room.png"
    cv2.imwrite(str(ok), np.full((40, 60, 3), 90, np.uint8))
    with pytest.raises(PageError, match="no person found in the 60 x 40 image"):
        s.run(ok, "deterministic", 1, "head")


def test_old_runs_are_deleted(app_assets, tmp_path):
    s = session(app_assets, tmp_path, limits=Limits(keep_runs=2))
    for _ in range(4):
        s._new_run_dir()
    assert len(list((tmp_path / "work" / "runs").iterdir())) == 2


def test_write_glb_nodes_colours_and_frame(tmp_path):
    verts = torch.tensor([[0.0, 0.0, 2.0], [0.1, 0.0, 2.0], [0.0, 0.1, 2.0]]).numpy()
    faces = np.array([[0, 1, 2]])
    path = write_glb(tmp_path / "s.glb", [verts, verts + 1], faces, [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)])
    scene = trimesh.load(path)
    assert sorted(scene.graph.nodes_geometry) == ["person_0", "person_1"]
    red = scene.geometry["person_0"]
    np.testing.assert_allclose(red.vertices, verts * [1, -1, -1], atol=1e-6)
    assert tuple(red.visual.vertex_colors[0][:3]) == (255, 0, 0)
    # the face normal still points at the camera (towards +z in glTF, -z in OpenCV) after the turn
    assert red.face_normals[0][2] * np.cross(verts[1] - verts[0], verts[2] - verts[0])[2] < 0
    with pytest.raises(ValueError, match="no mesh"):
        write_glb(tmp_path / "e.glb", [], faces)


def _app_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "app_script", Path(__file__).resolve().parents[1] / "scripts" / "app.py"
    )
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def test_the_pages_sampler_choices_are_valid_presets():
    """configs/app.yaml's decodings name presets that build (scripts/app.py reads them; the library never does)."""
    from omegaconf import OmegaConf

    from mega.inference import build_sampler
    from mega.refiners import build_refiner

    root = Path(__file__).resolve().parents[1]
    app = _app_script()
    choices = app.decodings(OmegaConf.load(root / "configs" / "app.yaml").decodings)
    assert list(choices) == ["deterministic", "stochastic", "uncertainty_guided", "pose_guided"]
    for name, d in choices.items():
        assert build_sampler(d["sampler"]) is not None
        assert (build_refiner(d["refiner"]) is None) == (name != "pose_guided")
    with pytest.raises(app.AppError, match="no sampler preset"):
        app.preset("sampler", "nonexistent")
    # messages go into the page as HTML: markup escaped, `commands` as code
    assert app._escape("a <b> & `make detector`") == "a &lt;b&gt; &amp; <code>make detector</code>"
