"""Fault injection: make a run fail on purpose, once, to check that recovery works (tests, cluster checks).

``engine.fault`` (``configs/engine/default.yaml``) names at most one step per fault::

    engine.fault.kill_rank=1 engine.fault.at_step=60   # rank 1 dies by SIGKILL as it starts update 60
    engine.fault.nan_at_step=40                          # the loss of update 40 is NaN on every rank
    engine.fault.enospc_at_step=50                       # the checkpoint write of step 50 fails: disk full

Each fault fires once per run directory: before it fires, the rank writes a marker file
``<run_dir>/faults/<fault>.fired``, so the restarted workers (``torchrun --max-restarts``) or a second
launch of the same command on the same run directory train through that step normally.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from mega.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FaultConfig:
    """Which fault to inject (all None: none). Steps count optimiser updates from 1."""

    kill_rank: int | None = None  # rank that kills itself (SIGKILL) ...
    at_step: int | None = None  # ... when it starts this update
    nan_at_step: int | None = None  # the loss of this update is NaN on every rank
    enospc_at_step: int | None = None  # the checkpoint write after this update fails with ENOSPC

    def __post_init__(self) -> None:
        if (self.kill_rank is None) != (self.at_step is None):
            raise ConfigError(
                "engine.fault.kill_rank and engine.fault.at_step go together: set both (e.g. "
                f"engine.fault.kill_rank=1 engine.fault.at_step=60) or neither (got {self.kill_rank}, {self.at_step})"
            )
        for name in ("at_step", "nan_at_step", "enospc_at_step"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"engine.fault.{name} counts updates from 1, got {value}")


class FaultInjector:
    """Fires the configured faults in the loop, each once per run directory."""

    def __init__(self, config: FaultConfig, run_dir: Path, rank: int) -> None:
        self.config, self.rank = config, rank
        self.folder = Path(run_dir) / "faults"

    def _once(self, name: str) -> bool:
        """True the first time ``name`` is asked for in this run directory (the marker is then written)."""
        marker = self.folder / f"{name}.fired"
        if marker.exists():
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(marker, "w") as f:
            f.write(f"rank {self.rank} pid {os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
        return True

    def before_update(self, step: int) -> None:
        """Called as update ``step`` (from 1) starts: the kill fault."""
        c = self.config
        if c.kill_rank is not None and step == c.at_step and self.rank == c.kill_rank:
            if self._once(f"kill_rank{c.kill_rank}_step{c.at_step}"):
                log.warning("fault injection: rank %d kills itself (SIGKILL) at update %d", self.rank, step)
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)

    def nan_now(self, step: int) -> bool:
        """Whether the loss of update ``step`` is to be NaN (same answer on every rank)."""
        if self.config.nan_at_step is None or step != self.config.nan_at_step:
            return False
        # every rank reads the marker before the NaN check's all-reduce; rank 0 writes it after
        return not (self.folder / f"nan_step{step}.fired").exists()

    def nan_fired(self, step: int) -> None:
        """Rank 0 records that the NaN of update ``step`` was injected."""
        if self.rank == 0:
            self._once(f"nan_step{step}")

    def enospc_now(self, step: int) -> bool:
        """Whether the checkpoint write after update ``step`` is to fail (rank 0, the writer, decides)."""
        c = self.config
        return (
            c.enospc_at_step is not None
            and step == c.enospc_at_step
            and self.rank == 0
            and self._once(f"enospc_step{step}")
        )
