"""Inference with a trained model: hmr.pt round trip, the backbone once per image, samplers through the
model, pose-guided refinement, and scripts/eval.py with every sampler on a tiny synthetic benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_mesh_tokenizer
from omegaconf import OmegaConf

from mega.hmr_checkpoint import build_hmr_model, load_hmr, save_hmr
from mega.inference import KeypointSource, build_sampler, recover
from mega.refiners import PoseGuidedRefiner, build_refiner
from mega.tokenizers import build_tokenizer, save_tokenizer

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONE = {
    "name": "tiny_cnn",
    "input_size": 32,
    "widths": [8, 16],
    "depths": [1],
    "pyramid_scales": [],
    "pyramid_dim": 8,
}
TRANSFORMER = {"dim": 16, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2}


def _checkpoint(tmp: Path, body, kind: str = "mesh") -> Path:
    """A tiny random model saved as a self-describing hmr.pt (what scripts/train_hmr.py writes)."""
    torch.manual_seed(0)
    if kind == "mesh":
        tok = tiny_mesh_tokenizer(body)
    else:
        tok = build_tokenizer("pose_vqvae", num_tokens=8, codebook_size=16, code_dim=4, width=16)
    with torch.no_grad():
        tok.quantizer.load_codebook(torch.randn(tok.codebook_size, tok.code_dim) * 0.5)
        for p in tok.parameters():  # zero-initialised output layers would decode every id to one body
            p.add_(torch.randn_like(p) * 0.05)
    tok_path = tmp / f"tokenizer_{kind}.pt"
    save_tokenizer(tok_path, tok)
    cond, heads = {"name": "prefix"}, {"head_hidden": 16}
    model, sizes = build_hmr_model(BACKBONE, TRANSFORMER, cond, heads, tok, body)
    with torch.no_grad():  # sharper logits than the init's, so decisions are well separated
        model.transformer.head.weight.mul_(20.0)
    parts = {"backbone": BACKBONE, "transformer": TRANSFORMER, "conditioning": cond, "heads": heads}
    path = save_hmr(tmp / f"hmr_{kind}.pt", model, parts, sizes, tok_path, body_model={"name": "free"})
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, free_body):
    tmp = tmp_path_factory.mktemp("inference")
    return {
        "mesh": _checkpoint(tmp, free_body, "mesh"),
        "pose": _checkpoint(tmp, free_body, "pose"),
        "dir": tmp,
    }


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    from mega.data.images.synthetic import ensure_synthetic_images

    root = tmp_path_factory.mktemp("eval") / "images"
    motion = {"root": str(root.parent / "motion"), "sequences": {"train": 2, "val": 2, "test": 2}}
    ensure_synthetic_images(root, sizes={"train": 2, "val": 2, "test": 6}, motion=motion, progress=False)
    return root


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_checkpoint_round_trip_and_backbone_once(tiny, kind):
    model = load_hmr(tiny[kind])
    img = torch.randn(3, 3, 32, 32)
    calls = []
    handle = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    stochastic = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "sampler" / "stochastic.yaml"))
    rec = recover(model, img, build_sampler(stochastic), num_samples=4, with_deterministic=True)
    handle.remove()
    assert len(calls) == 1  # Q = 4 samples, T = 5 steps, the deterministic mesh: one backbone pass
    assert rec.vertices.shape == (3, 4, model.body.num_vertices, 3) and rec.ids.shape[:2] == (3, 4)
    assert rec.deterministic_vertices.shape == (3, model.body.num_vertices, 3)
    assert (rec.body_pose is not None) == (kind == "pose")
    # the deterministic mode through recover equals decoding the argmax ids
    det = recover(model, img)
    again = load_hmr(tiny[kind])
    torch.testing.assert_close(recover(again, img).vertices, det.vertices)
    torch.testing.assert_close(det.vertices[:, 0], rec.deterministic_vertices)


def test_stochastic_at_zero_temperature_one_step_equals_deterministic(tiny):
    model = load_hmr(tiny["mesh"])
    img = torch.randn(5, 3, 32, 32)
    greedy = build_sampler({"name": "maskgit", "steps": 1, "temperature": 0.0, "confidence_noise": 1.0})
    assert torch.equal(recover(model, img, greedy).ids, recover(model, img).ids)


@pytest.fixture
def keep_global_rng():
    """Leave torch's global random state as found (later tests draw their images from it)."""
    with torch.random.fork_rng(devices=[]):
        yield


def test_precision_switch(tiny, keep_global_rng):
    """bf16 autocast runs the network passes in bf16 and returns float32 bodies near the fp32 ones."""
    model = load_hmr(tiny["mesh"])
    stochastic = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "sampler" / "stochastic.yaml"))
    img = torch.randn(2, 3, 32, 32)
    fp32 = recover(model, img, build_sampler(stochastic), num_samples=2, with_deterministic=True)
    assert torch.equal(
        recover(
            model, img, build_sampler(stochastic), num_samples=2, with_deterministic=True, precision="fp32"
        ).vertices,
        fp32.vertices,
    )  # fmt: skip  (fp32 is the default)
    dtypes = []
    handle = model.transformer.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    bf16 = recover(
        model, img, build_sampler(stochastic), num_samples=2, with_deterministic=True, precision="bf16"
    )
    handle.remove()
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == 5 + 1  # T = 5 steps + the deterministic pass
    assert bf16.vertices.dtype == bf16.cam.dtype == bf16.global_rot.dtype == torch.float32
    torch.testing.assert_close(bf16.global_rot, fp32.global_rot, atol=0.05, rtol=0.05)
    assert bf16.vertices.shape == fp32.vertices.shape and torch.isfinite(bf16.vertices).all()
    with pytest.raises(ValueError, match="precision"):
        recover(model, img, precision="fp16")


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_pose_guided_pulls_keypoints_onto_the_target(tiny, kind):
    model = load_hmr(tiny[kind])
    img = torch.randn(2, 3, 32, 32)
    start = recover(model, img)
    # keypoints of another body (other ids) seen through the predicted camera: the refinement must approach them
    other = torch.randint(
        0, model.transformer.codebook_size, start.ids[:, 0].shape, generator=torch.Generator().manual_seed(1)
    )
    target = model.decode_body(start.global_rot, ids=other, betas=start.betas)
    reg = model.body.keypoint_regressor("coco17")
    kp2d = model.project(torch.einsum("kv,bvc->bkc", reg, target.vertices), start.cam)
    keypoints = torch.cat([kp2d, torch.ones(2, 17, 1)], dim=-1)
    refiner = build_refiner({"name": "pose_guided", "iterations": 30, "step_size": 50.0, "prior_weight": 0.0})
    rec = recover(model, img, build_sampler("uncertainty_guided"), refiner=refiner, keypoints=keypoints)
    before, after = rec.reprojection["before"], rec.reprojection["after"]
    assert bool((after < 0.7 * before).all()), (before, after)
    torch.testing.assert_close(
        rec.initial_vertices, start.vertices
    )  # refinement starts from UGS (= argmax here)
    # the prior keeps the decoded body nearer its start than the same steps without it
    codes0 = model.tokenizer.quantizer.lookup(start.ids[:, 0])
    moved = []
    for weight in (0.0, 10.0):
        refine = PoseGuidedRefiner(iterations=5, step_size=0.01, prior_weight=weight)
        codes, trace = refine(model, codes0, start.global_rot, start.cam, start.betas, keypoints)
        out = model.tokenizer.decode_embeddings(codes) - model.tokenizer.decode_embeddings(codes0)
        moved.append(float(out.norm()))
        assert bool((trace.extra["objective"].diff(dim=0) <= 0).all())  # G never rises
    assert moved[1] < moved[0] and trace.reprojection.shape == (6, 2)
    with pytest.raises(ValueError, match="needs 2D keypoints"):
        recover(model, img, refiner=refiner)


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_rotation_from_keypoints_recovers_a_known_rotation_and_camera(tiny, kind):
    from mega.body.rotations import axis_angle_to_matrix

    model = load_hmr(tiny[kind])
    img = torch.randn(2, 3, 32, 32)
    start = recover(model, img)
    rot = axis_angle_to_matrix(torch.tensor([[0.3, 2.5, -0.4], [1.2, -0.7, 0.2]]))  # far from the head's
    cam = torch.tensor([[0.8, 0.1, -0.05], [1.3, -0.2, 0.15]])
    target = model.decode_body(rot, ids=start.ids[:, 0], betas=start.betas)
    reg = model.body.keypoint_regressor("coco17")
    kp2d = model.project(torch.einsum("kv,bvc->bkc", reg, target.vertices), cam)
    keypoints = torch.cat([kp2d, torch.ones(2, 17, 1)], dim=-1)
    rec = recover(model, img, keypoints=keypoints, rotation="keypoints")
    torch.testing.assert_close(rec.global_rot, rot, atol=2e-3, rtol=0)
    torch.testing.assert_close(rec.cam, cam, atol=2e-3, rtol=0)
    torch.testing.assert_close(rec.vertices[:, 0], target.vertices, atol=2e-3, rtol=0)
    assert (start.global_rot - rot).abs().amax() > 0.5  # the heads' rotation was far off
    with pytest.raises(ValueError, match="needs 2D keypoints"):
        recover(model, img, rotation="keypoints")


def test_keypoint_noise_is_per_sample_and_in_pixels():
    batch = {
        "kp2d_coco": torch.cat([torch.zeros(2, 17, 2), torch.ones(2, 17, 1)], -1),
        "bbox_size": torch.tensor([100.0, 200.0]),
        "index": torch.tensor([4, 9]),
    }
    kp = KeypointSource(noise_px=10.0, drop=0.5, seed=3)(batch)
    spread = kp[..., :2].flatten(1).std(1)  # normalised units: 2 * 10 px / box side
    assert 0.1 < float(spread[0]) < 0.32 and 0.05 < float(spread[1]) < 0.16
    assert 0 < int((kp[..., 2] == 0).sum()) < 34
    single = KeypointSource(noise_px=10.0, drop=0.5, seed=3)({k: v[1:] for k, v in batch.items()})
    torch.testing.assert_close(single[0], kp[1])  # depends on the sample, not the batch


def _eval(args: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "scripts/eval.py", *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def test_eval_script_every_sampler(tiny, tiny_images, tmp_path):
    common = [
        "benchmark=synthetic_images",
        f"benchmark.root={tiny_images}",
        "protocol=smpl24",
        "body_model=free",
        "batch_size=4",
        "progress=false",
        "timing.images=2",
    ]
    oracle = _eval([*common, "predictor=oracle"], tmp_path / "oracle")
    assert oracle["num_samples"] == 6 and max(oracle["metrics"].values()) < 1e-3
    ck = f"checkpoint={tiny['mesh']}"
    det = _eval([*common, ck], tmp_path / "det")
    assert det["metrics"]["pve"] > 0 and det["speed"]["seconds_per_image_batch1"] > 0
    sto = _eval([*common, ck, "sampler=stochastic", "num_samples=3"], tmp_path / "sto")
    assert {"best_of_q", "mean_of_q", "diversity"} <= set(sto) and sto["diversity"]["dist_to_det_mm"] >= 0
    for name in ("mpjpe", "pve"):
        assert (
            sto["best_of_q"][name] <= sto["mean_of_q"][name] + 1e-6
            or sto["best_of_q"][name] <= det["metrics"][name] + 1e-6
        )
    ugs = _eval([*common, ck, "sampler=uncertainty_guided", "sampler.steps=3"], tmp_path / "ugs")
    assert ugs["speed"]["iterations"] == 3
    pgr = _eval(
        [
            *common,
            ck,
            "sampler=uncertainty_guided",
            "refiner=pose_guided",
            "refiner.iterations=2",
            "keypoints.noise_px=2",
        ],
        tmp_path / "pgr",
    )
    assert pgr["run"]["keypoints"]["noise_px"] == 2 and pgr["metrics"]["pve"] > 0
    fit = _eval([*common, ck, "rotation=keypoints"], tmp_path / "fit")
    assert fit["run"]["rotation"] == "keypoints"
    # the same bodies, turned and placed differently: aligned errors equal, the others not
    assert abs(fit["metrics"]["pa_mpjpe"] - det["metrics"]["pa_mpjpe"]) < 1e-2
    assert abs(fit["metrics"]["mpjpe"] - det["metrics"]["mpjpe"]) > 1.0
