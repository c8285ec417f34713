"""`make quickstart` orchestration end to end at tiny sizes: every stage runs its real script once, a
second run skips them all, the final table and the pictures are reported, unknown stage names fail."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "quickstart.py"

TINY_TR = [
    "transformer.dim=16",
    "transformer.encoder_depth=1",
    "transformer.decoder_depth=1",
    "transformer.num_heads=2",
]
TINY_ENGINE = [
    "engine.batch_size=4",
    "engine.warmup_steps=1",
    "engine.log_every=1",
    "engine.ckpt_every=0",
    "engine.progress_bar=false",
]


def tiny_overrides(tmp: Path) -> list[str]:
    """The quickstart at test size: 8 motion sequences, 2-3 updates per training stage, 16 images."""
    tok = ["engine.max_steps=2", "eval_batch_size=16", *TINY_ENGINE]
    pre = [
        "engine.max_steps=2",
        "engine.eval_every=0",
        "eval_batch_size=16",
        "encode_batch_size=64",
        *TINY_TR,
        *TINY_ENGINE,
    ]
    hmr = [
        "engine.max_steps=2",
        "engine.eval_every=0",
        "images.augment=null",
        "feature_cache_views=1",
        "backbone=tiny_cnn",
        "backbone.freeze=true",
        "backbone.input_size=32",
        "backbone.widths=[8,16]",
        "backbone.depths=[1]",
        "heads.head_hidden=16",
        "eval_batch_size=4",
        "test_limit=4",
        "eval_limit=4",
        *TINY_TR,
        *TINY_ENGINE,
    ]
    arg = lambda xs: "[" + ",".join(f"'{x}'" for x in xs) + "]"  # noqa: E731  (quoted: items hold '=')
    return [
        f"run_dir={tmp / 'qs'}",
        "stream=false",
        f"motion.root={tmp / 'motion'}",
        "motion.sequences={train: 4, val: 2, test: 2}",
        f"images.root={tmp / 'images'}",
        "images.sizes={train: 8, val: 4, test: 4}",
        f"tokenizer.args={arg(tok)}",
        f"pretrain.args={arg(pre)}",
        f"train_hmr.args={arg(hmr)}",
        "eval.samplers.stochastic=2",
        'eval.args=["limit=4","timing.images=0","batch_size=4"]',
        "demo.num_images=2",
        "demo.uncertainty_samples=2",
        'demo.args=["panel_height=48","progress=false"]',
        "demo.video=null",
    ]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=1500, cwd=cwd
    )


def test_quickstart_runs_every_stage_then_skips_them(tmp_path):
    out = _run(tiny_overrides(tmp_path), ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    qs = tmp_path / "qs"
    for stage in (
        "motion",
        "tokenizer",
        "pretrain",
        "images",
        "train_hmr",
        "eval_mean_pose",
        "eval_deterministic",
        "eval_stochastic",
        "eval_uncertainty_guided",
        "eval_pose_guided",
        "demo_heldout",
        "demo_heldout_uncertainty",
    ):
        assert f"{stage:<26} done in" in out.stdout, (stage, out.stdout[-3000:])
    assert "demo_video" in out.stdout and "skipped: no video" in out.stdout
    table = out.stdout[out.stdout.index("protocol smpl24") :]
    for row in ("mean_pose (floor)", "deterministic", "stochastic", "uncertainty_guided", "pose_guided"):
        assert row in table
    # train_hmr runs alone and gets its own thread count (the others share the two cores)
    assert "threads=2" in (qs / "logs/train_hmr.log").read_text().splitlines()[0]
    assert "threads=1" in (qs / "logs/tokenizer.log").read_text().splitlines()[0]
    record = json.loads((qs / "quickstart.json").read_text())
    assert set(record["metrics"]) == {
        "stochastic (mean of Q)",
        "stochastic (best of Q)",
        "mean_pose",
        "deterministic",
        "stochastic",
        "uncertainty_guided",
        "pose_guided",
    }
    assert all(record["metrics"][k]["pve"] > 0 for k in record["metrics"])
    pictures = [Path(p) for p in record["pictures"]]
    assert len(pictures) == 9 and all(
        p.is_file() for p in pictures
    )  # (sheet + 2 images) x 3 held-out demo runs
    summary = json.loads((qs / "demo/heldout/summary.json").read_text())
    person = summary["people"][0]
    assert person["source"] == "coco_json" and person["reprojection_px"] is not None
    assert len(trimesh.load(person["files"]["obj"], process=False).vertices) == 1229  # the free body
    # second run: everything exists, nothing runs
    again = _run(tiny_overrides(tmp_path), ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done in" not in again.stdout and again.stdout.count("done already") == 13
    assert "nothing to do" in again.stdout


def test_a_failing_background_stage_stops_the_run_before_its_reader(tmp_path):
    """The images stage runs beside the tokenizer and pre-training; its failure surfaces as one clear
    error naming its log when train_hmr (which reads its output) is about to start, and train_hmr never runs."""
    out = _run([*tiny_overrides(tmp_path), "images.args=['no_such_key=1']"], ROOT)
    assert out.returncode == 1, out.stdout[-2000:]
    assert f"{'images':<26} running in the background" in out.stdout
    assert f"{'pretrain':<26} done in" in out.stdout  # the foreground went on meanwhile
    assert "train_hmr" not in out.stdout
    assert "stage images failed" in out.stderr and "logs/images.log" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_stage_is_a_clear_error(tmp_path):
    out = _run([*tiny_overrides(tmp_path), "force=[trian_hmr]"], ROOT)
    assert out.returncode == 1 and "force=['trian_hmr']: unknown stage" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["configs/quickstart.yaml"])
def test_config_lists_every_sampler_of_the_issue(name):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / name)
    assert dict(cfg.eval.samplers) == {
        "deterministic": 1,
        "stochastic": 10,
        "uncertainty_guided": 1,
        "pose_guided": 1,
    }
