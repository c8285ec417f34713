"""Training-engine throughput: the engine's loop against a bare PyTorch loop, fp32 against bf16 autocast.

Prints samples/s for an MLP of tokenizer-like size (in 512 -> 4 x 1024 -> 512) trained on random data.
The bare loop has no sampler, NaN check, metric window or clipping; the difference is the engine's
overhead. Run: ``.venv/bin/python benchmarks/engine.py [--threads N] [--steps N]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mega.engine import DistInfo, EngineConfig, seed_everything, train


def make_model(width: int = 1024, depth: int = 4, dim: int = 512) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(dim, width), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(width, dim))


def loss_fn(model: nn.Module, batch, rng):
    (x,) = batch
    loss = (model(x).float() - x).pow(2).mean()
    return loss, {}


def bench_engine(data: TensorDataset, steps: int, batch: int, precision: str) -> float:
    seed_everything(0)
    model = make_model()
    engine = EngineConfig(
        max_steps=steps + 5,
        batch_size=batch,
        precision=precision,
        log_every=steps + 5,
        warmup_steps=1,
        ckpt_every=0,
        progress_bar=False,
        resume=None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(model, loss_fn, data, engine=engine, dist=DistInfo(), run_dir=tmp)
        elapsed = time.perf_counter() - t0
    return (steps + 5) * batch / elapsed


def bench_bare(data: TensorDataset, steps: int, batch: int, dtype: torch.dtype | None) -> float:
    seed_everything(0)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x_all = data.tensors[0]
    t0 = time.perf_counter()
    for i in range(steps + 5):
        x = x_all[(i * batch) % (len(x_all) - batch) :][:batch]
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = (model(x).float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (steps + 5) * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    data = TensorDataset(torch.randn(args.batch * 64, 512))
    print(f"MLP 512-1024x4-512, batch {args.batch}, {args.steps} steps, {args.threads} thread(s)")
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        bare = bench_bare(data, args.steps, args.batch, dtype)
        eng = bench_engine(data, args.steps, args.batch, precision)
        print(
            f"{precision}: bare loop {bare:8.0f} samples/s | engine {eng:8.0f} samples/s ({eng / bare:.0%})"
        )


if __name__ == "__main__":
    main()
