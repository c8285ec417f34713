"""Training checkpoints: the state a resume needs, which file to resume from, and config checks.

Files are written and read by :mod:`mega.engine.checkpoint_file` (atomic, hash-checked; re-exported here).

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
    integrity       {"sha256": ...}: hash of every tensor's bytes and every other value (added on save)

History: the loop keeps the newest ``keep_last`` checkpoints as ``last.pt``, ``last-1.pt``, ... (the
previous file is hard-linked to ``last-1.pt`` before the new one replaces ``last.pt``, so there is
never a moment without a complete ``last.pt``). ``resume=auto`` tries them newest first (then the
``step_*.pt`` snapshots): an unreadable one is skipped with a warning naming it. A checkpoint of
another config (model shapes, tokenizer, data order: seed, batch size, world size) is refused with
the key that differs (``engine.strict_resume=false`` turns that into a warning).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mega.engine.batches import ResumableBatches
from mega.engine.checkpoint_file import (  # noqa: F401  (re-exported: one import place for callers)
    FORMAT,
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    DiskFullError,
    content_hash,
    history_paths,
    load_checkpoint,
    save_checkpoint,
)
from mega.engine.dist import DistInfo, all_gather_object
from mega.engine.rng import RngStreams, capture_rng_state

log = logging.getLogger(__name__)

# Config keys that decide the model's shapes or the data order: a checkpoint that differs in one of
# them cannot be continued exactly (the prefixes are dotted keys of the resolved run config).
IDENTITY_KEYS = (
    "tokenizer",
    "transformer",
    "model",
    "backbone",
    "conditioning",
    "body_model",
    "data",
    "engine.seed",
    "engine.batch_size",
    "engine.grad_accum",
)


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
    path: Path,
    ts: TrainingState,
    step: int,
    dist: DistInfo,
    config: Any,
    copy_to: Path | None = None,
    keep: int = 1,
    _fail_after: int | None = None,
) -> Path:
    """Collective: gather every rank's RNG state, then rank 0 writes ``path`` (and ``copy_to``).

    A failed write on rank 0 is raised on every rank (no rank is left waiting in a collective).

    Args:
        path: the checkpoint file (``.../last.pt``).
        ts: what to save.
        step: optimiser updates done.
        dist: this rank.
        config: the resolved config to store.
        copy_to: a second file for a kept snapshot (``.../step_0001000.pt``), or None.
        keep: versions of ``path`` to keep (``last.pt``, ``last-1.pt``, ...).
        _fail_after: fault injection: the write fails with ENOSPC after this many bytes.

    Returns:
        ``path``.

    Raises:
        CheckpointError: (e.g. ``DiskFullError``) on every rank when rank 0 could not write.
    """
    rng_states = all_gather_object(capture_rng_state(ts.rng))
    failure: tuple[str, str] | None = None
    if dist.is_main:
        state = _training_record(ts, step, dist.world_size, rng_states, config)
        try:
            save_checkpoint(path, state, keep=keep, _fail_after=_fail_after)
            if copy_to is not None:
                save_checkpoint(copy_to, state)
        except Exception as err:
            if not dist.is_distributed:
                raise
            failure = (type(err).__name__, str(err))
    failures = all_gather_object(failure)  # doubles as the barrier after the write
    if failures[0] is not None:
        name, message = failures[0]
        err = (DiskFullError if name == "DiskFullError" else CheckpointError)(message)
        err.collective = True
        raise err
    return path


def _training_record(
    ts: TrainingState, step: int, world_size: int, rng_states: list, config: Any
) -> dict[str, Any]:
    """What a training checkpoint holds (``rng_states``: every rank's, gathered)."""
    return {
        "format": FORMAT,
        "model": ts.model.state_dict(),
        "optimizer": ts.optimizer.state_dict(),
        "scheduler": ts.scheduler.state_dict(),
        "step": step,
        "epoch": ts.batches.epoch,
        "batch_in_epoch": ts.batches.position,
        "batch_size": ts.batches.batch_size,
        "world_size": world_size,
        "rng": rng_states,
        "config": config,
        "extra": {k: v.state_dict() for k, v in ts.extra.items()},
    }


def restore_training_state(
    path: Path, ts: TrainingState, dist: DistInfo, config: Any, strict: bool = True
) -> tuple[int, Any]:
    """Load ``path`` into ``ts``; the RNG state is returned, for the caller to restore last.

    The lr schedule keeps *this* run's settings (so a resumed run may extend ``max_steps``); everything
    else comes from the checkpoint. A checkpoint whose model shapes differ, or (with ``strict``) whose
    config differs in an identity key (:data:`IDENTITY_KEYS`) or whose world size or batch size differ,
    is refused. Without ``strict``, another world size or batch size converts the data position through
    the number of samples consumed (the epoch order does not depend on the world size) and the random
    streams keep their fresh seeds: a warning says the run is then not exact.

    Args:
        path: checkpoint file.
        ts: the freshly built objects to load into.
        dist: this rank.
        config: this run's resolved config, compared with the saved one.
        strict: refuse (rather than warn about) identity differences.

    Returns:
        (step, this rank's saved RNG state or None when the layout changed).

    Raises:
        CorruptCheckpointError: unreadable or failing its integrity check.
        CheckpointMismatchError: the checkpoint belongs to another config (the message names the key).
    """
    state = _read_training_checkpoint(path, ts)
    bs, ws = int(state["batch_size"]), int(state["world_size"])
    pairs = (("world_size", ws, dist.world_size), ("engine.batch_size", bs, ts.batches.batch_size))
    layout = [f"{k}: {old} in the checkpoint, {new} now" for k, old, new in pairs if old != new]
    diff = _config_diff(state.get("config"), config) if config is not None else []
    identity = [d for d in diff if _is_identity_key(d.split(":", 1)[0])]
    if strict and (identity or layout):
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by another configuration, so the run cannot continue exactly: "
            f"{'; '.join((layout + identity)[:5])}. Resume with the same settings (and number of ranks), start a "
            "fresh run (another hydra.run.dir, or engine.resume=null), or set engine.strict_resume=false "
            "to continue approximately"
        )
    step = _load_training_state(path, state, ts)
    ts.batches.epoch = int(state["epoch"])
    ts.batches.position = int(state["batch_in_epoch"]) * bs * ws // (ts.batches.batch_size * dist.world_size)
    if layout:
        now = f"{dist.world_size} ranks x batch {ts.batches.batch_size} instead of {ws} x {bs}"
        log.warning(
            "resuming %s with %s: the data order continues approximately and the random streams are "
            "re-seeded, so this is not an exact continuation",
            path,
            now,
        )
    if diff:
        log.warning("the config differs from the checkpoint's: %s", "; ".join(diff[:10]))
    log.info(
        "resumed from %s at step %d (epoch %d, batch %d)", path, step, ts.batches.epoch, ts.batches.position
    )
    return step, None if layout else state["rng"][dist.rank]


def _read_training_checkpoint(path: Path, ts: TrainingState) -> dict[str, Any]:
    """The checkpoint's contents, checked: every field a training state has, this format, and a state for
    each of ``ts.extra``."""
    keys = ("format", "model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "batch_size")
    keys += ("world_size", "rng", "extra")
    try:
        state = load_checkpoint(path, required=keys)
    except CheckpointError as err:  # every rank reads the same file
        err.collective = True
        raise
    if state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}; this code reads {FORMAT!r}")
    missing = sorted(set(ts.extra) - set(state["extra"]))
    if missing:
        raise CheckpointMismatchError(
            f"checkpoint {path} has no state for {missing} (it holds {sorted(state['extra'])})"
        )
    return state


def _load_training_state(path: Path, state: dict[str, Any], ts: TrainingState) -> int:
    """Model, optimiser, scheduler (its lr settings stay this run's) and extra states into ``ts``; the step."""
    try:
        ts.model.load_state_dict(state["model"])
    except RuntimeError as err:  # missing/unexpected keys, size mismatches (modules may have load hooks)
        lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
        raise CheckpointMismatchError(
            f"checkpoint {path} holds another model ({'; '.join(lines[:3])[:600]}). Resume it with the config "
            "it was trained with, or start a fresh run (another hydra.run.dir, or engine.resume=null)"
        ) from err
    ts.optimizer.load_state_dict(state["optimizer"])
    ts.scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(ts.scheduler.lr_lambdas)))
    step = int(state["step"])
    for group, base, lam in zip(ts.optimizer.param_groups, ts.scheduler.base_lrs, ts.scheduler.lr_lambdas):
        group["lr"] = base * lam(step)
    for name, obj in ts.extra.items():
        obj.load_state_dict(state["extra"][name])
    return step


def _is_identity_key(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IDENTITY_KEYS)


def resume_candidates(resume: str | None, ckpt_dir: Path, keep: int = 1) -> list[Path]:
    """The checkpoints to try, newest first.

    ``"auto"``: ``ckpt_dir/last.pt``, ``last-1.pt``, ... (up to ``keep`` and any older ones left by a
    larger ``keep_last``) and then the ``step_*.pt`` snapshots, newest first; only existing files.
    A path: just that file. None / "null": nothing.
    """
    last = ckpt_dir / "last.pt"
    if resume in (None, "", "none", "null"):
        if last.exists():
            log.warning("engine.resume is off: %s will be overwritten", last)
        return []
    if resume != "auto":
        return [Path(resume)]
    history = history_paths(last, max(keep, 1))
    history += sorted(
        (p for p in ckpt_dir.glob("last-*.pt") if p not in history and p.stem[5:].isdigit()),
        key=lambda p: int(p.stem[5:]),
    )
    snapshots = sorted(ckpt_dir.glob("step_*.pt"), reverse=True)
    return [p for p in history + snapshots if p.is_file()]


def restore_newest_readable(
    candidates: Sequence[Path], ts: TrainingState, dist: DistInfo, config: Any, strict: bool = True
) -> tuple[Path, int, Any]:
    """Restore the newest candidate that reads; a corrupt one is skipped with a warning naming it.

    The skipped files are renamed ``<name>.corrupt`` (kept, but out of the ``keep_last`` rotation).

    Every rank reads the files itself; they must agree on the one used (else the start fails).

    Returns:
        (the checkpoint used, step, this rank's RNG state or None).

    Raises:
        CorruptCheckpointError: every candidate is unreadable (the message lists them).
        CheckpointMismatchError: the newest readable one belongs to another config.
    """
    skipped: list[str] = []
    corrupt: list[Path] = []
    for path in candidates:
        try:
            step, rng_state = restore_training_state(path, ts, dist, config, strict)
        except CorruptCheckpointError as err:
            if len(candidates) == 1:
                raise
            log.warning("skipping checkpoint %s: %s", path, err)
            skipped.append(f"{path.name}: {err.reason or err}")
            corrupt.append(path)
            continue
        if skipped:
            log.warning(
                "resumed from the older checkpoint %s at step %d because %d newer one(s) could not be read",
                path,
                step,
                len(skipped),
            )
        used = all_gather_object((str(path), step))
        if any(u != used[0] for u in used):
            raise CheckpointError(
                f"the ranks resumed from different checkpoints: {used}; the files changed while "
                "they were being read, or the ranks do not share the run directory"
            )
        if dist.is_main:  # keep the damaged files for inspection, out of the history the next save rotates
            for bad in corrupt:
                aside = bad.with_name(f"{bad.name}.corrupt")
                os.replace(bad, aside)
                log.warning("moved the unreadable checkpoint %s to %s", bad, aside)
        return path, step, rng_state
    err = CorruptCheckpointError(
        f"none of the {len(candidates)} checkpoints in {candidates[0].parent} can be read ({'; '.join(skipped)}). "
        "They were left in place: move them away (or set engine.resume=null) to start a fresh run, or restore "
        "a copy of one of them"
    )
    err.collective = True
    raise err


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (``"key: old -> new"``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _config_diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]
