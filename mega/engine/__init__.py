"""The training engine shared by every training script (DiT/nanoGPT style: one explicit loop).

A script builds the trainable model, a ``loss_fn(model, batch, rng) -> (loss, terms)`` and a dataset,
then calls :func:`train`; everything distributed, precision, schedule, logging, checkpointing and
resuming happens there::

    from mega.engine import build_logger, cleanup_dist, register_resolvers, start_run, train

    register_resolvers()                      # ${mega_run_id:} in hydra.run.dir, before @hydra.main runs

    @hydra.main(version_base="1.3", config_path="../configs", config_name="train_x")
    def main(cfg):
        engine, dist, run_dir = start_run(cfg)                # EngineConfig, setup_dist, Hydra's run dir
        resolved = OmegaConf.to_container(cfg, resolve=True)
        seed_everything(engine.seed)                          # identical initial weights on every rank
        model = build_model(...)                              # trainable parts only
        frozen = build_frozen(...).to(dist.device)            # used inside loss_fn, never wrapped in DDP
        logger = build_logger(cfg.logger, run_dir=run_dir, config=resolved, is_main=dist.is_main)
        try:
            result = train(model, loss_fn, dataset, engine=engine, dist=dist, run_dir=run_dir,
                           config=resolved, eval_fn=eval_fn, logger=logger)
        finally:
            logger.finish()
            cleanup_dist()

Modules: ``dist`` (ranks, device, precision), ``rundir`` (one run directory for all ranks), ``rng``
(generator streams), ``batches`` (resumable epoch order), ``checkpoint`` (atomic, self-checking files,
history, training state), ``faults`` (fault injection), ``preemption`` (SIGTERM / SIGUSR1: checkpoint, exit 75),
``bad_samples`` (unreadable training samples skipped within a budget), ``optim`` (AdamW, warm-up + cosine),
``logging`` (wandb/none, metric windows), ``config`` (EngineConfig), ``step`` (one optimiser update),
``loop`` (train).
"""

from mega.engine.bad_samples import BadSampleBudgetError
from mega.engine.batches import ResumableBatches, to_device
from mega.engine.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    DiskFullError,
    load_checkpoint,
    save_checkpoint,
)
from mega.engine.config import EngineConfig
from mega.engine.dist import (
    DistInfo,
    DistStartupError,
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_dist,
    resolve_precision,
    setup_dist,
)
from mega.engine.faults import FaultConfig
from mega.engine.logging import LOGGERS, Logger, NullLogger, WandbLogger, build_logger
from mega.engine.loop import TrainResult, start_run, train
from mega.engine.optim import build_optimizer, build_scheduler, lr_at
from mega.engine.preemption import EXIT_PREEMPTED, Preempted
from mega.engine.rng import RngStreams, seed_everything, stream_seed
from mega.engine.rundir import register_resolvers, run_id
from mega.engine.step import NonFiniteLossError

__all__ = [
    "EXIT_PREEMPTED",
    "LOGGERS",
    "BadSampleBudgetError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "DiskFullError",
    "DistInfo",
    "DistStartupError",
    "EngineConfig",
    "FaultConfig",
    "Logger",
    "NonFiniteLossError",
    "NullLogger",
    "Preempted",
    "ResumableBatches",
    "RngStreams",
    "TrainResult",
    "WandbLogger",
    "all_gather_object",
    "all_reduce_mean",
    "barrier",
    "build_logger",
    "build_optimizer",
    "build_scheduler",
    "cleanup_dist",
    "load_checkpoint",
    "lr_at",
    "register_resolvers",
    "resolve_precision",
    "run_id",
    "save_checkpoint",
    "seed_everything",
    "setup_dist",
    "start_run",
    "stream_seed",
    "to_device",
    "train",
]
