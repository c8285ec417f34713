"""A tiny Hydra training script for the engine tests, launched under ``torchrun`` by tests/test_engine.py.

It also holds the model, data and loss that the tests train in-process, so the multi-process and the
single-process runs are built by the same code. Run::

    torchrun --nproc_per_node=2 tests/engine_ddp_worker.py --config-path DIR --config-name NAME out=FILE

``model=mlp`` (default) trains :func:`make_model` on :func:`make_dataset`; ``model=masked`` trains a tiny
``MaskedTokenTransformer`` on random token ids with every token masked (the fully masked batch that
once broke DDP's gradient reduction). The fault tests (tests/test_faults.py) use it with
``engine.fault.*``. Each rank writes ``<out>.rank<r>`` (final weights, logged records) on success.
``data_dir=DIR`` reads the samples from files (:class:`SampleFiles`, some may be broken) and
``max_bad_fraction=F`` skips unreadable ones (tests/test_bad_samples.py); ``sleep_s=S`` slows every update
so that tests/test_preemption.py can signal a run in the middle.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from mega.engine import (
    EngineConfig,
    RngStreams,
    cleanup_dist,
    register_resolvers,
    seed_everything,
    setup_dist,
    train,
)
from mega.errors import UserError, entry_point


def make_model(dropout: float = 0.0) -> nn.Module:
    """A 2-layer MLP, 6 -> 16 -> 3 (built after ``seed_everything`` so every rank gets the same weights)."""
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 3))


def make_dataset(n: int = 40) -> TensorDataset:
    """Random regression data: x (n, 6), y (n, 3), from a fixed seed."""
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 6, generator=g)
    y = torch.randn(n, 3, generator=g)
    return TensorDataset(x, y)


class SampleFiles(Dataset):
    """:func:`make_dataset`'s samples stored one per ``.npy`` file (x then y, 9 floats), so files can be broken."""

    def __init__(self, folder: str | Path) -> None:
        self.files = sorted(Path(folder).glob("*.npy"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.files[index]
        try:
            v = torch.from_numpy(np.load(path, allow_pickle=False)).view(9)
        except (OSError, ValueError, RuntimeError, EOFError) as err:
            raise UserError(f"{path}: unreadable sample ({type(err).__name__}: {err})") from err
        return v[:6], v[6:]


def write_sample_files(folder: Path, bad: dict[int, str] | None = None, n: int = 40) -> Path:
    """Write :class:`SampleFiles` for :func:`make_dataset`; ``bad`` maps indices to ``truncated`` | ``text``."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_dataset(n).tensors
    for i in range(n):
        path = folder / f"{i:04d}.npy"
        np.save(path, torch.cat([x[i], y[i]]).numpy())
        kind = (bad or {}).get(i)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:100])
        elif kind == "text":
            path.write_text("not an array\n")
    return folder


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


def make_token_dataset(n: int = 32, num_tokens: int = 6, codebook_size: int = 16) -> TensorDataset:
    """Random token ids (n, num_tokens) in [0, codebook_size), from a fixed seed."""
    g = torch.Generator().manual_seed(7)
    return TensorDataset(torch.randint(0, codebook_size, (n, num_tokens), generator=g))


def fully_masked_loss(
    model: nn.Module, batch: list[Tensor], rng: RngStreams
) -> tuple[Tensor, Mapping[str, Tensor]]:
    """Masked-token cross-entropy with every position masked (MEGA's deterministic-mode training case)."""
    from mega.transformer import masked_cross_entropy

    (ids,) = batch
    mask = torch.ones_like(ids, dtype=torch.bool)
    inner = model.module if hasattr(model, "module") else model
    logits = model(ids.masked_fill(mask, inner.mask_id), mask)
    loss = masked_cross_entropy(logits, ids, mask)
    return loss, {"ce": loss.detach()}


def _slow(loss_fn, seconds: float, model: nn.Module, batch, rng: RngStreams):
    time.sleep(seconds)
    return loss_fn(model, batch, rng)


@hydra.main(version_base="1.3", config_path=None, config_name=None)
@entry_point
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(1)
    engine = EngineConfig(**cfg.engine)
    dist = setup_dist(engine.device)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        seed_everything(engine.seed)
        if cfg.get("model", "mlp") == "masked":
            from mega.transformer import MaskedTokenTransformer

            model = MaskedTokenTransformer(
                num_tokens=6,
                codebook_size=16,
                dim=16,
                encoder_depth=1,
                decoder_depth=1,
                num_heads=2,
                mlp_ratio=2.0,
            )
            loss_fn, dataset = fully_masked_loss, make_token_dataset()
        else:
            model, loss_fn = make_model(), mse_loss
            dataset = SampleFiles(cfg.data_dir) if cfg.get("data_dir") else make_dataset()
        if cfg.get("sleep_s"):  # slow updates, so that a test can signal the run in the middle
            loss_fn = functools.partial(_slow, loss_fn, float(cfg.sleep_s))
        logger = RecordingLogger()
        config = OmegaConf.to_container(cfg, resolve=True)
        train(
            model,
            loss_fn,
            dataset,
            engine=engine,
            dist=dist,
            run_dir=run_dir,
            logger=logger,
            config=config,
            max_bad_fraction=cfg.get("max_bad_fraction"),
        )
        out = {"run_dir": run_dir, "model": model.state_dict(), "records": logger.records}
        torch.save(out, f"{cfg.out}.rank{dist.rank}")
    finally:
        cleanup_dist()


if __name__ == "__main__":
    register_resolvers()
    main()
