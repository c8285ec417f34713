"""Preemption: SIGTERM or SIGUSR1 -> every rank finishes its update, one checkpoint, exit status 75.

Schedulers stop jobs with a signal and a grace period: SLURM sends SIGTERM (then SIGKILL after
``KillWait``, 30 s by default), and ``--signal=USR1@120`` sends SIGUSR1 two minutes before the time
limit; Kubernetes and most clouds send SIGTERM. While :func:`mega.engine.train` runs, both signals only
set a flag. After each update the ranks agree on it (one all-reduce of a single number, so a signal
that reached one rank stops all of them at the same update), the checkpoint of that update is written
as usual (atomic, ``checkpoints/last.pt``) and :class:`Preempted` is raised on every rank. A script's
:func:`mega.errors.entry_point` prints one line and exits with :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``
of sysexits.h: "try again later"), which a requeue script tests. Running the same command again
resumes (``engine.resume=auto``) and ends with the weights of an uninterrupted run, bit for bit.

Under ``torchrun``: torchrun passes the SIGTERM it receives to its workers and waits for them (30 s);
add SIGUSR1 to ``TORCHELASTIC_SIGNALS_TO_HANDLE`` so that it does the same for SIGUSR1 instead of
dying. Each worker then exits with 75; torchrun itself exits non-zero. DataLoader worker processes
ignore both signals (:func:`ignore_in_worker`): their rank stops them.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import torch

from mega.engine.dist import DistInfo, all_reduce_max

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: the run stopped cleanly and can be resumed
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised on every rank after a preemption signal, once the checkpoint is written.

    Attributes:
        exit_code: the status the script exits with (:data:`EXIT_PREEMPTED`).
        collective: every rank raises it; rank 0 prints it.
    """

    exit_code = EXIT_PREEMPTED
    collective = True
    label = "preempted"

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} received: stopped after update {step} and saved {checkpoint}; run the "
            f"same command to resume (exit status {EXIT_PREEMPTED})"
        )


class PreemptionWatch:
    """Catches SIGTERM / SIGUSR1 while a training loop runs (main thread only; restores the old handlers).

    Example:
        >>> watch = PreemptionWatch().install()
        >>> try:
        ...     while training:
        ...         ...one update...
        ...         if watch.agreed():   # collective
        ...             save(); raise watch.preempted(step, path)
        ... finally:
        ...     watch.restore()
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum  # only a flag: the update in progress finishes

    def install(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, dist: DistInfo) -> int:
        """Collective: the signal any rank received (0: none), the same on every rank."""
        local = torch.tensor(float(self.signum), device=dist.device)
        signum = int(all_reduce_max(local).item()) if dist.is_distributed else self.signum
        if signum and not self.signum:
            log.info("rank %d stops too: another rank received %s", dist.rank, signal.Signals(signum).name)
        return signum

    def preempted(self, signum: int, step: int, checkpoint: Path | None) -> Preempted:
        log.warning(
            "preempted by %s after update %d: saved %s", signal.Signals(signum).name, step, checkpoint
        )
        return Preempted(signum, step, checkpoint)


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore the preemption signals (their rank stops them)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
