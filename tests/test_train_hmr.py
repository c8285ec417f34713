"""train_hmr.py: presets compose, missing inputs are named, and a tiny end-to-end run (1 process vs 2 DDP
processes at the same global batch) writes hmr.pt and results.json with the model, floor and oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_models import tiny_mesh_tokenizer

from mega.engine import load_checkpoint
from mega.stage_inputs import find_pretrained, find_tokenizer
from mega.tokenizers import save_tokenizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

pytestmark = pytest.mark.usefixtures("one_thread")

PRESETS = [
    "hmr_cpu",
    "hmr_pose_cpu",
    "mega_hrnet",
    "mega_resnet",
    "mega_hrnet_mix",
    "mega_resnet_mix",
    "mega_vit",
    "mega_vit_mix",
    "genhmr_vit",
]


def test_presets_compose_with_the_papers_settings():
    from hydra import compose, initialize_config_dir

    from mega.engine import EngineConfig, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfgs = {name: compose("train_hmr", overrides=[f"experiment={name}"]) for name in PRESETS}
        default = compose("train_hmr")
    for cfg in cfgs.values():
        EngineConfig(**cfg.engine)
    assert (
        default.backbone.name == "blazepose" and default.transformer.init == "auto"
    )  # hmr_cpu is the default
    mega, genhmr = cfgs["mega_hrnet"], cfgs["genhmr_vit"]
    assert (mega.engine.lr, tuple(mega.engine.betas), mega.engine.weight_decay, mega.engine.epochs) == (
        1e-3,
        (0.9, 0.99),
        0.05,
        100,
    )
    assert mega.warmup_epochs == 20 and mega.conditioning.name == "prefix" and mega.images.name == "coco"
    assert cfgs["mega_hrnet_mix"].engine.epochs == 10 and cfgs["mega_hrnet_mix"].images.name == "mix"
    assert cfgs["mega_vit"].backbone.freeze and cfgs["mega_vit_mix"].backbone.trainable_blocks == 10
    assert genhmr.conditioning.name == "deformable" and list(genhmr.backbone.pyramid_scales) == [8, 4, 1]
    assert (genhmr.engine.lr, genhmr.tokenizer.kind, genhmr.conditioning.num_layers) == (1e-5, "pose", 4)
    w = genhmr.loss.weights
    assert (w.mask, w.theta, w.betas, w.joints_3d, w.kp2d) == (1.0, 1e-3, 5e-4, 5e-2, 1e-2)
    assert (genhmr.loss.gumbel.tau_start, genhmr.loss.gumbel.tau_end, genhmr.loss.gumbel.anneal_fraction) == (
        1.0,
        0.01,
        0.5,
    )


def test_missing_tokenizer_and_pretrained_name_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="train_tokenizer.py experiment=pose_tokenizer_cpu"):
        find_tokenizer(None, "pose")
    with pytest.raises(FileNotFoundError, match="scripts/pretrain.py tokenizer.checkpoint=tok.pt"):
        find_pretrained("auto", Path("tok.pt"), "0" * 64)
    assert find_pretrained("null", Path("tok.pt"), "0") is None


# --- end to end --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    from mega.data.images.synthetic import ensure_synthetic_images

    root = tmp_path_factory.mktemp("hmr") / "images"
    motion = {"root": str(root.parent / "motion"), "sequences": {"train": 3, "val": 2, "test": 2}}
    ensure_synthetic_images(root, sizes={"train": 8, "val": 4, "test": 4}, motion=motion, progress=False)
    return root


def _overrides(images: Path, tokenizer: Path, run_dir: Path, batch_size: int) -> list[str]:
    return [
        f"images.root={images}",
        "images.augment=null",
        "feature_cache_views=1",
        f"tokenizer.checkpoint={tokenizer}",
        "transformer.init=null",
        "backbone=tiny_cnn",
        "backbone.input_size=32",
        "backbone.widths=[8,16]",
        "backbone.depths=[1]",
        "backbone.freeze=true",
        "transformer.dim=16",
        "transformer.encoder_depth=1",
        "transformer.decoder_depth=1",
        "transformer.num_heads=2",
        "heads.head_hidden=16",
        "engine.max_steps=3",
        f"engine.batch_size={batch_size}",
        "engine.warmup_steps=1",
        "engine.log_every=1",
        "engine.eval_every=0",
        "engine.ckpt_every=0",
        "engine.progress_bar=false",
        "eval_batch_size=4",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ddp_matches_one_process_and_writes_results(tmp_path, free_body, tiny_images):
    torch.manual_seed(0)
    tok = tiny_mesh_tokenizer(free_body)
    with torch.no_grad():
        tok.quantizer.load_codebook(torch.randn(8, 2) * 0.02)
    tok_path = tmp_path / "tokenizer.pt"
    save_tokenizer(tok_path, tok)
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", "--max-restarts=0"]
    script = str(REPO / "scripts" / "train_hmr.py")
    _run([*torchrun, script, *_overrides(tiny_images, tok_path, tmp_path / "ddp", 2)], tmp_path)
    _run([sys.executable, script, *_overrides(tiny_images, tok_path, tmp_path / "one", 4)], tmp_path)
    ddp, one = (load_checkpoint(tmp_path / name / "hmr.pt") for name in ("ddp", "one"))
    assert one["tokenizer"]["kind"] == "mesh" and one["step"] == 3
    # The backbone is frozen here (BatchNorm statistics of half batches would differ); everything else
    # trains on the same global batch, masks and samples: weights agree up to summation order.
    for name, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, atol=1e-5, rtol=1e-4)
    results = json.loads((tmp_path / "one" / "results.json").read_text())
    assert set(results["test"]) == {"model", "mean_pose", "oracle"} and results["protocol"] == "smpl24"
    assert results["test"]["oracle"]["mpjpe"] == pytest.approx(0.0, abs=1e-3)
    assert results["test"]["mean_pose"]["pve"] > 10.0 and results["test"]["model"]["pve"] > 0.0
    for term in ("mask", "rotation", "kp2d_heads", "acc"):
        assert f"train/{term}" in results["final_train"]
    assert len(results["val_history"]) == 1 and "pa_mpjpe" in results["val_history"][0]
    assert (tmp_path / "one" / "test" / "per_sample.csv").is_file()
