"""scripts/train_tokenizer.py end to end on a tiny synthetic motion set, for both tokenizers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mega.tokenizers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "preset,extra",
    [  # the two CPU presets, made tiny
        ("experiment=mesh_tokenizer_cpu", ["tokenizer.hidden_dim=64"]),
        (
            "experiment=pose_tokenizer_cpu",
            [
                "tokenizer.num_tokens=8",
                "tokenizer.codebook_size=16",
                "tokenizer.code_dim=8",
                "tokenizer.width=16",
                "tokenizer.num_blocks=1",
            ],
        ),
    ],
)
def test_train_tokenizer_writes_a_loadable_tokenizer_and_metrics(tmp_path, preset, extra):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train_tokenizer.py"),
        preset,
        *extra,
        f"motion.root={tmp_path / 'motion'}",
        "motion.sequences.train=3",
        "motion.sequences.val=2",
        "motion.sequences.test=2",
        "engine.max_steps=4",
        "engine.batch_size=16",
        "engine.warmup_steps=1",
        "engine.progress_bar=false",
        "logger=none",
        "threads=1",
        f"hydra.run.dir={run}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "tokenizer_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["num_samples"] > 0
    assert metrics["tokenizer"] == ("pose_vqvae" if "pose" in preset else "mesh_vqvae")
    assert 0 < metrics["pve_mm"] < 1000 and 0 < metrics["code_usage"] <= 1
    tok = load_tokenizer(run / "tokenizer.pt")
    ids = torch.randint(0, tok.codebook_size, (2, tok.num_tokens))
    assert torch.isfinite(tok.decode(ids)).all()
    assert (run / "checkpoints" / "last.pt").is_file()
    assert metrics["steps_this_run"] == 4 and metrics["train_samples_per_s"] > 0
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # resumes, done
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((run / "tokenizer_metrics.json").read_text())
    assert (resumed["steps"], resumed["steps_this_run"], resumed["pve_mm"]) == (4, 0, metrics["pve_mm"])
