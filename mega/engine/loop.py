"""The training loop every script shares: ``train(model, loss_fn, dataset, engine=..., dist=..., run_dir=...)``.

It knows nothing about models. A script passes the *trainable* module (wrapped in DDP here when there is
more than one rank), a ``loss_fn(model, batch, rng) -> (loss, terms)`` that closes over anything frozen
(tokenizer, body model; they stay outside DDP), and a map-style dataset. One optimiser step is::

    for each of grad_accum micro-batches (DDP gradient sync on the last one only):
        batch = next batch of this rank (DistributedSampler, reshuffled per epoch), moved to the device
        with autocast(bf16 if enabled): loss, terms = loss_fn(ddp_model, batch, rng)
        (loss / grad_accum).backward()
    grad_norm = global norm; stop with NonFiniteLossError if the loss or the norm is NaN/inf on any rank
    clip to grad_clip; optimizer.step(); scheduler.step()

then, by step count: log (rank 0: wandb + log line + tqdm), evaluate, checkpoint ``run_dir/checkpoints``.
After a SIGTERM / SIGUSR1 (a scheduler preempting the job) every rank finishes the update, the checkpoint
is written and :class:`mega.engine.preemption.Preempted` is raised (scripts exit with status 75).

Exact resume: a checkpoint stores the step, the epoch and the number of batches this rank consumed in
it, every rank's RNG states, model, optimiser and scheduler. Resuming rebuilds the same epoch order
(the sampler's shuffle depends only on seed and epoch), skips the consumed indices without loading
them, restores the RNGs and continues; with deterministic kernels the weights match an uninterrupted
run bit for bit (tested on CPU in fp32). Randomness inside ``Dataset.__getitem__`` run by worker
processes is not restored: derive it from the index, or draw it in ``loss_fn`` from ``rng[...]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from mega.engine.bad_samples import BadSampleGuard
from mega.engine.batches import ResumableBatches, to_device
from mega.engine.checkpoint import (
    TrainingState,
    restore_newest_readable,
    resume_candidates,
    save_training_state,
)
from mega.engine.dist import DistInfo, all_gather_object, all_reduce_max, barrier, resolve_precision
from mega.engine.faults import FaultConfig, FaultInjector
from mega.engine.logging import Logger, MetricWindow, NullLogger
from mega.engine.optim import build_optimizer, build_scheduler
from mega.engine.preemption import PreemptionWatch
from mega.engine.rng import RngStreams, restore_rng_state, seed_everything
from mega.errors import ConfigError, UserError

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any, RngStreams], "tuple[Tensor, Mapping[str, Tensor | float]]"]
EvalFn = Callable[[nn.Module, DistInfo], Mapping[str, float]]


@dataclass
class EngineConfig:
    """Settings of :func:`train`; ``configs/engine/default.yaml`` holds exactly these keys.

    Exactly one of ``max_steps`` / ``epochs`` is set. Steps count optimiser updates; one update
    consumes ``batch_size * grad_accum`` samples on each of the ``world_size`` ranks.
    """

    max_steps: int | None = 1000  # optimiser updates to train for
    epochs: int | None = None  # alternative to max_steps: whole passes over the dataset
    batch_size: int = 32  # per rank and per micro-step
    grad_accum: int = 1  # micro-steps per update
    lr: float = 3e-4  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # final lr of the cosine, as a fraction of the peak
    warmup_steps: int = 100  # linear warm-up length in updates
    weight_decay: float = 0.01  # decoupled weight decay on matrices/kernels only
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    precision: str = "auto"  # auto | bf16 | fp32 (autocast dtype; auto = bf16 where native)
    seed: int = 0
    device: str = "auto"  # read by setup_dist: auto | cpu | cuda
    num_workers: int = 0  # DataLoader worker processes per rank
    log_every: int = 10  # updates between logged (rank-averaged) metrics
    eval_every: int = 0  # updates between eval_fn calls; 0 = only at the end
    ckpt_every: int = 500  # updates between checkpoints/last.pt writes; 0 = only at the end
    keep_every: int = 0  # also keep checkpoints/step_XXXXXXX.pt every N updates; 0 = never
    resume: str | None = "auto"  # auto (newest readable checkpoint of the run dir, if any) | a path | null
    progress_bar: bool = True  # tqdm bar on rank 0
    find_unused_parameters: bool = False  # DDP option for models with conditionally used parameters
    keep_last: int = 2  # checkpoints kept: last.pt, last-1.pt, ... (resume falls back to an older one)
    strict_resume: bool = True  # refuse a checkpoint of another model/data order; false = warn, continue
    fault: FaultConfig = field(default_factory=FaultConfig)  # fault injection (mega/engine/faults.py)

    def __post_init__(self) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(
                f"set exactly one of engine.max_steps / engine.epochs (got {self.max_steps}, {self.epochs})"
            )
        if min(self.batch_size, self.grad_accum, self.log_every, self.keep_last) < 1:
            raise ConfigError(
                "engine.batch_size, engine.grad_accum, engine.log_every and engine.keep_last must be >= 1 (got "
                f"{self.batch_size}, {self.grad_accum}, {self.log_every}, {self.keep_last})"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if not isinstance(self.fault, FaultConfig):
            fault = (
                OmegaConf.to_container(self.fault) if isinstance(self.fault, DictConfig) else dict(self.fault)
            )
            unknown = sorted(set(fault) - set(FaultConfig.__dataclass_fields__))
            if unknown:
                raise ConfigError(
                    f"engine.fault has no key {unknown}; known: {list(FaultConfig.__dataclass_fields__)}"
                )
            self.fault = FaultConfig(**fault)


@dataclass
class TrainResult:
    """What :func:`train` returns (identical on every rank).

    Attributes:
        step: optimiser updates done.
        start_step: the update this call started from (> 0 when it resumed a checkpoint), so that
            ``step - start_step`` updates ran in this call.
        epoch: epoch of the next batch.
        metrics: the last logged train metrics and the last evaluation ("train/...", "eval/...").
        checkpoint: the last checkpoint written (None if none was).
    """

    step: int
    epoch: int
    metrics: dict[str, float]
    checkpoint: Path | None
    start_step: int = 0


class NonFiniteLossError(UserError, RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the update was not applied, nothing was saved."""

    collective = True  # raised on every rank with the same message


def _terms_as_tensors(
    loss: Tensor, terms: Mapping[str, Tensor | float], device: torch.device
) -> dict[str, Tensor]:
    out = {"loss": loss.detach().float()}
    for k, v in terms.items():
        out[k] = torch.as_tensor(
            v.detach() if isinstance(v, Tensor) else v, dtype=torch.float32, device=device
        )
    return out


def _nonfinite_message(metrics: Mapping[str, Tensor], grad_norm: Tensor, dist: DistInfo) -> str:
    """Which rank and which loss term went non-finite (the first one found on the lowest rank)."""
    local = None
    bad = [k for k, v in metrics.items() if not bool(torch.isfinite(v).all())]
    if bad:
        terms = [k for k in bad if k != "loss"] or ["loss"]
        local = (
            ", ".join(f"term '{k}' = {metrics[k].item()}" for k in terms)
            + f" (total loss = {metrics['loss'].item()})"
        )
    elif not bool(torch.isfinite(grad_norm)):
        local = f"gradient norm = {grad_norm.item()} with a finite loss ({metrics['loss'].item()})"
    reports = all_gather_object(local)
    rank = next(r for r, m in enumerate(reports) if m is not None)
    return f"rank {rank}: {reports[rank]}"


def _train_step(
    ddp: nn.Module,
    loss_fn: LossFn,
    batches: Iterator[Any],
    optimizer: torch.optim.Optimizer,
    rng: RngStreams,
    engine: EngineConfig,
    dist: DistInfo,
    dtype: torch.dtype | None,
    inject_nan: bool = False,
) -> tuple[dict[str, Tensor], str | None]:
    """One optimiser update over ``grad_accum`` micro-batches.

    Returns:
        (metrics, None) after a successful update, or (metrics, message) when a loss term or the
        gradient norm is non-finite on some rank; then no update was applied.
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, Tensor] = {}
    for micro in range(engine.grad_accum):
        batch = to_device(next(batches), dist.device)
        last = micro == engine.grad_accum - 1
        # DDP all-reduces gradients in backward; skip it on all but the last micro-step.
        sync = nullcontext() if (last or not dist.is_distributed) else ddp.no_sync()
        with sync:
            with torch.autocast(dist.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, terms = loss_fn(ddp, batch, rng)
            if inject_nan:  # fault injection: a NaN that flows through backward like a real one
                loss = loss * float("nan")
            (loss / engine.grad_accum).backward()
        for k, v in _terms_as_tensors(loss, terms, dist.device).items():
            sums[k] = sums.get(k, 0.0) + v / engine.grad_accum
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params]).to(dist.device)
    finite = torch.stack([torch.isfinite(v).all() for v in sums.values()] + [torch.isfinite(grad_norm)]).all()
    if all_reduce_max((~finite).float()).item() > 0:
        return sums, _nonfinite_message(sums, grad_norm, dist)
    if engine.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, engine.grad_clip, grad_norm)
    optimizer.step()
    sums["grad_norm"] = grad_norm
    return sums, None


def _evaluate(eval_fn: EvalFn, model: nn.Module, dist: DistInfo) -> dict[str, float]:
    """``eval_fn`` on every rank with the unwrapped model in eval mode, without touching the torch RNG."""
    model.eval()
    devices = [dist.device.index or 0] if dist.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        out = {f"eval/{k}": float(v) for k, v in eval_fn(model, dist).items()}
    model.train()
    barrier()
    return out


def train(
    model: nn.Module,
    loss_fn: LossFn,
    dataset: Dataset,
    *,
    engine: EngineConfig,
    dist: DistInfo,
    run_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    eval_fn: EvalFn | None = None,
    logger: Logger | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra_state: Mapping[str, Any] | None = None,
    max_bad_fraction: float | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``loss_fn``; see the module docstring for one step.

    Args:
        model: the trainable module, built identically on every rank; moved to ``dist.device`` here.
            ``loss_fn`` must call it (``model(...)``) so that DDP sees the forward pass.
        loss_fn: ``(model, batch, rng) -> (loss, terms)``: ``batch`` as collated, already on the device;
            ``rng[name]`` a per-rank ``torch.Generator`` stream; ``loss`` a scalar tensor; ``terms`` a
            dict of scalars (tensors or floats) to log, with the same keys on every rank.
        dataset: map-style dataset; shuffled per epoch by a ``DistributedSampler`` (seed = engine.seed).
        engine: loop settings (``EngineConfig(**cfg.engine)``).
        dist: from :func:`mega.engine.setup_dist`.
        run_dir: run directory; checkpoints go to ``run_dir/checkpoints``.
        config: the resolved config (plain dict), stored in every checkpoint.
        eval_fn: ``(model, dist) -> {name: float}``, called on every rank (it may shard the work or return
            ``{}`` off rank 0) with the unwrapped model in eval mode under ``no_grad``; rank 0's values
            are logged as "eval/<name>".
        logger: metric logger, called on rank 0 only; default: none.
        collate_fn: DataLoader collate function.
        optimizer: a custom optimiser over ``model``'s parameters (e.g. per-group lrs); default AdamW
            from ``engine`` with weight decay on every parameter of ndim >= 2 (matrices, kernels and
            embedding tables; not biases or norm scales). The schedule scales each group's lr.
        extra_state: more objects with ``state_dict``/``load_state_dict`` to checkpoint (e.g. an EMA).
        max_bad_fraction: None: a sample that cannot be read stops the run (its one-line error). A
            fraction: such samples are replaced, logged, counted and listed in ``run_dir/bad_samples.tsv``
            until more than this fraction of the dataset is bad (:mod:`mega.engine.bad_samples`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: on every rank, when a loss term or the gradient norm is NaN/inf; the update is
            not applied and the last checkpoint is left as it was.
        CheckpointError: when the checkpoint to resume from is missing, unreadable (and no older one
            reads), of another config, or when a checkpoint write fails (``DiskFullError``).
        Preempted: on every rank after SIGTERM / SIGUSR1, once the checkpoint of the current update is
            written (:mod:`mega.engine.preemption`).
        BadSampleBudgetError: on every rank, when more samples are unreadable than ``max_bad_fraction`` allows.
    """
    run_dir, logger = Path(run_dir), logger or NullLogger()
    if isinstance(config, DictConfig):  # checkpoints hold plain containers only (weights_only loading)
        config = OmegaConf.to_container(config, resolve=True)
    ckpt_dir = run_dir / "checkpoints"
    model.to(dist.device).train()
    optimizer = optimizer or build_optimizer(
        model, lr=engine.lr, weight_decay=engine.weight_decay, betas=engine.betas, eps=engine.eps
    )
    guard = None  # unreadable samples: replaced and counted within a budget (mega/engine/bad_samples.py)
    if max_bad_fraction is not None:
        guard = BadSampleGuard(dataset, max_bad_fraction, run_dir, dist, engine.seed)
        dataset, collate_fn = guard.dataset, guard.collate(collate_fn)
    batches = ResumableBatches(dataset, engine.batch_size, dist, engine.seed, engine.num_workers, collate_fn)
    total = (
        engine.max_steps
        if engine.max_steps is not None
        else engine.epochs * batches.per_epoch // engine.grad_accum
    )
    scheduler = build_scheduler(
        optimizer, warmup_steps=engine.warmup_steps, total_steps=total, min_lr_ratio=engine.min_lr_ratio
    )
    rng = RngStreams(engine.seed, dist.rank, dist.device)
    ts = TrainingState(model, optimizer, scheduler, batches, rng, extra_state or {})
    seed_everything(engine.seed, dist.rank)
    faults = FaultInjector(engine.fault, run_dir, dist.rank)
    step, rng_state, last_ckpt = 0, None, None
    candidates = resume_candidates(engine.resume, ckpt_dir, engine.keep_last)
    if candidates:
        last_ckpt, step, rng_state = restore_newest_readable(
            candidates, ts, dist, config, engine.strict_resume
        )
    start_step, ddp = step, model
    if dist.is_distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        ddp = DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=engine.find_unused_parameters
        )
    dtype = resolve_precision(engine.precision, dist.device)
    samples_per_step = engine.batch_size * engine.grad_accum * dist.world_size
    log.info("training steps %d -> %d: %d samples/step, %d batches/epoch/rank, %s, %s", step, total,
             samples_per_step, batches.per_epoch, dtype or "fp32", dist.device)  # fmt: skip
    if rng_state is not None:
        restore_rng_state(rng_state, rng)  # last, so that nothing above shifts the streams
    metrics: dict[str, float] = {}
    window, stream = MetricWindow(), iter(batches) if guard is None else guard.unwrap(iter(batches))
    bar = tqdm(
        total=total, initial=step, disable=not (dist.is_main and engine.progress_bar), dynamic_ncols=True
    )
    preemption = PreemptionWatch().install()  # SIGTERM / SIGUSR1: finish the update, checkpoint, stop

    def checkpoint(step: int) -> Path:
        keep = engine.keep_every and step % engine.keep_every == 0
        copy_to = ckpt_dir / f"step_{step:07d}.pt" if keep else None
        fail_after = 4096 if faults.enospc_now(step) else None  # fault injection: disk full
        return save_training_state(
            ckpt_dir / "last.pt", ts, step, dist, config, copy_to, engine.keep_last, fail_after
        )

    try:
        while step < total:
            faults.before_update(step + 1)
            inject_nan = faults.nan_now(step + 1)
            step_metrics, failure = _train_step(
                ddp, loss_fn, stream, optimizer, rng, engine, dist, dtype, inject_nan
            )
            if failure is not None:
                if inject_nan:
                    faults.nan_fired(step + 1)
                raise NonFiniteLossError(
                    f"non-finite loss at step {step + 1} (epoch {batches.epoch}, batch {batches.position} of the "
                    f"epoch) on {failure}. The update was not applied and nothing was saved; the last good "
                    f"checkpoint is {last_ckpt or 'none (none had been written yet)'}. Check the inputs and the "
                    "learning rate, then resume from it (engine.resume=<path>)."
                    + (" (This NaN was injected by engine.fault.nan_at_step.)" if inject_nan else "")
                )
            lr = torch.tensor(optimizer.param_groups[0]["lr"], device=dist.device)  # the lr this update used
            window.add({**step_metrics, "lr": lr})
            scheduler.step()
            step += 1
            bar.update()
            if guard is not None:
                metrics["train/bad_samples"] = float(guard.sync())
            if step % engine.log_every == 0 or step == total:
                metrics.update(window.flush(samples_per_step))
                if dist.is_main:
                    logger.log(metrics, step)
                bar.set_postfix(loss=f"{metrics['train/loss']:.4g}")
                log.info("step %d/%d epoch %d | %s", step, total, batches.epoch, _format(metrics, "train/"))
            t0 = time.perf_counter()  # evaluation and checkpoints are left out of the throughput
            if eval_fn is not None and (
                (engine.eval_every and step % engine.eval_every == 0) or step == total
            ):
                evaluation = _evaluate(eval_fn, model, dist)
                metrics.update(evaluation)
                if dist.is_main:
                    logger.log(evaluation, step)
                log.info("step %d eval | %s", step, _format(evaluation, "eval/"))
            saved = (engine.ckpt_every and step % engine.ckpt_every == 0) or step == total
            if saved:
                last_ckpt = checkpoint(step)
            window.excluded += time.perf_counter() - t0
            if signum := preemption.agreed(dist):
                if not saved:
                    last_ckpt = checkpoint(step)
                raise preemption.preempted(signum, step, last_ckpt)
    finally:
        preemption.restore()
        bar.close()
    return TrainResult(
        step=step, epoch=batches.epoch, metrics=metrics, checkpoint=last_ckpt, start_step=start_step
    )


def _format(metrics: Mapping[str, float], prefix: str) -> str:
    """``"loss 0.1234 lr 0.0003 ..."`` for the keys that start with ``prefix``."""
    return " ".join(f"{k[len(prefix) :]} {v:.4g}" for k, v in metrics.items() if k.startswith(prefix))
