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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from mega.engine.bad_samples import BadSampleGuard
from mega.engine.batches import ResumableBatches
from mega.engine.checkpoint import (
    TrainingState,
    restore_newest_readable,
    resume_candidates,
    save_training_state,
)
from mega.engine.config import EngineConfig
from mega.engine.dist import DistInfo, barrier, resolve_precision, setup_dist
from mega.engine.faults import FaultInjector
from mega.engine.logging import Logger, MetricWindow, NullLogger
from mega.engine.optim import build_optimizer, build_scheduler
from mega.engine.preemption import PreemptionWatch
from mega.engine.rng import RngStreams, restore_rng_state, seed_everything
from mega.engine.step import LossFn, NonFiniteLossError, train_step

log = logging.getLogger(__name__)

EvalFn = Callable[[nn.Module, DistInfo], Mapping[str, float]]


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


def _evaluate(eval_fn: EvalFn, model: nn.Module, dist: DistInfo) -> dict[str, float]:
    """``eval_fn`` on every rank with the unwrapped model in eval mode, without touching the torch RNG."""
    model.eval()
    devices = [dist.device.index or 0] if dist.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        out = {f"eval/{k}": float(v) for k, v in eval_fn(model, dist).items()}
    model.train()
    barrier()
    return out


def _wrap_ddp(model: nn.Module, engine: EngineConfig, dist: DistInfo) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` when there is more than one rank, else itself."""
    if not dist.is_distributed:
        return model
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=engine.find_unused_parameters
    )


class _Run:
    """The state of one :func:`train` call and its moves: set up (and resume), update, checkpoint, the loop.

    Fault injection (:mod:`mega.engine.faults`) acts in two places only: as an update starts (a rank's kill,
    the NaN loss) and in the checkpoint write (a full disk).
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        engine: EngineConfig,
        dist: DistInfo,
        run_dir: Path,
        config: Mapping[str, Any] | None,
        collate_fn: Callable[[list[Any]], Any] | None,
        optimizer: torch.optim.Optimizer | None,
        extra_state: Mapping[str, Any] | None,
        max_bad_fraction: float | None,
    ) -> None:
        self.model, self.engine, self.dist, self.config = model, engine, dist, config
        self.ckpt_dir = run_dir / "checkpoints"
        model.to(dist.device).train()
        self.optimizer = optimizer or build_optimizer(
            model,
            lr=engine.lr,
            weight_decay=engine.weight_decay,
            betas=engine.betas,
            eps=engine.eps,
            lr_scales=engine.lr_scales,
        )
        # unreadable samples: replaced and counted within a budget (mega/engine/bad_samples.py)
        self.guard = None
        if max_bad_fraction is not None:
            self.guard = BadSampleGuard(dataset, max_bad_fraction, run_dir, dist, engine.seed)
            dataset, collate_fn = self.guard.dataset, self.guard.collate(collate_fn)
        self.batches = batches = ResumableBatches(
            dataset, engine.batch_size, dist, engine.seed, engine.num_workers, collate_fn
        )
        self.total = (
            engine.max_steps
            if engine.max_steps is not None
            else engine.epochs * batches.per_epoch // engine.grad_accum
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            warmup_steps=engine.warmup_steps,
            total_steps=self.total,
            min_lr_ratio=engine.min_lr_ratio,
        )
        self.rng = RngStreams(engine.seed, dist.rank, dist.device)
        self.state = TrainingState(
            model, self.optimizer, self.scheduler, batches, self.rng, extra_state or {}
        )
        seed_everything(engine.seed, dist.rank)
        self.faults = FaultInjector(engine.fault, run_dir, dist.rank)
        rng_state = self.resume()
        self.ddp = _wrap_ddp(model, engine, dist)
        self.dtype = resolve_precision(engine.precision, dist.device)
        self.samples_per_step = engine.batch_size * engine.grad_accum * dist.world_size
        if rng_state is not None:
            restore_rng_state(rng_state, self.rng)  # last, so that nothing above shifts the streams

    def resume(self) -> dict | None:
        """Restore the newest readable checkpoint (``engine.resume``), if any; its RNG states (or None)."""
        self.step, self.last_ckpt, rng_state = 0, None, None
        candidates = resume_candidates(self.engine.resume, self.ckpt_dir, self.engine.keep_last)
        if candidates:
            self.last_ckpt, self.step, rng_state = restore_newest_readable(
                candidates, self.state, self.dist, self.config, self.engine.strict_resume
            )
        self.start_step = self.step
        return rng_state

    def update(self, loss_fn: LossFn, stream: Iterator[Any]) -> dict[str, Tensor]:
        """One optimiser update and the scheduler's step; the update's metrics and the lr it used.

        Raises:
            NonFiniteLossError: a loss term or the gradient norm is NaN/inf on some rank (no update applied).
        """
        step = self.step + 1
        self.faults.before_update(step)
        inject_nan = self.faults.nan_now(step)
        metrics, failure = train_step(
            self.ddp,
            loss_fn,
            stream,
            self.optimizer,
            self.rng,
            self.dist,
            self.dtype,
            grad_accum=self.engine.grad_accum,
            grad_clip=self.engine.grad_clip,
            inject_nan=inject_nan,
        )
        if failure is not None:
            if inject_nan:
                self.faults.nan_fired(step)
            raise NonFiniteLossError(
                f"non-finite loss at step {step} (epoch {self.batches.epoch}, batch {self.batches.position} of "
                f"the epoch) on {failure}. The update was not applied and nothing was saved; the last good "
                f"checkpoint is {self.last_ckpt or 'none (none had been written yet)'}. Check the inputs and "
                "the learning rate, then resume from it (engine.resume=<path>)."
                + (" (This NaN was injected by engine.fault.nan_at_step.)" if inject_nan else "")
            )
        lr = torch.tensor(self.optimizer.param_groups[0]["lr"], device=self.dist.device)  # this update's lr
        self.scheduler.step()
        self.step = step
        return {**metrics, "lr": lr}

    def checkpoint(self) -> None:
        """Write ``checkpoints/last.pt`` (and keep ``step_XXXXXXX.pt`` every ``engine.keep_every`` updates)."""
        engine, step = self.engine, self.step
        keep = engine.keep_every and step % engine.keep_every == 0
        copy_to = self.ckpt_dir / f"step_{step:07d}.pt" if keep else None
        fail_after = 4096 if self.faults.enospc_now(step) else None  # fault injection: disk full
        path, state = self.ckpt_dir / "last.pt", self.state
        self.last_ckpt = save_training_state(
            path, state, step, self.dist, self.config, copy_to, engine.keep_last, fail_after
        )

    def due(self, every: int) -> bool:
        """Whether a periodic action (every ``every`` updates; 0 = only at the end) falls on this update."""
        return bool(every and self.step % every == 0) or self.step == self.total

    def loop(self, loss_fn: LossFn, eval_fn: EvalFn | None, logger: Logger) -> dict[str, float]:
        """Update until ``total``; log, evaluate and checkpoint by step count; stop after a preemption.

        Returns the last logged train metrics and the last evaluation.
        """
        engine, dist = self.engine, self.dist
        log.info(
            "training steps %d -> %d: %d samples/step, %d batches/epoch/rank, %s, %s",
            self.step,
            self.total,
            self.samples_per_step,
            self.batches.per_epoch,
            self.dtype or "fp32",
            dist.device,
        )
        metrics: dict[str, float] = {}
        window, stream = MetricWindow(), self.batch_stream()
        bar = tqdm(
            total=self.total,
            initial=self.step,
            disable=not (dist.is_main and engine.progress_bar),
            dynamic_ncols=True,
        )
        preemption = PreemptionWatch().install()  # SIGTERM / SIGUSR1: finish the update, checkpoint, stop
        try:
            while self.step < self.total:
                window.add(self.update(loss_fn, stream))
                bar.update()
                if self.guard is not None:
                    metrics["train/bad_samples"] = float(self.guard.sync())
                if self.due(engine.log_every):
                    metrics.update(window.flush(self.samples_per_step))
                    if dist.is_main:
                        logger.log(metrics, self.step)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4g}")
                    where = f"step {self.step}/{self.total} epoch {self.batches.epoch}"
                    log.info("%s | %s", where, _format(metrics, "train/"))
                t0 = time.perf_counter()  # evaluation and checkpoints are left out of the throughput
                if eval_fn is not None and self.due(engine.eval_every):
                    metrics.update(self.evaluate(eval_fn, logger))
                if saved := self.due(engine.ckpt_every):
                    self.checkpoint()
                window.excluded += time.perf_counter() - t0
                if signum := preemption.agreed(dist):
                    if not saved:
                        self.checkpoint()
                    raise preemption.preempted(signum, self.step, self.last_ckpt)
        finally:
            preemption.restore()
            bar.close()
        return metrics

    def batch_stream(self) -> Iterator[Any]:
        """This rank's batches from the resume point on (unreadable samples already replaced)."""
        return iter(self.batches) if self.guard is None else self.guard.unwrap(iter(self.batches))

    def evaluate(self, eval_fn: EvalFn, logger: Logger) -> dict[str, float]:
        """``eval_fn`` on every rank (:func:`_evaluate`); rank 0 logs it."""
        evaluation = _evaluate(eval_fn, self.model, self.dist)
        if self.dist.is_main:
            logger.log(evaluation, self.step)
        log.info("step %d eval | %s", self.step, _format(evaluation, "eval/"))
        return evaluation


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
    if isinstance(config, DictConfig):  # checkpoints hold plain containers only (weights_only loading)
        config = OmegaConf.to_container(config, resolve=True)
    run = _Run(
        model,
        dataset,
        engine,
        dist,
        Path(run_dir),
        config,
        collate_fn,
        optimizer,
        extra_state,
        max_bad_fraction,
    )
    metrics = run.loop(loss_fn, eval_fn, logger or NullLogger())
    return TrainResult(
        step=run.step,
        epoch=run.batches.epoch,
        metrics=metrics,
        checkpoint=run.last_ckpt,
        start_step=run.start_step,
    )


def start_run(cfg: Mapping[str, Any]) -> tuple[EngineConfig, DistInfo, Path]:
    """A training script's first call: ``cfg.threads`` torch threads (0: torch's default), the engine settings
    (``cfg.engine``), the ranks and device (:func:`mega.engine.setup_dist`) and Hydra's run directory."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    engine = EngineConfig(**cfg["engine"])
    return engine, setup_dist(engine.device), Path(HydraConfig.get().runtime.output_dir)


def _format(metrics: Mapping[str, float], prefix: str) -> str:
    """``"loss 0.1234 lr 0.0003 ..."`` for the keys that start with ``prefix``."""
    return " ".join(f"{k[len(prefix) :]} {v:.4g}" for k, v in metrics.items() if k.startswith(prefix))
