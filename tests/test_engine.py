"""The training engine: DDP equivalence, exact resume, checkpoint errors, NaN stop, schedule, run dir."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from engine_ddp_worker import RecordingLogger, make_dataset, make_model, mse_loss
from fixtures_engine import small_engine
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import TensorDataset

from mega.engine import (
    CheckpointError,
    DistInfo,
    EngineConfig,
    NonFiniteLossError,
    ResumableBatches,
    RngStreams,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    lr_at,
    resolve_precision,
    rundir,
    save_checkpoint,
    seed_everything,
    train,
)

REPO = Path(__file__).resolve().parents[1]
CPU = DistInfo()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread


def _engine(**overrides) -> EngineConfig:
    return EngineConfig(
        **small_engine(**{"max_steps": 10, "warmup_steps": 3, "ckpt_every": 0, "resume": "auto", **overrides})
    )


def _noisy_loss(model: nn.Module, batch, rng: RngStreams):
    """Uses dropout (global torch RNG) and two named streams, so a resume must restore all of them."""
    x, y = batch
    x = x + 0.1 * torch.randn(x.shape, generator=rng["augment"])
    keep = torch.rand(y.shape, generator=rng["mask"]) > 0.2
    err = (model(x) - y).pow(2)
    return (err * keep).sum() / keep.sum(), {"mse": err.mean().detach(), "kept": keep.float().mean()}


def _train(tmp: Path, engine: EngineConfig, loss_fn=_noisy_loss, dropout: float = 0.3, **kw) -> nn.Module:
    seed_everything(0)
    model = make_model(dropout)
    model.result = train(model, loss_fn, make_dataset(), engine=engine, dist=CPU, run_dir=tmp, **kw)
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- schedule -----------------------------------------------------------------------------------------


def test_lr_schedule_known_values():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)  # first update: base / warmup
    assert lr_at(4, **kw) == pytest.approx(0.5)
    assert lr_at(9, **kw) == pytest.approx(1.0)  # end of warm-up
    assert lr_at(10, **kw) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half-way: min + (base - min) / 2
    assert lr_at(110, **kw) == pytest.approx(0.1)  # cosine end
    assert lr_at(500, **kw) == pytest.approx(0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    for step in range(120):  # the scheduler applies lr_at to the group's peak lr
        assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * lr_at(step, **kw))
        opt.step()
        sched.step()


def test_fused_adamw_is_the_default_and_matches_the_reference_update():
    """build_optimizer picks PyTorch's fused AdamW on CPU; 20 updates agree with the per-tensor loop."""

    def run(fused):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(7, 5), nn.LayerNorm(5), nn.Linear(5, 3))
        opt = build_optimizer(model, lr=1e-2, weight_decay=0.05, fused=fused)
        for step in range(20):
            x = torch.randn(16, 7, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return opt, [p.detach().clone() for p in model.parameters()]

    default, fast = run(None)
    assert all(g["fused"] for g in default.param_groups)
    reference_opt, reference = run(False)
    assert not any(g["fused"] for g in reference_opt.param_groups)
    torch.manual_seed(0)
    initial = nn.Sequential(nn.Linear(7, 5), nn.LayerNorm(5), nn.Linear(5, 3))[0].weight.detach()
    assert float((reference[0] - initial).abs().max()) > 1e-2  # the updates moved the weights
    for a, b in zip(fast, reference):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_lr_scales_give_each_prefix_its_multiple_of_the_schedule():
    """A scaled part follows the same warm-up + cosine at its multiple; an SGD-like check of the first
    update: with Adam the first step moves every weight by about its group's lr."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0, lr_scales={"1.": 0.1, "1.1.": 0.5})
    want = {"0.": 1e-2, "1.0.": 1e-3, "1.1.": 5e-3}
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert by_param[id(p)] == pytest.approx(next(v for k, v in want.items() if name.startswith(k)))
    assert sorted(len(g["params"]) for g in opt.param_groups) == [1, 1, 1, 1, 1, 1]  # no parameter twice
    sched = build_scheduler(opt, warmup_steps=1, total_steps=10, min_lr_ratio=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(8, 4)).square().mean().backward()
    opt.step()
    sched.step()
    for name, p in model.named_parameters():
        lr = next(v for k, v in want.items() if name.startswith(k))
        moved = (p.detach() - before[name]).abs()
        assert float(moved.max()) == pytest.approx(lr, rel=1e-3)  # Adam's first step: lr * sign(grad)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [
            g["initial_lr"] * lr_at(1, base_lr=1.0, warmup_steps=1, total_steps=10, min_lr=0.1)
            for g in opt.param_groups
        ]
    )
    with pytest.raises(ValueError, match="no trainable parameter name starts with"):
        build_optimizer(model, lr=1e-2, weight_decay=0.0, lr_scales={"backbone.": 0.1})


# --- checkpoints ----------------------------------------------------------------------------------------


def test_checkpoint_round_trip_is_atomic(tmp_path):
    state = {"model": {"w": torch.arange(6.0)}, "step": 3, "config": {"a": [1, 2]}}
    path = save_checkpoint(tmp_path / "ck" / "last.pt", state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left behind
    back = load_checkpoint(path, required=("model", "step"))
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["config"] == {"a": [1, 2]}
    with pytest.raises(CheckpointError, match=r"lacks \['optimizer'\]"):
        load_checkpoint(path, required=("optimizer",))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.randn(100, 100)}, "step": 1})
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 10)
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(path))) as err:
        load_checkpoint(path)
    assert ("does not exist" if damage == "missing" else "corrupt or truncated") in str(err.value)


def test_resume_from_corrupt_checkpoint_fails_clearly(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="last.pt is corrupt or truncated"):
        _train(tmp_path, _engine())


# --- data order ----------------------------------------------------------------------------------------


def _ids(batches, n: int) -> list[list[int]]:
    stream = iter(batches)
    return [next(stream)[0].tolist() for _ in range(n)]


def test_batches_shard_shuffle_and_resume():
    data = TensorDataset(torch.arange(40))
    one = _ids(ResumableBatches(data, 8, DistInfo(), seed=0), 10)  # two epochs of 5 batches
    ranks = [_ids(ResumableBatches(data, 4, DistInfo(rank=r, world_size=2), seed=0), 10) for r in (0, 1)]
    for k in range(10):  # step k of 2 ranks x 4 covers the same samples as 1 process x 8
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(one[k])
    for epoch in (one[:5], one[5:]):  # every sample once per epoch
        assert sorted(sum(epoch, [])) == list(range(40))
    assert one[:5] != one[5:]  # set_epoch reshuffles
    later = ResumableBatches(data, 8, DistInfo(), seed=0)
    later.epoch, later.position = 1, 2  # resume mid-epoch: the remaining batches, same order
    assert _ids(later, 3) == one[7:10] and (later.epoch, later.position) == (1, 5)


# --- exact resume -----------------------------------------------------------------------------------------


def test_killed_run_resumes_bit_identically(tmp_path):
    """40 samples / batch 4 = 10 batches per epoch; 25 steps cross two epochs; crash in step 18."""
    engine = _engine(max_steps=25, ckpt_every=4)
    reference = _train(tmp_path / "a", engine)

    calls = {"n": 0}

    def crashing_loss(model, batch, rng):
        calls["n"] += 1
        if calls["n"] == 18:
            raise KeyboardInterrupt("simulated kill")
        return _noisy_loss(model, batch, rng)

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", engine, crashing_loss)
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (16, 1, 6)  # mid-epoch
    config = OmegaConf.create({"engine": {"seed": 0}, "note": "${engine.seed}"})
    resumed = _train(tmp_path / "b", engine, config=config)  # resume=auto picks up checkpoints/last.pt
    assert _same(resumed, reference)
    assert (reference.result.start_step, resumed.result.start_step, resumed.result.step) == (0, 16, 25)
    final = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert final["step"] == 25 and final["config"] == {"engine": {"seed": 0}, "note": 0}  # resolved, plain


def test_eval_does_not_change_training(tmp_path):
    seen = []

    def eval_fn(model, dist):
        assert not model.training
        torch.rand(10)  # draws from the global RNG must not leak into training
        seen.append(1)
        return {"score": 1.0}

    with_eval = _train(tmp_path / "a", _engine(eval_every=3), eval_fn=eval_fn)
    without = _train(tmp_path / "b", _engine())
    assert len(seen) == 4 and _same(with_eval, without)  # steps 3, 6, 9 and the end


def test_grad_accumulation_matches_large_batch(tmp_path):
    big = _train(tmp_path / "a", _engine(batch_size=8, grad_clip=0.0), mse_loss, dropout=0.0)
    accum = _train(tmp_path / "b", _engine(batch_size=4, grad_accum=2, grad_clip=0.0), mse_loss, dropout=0.0)
    for x, y in zip(big.parameters(), accum.parameters()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


# --- NaN ----------------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch, rng):
        calls["n"] += 1
        loss, terms = mse_loss(model, batch, rng)
        rec = loss * (float("nan") if calls["n"] == 7 else 1.0)
        return rec + 0.0 * loss, {"rec": rec, "reg": torch.tensor(0.5)}

    ckpt = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(NonFiniteLossError) as err:
        _train(tmp_path, _engine(ckpt_every=5), loss_fn)
    message = str(err.value)
    assert "step 7" in message and "term 'rec' = nan" in message and "'reg'" not in message
    assert str(ckpt) in message
    state = load_checkpoint(ckpt, required=("model", "step"))
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["model"].values())


# --- precision, configs, logger -------------------------------------------------------------------------------


def test_precision_switch(tmp_path):
    cpu = torch.device("cpu")
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else None)
    assert resolve_precision("fp32", cpu) is None and resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)
    dtypes = set()

    def loss_fn(model, batch, rng):
        out = model(batch[0])
        dtypes.add(out.dtype)
        return (out.float() - batch[1]).pow(2).mean(), {}

    _train(tmp_path, _engine(max_steps=2, precision="bf16"), loss_fn)
    assert dtypes == {torch.bfloat16}


def test_engine_yaml_mirrors_engine_config():
    values = yaml.safe_load((REPO / "configs/engine/default.yaml").read_text())
    assert list(values) == [f.name for f in dataclasses.fields(EngineConfig)]
    assert EngineConfig(**values).betas == (0.9, 0.999)
    for name in ("wandb", "none"):
        assert yaml.safe_load((REPO / f"configs/logger/{name}.yaml").read_text())["name"] == name


def test_wandb_logger_offline(tmp_path, monkeypatch):
    from mega.engine import build_logger

    monkeypatch.setenv("WANDB_SILENT", "true")
    options = yaml.safe_load((REPO / "configs/logger/wandb.yaml").read_text())
    assert type(build_logger(options, run_dir=tmp_path, config={}, is_main=False)).__name__ == "NullLogger"
    logger = build_logger(options, run_dir=tmp_path, config={"seed": 0}, is_main=True)
    logger.log({"train/loss": 1.0}, step=1)
    logger.finish()
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


# --- run directory under torchrun ----------------------------------------------------------------------------


@pytest.fixture()
def fresh_run_id(monkeypatch):
    monkeypatch.setattr(rundir, "_cache", {})
    for var in ("MEGA_RUN_ID", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_run_id_rules(fresh_run_id):
    mp = fresh_run_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", rundir.run_id())  # single process: a timestamp
    mp.setattr(rundir, "_cache", {})
    mp.setenv("WORLD_SIZE", "2")
    mp.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --rdzv-id and without an agent store
    with pytest.raises(RuntimeError, match="MEGA_RUN_ID"):
        rundir.run_id()
    mp.setenv("TORCHELASTIC_RUN_ID", "job42")
    assert rundir.run_id() == "job42"
    mp.setattr(rundir, "_cache", {})
    mp.setenv("MEGA_RUN_ID", "mine")
    assert rundir.run_id() == "mine"


def test_ranks_agree_through_the_torchrun_store(fresh_run_id):
    """Two 'ranks' proposing different timestamps both get the first one (what torchrun's store gives)."""
    from torch.distributed import TCPStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=10))
    mp = fresh_run_id
    for k, v in dict(WORLD_SIZE="2", TORCHELASTIC_USE_AGENT_STORE="True", MASTER_ADDR="127.0.0.1").items():
        mp.setenv(k, v)
    mp.setenv("MASTER_PORT", str(port))
    answers = []
    for stamp in ("2030-01-01_00-00-00", "2030-01-01_00-00-01"):
        mp.setattr(rundir, "_cache", {})
        mp.setattr(rundir, "_timestamp", lambda stamp=stamp: stamp)
        answers.append(rundir.run_id())
    assert answers == ["2030-01-01_00-00-00"] * 2
    del server


def test_ddp_two_ranks_match_one_process_and_share_run_dir(tmp_path):
    """torchrun with 2 gloo ranks x batch 4 == 1 process x batch 8, and both ranks use one Hydra run dir."""
    steps = 4
    conf = {
        "defaults": [{"engine": "default"}, {"logger": "none"}, "_self_"],
        "hydra": {
            "searchpath": [f"file://{REPO / 'configs'}"],
            "run": {"dir": f"{tmp_path}/out/${{mega_run_id:}}"},
        },
        "engine": small_engine(max_steps=steps, warmup_steps=2, device="cpu", ckpt_every=0),
        "out": str(tmp_path / "result.pt"),
    }
    (tmp_path / "worker.yaml").write_text(yaml.safe_dump(conf))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    env.pop("MEGA_RUN_ID", None)
    cmd = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc_per_node=2",
        "--max-restarts=0",
        str(REPO / "tests" / "engine_ddp_worker.py"),
        "--config-path",
        str(tmp_path),
        "--config-name",
        "worker",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(f"{tmp_path}/result.pt.rank{r}", weights_only=True) for r in (0, 1)]
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"]
    assert len(list((tmp_path / "out").iterdir())) == 1  # one run directory, not one per rank
    assert (Path(ranks[0]["run_dir"]) / "checkpoints" / "last.pt").is_file()

    logger = RecordingLogger()
    single = _train(
        tmp_path / "single",
        _engine(max_steps=steps, batch_size=8, warmup_steps=2),
        mse_loss,
        0.0,
        logger=logger,
    )
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["model"][name], value, atol=1e-6, rtol=1e-5)
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name])  # ranks stay in sync
    # Adam hides a wrong gradient scale in the weights, so compare the (synced) gradient norms too.
    ddp_norms = [m["train/grad_norm"] for _, m in ranks[0]["records"]]
    one_norms = [m["train/grad_norm"] for _, m in logger.records]
    assert ddp_norms == pytest.approx(one_norms, rel=1e-5) and len(one_norms) == steps
    assert all(math.isfinite(n) for n in one_norms)
