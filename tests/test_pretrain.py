"""Pre-training: masks and loss independent of the rank layout, held-out metrics and baselines, the missing
tokenizer message, DDP on 2 CPU processes == 1 process, and a smoke run of pretrain.py + generate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_models import tiny_mesh_tokenizer
from torch import nn

from mega.engine import DistInfo, load_checkpoint
from mega.stage_inputs import find_tokenizer
from mega.tokenizers import save_tokenizer
from mega.transformer import GlobalBatchMasks

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import pretrain  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def test_global_batch_masks_do_not_depend_on_the_rank_layout():
    one = GlobalBatchMasks(0, "cosine")
    ranks = [GlobalBatchMasks(0, "cosine", rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        full, count = one.draw(8, 10)
        parts = [m.draw(4, 10) for m in ranks]
        assert torch.equal(parts[0][0], full[0::2]) and torch.equal(parts[1][0], full[1::2])  # sampler's rows
        assert parts[0][1] == parts[1][1] == count == int(full.sum()) and bool(full.any(1).all())
    state = one.state_dict()
    after = one(8, 10)
    one.load_state_dict(state)
    assert torch.equal(one(8, 10), after) and one.draws == 4


class _Table(nn.Module):
    """A 'transformer' whose logits are a learnable table per position (ignores its input)."""

    mask_id = 5

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table.expand(ids.shape[0], -1, -1) + 0.1 * ids.clamp(max=4).unsqueeze(-1)


def test_loss_of_two_ranks_averages_to_the_one_process_loss():
    """The DDP average of the per-rank (rescaled) losses and gradients equals the full-batch ones."""
    ids = torch.randint(0, 5, (8, 6), generator=torch.Generator().manual_seed(1))

    def run(world: int):
        losses, grads = [], []
        for rank in range(world):
            model = _Table()
            masks = GlobalBatchMasks(3, "cosine", rank=rank, world_size=world)
            loss, terms = pretrain.masked_token_loss(masks, world)(model, ids[rank::world], None)
            loss.backward()
            losses.append(loss.detach())
            grads.append(model.table.grad)
        return torch.stack(losses).mean(), torch.stack(grads).mean(0)

    (loss1, grad1), (loss2, grad2) = run(1), run(2)
    torch.testing.assert_close(loss2, loss1)
    torch.testing.assert_close(grad2, grad1)


def test_baselines_and_heldout_metrics_known_answers():
    train_ids = torch.tensor([[0, 1], [0, 2], [0, 2], [3, 2]])  # global mode 2 (4x); position modes (0, 2)
    eval_ids = torch.tensor([[0, 2], [3, 1]])
    base = pretrain.code_baselines(train_ids, eval_ids, codebook_size=4)
    assert base["baseline_acc"] == pytest.approx(1 / 4)
    assert base["baseline_acc_position"] == pytest.approx(2 / 4)
    # add-one smoothed frequencies: position 0 -> (4, 1, 1, 2) / 8, position 1 -> (1, 2, 4, 1) / 8
    expected = -(torch.tensor([4 / 8, 2 / 8, 4 / 8, 2 / 8]).log().mean())
    assert base["baseline_nll_position"] == pytest.approx(float(expected))

    class Unigram(nn.Module):  # predicts the smoothed per-position frequencies, whatever it sees
        mask_id = 4

        def forward(self, ids, mask):
            table = torch.tensor([[4.0, 1, 1, 2], [1, 2, 4, 1]]).log()
            return table.expand(ids.shape[0], -1, -1)

    eval_fn = pretrain.heldout_eval(eval_ids, [0.5, 1.0], seed=0, batch_size=1, extra=base, step_fn=lambda: 7)
    out = eval_fn(Unigram(), DistInfo())
    assert out["nll@1"] == pytest.approx(base["baseline_nll_position"], rel=1e-6)
    assert out["acc@1"] == pytest.approx(base["baseline_acc_position"])
    assert 0 <= out["acc@0.5"] <= 1 and eval_fn.history == [{"step": 7, **out}]


def test_missing_tokenizer_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/train_tokenizer.py") as err:
        find_tokenizer(None, kind=None)
    assert "tokenizer.checkpoint=PATH" in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        find_tokenizer("nope.pt", kind=None)
    newest = tmp_path / "outputs/train_tokenizer/b/tokenizer.pt"
    for path in (tmp_path / "outputs/train_tokenizer/a/tokenizer.pt", newest):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    os.utime(newest.parent.parent / "a" / "tokenizer.pt", (0, 0))
    assert find_tokenizer(None, kind=None).resolve() == newest
    default = tmp_path / "data/checkpoints/tokenizer_mesh.pt"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"x")
    assert find_tokenizer(None, kind=None) == Path("data/checkpoints/tokenizer_mesh.pt")


# --- end to end: torchrun DDP vs one process, then generate.py ---------------------------------------------


def _overrides(tmp: Path, tokenizer: Path, run_dir: Path, batch_size: int) -> list[str]:
    return [
        f"tokenizer.checkpoint={tokenizer}",
        f"motion.root={tmp / 'motion'}",
        "motion.sequences.train=3",
        "motion.sequences.val=2",
        "motion.sequences.test=2",
        f"token_cache_dir={tmp / 'tokens'}",
        "transformer.dim=16",
        "transformer.encoder_depth=1",
        "transformer.decoder_depth=1",
        "transformer.num_heads=2",
        "engine.max_steps=3",
        f"engine.batch_size={batch_size}",
        "engine.warmup_steps=1",
        "engine.log_every=1",
        "engine.eval_every=2",
        "engine.ckpt_every=0",
        "engine.progress_bar=false",
        "eval_batch_size=64",
        f"hydra.run.dir={run_dir}",
    ]


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ddp_matches_one_process_and_generate_smoke(tmp_path, free_body):
    torch.manual_seed(0)
    tok = tiny_mesh_tokenizer(free_body, name="mesh_vqvae")
    with torch.no_grad():  # spread the codes over the latents so that several ids occur
        tok.quantizer.load_codebook(torch.randn(8, 2) * 0.02)
    tok_path = tmp_path / "tokenizer.pt"
    save_tokenizer(tok_path, tok)

    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", "--max-restarts=0"]
    script = str(REPO / "scripts" / "pretrain.py")
    _run([*torchrun, script, *_overrides(tmp_path, tok_path, tmp_path / "ddp", 4)], tmp_path)
    _run([sys.executable, script, *_overrides(tmp_path, tok_path, tmp_path / "one", 8)], tmp_path)
    ddp, one = (load_checkpoint(tmp_path / name / "pretrained.pt") for name in ("ddp", "one"))
    assert ddp["transformer"] == one["transformer"] and one["transformer"]["num_tokens"] == 6
    # Summation order differs between an all-reduce of two half-batch gradients and one full-batch
    # gradient (~1e-7 relative); Adam's normalisation magnifies that on near-zero gradient entries,
    # so parameters agree to ~1e-6 absolute, not bitwise. A real mismatch (wrong batch split, a lost
    # gradient) is orders of magnitude larger.
    for name, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, atol=1e-5, rtol=1e-5)
    for key in ("eval/acc@0.5", "eval/nll@0.9", "eval/nll@1", "train/loss"):
        assert ddp["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-5, abs=1e-7)
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert [h["step"] for h in metrics["eval_history"]] == [2, 3]
    assert len(list((tmp_path / "tokens").glob("tokens_synthetic_motion_*.npz"))) == 2  # train + val, shared

    out = tmp_path / "gen"
    _run(
        [
            sys.executable,
            str(REPO / "scripts" / "generate.py"),
            f"checkpoint={tmp_path / 'one' / 'pretrained.pt'}",
            "num_samples=12",
            "batch_size=5",
            "num_obj=2",
            "feature_components=4",
            "feature_fit_samples=40",
            "sampler.steps=4",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"held-out", "training data", "generated", "random ids"}
    assert all(r["n"] == 12 and r["apd_cm"] >= 0 for r in results["rows"].values())
    assert results["rows"]["held-out"]["fd_cm2"] is None and results["rows"]["generated"]["fd_cm2"] >= 0
    assert sorted(p.name for p in (out / "meshes").iterdir()) == ["generated_000.obj", "generated_001.obj"]
    with np.load(out / "generated.npz") as f:
        assert f["vertices"].shape == (12, free_body.num_vertices, 3) and f["ids"].shape == (12, 6)


def test_presets_compose():
    from hydra import compose, initialize_config_dir

    from mega.engine import EngineConfig, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        paper = compose("pretrain", overrides=["experiment=pretrain_paper"])
        cpu, gen = compose("pretrain"), compose("generate")
    engine = EngineConfig(**paper.engine)
    assert (engine.lr, engine.betas, engine.weight_decay, engine.epochs) == (1e-3, (0.9, 0.99), 0.05, 500)
    assert paper.warmup_epochs == 20 and (paper.transformer.dim, paper.transformer.encoder_depth) == (
        1024,
        12,
    )
    assert paper.transformer.decoder_depth == 4 and EngineConfig(**cpu.engine).max_steps > 0
    assert (gen.sampler.steps, gen.sampler.temperature, gen.sampler.temperature_schedule) == (
        20,
        1.2,
        "linear_pow6",
    )
