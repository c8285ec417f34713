"""Preemption with real signals: SIGTERM, then SIGUSR1, then a clean finish, bitwise equal to no interruption.

tests/engine_ddp_worker.py is run as a plain process and under ``torchrun`` with 2 gloo ranks, on sample
files of which one is broken (so the resumes also cross a skipped sample). Updates are slowed
(``sleep_s``) so that the signal lands in the middle of the run; the first launch gets SIGTERM (single
process: the process; torchrun: the launcher, which passes it to its workers), the second SIGUSR1 sent
to every process of the group (as SLURM's ``--signal`` does; torchrun is told to pass SIGUSR1 on through
``TORCHELASTIC_SIGNALS_TO_HANDLE``). Each stops after an update with one checkpoint and exit status 75
(the worker's; torchrun exits non-zero on its own), and the third launch finishes the run.
"""

from __future__ import annotations

import re
import signal

import pytest
import torch
from engine_ddp_worker import write_sample_files
from faults_launch import launch, same_weights

from mega.engine import load_checkpoint
from mega.engine.bad_samples import LIST_NAME

pytestmark = pytest.mark.usefixtures("one_thread")
FORWARD_USR1 = ("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",)


def _stopped_at(output: str, signame: str) -> int:
    found = re.findall(rf"preempted: {signame} received: stopped after update (\d+) and saved (\S+);", output)
    assert len(found) == 1, output[-4000:]  # one line, from rank 0 only
    step, path = int(found[0][0]), found[0][1]
    assert load_checkpoint(path)["step"] == step
    return step


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_then_sigusr1_then_resume_is_bitwise_equal(tmp_path, nproc):
    data = write_sample_files(tmp_path / "data", {9: "truncated"})
    common = dict(nproc=nproc, timeout=180, extra={"data_dir": str(data), "max_bad_fraction": 0.05})
    engine = {"ckpt_every": 0}  # no periodic checkpoint: the preemption writes the only one
    ref = launch(tmp_path, "ref", engine, run_dir=tmp_path / "ref_run", **common)
    assert ref.returncode == 0, ref.output[-4000:]
    assert ref.results[0]["records"][-1][1]["train/bad_samples"] == 1.0

    run_dir = tmp_path / "run"
    slow = {**common, "extra": {**common["extra"], "sleep_s": 0.25}}
    first = launch(
        tmp_path, "a", engine, run_dir=run_dir, interrupt=("step 3/12", signal.SIGTERM, "launcher"), **slow
    )
    assert first.returncode == (75 if nproc == 1 else 1), first.output[-4000:]  # torchrun: its own status
    assert "Traceback" not in first.output.split("preempted:")[0], first.output[-4000:]
    step_a = _stopped_at(first.output, "SIGTERM")
    assert 3 <= step_a < 12 and first.results[0] is None  # stopped before the end

    second = launch(
        tmp_path,
        "b",
        engine,
        run_dir=run_dir,
        torchrun_args=FORWARD_USR1,
        interrupt=(f"step {step_a + 2}/12", signal.SIGUSR1, "all"),
        **slow,
    )
    assert f"at step {step_a} (epoch" in second.output
    assert second.returncode == (75 if nproc == 1 else 1), second.output[-4000:]
    step_b = _stopped_at(second.output, "SIGUSR1")
    assert step_a + 2 <= step_b < 12

    last = launch(tmp_path, "c", engine, run_dir=run_dir, **common)
    assert last.returncode == 0 and f"at step {step_b} (epoch" in last.output, last.output[-4000:]
    for rank in range(nproc):
        assert same_weights(last.weights(rank), ref.weights(0))
    assert (run_dir / LIST_NAME).read_text() == (tmp_path / "ref_run" / LIST_NAME).read_text()
    assert torch.equal(
        torch.tensor(load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]), torch.tensor(12)
    )
