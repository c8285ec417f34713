"""Checkpoint files: atomic writes, clear errors, and the training state a resume needs.

A checkpoint is one ``torch.save`` dict written atomically (temporary file in the same folder, fsync,
``os.replace``), so a crash while writing never leaves a half-written ``last.pt``. It loads with
``weights_only=True``: only tensors and plain Python containers, no pickled code.

A training checkpoint (written by the loop through :func:`save_training_state`) holds::

    format          "mega.engine.checkpoint/1"
    model           state_dict of the trainable module (unwrapped from DDP)
    optimizer       optimiser state_dict            scheduler   LambdaLR state_dict
    step            optimiser updates done          epoch       epoch of the next batch
    batch_in_epoch  batches of `epoch` each rank has consumed
    batch_size      per-rank batch size             world_size  number of ranks
    rng             list over ranks of capture_rng_state(...) (torch, cuda, numpy, python, streams)
    config          the resolved run config (plain dict) or None
    extra           {name: state_dict} of the script's extra stateful objects (e.g. an EMA)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mega.engine.batches import ResumableBatches
from mega.engine.dist import DistInfo, all_gather_object, barrier
from mega.engine.rng import RngStreams, capture_rng_state

log = logging.getLogger(__name__)

FORMAT = "mega.engine.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or not an engine checkpoint."""


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    Args:
        path: destination file; its folder is created if needed.
        state: tensors and plain containers (what ``torch.load(weights_only=True)`` accepts).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with clear errors.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded.
        required: keys that must be present (e.g. ``("model", "step")``).

    Returns:
        The saved dict.

    Raises:
        CheckpointError: naming the file and what to do when it is missing, unreadable or incomplete.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or start without resuming")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle errors differ by how the file was damaged
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({type(err).__name__}: {err}). "
            "Delete or move it and resume from an earlier checkpoint in the same folder, or start a fresh run."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing} (keys present: {sorted(state)}); "
            "it was not written by mega.engine or is from an incompatible version"
        )
    return state


@dataclass
class TrainingState:
    """The objects a training checkpoint saves and restores (besides the step).

    Attributes:
        model: the trainable module (not the DDP wrapper).
        optimizer: its optimiser.
        scheduler: the lr scheduler.
        batches: the data position (epoch, batches consumed).
        rng: this rank's generator streams.
        extra: more objects with ``state_dict``/``load_state_dict``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batches: ResumableBatches
    rng: RngStreams
    extra: Mapping[str, Any]


def save_training_state(
    path: Path, ts: TrainingState, step: int, dist: DistInfo, config: Any, copy_to: Path | None = None
) -> Path:
    """Collective: gather every rank's RNG state, then rank 0 writes ``path`` (and ``copy_to``).

    Args:
        path: the checkpoint file (``.../last.pt``).
        ts: what to save.
        step: optimiser updates done.
        dist: this rank.
        config: the resolved config to store.
        copy_to: a second file for a kept snapshot (``.../step_0001000.pt``), or None.

    Returns:
        ``path``.
    """
    rng_states = all_gather_object(capture_rng_state(ts.rng))
    if dist.is_main:
        state = {
            "format": FORMAT,
            "model": ts.model.state_dict(),
            "optimizer": ts.optimizer.state_dict(),
            "scheduler": ts.scheduler.state_dict(),
            "step": step,
            "epoch": ts.batches.epoch,
            "batch_in_epoch": ts.batches.position,
            "batch_size": ts.batches.batch_size,
            "world_size": dist.world_size,
            "rng": rng_states,
            "config": config,
            "extra": {k: v.state_dict() for k, v in ts.extra.items()},
        }
        save_checkpoint(path, state)
        if copy_to is not None:
            save_checkpoint(copy_to, state)
    barrier()
    return path


def restore_training_state(path: Path, ts: TrainingState, dist: DistInfo, config: Any) -> tuple[int, Any]:
    """Load ``path`` into ``ts``; the RNG state is returned, for the caller to restore last.

    The lr schedule keeps *this* run's settings (so a resumed run may extend ``max_steps``); everything
    else comes from the checkpoint. With another world size or batch size the data position is
    converted through the number of samples consumed (the epoch order does not depend on the world
    size) and the random streams keep their fresh seeds: a warning says the run is then not exact.

    Args:
        path: checkpoint file.
        ts: the freshly built objects to load into.
        dist: this rank.
        config: this run's resolved config, compared with the saved one (differences are logged).

    Returns:
        (step, this rank's saved RNG state or None when the layout changed).
    """
    keys = (
        "format",
        "model",
        "optimizer",
        "scheduler",
        "step",
        "epoch",
        "batch_in_epoch",
        "batch_size",
        "world_size",
    )
    keys += ("rng", "extra")
    state = load_checkpoint(path, required=keys)
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}; this code reads {FORMAT!r}")
    missing = sorted(set(ts.extra) - set(state["extra"]))
    if missing:
        raise CheckpointError(
            f"checkpoint {path} has no state for {missing} (it holds {sorted(state['extra'])})"
        )
    ts.model.load_state_dict(state["model"])
    ts.optimizer.load_state_dict(state["optimizer"])
    ts.scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(ts.scheduler.lr_lambdas)))
    step = int(state["step"])
    for group, base, lam in zip(ts.optimizer.param_groups, ts.scheduler.base_lrs, ts.scheduler.lr_lambdas):
        group["lr"] = base * lam(step)
    for name, obj in ts.extra.items():
        obj.load_state_dict(state["extra"][name])
    bs, ws = int(state["batch_size"]), int(state["world_size"])
    ts.batches.epoch = int(state["epoch"])
    ts.batches.position = int(state["batch_in_epoch"]) * bs * ws // (ts.batches.batch_size * dist.world_size)
    same_layout = (bs, ws) == (ts.batches.batch_size, dist.world_size)
    if not same_layout:
        log.warning(
            "resuming %s with %d ranks x batch %d instead of %d x %d: the data order continues approximately "
            "and the random streams are re-seeded, so this is not an exact continuation",
            path, dist.world_size, ts.batches.batch_size, ws, bs,
        )  # fmt: skip
    diff = _config_diff(state.get("config"), config) if config is not None else []
    if diff:
        log.warning("the config differs from the checkpoint's: %s", "; ".join(diff[:10]))
    log.info(
        "resumed from %s at step %d (epoch %d, batch %d)", path, step, ts.batches.epoch, ts.batches.position
    )
    return step, state["rng"][dist.rank] if same_layout else None


def find_resume_checkpoint(resume: str | None, ckpt_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``"auto"`` = ``ckpt_dir/last.pt`` if it exists, a path, or None."""
    last = ckpt_dir / "last.pt"
    if resume in (None, "", "none", "null"):
        if last.exists():
            log.warning("engine.resume is off: %s will be overwritten", last)
        return None
    if resume == "auto":
        return last if last.exists() else None
    return Path(resume)


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _config_diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]
