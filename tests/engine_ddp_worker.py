"""A tiny Hydra training script for the engine tests, launched under ``torchrun`` by tests/test_engine.py.

It also holds the model, data and loss that the tests train in-process, so the multi-process and the
single-process runs are built by the same code. Run::

    torchrun --nproc_per_node=2 tests/engine_ddp_worker.py --config-path DIR --config-name NAME out=FILE
"""

from __future__ import annotations

from collections.abc import Mapping

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from mega.engine import (
    EngineConfig,
    RngStreams,
    cleanup_dist,
    register_resolvers,
    seed_everything,
    setup_dist,
    train,
)


def make_model(dropout: float = 0.0) -> nn.Module:
    """A 2-layer MLP, 6 -> 16 -> 3 (built after ``seed_everything`` so every rank gets the same weights)."""
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 3))


def make_dataset(n: int = 40) -> TensorDataset:
    """Random regression data: x (n, 6), y (n, 3), from a fixed seed."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    y = torch.randn(n, 3, generator=g)
    return TensorDataset(x, y)


def mse_loss(model: nn.Module, batch: list[Tensor], rng: RngStreams) -> tuple[Tensor, Mapping[str, Tensor]]:
    """Mean squared error over the batch (a mean, so DDP's gradient average equals the full-batch one)."""
    x, y = batch
    loss = (model(x) - y).pow(2).mean()
    return loss, {"mse": loss.detach()}


class RecordingLogger:
    """Keeps every logged (step, metrics) pair in memory."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def finish(self) -> None:
        pass


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(1)
    engine = EngineConfig(**cfg.engine)
    dist = setup_dist(engine.device)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        seed_everything(engine.seed)
        model = make_model()
        logger = RecordingLogger()
        train(model, mse_loss, make_dataset(), engine=engine, dist=dist, run_dir=run_dir, logger=logger)
        out = {"run_dir": run_dir, "model": model.state_dict(), "records": logger.records}
        torch.save(out, f"{cfg.out}.rank{dist.rank}")
    finally:
        cleanup_dist()


if __name__ == "__main__":
    register_resolvers()
    main()
