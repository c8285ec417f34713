"""Rank-0 metric loggers: wandb (offline by default, no account or network needed) or none.

:class:`MetricWindow` averages the per-step scalars between two log lines (over steps and ranks, with
one all-reduce) and measures throughput. The Hydra group ``logger`` has one YAML per registered name (``configs/logger/{wandb,none}.yaml``);
each YAML holds ``name`` (the registry key) and the constructor's keyword arguments. Offline wandb runs
land in ``<run_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from mega.engine.dist import all_reduce_mean
from mega.registry import Registry

log = logging.getLogger(__name__)

LOGGERS = Registry("logger")


class Logger(Protocol):
    """What the training loop needs from a metric logger."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar ``metrics`` at optimiser step ``step``."""

    def finish(self) -> None:
        """Flush and close."""


@LOGGERS.register("none")
class NullLogger:
    """Discards everything (``logger=none``, and on every rank but 0)."""

    def __init__(self, run_dir: str | Path | None = None, config: Mapping[str, Any] | None = None) -> None:
        pass

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Ignore ``metrics``."""

    def finish(self) -> None:
        """Nothing to close."""


@LOGGERS.register("wandb")
class WandbLogger:
    """Weights & Biases run; ``mode="offline"`` writes files only and never touches the network.

    Args:
        run_dir: the run directory; wandb's files go to ``run_dir/wandb``.
        config: the resolved config, stored with the run.
        project: wandb project name.
        mode: "offline" (default), "online" or "disabled".
        entity: wandb entity (team/user) for online runs.
        run_name: display name; default = the run directory's name.
        tags: run tags.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: Mapping[str, Any] | None = None,
        project: str = "mega",
        mode: str = "offline",
        entity: str | None = None,
        run_name: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        import wandb  # imported here: a slow import that `logger=none` runs never pay

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project,
            entity=entity,
            name=run_name or run_dir.name,
            dir=str(run_dir),
            mode=mode,
            config=dict(config or {}),
            tags=list(tags),
            settings=wandb.Settings(silent=True, console="off"),
        )
        log.info("wandb %s run in %s", mode, run_dir / "wandb")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Send ``metrics`` to the wandb run at ``step``."""
        self._run.log(dict(metrics), step=step)

    def finish(self) -> None:
        """Close the wandb run (writes the offline files)."""
        self._run.finish()


def build_logger(
    options: Mapping[str, Any], *, run_dir: str | Path, config: Mapping[str, Any] | None, is_main: bool
) -> Logger:
    """Build the logger named ``options["name"]`` on rank 0, a :class:`NullLogger` elsewhere.

    Args:
        options: the ``logger`` config group: ``name`` plus the constructor's keyword arguments.
        run_dir: the run directory.
        config: the resolved config to store with the run.
        is_main: whether this is rank 0.

    Returns:
        The logger.
    """
    kwargs = dict(options)
    name = kwargs.pop("name")
    if not is_main:
        return NullLogger()
    return LOGGERS.build(name, run_dir=run_dir, config=config, **kwargs)


class MetricWindow:
    """Running sums of per-step scalar tensors between two log lines, and the time they took.

    Sums stay on the device (no host sync per step); :meth:`flush` averages them over the steps and
    the ranks with one all-reduce, so every rank must call it at the same step with the same keys.

    Attributes:
        excluded: seconds to leave out of the throughput (evaluation, checkpoints); reset by ``flush``.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps, self.excluded, self.t0 = 0, 0.0, time.perf_counter()

    def add(self, metrics: Mapping[str, Tensor]) -> None:
        """Accumulate one step's scalars (0-dim tensors)."""
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.steps += 1

    def flush(self, samples_per_step: int, prefix: str = "train/") -> dict[str, float]:
        """Means since the last flush over steps and ranks, plus ``samples_per_s`` and ``step_ms``.

        Args:
            samples_per_step: samples one step consumes over all ranks.
            prefix: prepended to every key.

        Returns:
            ``{prefix + name: value}``.
        """
        keys = sorted(self.sums)
        means = all_reduce_mean(torch.stack([self.sums[k] for k in keys]) / self.steps).tolist()
        elapsed = max(time.perf_counter() - self.t0 - self.excluded, 1e-9)
        out = {f"{prefix}{k}": v for k, v in zip(keys, means)}
        out[f"{prefix}samples_per_s"] = self.steps * samples_per_step / elapsed
        out[f"{prefix}step_ms"] = 1e3 * elapsed / self.steps
        self._reset()
        return out
