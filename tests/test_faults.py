"""Fault tolerance: torchrun restarts after a killed rank, NaN, a full disk and a corrupt checkpoint.

The multi-process tests are real: tests/engine_ddp_worker.py under torchrun with 2 gloo ranks (launched by
tests/faults_launch.py), faults injected through ``engine.fault.*``. "Bitwise" means every parameter of
the final model equals the one of an uninterrupted 2-rank run (``torch.equal``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from engine_ddp_worker import make_dataset, make_model, mse_loss
from faults_launch import REPO, WORKER, launch, same_weights
from fixtures_engine import small_engine

from mega.engine import (
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    DiskFullError,
    DistInfo,
    EngineConfig,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)
from mega.engine.checkpoint import resume_candidates
from mega.errors import ConfigError, UserError, entry_point

pytestmark = pytest.mark.usefixtures("one_thread")


# --- in-process: checkpoint files ------------------------------------------------------------------------


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((64, 64), float(step))}, "step": step}


def test_keep_last_history_and_integrity(tmp_path):
    path = tmp_path / "last.pt"
    for step in (1, 2, 3):
        save_checkpoint(path, _state(step), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-1.pt", "last.pt"]  # no temp files
    assert [load_checkpoint(p)["step"] for p in resume_candidates("auto", tmp_path, 2)] == [3, 2]
    raw = bytearray(path.read_bytes())  # flip bytes inside the tensor data: the zip still opens
    at = raw.index(torch.full((1,), 3.0).numpy().tobytes()) + 400
    raw[at : at + 4] = b"\x00\x01\x02\x03"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match=r"last\.pt is corrupt: its content hash"):
        load_checkpoint(path)


def test_disk_full_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", _state(1), keep=2)
    before = path.read_bytes()
    with pytest.raises(DiskFullError, match=r"disk full while writing checkpoint .*last\.pt \(No space left"):
        save_checkpoint(path, _state(2), keep=2, _fail_after=1000)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial file, history untouched
    assert isinstance(DiskFullError("x"), UserError)


def _engine(**kw) -> EngineConfig:
    return EngineConfig(
        **small_engine(**{"max_steps": 10, "warmup_steps": 2, "ckpt_every": 2, "keep_last": 2, **kw})
    )


def _train(run_dir, engine, config=None, width=16):
    seed_everything(0)
    model = (
        make_model()
        if width == 16
        else torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Linear(width, 3))
    )
    train(model, mse_loss, make_dataset(), engine=engine, dist=DistInfo(), run_dir=run_dir, config=config)
    return model


def test_corrupt_newest_resumes_from_older_in_process(tmp_path, caplog):
    reference = _train(tmp_path / "ref", _engine())
    run = tmp_path / "run"
    _train(run, _engine())  # last.pt = step 10, last-1.pt = step 8
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    resumed = _train(run, _engine())  # redoes updates 9 and 10
    assert "skipping checkpoint" in caplog.text and str(last) in caplog.text
    assert "resumed from the older checkpoint" in caplog.text and "at step 8" in caplog.text
    assert same_weights(resumed.state_dict(), reference.state_dict())
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == [
        "last-1.pt",
        "last.pt",
        "last.pt.corrupt",
    ]  # the damaged file is kept, out of the rotation
    assert [load_checkpoint(run / "checkpoints" / n)["step"] for n in names[:2]] == [8, 10]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    config = {"engine": {"seed": 0, "batch_size": 4}, "transformer": {"dim": 16}}
    _train(tmp_path, _engine(max_steps=2), config)
    other = {**config, "transformer": {"dim": 32}}
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.dim: 16 -> 32") as err:
        _train(tmp_path, _engine(max_steps=4), other)
    assert "engine.strict_resume=false" in str(err.value)
    with pytest.raises(
        CheckpointMismatchError, match=r"world_size|engine\.batch_size: 4 in the checkpoint, 8 now"
    ):
        _train(tmp_path, _engine(max_steps=4, batch_size=8), config)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"holds another model \(.*size mismatch for 0\.weight: copying a param with shape torch\.Size\(\[16, 6\]\)",
    ):
        _train(tmp_path, _engine(max_steps=4), config, width=8)
    _train(tmp_path, _engine(max_steps=4), {**config, "note": "only a note"})  # other keys: a warning only
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4


def test_fault_config_is_checked():
    with pytest.raises(ConfigError, match="kill_rank and engine.fault.at_step go together"):
        _engine(fault={"kill_rank": 1})
    with pytest.raises(ConfigError, match="has no key"):
        _engine(fault={"kill_step": 1})
    with pytest.raises(ConfigError, match="keep_last"):
        _engine(keep_last=0)


def test_entry_point_prints_user_errors_without_traceback(capsys, monkeypatch):
    for var in ("HYDRA_FULL_ERROR", "MEGA_VERBOSE", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)

    @entry_point
    def main(kind):
        if kind == "user":
            raise CheckpointError("checkpoint x.pt is corrupt; delete it")
        raise KeyError("a bug")

    with pytest.raises(SystemExit) as exit_info:
        main("user")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: checkpoint x.pt is corrupt; delete it\n")
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main("bug")
    monkeypatch.setenv("MEGA_VERBOSE", "1")
    with pytest.raises(CheckpointError):  # verbose: the full traceback
        main("user")


# --- subprocess: what a user sees ---------------------------------------------------------------------------


def test_script_user_error_has_no_traceback_and_keeps_the_file(tmp_path):
    """A truncated only checkpoint: one message naming it, exit 1, the file left in place."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    conf = {
        "defaults": [{"engine": "default"}, "_self_"],
        "hydra": {"searchpath": [f"file://{REPO / 'configs'}"], "run": {"dir": str(run)}},
        "engine": {"max_steps": 2, "device": "cpu", "progress_bar": False},
        "out": str(tmp_path / "r"),
    }
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(conf))
    cmd = [sys.executable, str(WORKER), "--config-path", str(tmp_path), "--config-name", "w"]
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "error: checkpoint" in out.stderr
    assert f"{run / 'checkpoints' / 'last.pt'} is corrupt or truncated" in out.stderr
    assert (run / "checkpoints" / "last.pt").stat().st_size == 64  # (MEGA_VERBOSE=1: tested in-process above)


# --- torchrun, 2 gloo ranks -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-rank run (12 updates, checkpoints every 3, keep_last 2)."""
    tmp = tmp_path_factory.mktemp("reference")
    ref = launch(tmp, "ref", run_dir=tmp / "run")
    assert ref.returncode == 0, ref.output[-4000:]
    assert same_weights(ref.weights(0), ref.weights(1))
    return ref, tmp / "run"


def test_every_fault_recovers_bitwise_under_torchrun(tmp_path, reference):
    """NaN at update 4, disk full at the checkpoint of update 6, rank 1 SIGKILLed at update 8: one launch
    with --max-restarts=3 goes through all three (each fires once) and ends bitwise equal to the reference."""
    faults = {"nan_at_step": 4, "enospc_at_step": 6, "kill_rank": 1, "at_step": 8}
    run = launch(tmp_path, "chaos", {"fault": faults}, restarts=3, timeout=240)
    assert run.returncode == 0, run.output[-4000:]
    out = run.output
    assert out.count("error: non-finite loss at step 4") == 1  # printed once (rank 0), no traceback
    assert "(This NaN was injected by engine.fault.nan_at_step.)" in out
    assert out.count("error: disk full while writing checkpoint") == 1 and "checkpoints are intact" in out
    assert "rank 1 kills itself (SIGKILL) at update 8" in out
    assert "[rank0]: Traceback" not in out.split("kills itself")[0]  # the user errors had no traceback
    resumed = [line.split("resumed from ")[1] for line in out.splitlines() if "resumed from " in line]
    assert [r.split(" at step ")[1].split(" ")[0] for r in resumed] == ["3", "3", "6"]  # NaN, disk full, kill
    run_dir = (tmp_path / "out").iterdir().__next__()
    assert sorted(p.name for p in (run_dir / "faults").iterdir()) == [
        "enospc_step6.fired",
        "kill_rank1_step8.fired",
        "nan_step4.fired",
    ]
    ref, _ = reference
    assert same_weights(run.weights(0), ref.weights(0)) and same_weights(run.weights(1), ref.weights(0))


def test_corrupt_newest_checkpoint_and_killed_rank0_with_a_c10d_endpoint(tmp_path, reference):
    """torchrun --rdzv-backend=c10d --rdzv-endpoint=... on a copy of the reference's checkpoints with last.pt
    (step 12) damaged: resume from last-1.pt (step 9) with a warning naming last.pt (moved to last.pt.corrupt);
    then rank 0, the checkpoint writer, is SIGKILLed at update 11 and the restart resumes from step 9 again.
    The end is bitwise equal to the reference. (torchrun without --standalone, the static rendezvous, and
    --standalone are each run 10 times by benchmarks/faults.py.)"""
    ref, ref_run = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_run / "checkpoints", run_dir / "checkpoints")
    last = run_dir / "checkpoints" / "last.pt"
    assert load_checkpoint(run_dir / "checkpoints" / "last-1.pt")["step"] == 9
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)  # damage in the middle
    last.write_bytes(bytes(raw))
    fault = {"kill_rank": 0, "at_step": 11}
    run = launch(tmp_path, "again", {"fault": fault}, mode="c10d", restarts=1, run_dir=run_dir)
    assert run.returncode == 0, run.output[-4000:]
    assert f"skipping checkpoint {last}" in run.output and f"to {last}.corrupt" in run.output
    assert "rank 0 kills itself (SIGKILL) at update 11" in run.output and "restart1/try0" in run.output
    assert run.output.count("at step 9 (epoch 1") >= 2  # resumed from last-1.pt before and after the kill
    assert same_weights(run.weights(0), ref.weights(0)) and same_weights(run.weights(1), ref.weights(0))


def test_fully_masked_batch_under_ddp(tmp_path):
    """Every token masked on both ranks: DDP's gradient reduction must not fail, ranks stay in sync."""
    run = launch(
        tmp_path, "masked", {"max_steps": 3, "ckpt_every": 0}, model="masked", run_dir=tmp_path / "run"
    )
    assert run.returncode == 0, run.output[-4000:]
    assert same_weights(run.weights(0), run.weights(1))
    losses = [m["train/loss"] for _, m in run.results[0]["records"]]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_process_group_start_up_fails_fast_when_a_rank_never_comes(monkeypatch):
    """Rank 0 of 2 with no rank 1: the start-up gives up after its timeout (x tries), it does not hang."""
    import time
    from datetime import timedelta

    import torch.distributed as tdist

    from mega.engine import DistStartupError, setup_dist
    from mega.engine.dist import store_prefix
    from mega.engine.launch import free_port

    port = free_port()
    store = tdist.TCPStore(
        "127.0.0.1", port, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False
    )
    env = dict(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
        TORCHELASTIC_RESTART_COUNT="3",
        TORCHELASTIC_RUN_ID="t",
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    start = time.perf_counter()
    with pytest.raises(
        DistStartupError, match=r"rank 0/2: the gloo process group did not start \(try 1: .*try 2: "
    ):
        setup_dist("cpu", startup_timeout_s=1.5, startup_retries=1)
    assert time.perf_counter() - start < 10 and not tdist.is_initialized()
    assert [store_prefix(k) for k in (0, 1)] == ["mega/pg/t/restart3/try0", "mega/pg/t/restart3/try1"]
    del store
